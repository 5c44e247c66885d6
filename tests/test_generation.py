"""The hf backend against plain references on a tiny random Qwen2 model built here."""

from __future__ import annotations

import pytest
import torch
from tiny_lm import char_tokenizer, tiny_qwen2

from cft_rl.generation import FINISH_ANSWER, FINISH_EOS, FINISH_LENGTH, SamplingParams
from cft_rl.generation.hf import HFBackend
from cft_rl.generation.types import sample_seed

torch.set_num_threads(1)  # a 2-layer model gains nothing from threads on a shared machine

PROMPTS = ["ab 12", "what is 3+4?\n", "x", "#### 7 and more words here", "qq"]


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    # Peaked distributions (initializer_range 0.2): no near-ties for float noise to flip.
    return tiny_qwen2(
        len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        max_position_embeddings=96,
        initializer_range=0.2,
    )


@pytest.fixture(scope="module")
def prompt_ids(tokenizer):
    return [tokenizer.encode(p) for p in PROMPTS]


@torch.inference_mode()
def reference_greedy(model, prompt, max_new_tokens, eos_ids):
    """One prompt, no cache, no padding: full forward pass per step, argmax."""
    ids, steps = list(prompt), []
    for _ in range(max_new_tokens):
        logits = model(torch.tensor([ids])).logits[0, -1]
        token = int(logits.argmax())
        steps.append((token, logits.log_softmax(-1)))
        ids.append(token)
        if token in eos_ids:
            break
    return steps


def test_greedy_matches_argmax_loop_with_padding_and_small_batches(model, tokenizer, prompt_ids):
    backend = HFBackend(model, tokenizer, batch_size=2)
    results = backend.generate(prompt_ids, SamplingParams(max_new_tokens=12, top_logprobs=3))
    assert len(results) == len(PROMPTS)
    for prompt, [completion] in zip(prompt_ids, results, strict=True):
        steps = reference_greedy(model, prompt, 12, backend.eos_ids)
        assert completion.token_ids == [token for token, _ in steps]
        assert completion.text == tokenizer.decode(completion.token_ids, skip_special_tokens=True)
        # top-k log-probabilities: raw log-softmax, most likely first
        for top, (_, logprobs) in zip(completion.top_logprobs, steps, strict=True):
            values, ids = logprobs.topk(3)
            assert [token for token, _ in top] == ids.tolist()
            assert [value for _, value in top] == pytest.approx(values.tolist(), abs=1e-4)


def test_stops_at_eos_and_keeps_it(model, tokenizer, prompt_ids):
    # Make the first greedy token of the first prompt that is new after step 1 the end token.
    tokens = [token for token, _ in reference_greedy(model, prompt_ids[0], 8, eos_ids=set())]
    stop = next(k for k in range(1, 8) if tokens[k] not in tokens[:k])
    backend = HFBackend(model, tokenizer, batch_size=4)
    backend.eos_ids = {tokens[stop]}
    [[completion], *_] = backend.generate(prompt_ids, SamplingParams(max_new_tokens=8))
    assert completion.token_ids == tokens[: stop + 1]
    assert completion.finish_reason == FINISH_EOS


def test_length_limit_and_n_greedy_copies(model, tokenizer, prompt_ids):
    backend = HFBackend(model, tokenizer)
    [completions] = backend.generate(prompt_ids[:1], SamplingParams(max_new_tokens=5, n=3))
    assert len(completions) == 3
    assert all(len(c.token_ids) == 5 and c.finish_reason == FINISH_LENGTH for c in completions)
    assert completions[0].token_ids == completions[2].token_ids
    assert completions[0].token_ids is not completions[1].token_ids


def test_generation_stops_at_model_context_length(model, tokenizer):
    backend = HFBackend(model, tokenizer)
    [[completion]] = backend.generate([[5] * 90], SamplingParams(max_new_tokens=50))
    assert len(completion.token_ids) == 6  # 96 positions in all


def test_sampling_is_reproducible_and_independent_of_batching(model, tokenizer, prompt_ids):
    params = SamplingParams(max_new_tokens=10, temperature=1.0, n=4, seed=7)
    batched = HFBackend(model, tokenizer, batch_size=3).generate(prompt_ids, params)
    alone = HFBackend(model, tokenizer, batch_size=64).generate(prompt_ids[1:2], params)
    again = HFBackend(model, tokenizer, batch_size=3).generate(prompt_ids, params)
    other_seed = HFBackend(model, tokenizer).generate(
        prompt_ids, SamplingParams(max_new_tokens=10, temperature=1.0, n=4, seed=8)
    )

    def tokens(results):
        return [[c.token_ids for c in completions] for completions in results]

    assert tokens(batched) == tokens(again)
    assert tokens(alone)[0] == tokens(batched)[1]
    assert tokens(other_seed) != tokens(batched)
    assert len({tuple(t) for t in tokens(batched)[0]}) > 1, "the n samples should differ"


def first_token_counts(backend, prompt, params):
    [completions] = backend.generate([prompt], params)
    counts = torch.zeros(len(backend.tokenizer))
    for completion in completions:
        counts[completion.token_ids[0]] += 1
    return counts


def test_sampling_follows_tempered_distribution(model, tokenizer, prompt_ids):
    backend = HFBackend(model, tokenizer, batch_size=512)
    logits = model(torch.tensor([prompt_ids[1]])).logits[0, -1].detach()
    params = SamplingParams(max_new_tokens=1, temperature=2.0, n=2000, seed=1)
    frequencies = first_token_counts(backend, prompt_ids[1], params) / params.n
    expected = (logits / 2.0).softmax(-1)
    # 2000 draws: each frequency within ~4 standard errors of its probability
    tolerance = 4 * (expected * (1 - expected) / params.n).sqrt() + 1e-3
    assert ((frequencies - expected).abs() <= tolerance).all()


def test_top_p_samples_only_from_the_nucleus(model, tokenizer, prompt_ids):
    backend = HFBackend(model, tokenizer, batch_size=512)
    probs = model(torch.tensor([prompt_ids[1]])).logits[0, -1].detach().softmax(-1)
    sorted_probs, order = probs.sort(descending=True)
    nucleus_size = int((sorted_probs.cumsum(0) < 0.6).sum()) + 1
    nucleus = set(order[:nucleus_size].tolist())
    params = SamplingParams(max_new_tokens=1, temperature=1.0, top_p=0.6, n=300, seed=2)
    drawn = set(first_token_counts(backend, prompt_ids[1], params).nonzero().flatten().tolist())
    assert drawn <= nucleus
    if nucleus_size > 1:
        assert len(drawn) > 1


def test_stop_when_answered_cuts_after_the_completing_token(
    model, tokenizer, prompt_ids, monkeypatch
):
    """The rule itself is tested in test_generation_stopping; here: the backend stops at the
    first token after which the rule holds, and reports why."""
    steps = reference_greedy(model, prompt_ids[3], 10, eos_ids=set())
    target = tokenizer.decode([steps[3][0]])  # "answered" once the 4th token's text appears
    monkeypatch.setattr("cft_rl.generation.hf.is_trigger", lambda tok, token_id: True)
    monkeypatch.setattr("cft_rl.generation.hf.answer_complete", lambda text: target in text)
    backend = HFBackend(model, tokenizer)
    [[completion]] = backend.generate(
        prompt_ids[3:4], SamplingParams(max_new_tokens=10, stop_when_answered=True)
    )
    first = next(i for i, (t, _) in enumerate(steps) if tokenizer.decode([t]) == target)
    assert completion.token_ids == [t for t, _ in steps[: first + 1]]
    assert completion.finish_reason == FINISH_ANSWER


def test_sample_seed_depends_on_seed_prompt_and_index():
    base = sample_seed(0, [1, 2, 3], 0)
    assert base == sample_seed(0, [1, 2, 3], 0)
    assert (
        len(
            {
                base,
                sample_seed(1, [1, 2, 3], 0),
                sample_seed(0, [1, 2], 0),
                sample_seed(0, [1, 2, 3], 1),
                sample_seed(0, [12, 3], 0),
            }
        )
        == 5
    )


def test_bad_params_are_rejected():
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="n must"):
        SamplingParams(n=0)
