"""Which tokens replace y_t: the model's next most likely tokens at each response position."""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import torch

# How many candidates beyond the needed ones are ranked, so that "next" can step over
# excluded tokens without a second pass over the vocabulary.
EXTRA_CANDIDATES = 16


@dataclass(frozen=True)
class Alternative:
    """One substitute for y_t: its token, its log-probability under the model, its rank
    among all tokens (0 = most likely)."""

    token_id: int
    logprob: float
    rank: int


def rank_candidates(logits: torch.Tensor, depth: int) -> tuple[list[list[int]], list[list[float]]]:
    """Per row of `logits` [positions, vocab], the `depth` most likely token ids and their
    log-probabilities, most likely first; equal logits are ordered by lower token id."""
    logprobs = logits.float().log_softmax(-1)
    depth = min(depth, logprobs.shape[-1])
    values, ids = logprobs.topk(depth, dim=-1)
    # topk does not promise an order among equal values: make ties deterministic.
    ids_list, values_list = [], []
    for row_ids, row_values in zip(ids.tolist(), values.tolist(), strict=True):
        ranked = sorted(zip(row_ids, row_values, strict=True), key=lambda pair: (-pair[1], pair[0]))
        ids_list.append([token_id for token_id, _ in ranked])
        values_list.append([value for _, value in ranked])
    return ids_list, values_list


def choose_alternatives(
    chosen: int,
    candidate_ids: Sequence[int],
    candidate_logprobs: Sequence[float],
    num_alternatives: int,
    excluded_ids: Collection[int],
    policy: str,
) -> list[Alternative]:
    """The alternatives to y_t = `chosen` from the ranked candidates of its position.

    The response token itself is never an alternative (it is usually rank 0; after a
    numerical near tie it may not be, and then the paper's "top-3 minus y_t" still holds).
    policy "next": skip excluded tokens and take the next allowed ones, up to
    num_alternatives; "fewer": only the allowed ones among the top num_alternatives
    tokens other than y_t.
    """
    others = [
        Alternative(token_id, logprob, rank)
        for rank, (token_id, logprob) in enumerate(
            zip(candidate_ids, candidate_logprobs, strict=True)
        )
        if token_id != chosen
    ]
    if policy == "fewer":
        others = others[:num_alternatives]
    allowed = [alt for alt in others if alt.token_id not in excluded_ids]
    return allowed[:num_alternatives]


def negligible(alternatives: Sequence[Alternative], min_prob: float) -> bool:
    """Whether the alternatives together are too unlikely to test (min_prob 0: never)."""
    if min_prob <= 0:
        return False
    return sum(math.exp(alt.logprob) for alt in alternatives) < min_prob


def candidate_depth(num_alternatives: int) -> int:
    """Candidates to rank per position: y_t, the alternatives, and room to skip exclusions."""
    return num_alternatives + 1 + EXTRA_CANDIDATES
