"""Attention each response token receives, for the `attention_topk` baseline of the paper.

The paper lists attention-selected tokens among its baselines without saying how they were
chosen. Ours: a token's score is the attention it receives from the tokens after it, summed
over those queries (the accumulated attention that H2O's "heavy hitters" are ranked by) and
averaged over every layer and head. No head or layer is singled out because nothing tells
which one matters for a model we have not inspected; the average is the choice without a
free parameter. Queries are every later position of the sequence, so the prompt's tokens
take no part (they come first) and a token early in the response has more queries to
collect attention from: that bias is part of the criterion, as it is of H2O's.

The scores come from the model being fine-tuned, before training (config.model), once per
example, like the critical masks come from the base model.
"""

from __future__ import annotations

import torch

from cft_rl.config import ModelSpec
from cft_rl.modeling import load_causal_lm
from cft_rl.sft.fields import Fields, collate

BATCH_SIZE = 8


@torch.no_grad()
def attention_received(spec: ModelSpec, items: list[Fields]) -> list[torch.Tensor]:
    """For each example, at every position j: the attention token j receives from the later
    positions, summed over them, averaged over layers and heads; 0 off the response."""
    # Only eager attention returns its weights.
    model = load_causal_lm(spec, attn_implementation="eager")
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(items), BATCH_SIZE):
        group = items[start : start + BATCH_SIZE]
        batch = {key: value.to(device) for key, value in collate(group).items()}
        output = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            output_attentions=True,
        )
        scores = received_from_later_queries(output.attentions, batch["attention_mask"])
        scores = scores * batch["response_mask"]
        for row, item in enumerate(group):
            results.append(scores[row, : item["input_ids"].shape[0]].float().cpu())
    return results


def received_from_later_queries(
    attentions: tuple[torch.Tensor, ...], attention_mask: torch.Tensor
) -> torch.Tensor:
    """[batch, seq]: for key j, sum over real queries i > j of the attention weight i -> j,
    averaged over layers and heads. `attentions`: per layer [batch, heads, query, key]."""
    mean = torch.stack([layer.float() for layer in attentions]).mean(dim=(0, 2))
    seq = attention_mask.shape[1]
    later = torch.ones(seq, seq, dtype=torch.bool, device=mean.device).tril(diagonal=-1)
    real_queries = attention_mask.bool()[:, :, None]
    return (mean * (later & real_queries)).sum(dim=1)
