"""Throughput of the pooled verifier vs math-verify called serially, and worst-case latency.

    .venv/bin/python bench/verifier.py [--gsm8k PATH] [--workers 2] [--timeout 5]

Scores every GSM8K test reference written as a model would write it
("The answer is \\boxed{REF}"), three ways, side by side in one run:
  serial   extract + math-verify in this process, one item after another (no timeout);
  pooled   the Verifier with the fast path off: every item goes to a worker;
  default  the Verifier as shipped (an answer identical to the reference skips the worker).
Then scores each hostile case (reward/hostile.py) alone and prints the slowest.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from reward.extract import extract_final_answer
from reward.hostile import HOSTILE_CASES
from reward.verifier import Verifier

GSM8K_TEST = Path(__file__).resolve().parents[2] / "shared/benchmarks/gsm8k/test.jsonl"


def gsm8k_references(path: Path) -> list[str]:
    with path.open() as lines:
        return [json.loads(line)["answer"].split("####")[-1].strip() for line in lines]


def serial_items_per_s(responses: list[str], references: list[str]) -> tuple[float, int]:
    # Trusted input (the benchmark's own references), so grading in this process is safe.
    from reward.grading import grade

    start = time.perf_counter()
    correct = sum(
        grade(extract_final_answer(response) or "", reference)
        for response, reference in zip(responses, references, strict=True)
    )
    return len(responses) / (time.perf_counter() - start), correct


def pooled_items_per_s(
    pool: Verifier, responses: list[str], references: list[str]
) -> tuple[float, int, float]:
    """Items/s, correct items, and this (parent) process's CPU ms per item."""
    start, start_cpu = time.perf_counter(), time.process_time()
    verdicts = pool.verify_batch(responses, references)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    return len(responses) / wall, sum(v.correct for v in verdicts), cpu * 1000 / len(responses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gsm8k", type=Path, default=GSM8K_TEST)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()

    references = gsm8k_references(args.gsm8k)
    responses = [f"The answer is \\boxed{{{reference}}}" for reference in references]
    print(f"GSM8K test references: {len(references)} items, {args.workers} workers")
    # Other processes on the same cores slow the pool more than the serial loop.
    print(f"  load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    # Making a Verifier warms math-verify up in this process, so serial pays no first-use costs.
    with Verifier(args.workers, args.timeout, fast_path=False) as pool:
        serial, serial_correct = serial_items_per_s(responses, references)
        pooled, pooled_correct, parent_ms = pooled_items_per_s(pool, responses, references)
    with Verifier(args.workers, args.timeout) as pool:
        default, default_correct, _ = pooled_items_per_s(pool, responses, references)
    print(f"  serial math-verify:   {serial:8.1f} items/s  ({serial_correct} correct)")
    print(
        f"  pooled, via workers:  {pooled:8.1f} items/s  ({pooled_correct} correct, "
        f"parent CPU {parent_ms:.2f} ms/item)"
    )
    print(f"  pooled, default:      {default:8.1f} items/s  ({default_correct} correct)")
    print(
        f"  ratio pooled/serial:  {pooled / serial:.2f}x (default/serial {default / serial:.1f}x)"
    )

    print(f"Hostile set, timeout {args.timeout:g} s, each item alone:")
    worst = 0.0
    with Verifier(args.workers, args.timeout) as pool:
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
