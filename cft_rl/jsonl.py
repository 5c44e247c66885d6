"""JSONL logs that runs append to as they go: read back past a torn last line, tailed while
they grow, and rewound by a resumed run. Every stage and report reads them through here."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from cft_rl.errors import UserError

# The per-step logs runs write and reports read: every run's metrics (sft, grpo with either
# engine, the toy build), validation results (sft, grpo), the GRPO entropy probe and the
# entropy monitor's collapse events.
METRICS = "metrics.jsonl"
VALIDATION = "validation.jsonl"
PROBE = "probe.jsonl"
EVENTS = "collapse_events.jsonl"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a JSONL file; missing: none; a torn last line is left out."""
    return [record for _, record in JsonlTail(path).read_new()]


def read_repaired(path: Path) -> list[dict[str, Any]]:
    """The records of `path` (none if it does not exist), for a run about to append to it:
    bytes after the last newline are a line torn by a kill mid-write and are cut off the
    file. A bad complete line is an error naming it."""
    if not path.exists():
        return []
    data = path.read_bytes()
    complete = data.rfind(b"\n") + 1
    records = []
    for number, line in enumerate(data[:complete].split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            raise UserError(f"{path}:{number}: not a JSON record ({err})") from None
    if complete < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(complete)
    return records


def append_records(path: Path, records: list[dict[str, Any]]) -> None:
    """Append `records`, one line each, flushed to disk before returning."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


class JsonlTail:
    """Reads the JSON records appended to a file since the previous call.

    A last line without its newline is still being written: it is kept back until complete.
    A missing file reads as empty (the run has not started logging); a file that was replaced
    or truncated (verl reopens its log with "wb" when a run restarts) is read from the start.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._inode: int | None = None
        self._partial = b""
        self._line_no = 0

    def read_new(self) -> list[tuple[int, dict[str, Any]]]:
        """New complete records as (line number, record)."""
        try:
            with self.path.open("rb") as handle:
                stat = os.fstat(handle.fileno())
                if stat.st_ino != self._inode or stat.st_size < self._offset:
                    self._offset, self._inode, self._partial, self._line_no = 0, stat.st_ino, b"", 0
                handle.seek(self._offset)
                chunk = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        records = []
        for line in lines:
            self._line_no += 1
            if line.strip():
                records.append((self._line_no, self._parse(line)))
        return records

    def _parse(self, line: bytes) -> dict[str, Any]:
        where = f"{self.path}:{self._line_no}"
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{where}: not a JSON record: {err}") from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
        return record


class StepLog:
    """An append-only JSONL file of records with an integer "step"."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record (a torn last line from a crash is left out)."""
        return read_records(self.path)

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
