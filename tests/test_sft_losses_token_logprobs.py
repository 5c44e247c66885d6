"""Chunked log-probs and entropies against the full-logit computation."""

import pytest
import torch

from cft_rl.sft.token_logprobs import token_logprobs, token_statistics


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
