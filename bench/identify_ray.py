"""Identification on Ray: throughput with 1 and 2 replicas against the single-process engine,
side by side in one run on the toy model, and the datasets compared.

    .venv/bin/python bench/identify_ray.py [--questions 24] [--batch-size 4] [--threads 1]

Each layout runs `cft-rl identify` (recipes/toy/identify.yaml, the first --questions toy
training questions in chunks of --batch-size) into its own fresh output directory:
  local    this process, as without a `scale` section;
  ray x1   scale.backend=ray with one replica (the overhead of Ray: start, actor, transfers);
  ray x2   two replicas, each a process with its own model and verifier.
Wall time includes everything a user waits for: model loading, Ray's start, the merge.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from cft_rl.config import load_config
from cft_rl.identify.config import IdentifyConfig
from cft_rl.identify.runner import run_identify

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "identify.yaml"
LAYOUTS = {
    "local": [],
    "ray x1": ["scale.backend=ray", "scale.workers=1"],
    "ray x2": ["scale.backend=ray", "scale.workers=2"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per replica")
    args = parser.parse_args()
    seconds, tables = {}, {}
    with tempfile.TemporaryDirectory() as work:
        for name, overrides in LAYOUTS.items():
            settings = [
                f"output_dir={work}/{name.replace(' ', '')}",
                f"data.limit={args.questions}",
                f"generation.batch_size={args.batch_size}",
                f"cpu_threads={args.threads}",
                "verifier.num_workers=1",
                *overrides,
            ]
            config = load_config(IdentifyConfig, RECIPE, settings)
            start = time.perf_counter()
            tables[name] = pq.read_table(run_identify(config))
            seconds[name] = time.perf_counter() - start
    continuations = sum(
        len(alts) for alternatives in tables["local"]["alternatives"].to_pylist()
        for alts in alternatives
    )  # fmt: skip
    print(
        f"\n{args.questions} toy questions in chunks of {args.batch_size}, "
        f"{tables['local'].num_rows} kept answers, {continuations} alternatives tried; "
        f"{args.threads} torch thread(s) per replica, {os.cpu_count()} cores"
    )
    print(f"{'layout':<8} {'seconds':>8} {'questions/s':>12} {'vs local':>9}  dataset")
    for name, wall in seconds.items():
        same = "same as local" if tables[name].equals(tables["local"]) else "DIFFERS"
        print(
            f"{name:<8} {wall:8.1f} {args.questions / wall:12.2f} "
            f"{seconds['local'] / wall:8.2f}x  {same}"
        )
    overhead = seconds["ray x1"] - seconds["local"]
    ratio = seconds["ray x1"] / seconds["local"]
    print(f"Ray's overhead at 1 replica: {overhead:+.1f} s ({ratio:.2f}x the local time)")
    print(f"2 replicas / 1 replica: {seconds['ray x1'] / seconds['ray x2']:.2f}x")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average at the end (1, 5, 15 min): {load}")


if __name__ == "__main__":
    main()
