"""The verifier against a human grader's verdicts on model-style responses
(tests/verifier_cases.py): the bar docs/verifier.md reports, held in CI."""

from __future__ import annotations

import sys
from pathlib import Path

from verifier_cases import CASES

# The scoring is bench/verifier_agreement.py's, so the test holds what the docs print.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from verifier_agreement import agreement_by_kind, score_cases  # noqa: E402


def test_the_verifier_agrees_with_the_expected_verdicts():
    table = agreement_by_kind(score_cases(CASES))
    cases, verifier_agrees, math_verify_agrees = table["all"]
    assert cases >= 150
    assert verifier_agrees / cases >= 0.97
    # Answers in several boxes: at least as often right as math-verify alone.
    _, ours, theirs = table["several boxes"]
    assert ours >= theirs
    # Every class is in the set.
    assert len(table) - 1 == len({case.kind for case in CASES}) >= 10
