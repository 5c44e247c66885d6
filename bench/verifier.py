"""Throughput of the pooled verifier vs math-verify called serially, and worst-case latency.

    .venv/bin/python bench/verifier.py [--gsm8k PATH] [--workers 2] [--timeout 5]

On the GSM8K test references, side by side in one run:
  1. each reference as a model would write it ("The answer is \\boxed{REF}"):
     math-verify called serially (its own extraction and timeouts) vs the Verifier;
  2. each reference written differently ("\\boxed{\\frac{2N}{2}}"), so that every item
     needs math-verify: grading serially in this process vs the Verifier's workers.
Then scores each hostile case (tests/hostile_cases.py) alone and prints the slowest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from reward.extract import extract_answer_parts
from reward.verifier import Verifier

# The hostile cases are test data (tests/hostile_cases.py), shared with the verifier's tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hostile_cases import HOSTILE_CASES  # noqa: E402

GSM8K_TEST = Path(__file__).resolve().parents[2] / "shared/benchmarks/gsm8k/test.jsonl"


def gsm8k_references(path: Path) -> list[str]:
    with path.open() as lines:
        return [json.loads(line)["answer"].split("####")[-1].strip() for line in lines]


class Rate(NamedTuple):
    items_per_s: float
    correct: int
    parent_cpu_ms: float  # per item, in this process

    def __str__(self) -> str:
        return (
            f"{self.items_per_s:8.1f} items/s ({self.correct} correct, "
            f"this process {self.parent_cpu_ms:.2f} ms CPU/item)"
        )


def measure(score_all: Callable[[], list[bool]]) -> Rate:
    start, start_cpu = time.perf_counter(), time.process_time()
    verdicts = score_all()
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return Rate(len(verdicts) / wall, sum(verdicts), cpu * 1000 / len(verdicts))


def serially(score: Callable[[str, str], bool], responses: list[str], refs: list[str]) -> Rate:
    return measure(
        lambda: [score(response, ref) for response, ref in zip(responses, refs, strict=True)]
    )


def pooled(pool: Verifier, responses: list[str], refs: list[str]) -> Rate:
    return measure(lambda: [v.correct for v in pool.verify_batch(responses, refs)])


def raw_math_verify(response: str, reference: str) -> bool:
    # Trusted input (the benchmark's own references): safe to parse in this process.
    from math_verify import parse, verify

    return verify(parse(f"${reference}$"), parse(response))


def in_process_grade(response: str, reference: str) -> bool:
    from reward.grading import grade_answer

    return grade_answer(extract_answer_parts(response), reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", type=Path, default=GSM8K_TEST)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()

    refs = gsm8k_references(args.gsm8k)
    as_written = [f"The answer is \\boxed{{{ref}}}" for ref in refs]
    rewritten = [
        f"The answer is \\boxed{{\\frac{{{2 * int(ref.replace(',', ''))}}}{{2}}}}" for ref in refs
    ]
    print(f"GSM8K test references: {len(refs)} items, {args.workers} workers")
    # Other processes on the same cores slow the pool more than the serial loop.
    print(f"  load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    # Making a Verifier warms math-verify up in this process, so serial pays no first-use costs.
    with Verifier(args.workers, args.timeout) as pool:
        for title, responses, serial_name, serial_score in [
            ('"The answer is \\boxed{REF}"', as_written, "math-verify", raw_math_verify),
            ('"The answer is \\boxed{\\frac{2N}{2}}"', rewritten, "grade()", in_process_grade),
        ]:
            serial = serially(serial_score, responses, refs)
            pool_rate = pooled(pool, responses, refs)
            print(title)
            print(f"  {serial_name + ', serial:':22s}{serial}")
            print(f"  {'Verifier:':22s}{pool_rate}")
            print(f"  ratio Verifier/serial: {pool_rate.items_per_s / serial.items_per_s:.2f}x")

        print(f"Hostile set, timeout {args.timeout:g} s, each item alone:")
        worst = 0.0
        for case in HOSTILE_CASES:
            start = time.perf_counter()
            verdict = pool.verify(case.response, case.reference)
            latency = time.perf_counter() - start
            worst = max(worst, latency)
            print(f"  {case.name:34s} {verdict.reason:9s} {latency:6.2f} s")
        after = pool.verify("The answer is \\boxed{3/6}", "\\frac{1}{2}")
    print(f"  worst-case latency:   {worst:.2f} s ({worst - args.timeout:+.2f} s over the timeout)")
    print(f"  pool still works afterwards: {after.reason}")


if __name__ == "__main__":
    main()
