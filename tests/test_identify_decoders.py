"""The fast decoders decode exactly what the naive reference decodes, one by one."""

import random
from collections import Counter

import pytest
import torch
from test_identify_fixtures import byte_tokenizer, random_qwen2

from cft_rl.generation.hf import HFBackend
from cft_rl.generation.kv_cache import KV_CACHE_LAYOUTS
from cft_rl.identify.decoders import BackendDecoder, CachedDecoder, ContinuationSampling
from cft_rl.identify.naive import NaiveDecoder
from cft_rl.identify.perturbations import AnswerStops, Perturbation

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def world():
    tokenizer = byte_tokenizer()
    model = random_qwen2(len(tokenizer))
    rng = random.Random(0)
    prompt = [rng.randrange(250) for _ in range(9)]
    response = [rng.randrange(250) for _ in range(14)]
    return tokenizer, model, prompt, response


def all_perturbations(ranked, rollouts=1):
    return [
        Perturbation(t, k, ranked.candidate_ids[t][k + 1], r)
        for t in range(len(ranked.response_ids))
        for k in range(2)
        for r in range(rollouts)
    ]


def frequent_token(model, tokenizer, prompt, response):
    """A token the model often generates here: used as EOS so that some continuations end
    early (a random model seldom emits the real EOS)."""
    stops = AnswerStops(tokenizer, response, set())
    decoder = CachedDecoder(model, ContinuationSampling())
    ranked = decoder.rank(prompt, response, depth=4)
    decoded = decoder.decode(ranked, all_perturbations(ranked), [12] * 2 * len(response), stops)
    return Counter(t for c in decoded for t in c.token_ids).most_common(1)[0][0]


@pytest.mark.parametrize(
    ("batching", "rows"),
    [("shared", 256), ("shared", 5), ("padded", 256), ("padded", 5), ("grouped", 3)],
)
def test_cached_greedy_equals_naive_generate(world, batching, rows):
    tokenizer, model, prompt, response = world
    eos = frequent_token(model, tokenizer, prompt, response)
    stops = AnswerStops(tokenizer, response, {eos})
    cached = CachedDecoder(
        model, ContinuationSampling(), max_batch_rows=rows, layout=KV_CACHE_LAYOUTS.get(batching)
    )
    naive = NaiveDecoder(model, pad_id=tokenizer.pad_token_id)

    ranked = cached.rank(prompt, response, depth=4)
    assert ranked.candidate_ids == naive.rank(prompt, response, depth=4).candidate_ids
    perturbations = all_perturbations(ranked)
    # Caps differ per perturbation, as with the default budget (shorter for later positions).
    caps = [12 - p.position // 2 for p in perturbations]
    fast = cached.decode(ranked, perturbations, caps, stops)
    slow = naive.decode(ranked, perturbations, caps, stops)

    assert [c.token_ids for c in fast] == [c.token_ids for c in slow]
    ended = [c.token_ids[-1] == eos for c in fast if c.token_ids]
    assert any(ended) and not all(ended)  # some rows left the batch early, others ran on
    # No near tie could have made this agreement luck.
    assert min(c.min_margin for c in fast) > 1e-3
    assert cached.stats.decoded_continuations == sum(p.token_id != eos for p in perturbations)
    assert cached.stats.generated_tokens == sum(len(c.token_ids) for c in fast)


def test_cached_sampling_equals_the_hf_backend(world):
    tokenizer, model, prompt, response = world
    stops = AnswerStops(tokenizer, response, {tokenizer.eos_token_id})
    sampling = ContinuationSampling(temperature=1.0, seed=3)
    cached = CachedDecoder(model, sampling, max_batch_rows=7)
    backend = BackendDecoder(HFBackend(model, tokenizer, batch_size=8), sampling)

    ranked = cached.rank(prompt, response, depth=4)
    perturbations = all_perturbations(ranked, rollouts=3)
    caps = [8] * len(perturbations)
    fast = [c.token_ids for c in cached.decode(ranked, perturbations, caps, stops)]
    reference = [c.token_ids for c in backend.decode(ranked, perturbations, caps, stops)]
    assert fast == reference
    # Rollouts of one alternative differ: the seeds reach the sampler.
    assert len({tuple(fast[i]) for i in range(3)}) > 1


def test_backend_decoder_ranks_like_the_teacher_forced_forward(world):
    tokenizer, model, prompt, response = world
    cached = CachedDecoder(model, ContinuationSampling())
    backend = BackendDecoder(HFBackend(model, tokenizer), ContinuationSampling())
    fast, slow = cached.rank(prompt, response, 5), backend.rank(prompt, response, 5)
    assert fast.candidate_ids == slow.candidate_ids
    for a, b in zip(fast.candidate_logprobs, slow.candidate_logprobs, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
