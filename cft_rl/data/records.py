"""Reading raw records (dicts) from JSONL, JSON and parquet files, with located errors."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cft_rl.data.example import DataError

SUFFIXES = (".jsonl", ".json", ".parquet")


class Record:
    """One raw record and where it came from, so that every error can point at it."""

    def __init__(self, data: dict[str, Any], where: str) -> None:
        self.data = data
        self.where = where

    def get(self, field: str) -> Any:
        if field not in self.data:
            present = ", ".join(sorted(self.data)) or "none"
            raise DataError(f"{self.where}: missing field '{field}' (fields present: {present})")
        return self.data[field]

    def text(self, field: str) -> str:
        """The field as a non-empty string (numbers are accepted and written out)."""
        value = self.get(field)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise DataError(
                f"{self.where}: field '{field}' should be text, got {type(value).__name__}"
            )
        text = str(value).strip()
        if not text:
            raise DataError(f"{self.where}: field '{field}' is empty")
        return text

    def error(self, message: str) -> DataError:
        return DataError(f"{self.where}: {message}")


def read_records(path: str | Path) -> list[Record]:
    """All records of a .jsonl, .json (a list of objects) or .parquet file; never empty."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        records = list(_read_jsonl(path))
    elif path.suffix == ".json":
        records = _read_json(path)
    elif path.suffix == ".parquet":
        records = _read_parquet(path)
    else:
        raise DataError(f"{path}: unknown format (expected one of {', '.join(SUFFIXES)})")
    if not records:
        raise DataError(f"{path}: the dataset is empty")
    return records


def records_from_rows(rows: Iterable[dict[str, Any]], origin: str) -> list[Record]:
    """Records from rows already in memory (e.g. a hub dataset); errors point at the row."""
    records = [_as_record(row, f"{origin} row {i}") for i, row in enumerate(rows)]
    if not records:
        raise DataError(f"{origin}: the dataset is empty")
    return records


def _as_record(value: Any, where: str) -> Record:
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return Record(value, where)


def _read_jsonl(path: Path) -> Iterable[Record]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
            yield _as_record(value, where)


def _read_json(path: Path) -> list[Record]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno}: malformed JSON ({e.msg})") from None
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON list of objects, got {type(value).__name__}")
    return [_as_record(item, f"{path} item {i}") for i, item in enumerate(value)]


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: unreadable parquet file ({e})") from None
    return [Record(row, f"{path} row {i}") for i, row in enumerate(rows)]
