"""Per-step JSONL logs (metrics, probe, collapse events) that a resumed run rewinds."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from cft_rl.rl.entropy_monitor import JsonlTail


class StepLog:
    """An append-only JSONL file of records with an integer "step"."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record (a torn last line from a crash is left out)."""
        return [record for _, record in JsonlTail(self.path).read_new()]

    def rewind(self, step: int) -> list[dict[str, Any]]:
        """Drop records after `step` (written after the checkpoint a run resumes from), or all
        of them when `step` is 0; returns the records kept."""
        # step 0 is a fresh start: a record at step 0 (before training) is made again
        kept = [record for record in self.records() if record["step"] <= step] if step else []
        if self.path.exists():
            temporary = self.path.with_name(f".{self.path.name}.tmp")
            temporary.write_text("".join(_line(record) for record in kept))
            temporary.replace(self.path)
        return kept

    def append(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(_line(record))


def _line(record: dict[str, Any]) -> str:
    # NaN/inf are not JSON: written as null so every reader can parse the file.
    clean = {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()
    }
    return json.dumps(clean) + "\n"
