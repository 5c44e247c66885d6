"""Integration check of the benchmark files and the verifier on their reference answers.

    python -m cft_rl.data.check [--root ../shared/benchmarks] [--markdown docs/x.md]

For each benchmark found under the root: the count and three examples. Then every reference
answer is written as a model would write it ("The answer is \\boxed{REF}.") and scored by the
pooled verifier against the reference; the table shows how often it is scored correct, and the
failures are listed grouped by cause. The verifier's text fast path is off, so every item goes
through extraction and `reward.grading.grade` in the worker processes.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from cft_rl.data.example import Example
from cft_rl.data.registry import BENCHMARKS, FileBenchmark, default_root, load_benchmark
from reward import Verifier

_PROSE = re.compile(r"(?:\b[A-Za-z]{2,}\b[ ,;:.]+){3}")


@dataclass(frozen=True)
class Failure:
    benchmark: str
    example_id: str
    cause: str
    reference: str
    predicted: str | None


def model_response(reference: str) -> str:
    return f"The answer is \\boxed{{{reference}}}."


def failure_cause(reason: str, predicted: str | None, reference: str) -> str:
    """Why a reference was not scored correct, in a few words."""
    if reason != "wrong":
        return {"no_answer": "no answer extracted"}.get(reason, reason)
    if predicted != reference:
        return "extraction changed the answer"
    if _PROSE.search(reference):
        return "prose answer"
    return "math-verify rejects the answer against itself"


def score_references(
    examples: dict[str, list[Example]], workers: int, timeout_s: float
) -> tuple[dict[str, dict[str, int]], list[Failure], float]:
    """Per-benchmark reason counts, the failures, and the seconds the verifier took."""
    items = [(name, e) for name, exs in examples.items() for e in exs]
    start = time.perf_counter()
    with Verifier(num_workers=workers, timeout_s=timeout_s, fast_path=False) as verifier:
        verdicts = verifier.verify_batch(
            [model_response(e.answer) for _, e in items],
            [e.answer for _, e in items],
            [e.choices for _, e in items],
        )
    seconds = time.perf_counter() - start
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    failures = []
    for (name, example), verdict in zip(items, verdicts, strict=True):
        counts[name][verdict.reason] += 1
        if not verdict.correct:
            cause = failure_cause(verdict.reason, verdict.predicted, example.answer)
            failures.append(Failure(name, example.id, cause, example.answer, verdict.predicted))
    return counts, failures, seconds


def agreement_table(counts: dict[str, dict[str, int]]) -> list[str]:
    reasons = ("wrong", "no_answer", "timeout", "error")
    header = "| benchmark | items | correct | % | " + " | ".join(reasons) + " |"
    lines = [header, "|" + "---|" * (4 + len(reasons))]
    total: dict[str, int] = defaultdict(int)
    for name, by_reason in [*counts.items(), ("**all**", None)]:
        row = by_reason if by_reason is not None else total
        items = sum(row.values())
        if by_reason is not None:
            for reason, n in by_reason.items():
                total[reason] += n
        percent = 100 * row.get("correct", 0) / items
        cells = [name, items, row.get("correct", 0), f"{percent:.2f}"]
        cells += [row.get(reason, 0) for reason in reasons]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return lines


def failures_by_cause(failures: list[Failure], shown: int) -> list[str]:
    grouped: dict[str, list[Failure]] = defaultdict(list)
    for failure in failures:
        grouped[failure.cause].append(failure)
    lines = []
    for cause, group in sorted(grouped.items(), key=lambda kv: -len(kv[1])):
        per_benchmark = defaultdict(int)
        for failure in group:
            per_benchmark[failure.benchmark] += 1
        where = ", ".join(f"{name} {n}" for name, n in sorted(per_benchmark.items()))
        lines.append(f"- **{cause}**: {len(group)} ({where})")
        for failure in group[:shown]:
            lines.append(
                f"  - `{failure.example_id}`: reference `{_clip(failure.reference)}`, "
                f"extracted `{_clip(failure.predicted)}`"
            )
    return lines or ["- none"]


def _clip(text: str | None, width: int = 90) -> str:
    if text is None:
        return "None"
    text = " ".join(text.split()).replace("`", "'")
    return text if len(text) <= width else text[: width - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(default_root()), help="benchmark directory")
    parser.add_argument("--benchmarks", help="comma-separated names (default: all found)")
    parser.add_argument("--workers", type=int, default=2, help="verifier worker processes")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per item")
    parser.add_argument("--shown", type=int, default=5, help="failures shown per cause")
    parser.add_argument("--markdown", help="also write the table and failures to this file")
    args = parser.parse_args(argv)

    root = Path(args.root)
    file_benchmarks = [n for n, b in BENCHMARKS.items() if isinstance(b, FileBenchmark)]
    found = [name for name in file_benchmarks if (root / name).is_dir()]
    names = args.benchmarks.split(",") if args.benchmarks else found
    missing = [] if args.benchmarks else sorted(set(file_benchmarks) - set(found))
    examples = {}
    for name in names:
        examples[name] = load_benchmark(name, root=root)
        print(f"== {name}: {len(examples[name])} examples")
        for example in examples[name][:3]:
            print(f"   {_clip(example.question, 70):70s} -> {_clip(example.answer, 40)}")
    if missing:
        print(f"(not under {root}: {', '.join(missing)})")

    counts, failures, seconds = score_references(examples, args.workers, args.timeout)
    items = sum(len(exs) for exs in examples.values())
    report = [
        *agreement_table(counts),
        "",
        f"{items} items in {seconds:.0f} s ({args.workers} workers, {args.timeout:g} s timeout)",
        "",
        "Failures by cause:",
        "",
        *failures_by_cause(failures, args.shown),
    ]
    print("\n" + "\n".join(report))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(report) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
