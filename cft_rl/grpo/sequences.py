"""Prompt + response sequences as padded tensors, and the policy's per-token statistics on them.

Everything per token is laid out [rows, response_len]: entry (b, j) belongs to response token
j of row b, with `response_mask` marking real tokens. The model sees prompt + response right
padded; the hidden state before each response token predicts it. Only those rows of hidden
states go through the LM head, a chunk of rows at a time (cft_rl.token_logprobs), so no
logits are formed for prompt positions and at most a chunk's exist at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from cft_rl.token_logprobs import DEFAULT_CHUNK_SIZE, token_entropies, token_logprobs


@dataclass
class TokenStats:
    """Per response token [rows, response_len]: log-prob of the sampled token and, when
    asked for, the entropy of the policy's distribution there."""

    log_prob: torch.Tensor
    entropy: torch.Tensor | None
    response_mask: torch.Tensor


def pad_rows(rows: Sequence[torch.Tensor], width: int | None = None) -> torch.Tensor:
    """Stack 1-d tensors of different lengths into [len(rows), width], zero padded."""
    width = max((len(row) for row in rows), default=0) if width is None else width
    out = torch.zeros(len(rows), width, dtype=rows[0].dtype, device=rows[0].device)
    for index, row in enumerate(rows):
        out[index, : len(row)] = row
    return out


def response_mask(lengths: Sequence[int], device: torch.device | str = "cpu") -> torch.Tensor:
    """[rows, max length] float mask, 1 on each row's first `lengths[row]` entries."""
    width = max(lengths, default=0)
    return (
        torch.arange(width, device=device)[None, :] < torch.tensor(lengths, device=device)[:, None]
    ).float()


def token_stats(
    model: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> TokenStats:
    """Log-probs (and entropies) of `responses` given `prompts` under `model`, with gradient
    unless called under torch.no_grad(); `entropy_grad=False` keeps the entropies out of the
    graph (a metric, not a loss term). Logits are divided by `temperature` first, as verl
    does: the policy whose ratio PPO takes is the one the rollouts were sampled from."""
    picked, mask = response_hidden_states(model.base_model, prompts, responses, pad_id)
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("an LM head with a bias is not supported (Qwen2, Llama have none)")
    rows = picked / temperature if temperature != 1.0 else picked
    targets = torch.tensor([t for r in responses for t in r], device=picked.device)
    log_prob = scatter_rows(token_logprobs(rows, head.weight, targets, chunk_size), mask)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(torch.is_grad_enabled() and entropy_grad):
            entropy = scatter_rows(token_entropies(rows, head.weight, chunk_size), mask)
    return TokenStats(log_prob, entropy, mask)


def response_hidden_states(
    backbone: torch.nn.Module,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    pad_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's last hidden state before each response token (the one that predicts
    it), listed row by row [tokens, hidden], and the [rows, response_len] response mask."""
    device = next(backbone.parameters()).device
    lengths = [len(r) for r in responses]
    if min(lengths) < 1:
        raise ValueError("every response needs at least one token")
    width = max(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    # (row, position of the hidden state that predicts response token j)
    rows, sources = [], []
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        ids = list(prompt) + list(response)
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        rows += [row] * len(response)
        sources += range(len(prompt) - 1, len(ids) - 1)
    hidden = backbone(
        input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)
    ).last_hidden_state
    picked = hidden[torch.tensor(rows, device=device), torch.tensor(sources, device=device)]
    return picked, response_mask(lengths, device)


def scatter_rows(flat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Values listed row by row -> [rows, width] at the mask's set entries (differentiable)."""
    out = torch.zeros(mask.shape, dtype=flat.dtype, device=flat.device)
    return out.masked_scatter(mask.bool(), flat)
