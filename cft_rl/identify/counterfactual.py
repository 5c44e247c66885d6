"""Critical tokens of one verified response, by counterfactual perturbation.

Position t is critical iff the continuations from its alternatives fail (end in a wrong
answer or none) in at least `failure_threshold` of cases; with greedy continuations and
the default threshold 1.0 that is the paper's "every alternative leads to a wrong answer".
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from cft_rl.identify.alternatives import (
    Alternative,
    candidate_depth,
    choose_alternatives,
    negligible,
)
from cft_rl.identify.config import CounterfactualSettings
from cft_rl.identify.decoders import DecoderStats, Ranked
from cft_rl.identify.perturbations import (
    AnswerStops,
    Continuation,
    Perturbation,
    continuation_cap,
    perturbations_of,
)
from reward import Verifier
from reward.choice import Choices
from reward.extract import extract_answer_parts, joined


class Decoder(Protocol):
    stats: DecoderStats

    def rank(
        self, prompt_ids: Sequence[int], response_ids: Sequence[int], depth: int
    ) -> Ranked: ...

    def decode(
        self,
        ranked: Ranked,
        perturbations: Sequence[Perturbation],
        caps: Sequence[int],
        stops: AnswerStops,
    ) -> list[Continuation]: ...


@dataclass
class ResponseCriticality:
    """Per response position: the 0/1 mask, the failure fraction and what was tried."""

    critical_mask: list[int]
    failure_fraction: list[float]
    # Per position, per alternative: token, probability, and its continuations' answers.
    alternatives: list[list[dict[str, Any]]]
    stats: dict[str, float] = field(default_factory=dict)


def identify_response(
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    reference: str,
    *,
    decoder: Decoder,
    verifier: Verifier,
    tokenizer,
    settings: CounterfactualSettings,
    max_new_tokens: int,
    excluded_ids: Collection[int],
    eos_ids: set[int],
    near_tie_margin: float = 0.0,
    choices: Choices | None = None,
) -> ResponseCriticality:
    """Perturb every position of `response_ids` and judge its continuations against
    `reference` (and `choices`, for a multiple-choice question)."""
    response = list(response_ids)
    ranked = decoder.rank(prompt_ids, response, candidate_depth(settings.num_alternatives))
    chosen = [
        choose_alternatives(
            response[t],
            ranked.candidate_ids[t],
            ranked.candidate_logprobs[t],
            settings.num_alternatives,
            excluded_ids,
            settings.excluded,
        )
        for t in range(len(response))
    ]
    chosen = [[] if negligible(alts, settings.min_alternative_prob) else alts for alts in chosen]
    rollouts = 1 if settings.continuation == "greedy" else settings.num_rollouts
    every = perturbations_of(
        range(len(response)), [[alt.token_id for alt in alts] for alts in chosen], rollouts
    )
    stops = AnswerStops(tokenizer, response, eos_ids)
    # full: one round holding every perturbation. lazy: round k holds the k-th alternative
    # of the positions whose earlier alternatives all failed.
    rounds = settings.num_alternatives if settings.decide == "lazy" else 1
    perturbations, continuations, correct, answers = [], [], [], []
    verify_s = 0.0
    settled: set[int] = set()  # positions where a continuation reached the right answer
    for round_index in range(rounds):
        batch = [
            p
            for p in every
            if p.position not in settled and (rounds == 1 or p.alternative == round_index)
        ]
        if not batch:
            break
        caps = [
            continuation_cap(p.position, max_new_tokens, settings.max_continuation_tokens)
            for p in batch
        ]
        decoded = decoder.decode(ranked, batch, caps, stops)
        start = time.perf_counter()
        texts = [stops.text(p, c.token_ids) for p, c in zip(batch, decoded, strict=True)]
        parts = [extract_answer_parts(text, verifier.last_number_fallback) for text in texts]
        verdicts = _judge(texts, parts, reference, choices, verifier)
        verify_s += time.perf_counter() - start
        settled |= {p.position for p, ok in zip(batch, verdicts, strict=True) if ok}
        perturbations += batch
        continuations += decoded
        correct += verdicts
        answers += [joined(p) or None for p in parts]

    failures = [0] * len(response)
    tried = [0] * len(response)
    for perturbation, ok in zip(perturbations, correct, strict=True):
        tried[perturbation.position] += 1
        failures[perturbation.position] += not ok
    failure_fraction = [f / n if n else 0.0 for f, n in zip(failures, tried, strict=True)]
    # failures >= threshold * tried, in integers where it matters (threshold 1: all failed).
    mask = [
        int(n > 0 and f >= settings.failure_threshold * n - 1e-9)
        for f, n in zip(failures, tried, strict=True)
    ]
    return ResponseCriticality(
        critical_mask=mask,
        failure_fraction=failure_fraction,
        alternatives=_audit(
            tokenizer,
            chosen,
            perturbations,
            answers,
            correct,
            [c.min_margin < near_tie_margin for c in continuations],
        ),
        stats={
            "verify_s": verify_s,
            "continuations": len(perturbations),
            "near_ties": sum(c.min_margin < near_tie_margin for c in continuations),
            "greedy_mismatches": sum(
                ids[0] != token for ids, token in zip(ranked.candidate_ids, response, strict=True)
            ),
        },
    )


def _judge(
    texts: list[str],
    answers: list[tuple[str, ...]],
    reference: str,
    choices: Choices | None,
    verifier: Verifier,
) -> list[bool]:
    """Verdict per continuation. A verdict depends only on the extracted answer (its
    parts), so each distinct answer is verified once, on the first text that gives it:
    thousands of checks become a handful."""
    first_text = {}
    for text, answer in zip(texts, answers, strict=True):
        if answer:
            first_text.setdefault(answer, text)
    n = len(first_text)
    verdicts = verifier.verify_batch(list(first_text.values()), [reference] * n, [choices] * n)
    is_correct = {answer: v.correct for answer, v in zip(first_text, verdicts, strict=True)}
    return [bool(answer) and is_correct[answer] for answer in answers]


def _audit(
    tokenizer,
    chosen: list[list[Alternative]],
    perturbations: list[Perturbation],
    answers: list[str | None],
    correct: list[bool],
    near_ties: list[bool],
) -> list[list[dict[str, Any]]]:
    """What each alternative led to, for inspection; near_tie: one of its continuations
    passed a greedy step whose top two logits nearly tied."""
    tried = [
        [
            {
                "token_id": alt.token_id,
                "token": tokenizer.decode([alt.token_id]),
                "logprob": alt.logprob,
                "rank": alt.rank,
                "answers": [],
                "correct": [],
                "near_tie": False,
            }
            for alt in alts
        ]
        for alts in chosen
    ]
    for perturbation, answer, ok, tie in zip(
        perturbations, answers, correct, near_ties, strict=True
    ):
        entry = tried[perturbation.position][perturbation.alternative]
        entry["answers"].append(answer)
        entry["correct"].append(ok)
        entry["near_tie"] |= tie
    return tried
