"""How often the verifier and plain math-verify agree with a human grader's verdicts.

    .venv/bin/python bench/verifier_agreement.py [--markdown docs/results/verifier_agreement.md]

On the cases of tests/verifier_cases.py (CASES, then the HELD_OUT cases written after the
rules were settled), side by side in one run:
  - reward.Verifier (the project's extraction and grading, default settings);
  - plain math-verify: `verify(parse("$REF$"), parse(RESPONSE))` with its LaTeX and
    expression extraction, and its letter extraction (StringExtractionConfig) added for
    the multiple-choice class, as a user of math-verify would set it up.
Prints the agreement by class and every case where either disagrees with the expected
verdict.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

from math_verify import (
    ExprExtractionConfig,
    LatexExtractionConfig,
    StringExtractionConfig,
    parse,
    verify,
)

from reward import Verifier

# The cases are test data (tests/verifier_cases.py), shared with the agreement test.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from verifier_cases import CASES, HELD_OUT, Case  # noqa: E402


class Scored(NamedTuple):
    case: Case
    verifier: bool
    math_verify: bool


def math_verify_alone(case: Case) -> bool:
    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    if case.choices:
        configs = [StringExtractionConfig(), *configs]
    gold = parse(f"${case.reference}$", extraction_config=configs)
    predicted = parse(case.response, extraction_config=configs)
    return bool(gold and predicted and verify(gold, predicted))


def score_cases(cases: list[Case]) -> list[Scored]:
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    with Verifier(num_workers=2) as verifier:
        verdicts = verifier.verify_batch(
            [c.response for c in cases], [c.reference for c in cases], [c.choices for c in cases]
        )
    return [
        Scored(case, verdict.correct, math_verify_alone(case))
        for case, verdict in zip(cases, verdicts, strict=True)
    ]


def agreement_by_kind(scored: list[Scored]) -> dict[str, tuple[int, int, int]]:
    """kind -> (cases, verifier agrees, math-verify agrees); "all" last."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in scored:
        for kind in (s.case.kind,):
            row = counts[kind]
            row[0] += 1
            row[1] += s.verifier == s.case.expected
            row[2] += s.math_verify == s.case.expected
    counts["all"] = [sum(row[i] for row in counts.values()) for i in range(3)]
    return {kind: tuple(row) for kind, row in counts.items()}


def markdown(scored: list[Scored]) -> list[str]:
    lines = [
        "| class | cases | verifier agrees | % | math-verify agrees | % |",
        "|---|---|---|---|---|---|",
    ]
    for kind, (n, ours, theirs) in agreement_by_kind(scored).items():
        name = f"**{kind}**" if kind == "all" else kind
        cells = [name, n, ours, f"{100 * ours / n:.1f}", theirs, f"{100 * theirs / n:.1f}"]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", "Cases where either disagrees with the expected verdict:", ""]
    lines += ["| class | response | reference | expected | verifier | math-verify |"]
    lines += ["|---|---|---|---|---|---|"]
    for s in scored:
        if s.verifier != s.case.expected or s.math_verify != s.case.expected:
            response = s.case.response.replace("\n", " ").replace("|", "\\|")
            response = response if len(response) <= 90 else response[:40] + " ... " + response[-45:]
            cells = [s.case.kind, f"`{response}`", f"`{s.case.reference}`"]
            cells += [_mark(v) for v in (s.case.expected, s.verifier, s.math_verify)]
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def _mark(correct: bool) -> str:
    return "correct" if correct else "wrong"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", type=Path, help="also write the tables to this file")
    args = parser.parse_args()
    lines = [f"## The {len(CASES)} cases", "", *markdown(score_cases(CASES)), ""]
    lines += [f"## The {len(HELD_OUT)} cases written after the rules", ""]
    lines += markdown(score_cases(HELD_OUT))
    print("\n".join(lines))
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
