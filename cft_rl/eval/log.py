"""Per-sample generations of one benchmark: an append-only JSONL file that a rerun resumes.

Each line is one generation: {"id", "sample": "greedy" or 0..n-1, ...}. Lines are
appended and flushed as each batch is scored. A run killed mid-write leaves a torn
last line: loading cuts it off (it is generated again). Next to the file, a
`.meta.json` records the settings the generations depend on; resuming with other
settings is an error rather than a silent mix.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cft_rl.errors import UserError

GREEDY = "greedy"


class GenerationLog:
    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.meta_path = path.with_suffix(".meta.json")
        self.settings = settings
        self.records: dict[tuple[str, str | int], dict[str, Any]] = {}

    def open(self) -> GenerationLog:
        """Check the settings against an earlier run's and load its complete lines."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.meta_path.is_file():
            earlier = json.loads(self.meta_path.read_text())
            changed = {
                k: (earlier.get(k), v) for k, v in self.settings.items() if earlier.get(k) != v
            }
            if changed:
                details = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
                raise UserError(
                    f"{self.path} holds generations made with other settings ({details}); "
                    "use another output_dir or delete the file"
                )
        else:
            self.meta_path.write_text(json.dumps(self.settings, indent=2) + "\n")
        if self.path.is_file():
            self._load()
        return self

    def has(self, problem_id: str, sample: str | int) -> bool:
        return (problem_id, sample) in self.records

    def append(self, records: list[dict[str, Any]]) -> None:
        """Add records not yet present; flushed to disk before returning."""
        new = [r for r in records if not self.has(r["id"], r["sample"])]
        if not new:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            for record in new:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        for record in new:
            self.records[(record["id"], record["sample"])] = record

    def _load(self) -> None:
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        # The last element is what follows the final newline: empty, or a torn line.
        complete, tail = lines[:-1], lines[-1]
        good_bytes = len(data) - len(tail)
        for number, line in enumerate(complete, start=1):
            try:
                record = json.loads(line)
                key = (record["id"], record["sample"])
            except (ValueError, KeyError, TypeError) as err:
                if number < len(complete):
                    raise UserError(
                        f"{self.path}:{number}: not a generation record ({err})"
                    ) from None
                good_bytes -= len(line) + 1  # a torn last line that happened to end in \n
                break
            self.records.setdefault(key, record)
        if good_bytes < len(data):
            with self.path.open("r+b") as handle:
                handle.truncate(good_bytes)
