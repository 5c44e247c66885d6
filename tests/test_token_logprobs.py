"""Chunked log-probs and entropies against the full-logit computation."""

import pytest
import torch

from cft_rl.token_logprobs import token_entropies, token_logprobs, token_statistics


def _inputs(n=7, hidden=5, vocab=11, seed=0):
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(n, hidden, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(vocab, hidden, generator=generator, dtype=torch.float64) * 2
    weight.requires_grad_(True)
    targets = torch.randint(vocab, (n,), generator=generator)
    return rows, weight, targets


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 100])
def test_logprobs_and_gradients_match_full_log_softmax(chunk_size):
    rows, weight, targets = _inputs()
    upstream = torch.linspace(-1, 2, rows.shape[0], dtype=torch.float64)

    chunked = token_logprobs(rows, weight, targets, chunk_size)
    (chunked * upstream).sum().backward()
    grads = rows.grad.clone(), weight.grad.clone()
    rows.grad = weight.grad = None

    full = (rows @ weight.T).log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    (full * upstream).sum().backward()

    torch.testing.assert_close(chunked, full)
    torch.testing.assert_close(grads[0], rows.grad)
    torch.testing.assert_close(grads[1], weight.grad)


def test_logprobs_pass_gradcheck():
    rows, weight, targets = _inputs(n=4, hidden=3, vocab=6)
    assert torch.autograd.gradcheck(lambda r, w: token_logprobs(r, w, targets, 3), (rows, weight))


@pytest.mark.parametrize("chunk_size", [2, 100])
def test_statistics_match_full_distribution(chunk_size):
    rows, weight, targets = _inputs(seed=1)
    logprobs, entropies = token_statistics(rows, weight, targets, chunk_size)
    log_probs_full = (rows @ weight.T).log_softmax(-1)
    expected_entropy = -(log_probs_full.exp() * log_probs_full).sum(-1)
    expected_logprobs = log_probs_full.gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(entropies, expected_entropy)
    torch.testing.assert_close(logprobs, expected_logprobs)
    assert not logprobs.requires_grad


def test_no_rows_gives_empty_output_and_zero_gradient():
    rows, weight, targets = _inputs()
    out = token_logprobs(rows[:0], weight, targets[:0])
    assert out.shape == (0,)
    out.sum().backward()
    assert torch.count_nonzero(weight.grad) == 0


def test_bad_shapes_are_refused():
    rows, weight, targets = _inputs()
    with pytest.raises(ValueError, match="must be"):
        token_logprobs(rows, weight.T, targets)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(rows, weight, targets[:-1])
    with pytest.raises(ValueError, match="chunk_size"):
        token_statistics(rows, weight, targets, chunk_size=0)


def test_bfloat16_inputs_give_float32_logprobs():
    rows, weight, targets = _inputs()
    out = token_logprobs(rows.bfloat16(), weight.bfloat16(), targets)
    assert out.dtype == torch.float32
    exact = (rows @ weight.T).log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(out.double(), exact.detach(), rtol=0.05, atol=0.1)


@pytest.mark.parametrize("chunk_size", [1, 3, 100])
def test_entropies_and_their_gradients_equal_full_logits(chunk_size):
    generator = torch.Generator().manual_seed(3)
    rows = torch.randn(7, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 5, generator=generator, dtype=torch.float64, requires_grad=True)
    full_logits = rows @ weight.T
    expected = -(full_logits.softmax(-1) * full_logits.log_softmax(-1)).sum(-1)
    expected_grads = torch.autograd.grad((expected * torch.arange(7.0)).sum(), (rows, weight))
    got = token_entropies(rows, weight, chunk_size)
    got_grads = torch.autograd.grad((got * torch.arange(7.0)).sum(), (rows, weight))
    torch.testing.assert_close(got, expected)
    for a, b in zip(got_grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        torch.testing.assert_close(token_entropies(rows, weight, chunk_size), expected)


def test_grpo_token_stats_equal_a_full_logit_computation():
    """GRPO's per-token statistics (chunked, temperature on the rows) against log_softmax
    of the full logits / T: log-probs, entropies and the gradients of both."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from cft_rl.grpo.sequences import token_stats

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config).double()
    prompts, responses = [[1, 2, 3], [4, 5]], [[6, 7, 8, 9], [10, 11]]
    temperature = 0.7

    stats = token_stats(model, prompts, responses, 0, temperature, with_entropy=True, chunk_size=2)
    mask = stats.response_mask.bool()
    (stats.log_prob[mask].sum() + stats.entropy[mask].sum()).backward()
    got = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    log_probs, entropies = [], []
    for prompt, response in zip(prompts, responses, strict=True):
        ids = torch.tensor([prompt + response])
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1] / temperature
        log_softmax = logits.log_softmax(-1)
        log_probs.append(log_softmax.gather(1, torch.tensor(response)[:, None]).squeeze(1))
        entropies.append(-(log_softmax.exp() * log_softmax).sum(-1))
    expected_log_prob, expected_entropy = torch.cat(log_probs), torch.cat(entropies)
    (expected_log_prob.sum() + expected_entropy.sum()).backward()
    torch.testing.assert_close(stats.log_prob[mask], expected_log_prob)
    torch.testing.assert_close(stats.entropy[mask], expected_entropy)
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(got[name], parameter.grad, msg=name)
