"""What a counterfactual continuation is, whichever decoder decodes it.

A perturbation replaces response token y_t by an alternative a and asks how the model goes on
from (prompt, y_<t, a). Every decoder returns, per perturbation, the tokens generated after a,
cut right after the first complete final answer of the whole perturbed response (so the
answer a continuation commits to first is the one judged), or at EOS, or at its cap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from cft_rl.generation.stopping import answer_complete, answer_cut, is_trigger


@dataclass(frozen=True)
class Perturbation:
    """Continue the response from position `position` with `token_id` in place of y_t.
    `rollout` numbers the sampled continuations of one alternative (0 when greedy)."""

    position: int
    alternative: int
    token_id: int
    rollout: int = 0


@dataclass
class Continuation:
    """Tokens generated after the alternative. `min_margin`: the smallest gap between the
    two highest logits over the greedy steps (inf when sampled or when nothing was decoded):
    a tiny gap is a near tie that batching or padding could flip."""

    token_ids: list[int] = field(default_factory=list)
    min_margin: float = math.inf


def perturbations_of(
    positions: Sequence[int],
    alternatives: Sequence[Sequence[int]],
    rollouts: int,
) -> list[Perturbation]:
    """All perturbations of a response: each position's alternatives, `rollouts` times each."""
    return [
        Perturbation(position, index, token_id, rollout)
        for position, tokens in zip(positions, alternatives, strict=True)
        for index, token_id in enumerate(tokens)
        for rollout in range(rollouts)
    ]


def continuation_cap(position: int, max_new_tokens: int, max_continuation: int | None) -> int:
    """Tokens a continuation may generate: a fixed cap, or what is left of the original
    answer's budget after y_<t and the alternative."""
    if max_continuation is not None:
        return max_continuation
    return max(0, max_new_tokens - position - 1)


class AnswerStops:
    """Stop decisions for the perturbed responses of one original response."""

    def __init__(self, tokenizer, response_ids: Sequence[int], eos_ids: set[int]) -> None:
        self.tokenizer = tokenizer
        self.response_ids = list(response_ids)
        self.eos_ids = eos_ids
        self._trigger: dict[int, bool] = {}
        # Prefixes at least this long already hold a complete answer.
        cut = answer_cut(tokenizer, self.response_ids)
        self.complete_from = len(self.response_ids) + 1 if cut is None else cut

    def done_before_decoding(self, perturbation: Perturbation) -> bool:
        """No decoding needed: y_<t already holds a complete answer, the alternative ends
        the sequence, or the alternative completes the answer."""
        if perturbation.position >= self.complete_from or perturbation.token_id in self.eos_ids:
            return True
        return self.completes(perturbation, [])

    def completes(self, perturbation: Perturbation, generated: list[int]) -> bool:
        """Does the newest token (the last of `generated`, or the alternative) end an answer?"""
        newest = generated[-1] if generated else perturbation.token_id
        if newest not in self._trigger:
            self._trigger[newest] = is_trigger(self.tokenizer, newest)
        if not self._trigger[newest]:
            return False
        return answer_complete(self.text(perturbation, generated))

    def text(self, perturbation: Perturbation, generated: Sequence[int]) -> str:
        """The perturbed response y_<t, alternative, continuation, up to its first complete
        answer: when y_<t has one already, the alternative comes too late to count."""
        if perturbation.position >= self.complete_from:
            ids = self.response_ids[: self.complete_from]
        else:
            ids = self.response_ids[: perturbation.position] + [perturbation.token_id, *generated]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def cut(self, perturbation: Perturbation, generated: list[int]) -> list[int]:
        """`generated` cut right after the perturbed response's first complete answer and
        after EOS (for decoders that decode past it)."""
        if self.done_before_decoding(perturbation):
            return []
        for end, token_id in enumerate(generated, start=1):
            if token_id in self.eos_ids or self.completes(perturbation, generated[:end]):
                return generated[:end]
        return generated
