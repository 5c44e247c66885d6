"""bench/identify.py at its smallest, so the benchmark keeps running between the sessions
that time it: its decoders agree with the naive loop, and it fails when they do not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_identify_bench_runs_and_its_masks_agree():
    command = [sys.executable, str(ROOT / "bench" / "identify.py"), "--questions", "4"]
    command += ["--responses", "1", "--layouts", "shared", "--vllm-python", "", "--threads", "1"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "speed-up shared vs naive" in done.stdout
    assert "masks identical" in done.stdout and "DIFFER" not in done.stdout
    assert "greedy decode tokens/s by batch size" in done.stdout
    assert "lazy / full: generated tokens" in done.stdout


def test_differing_masks_are_reported_as_such():
    import importlib.util

    from cft_rl.identify.counterfactual import ResponseCriticality

    spec = importlib.util.spec_from_file_location("bench_identify", ROOT / "bench" / "identify.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)

    def result(mask: list[int]) -> ResponseCriticality:
        alternatives = [[{"near_tie": False}] for _ in mask]
        return ResponseCriticality(mask, [0.0] * len(mask), alternatives, {"near_ties": 0})

    assert bench.compare_masks([result([0, 1])], [result([0, 1])], "same")
    assert not bench.compare_masks([result([0, 1])], [result([1, 1])], "other")
