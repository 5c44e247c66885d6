"""Where `cft-rl identify` keeps its work: append-only JSONL per shard, one merged dataset.

    OUT/shards/settings.json            the result-determining settings of the run
    OUT/shards/greedy-S-of-N.jsonl      the greedy answer of every question (one line each)
    OUT/shards/results-S-of-N.jsonl     one line per question when its identification is done
    OUT/shards/done-S-of-N.json         the shard's summary, written when it is complete
    OUT/critical_tokens.parquet         the merged dataset (kept answers only), sorted by index
    OUT/summary.json                    counts, time shares, provenance

Lines are flushed and fsynced one by one: a run killed at any moment (kill -9 included)
loses at most the line being written, and a rerun drops that torn line and goes on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cft_rl.files import write_text_atomic
from cft_rl.jsonl import append_records, read_repaired
from cft_rl.run_settings import check_recorded, record_settings


def settings_path(out_dir: Path) -> Path:
    return out_dir / "shards" / "settings.json"


def check_settings(out_dir: Path, settings: dict[str, Any]) -> None:
    """On a resumed run or another shard: the settings must be those of the recorded work."""
    check_recorded(settings_path(out_dir), settings)


class ShardFiles:
    """The JSONL files of one shard. Given the run's settings, the first line written also
    records them (settings.json), so a run that fails before any work leaves none."""

    def __init__(
        self,
        out_dir: str | Path,
        shard_index: int,
        num_shards: int,
        settings: dict[str, Any] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.shard_index, self.num_shards = shard_index, num_shards
        tag = shard_tag(shard_index, num_shards)
        shards = self.out_dir / "shards"
        self.greedy_path = shards / f"greedy-{tag}.jsonl"
        self.results_path = shards / f"results-{tag}.jsonl"
        self.done_path = shards / f"done-{tag}.json"

    def greedy(self) -> dict[int, dict[str, Any]]:
        return {record["index"]: record for record in read_repaired(self.greedy_path)}

    def results(self) -> dict[int, dict[str, Any]]:
        return {record["index"]: record for record in read_repaired(self.results_path)}

    def append_greedy(self, records: list[dict[str, Any]]) -> None:
        self._record_settings()
        append_records(self.greedy_path, records)

    def append_result(self, record: dict[str, Any]) -> None:
        self._record_settings()
        append_records(self.results_path, [record])

    def _record_settings(self) -> None:
        if self.settings is not None:
            record_settings(settings_path(self.out_dir), self.settings)

    def mark_done(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.done_path, json.dumps(summary, indent=2))

    def done_questions(self) -> int | None:
        """How many questions the shard's last finished run covered; None: never finished."""
        if not self.done_path.exists():
            return None
        return json.loads(self.done_path.read_text()).get("questions")


def shard_tag(shard_index: int, num_shards: int) -> str:
    return f"{shard_index:05d}-of-{num_shards:05d}"


def write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2))
