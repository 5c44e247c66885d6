"""Per-token log-probabilities and entropies from hidden states, without full logits; the
one implementation sft's losses and GRPO's policy update both use.

A loss on a few positions needs the LM head only at those rows: the caller gathers the
hidden states of the supervised positions ([N, hidden]) and passes them here with the LM head
weight ([vocab, hidden]). Logits are formed `chunk_size` rows at a time, so at most
chunk_size x vocab of them exist at once, in the forward and in the backward, which recomputes
each chunk's logits instead of keeping them. Logits are upcast to at least float32 per chunk.
A sampling temperature T is the caller's rows divided by T ((rows / T) @ W^T = logits / T).
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_SIZE = 1024


def token_logprobs(
    rows: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """log p(targets[i] | rows[i]) [N] (at least float32), differentiable in rows and weight."""
    _check_shapes(rows, lm_head_weight, chunk_size)
    if targets.shape != rows.shape[:1]:
        raise ValueError(f"targets {tuple(targets.shape)} do not match rows {tuple(rows.shape)}")
    return _ChunkedTokenLogprob.apply(rows, lm_head_weight, targets, chunk_size)


@torch.no_grad()
def token_statistics(
    rows: torch.Tensor,
    lm_head_weight: torch.Tensor,
    targets: torch.Tensor,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of each target, entropy of each row's distribution) [N], no gradient.

    For choosing tokens (entropy, excess loss), not for training on them.
    """
    _check_shapes(rows, lm_head_weight, chunk_size)
    logprobs = rows.new_empty(rows.shape[0], dtype=_logit_dtype(rows))
    entropies = torch.empty_like(logprobs)
    for start in range(0, rows.shape[0], chunk_size):
        end = start + chunk_size
        logits = (rows[start:end] @ lm_head_weight.T).to(logprobs.dtype)
        log_norm = torch.logsumexp(logits, dim=-1)
        logprobs[start:end] = logits.gather(1, targets[start:end, None]).squeeze(1) - log_norm
        # H = log Z - sum_v p_v * logit_v
        probs = torch.softmax(logits, dim=-1)
        entropies[start:end] = log_norm - (probs * logits).sum(dim=-1)
    return logprobs, entropies


def token_entropies(
    rows: torch.Tensor, lm_head_weight: torch.Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE
) -> torch.Tensor:
    """Entropy of each row's distribution [N] (at least float32), differentiable in rows and
    weight when they need it: each chunk is checkpointed, so its logits exist only while it
    is computed, in the forward and again in the backward."""
    _check_shapes(rows, lm_head_weight, chunk_size)
    if rows.shape[0] == 0:
        return rows.new_empty(0, dtype=_logit_dtype(rows))
    grad = torch.is_grad_enabled() and (rows.requires_grad or lm_head_weight.requires_grad)
    pieces = []
    for start in range(0, rows.shape[0], chunk_size):
        chunk = rows[start : start + chunk_size]
        if grad:
            pieces.append(checkpoint(_entropy, chunk, lm_head_weight, use_reentrant=False))
        else:
            pieces.append(_entropy(chunk, lm_head_weight))
    return torch.cat(pieces)


def _entropy(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    logits = (rows @ weight.T).to(_logit_dtype(rows))
    # H = log Z - sum_v p_v * logit_v
    return torch.logsumexp(logits, dim=-1) - (logits.softmax(dim=-1) * logits).sum(dim=-1)


def _logit_dtype(rows: torch.Tensor) -> torch.dtype:
    return torch.promote_types(rows.dtype, torch.float32)


def _check_shapes(rows: torch.Tensor, weight: torch.Tensor, chunk_size: int) -> None:
    if rows.dim() != 2 or weight.dim() != 2 or rows.shape[1] != weight.shape[1]:
        raise ValueError(
            f"rows {tuple(rows.shape)} and LM head weight {tuple(weight.shape)} must be "
            "[N, hidden] and [vocab, hidden]"
        )
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")


class _ChunkedTokenLogprob(torch.autograd.Function):
    """Saves rows, weight and each row's log-normaliser; backward recomputes chunk logits."""

    @staticmethod
    def forward(ctx, rows, weight, targets, chunk_size):
        logprobs = rows.new_empty(rows.shape[0], dtype=_logit_dtype(rows))
        log_norms = torch.empty_like(logprobs)
        for start in range(0, rows.shape[0], chunk_size):
            end = start + chunk_size
            logits = (rows[start:end] @ weight.T).to(logprobs.dtype)
            log_norms[start:end] = torch.logsumexp(logits, dim=-1)
            target_logits = logits.gather(1, targets[start:end, None]).squeeze(1)
            logprobs[start:end] = target_logits - log_norms[start:end]
        ctx.save_for_backward(rows, weight, targets, log_norms)
        ctx.chunk_size = chunk_size
        return logprobs

    @staticmethod
    def backward(ctx, grad_logprobs):
        rows, weight, targets, log_norms = ctx.saved_tensors
        want_rows, want_weight = ctx.needs_input_grad[:2]
        grad_rows = torch.empty_like(rows) if want_rows else None
        grad_weight = None
        for start in range(0, rows.shape[0], ctx.chunk_size):
            end = start + ctx.chunk_size
            chunk_rows, grad = rows[start:end], grad_logprobs[start:end, None].to(log_norms.dtype)
            # d log p_y / d logit_v = 1[v = y] - p_v, built in place on the chunk's logits
            grad_logits = (chunk_rows @ weight.T).to(log_norms.dtype)
            grad_logits.sub_(log_norms[start:end, None]).exp_().mul_(-grad)
            grad_logits.scatter_add_(1, targets[start:end, None], grad)
            grad_logits = grad_logits.to(rows.dtype)
            if want_rows:
                grad_rows[start:end] = grad_logits @ weight
            if want_weight and grad_weight is None:
                grad_weight = grad_logits.T @ chunk_rows
            elif want_weight:
                grad_weight.addmm_(grad_logits.T, chunk_rows)
        if want_weight and grad_weight is None:  # no rows
            grad_weight = torch.zeros_like(weight)
        return grad_rows, grad_weight, None, None
