"""Per-sample generations of one benchmark: an append-only JSONL file that a rerun resumes.

Each line is one generation: {"id", "sample": "greedy" or 0..n-1, ...}. Lines are
appended and flushed as each batch is scored. A run killed mid-write leaves a torn
last line: loading cuts it off (it is generated again). Next to the file, a
`.meta.json` records the settings the generations depend on; resuming with other
settings is an error rather than a silent mix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cft_rl.errors import UserError
from cft_rl.jsonl import append_records, read_repaired
from cft_rl.run_settings import check_recorded, record_settings

GREEDY = "greedy"


class GenerationLog:
    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path = path
        self.meta_path = path.with_suffix(".meta.json")
        self.settings = settings
        self.records: dict[tuple[str, str | int], dict[str, Any]] = {}

    def open(self) -> GenerationLog:
        """Check the settings against an earlier run's and load its complete lines."""
        check_recorded(self.meta_path, self.settings)
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
        record_settings(self.meta_path, self.settings)
        append_records(self.path, new)
        for record in new:
            self.records[(record["id"], record["sample"])] = record

    def _load(self) -> None:
        for number, record in enumerate(read_repaired(self.path), start=1):
            if not isinstance(record, dict) or not {"id", "sample"} <= set(record):
                raise UserError(f"{self.path}: record {number} is not a generation record")
            self.records.setdefault((record["id"], record["sample"]), record)
