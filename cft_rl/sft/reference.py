"""Per-token log-probabilities of the training data under a fixed reference model (Rho-1)."""

from __future__ import annotations

import torch

from cft_rl.config import ModelSpec
from cft_rl.modeling import load_causal_lm
from cft_rl.sft.fields import collate
from cft_rl.sft.model import final_hidden_states, lm_head_weight
from cft_rl.token_logprobs import token_statistics

BATCH_SIZE = 8


@torch.no_grad()
def reference_logprobs(
    spec: ModelSpec, items: list[dict[str, torch.Tensor]], chunk_size: int
) -> list[torch.Tensor]:
    """For each example, log p_ref(token_t | tokens_<t) at every position t (0 at t = 0),
    taken on the response tokens only (the only ones a loss trains on)."""
    model = load_causal_lm(spec)
    device = next(model.parameters()).device
    results = []
    for start in range(0, len(items), BATCH_SIZE):
        group = items[start : start + BATCH_SIZE]
        batch = {key: value.to(device) for key, value in collate(group).items()}
        hidden = final_hidden_states(model, batch)
        picked = batch["response_mask"][:, 1:].bool() & batch["attention_mask"][:, 1:].bool()
        logprobs, _ = token_statistics(
            hidden[:, :-1][picked],
            lm_head_weight(model),
            batch["input_ids"][:, 1:][picked],
            chunk_size,
        )
        full = torch.zeros(picked.shape, dtype=torch.float32, device=device)
        full[picked] = logprobs.float()
        for row, item in enumerate(group):
            length = item["input_ids"].shape[0]
            results.append(torch.cat([full.new_zeros(1), full[row, : length - 1]]).cpu())
    return results
