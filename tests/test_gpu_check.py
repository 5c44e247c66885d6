"""bench/gpu_check.py, the script prepared for a GPU machine, run on CPU at tiny sizes so that
it keeps working between the sessions that have a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_part_on_cpu_at_tiny_sizes(tmp_path):
    command = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out", str(tmp_path)]
    command += ["--size", "tiny", "--device", "cpu", "--wheelhouse", str(tmp_path / "none")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = report["parts"]
    assert set(parts) == {"identify", "sft", "grpo", "deepspeed"}
    assert not [name for name, part in parts.items() if "error" in part]
    identify = parts["identify"]
    assert identify["differ"] == 0 and identify["compared"] > 0 and identify["speedup"] > 0
    assert all(parts["sft"][mode]["step_s"] > 0 for mode in ("sft_full", "cft", "trl"))
    assert len(parts["grpo"]["steps"]) == 3
    assert "model.safetensors" in parts["deepspeed"]["export"]
    table = (tmp_path / "gpu_check.md").read_text()
    assert all(f"| {name} |" in table for name in parts)
