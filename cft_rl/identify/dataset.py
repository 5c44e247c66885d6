"""The dataset `cft-rl identify` produces and `cft-rl sft` consumes (parquet, one row per
kept answer), and the merge of shard results into it.

Columns: index (the question's place in the input), id, source, question, answer (the
reference), prompt (the templated text) and prompt_token_ids (so training needs no
re-templating), response, response_token_ids, response_tokens (each token's text),
critical_mask and failure_fraction (one per response token), num_critical, and
alternatives (per token: the substitutes tried, their log-probabilities and ranks, and
the final answers their continuations reached, and whether one of them passed a
numerical near tie). The settings and the model are in the
file's metadata (key "cft_rl.identify") and in summary.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cft_rl.identify.store import ShardFiles
from cft_rl.outputs import IDENTIFY_DATASET

METADATA_KEY = b"cft_rl.identify"

ALTERNATIVE = pa.struct(
    [
        ("token_id", pa.int64()),
        ("token", pa.string()),
        ("logprob", pa.float64()),
        ("rank", pa.int64()),
        ("answers", pa.list_(pa.string())),
        ("correct", pa.list_(pa.bool_())),
        ("near_tie", pa.bool_()),
    ]
)
SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("id", pa.string()),
        ("source", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
        ("prompt", pa.string()),
        ("prompt_token_ids", pa.list_(pa.int64())),
        ("response", pa.string()),
        ("response_token_ids", pa.list_(pa.int64())),
        ("response_tokens", pa.list_(pa.string())),
        ("critical_mask", pa.list_(pa.int8())),
        ("failure_fraction", pa.list_(pa.float64())),
        ("num_critical", pa.int64()),
        ("alternatives", pa.list_(pa.list_(ALTERNATIVE))),
    ]
)


def write_dataset(records: list[dict[str, Any]], path: Path, provenance: dict[str, Any]) -> Path:
    """Write the kept records, sorted by index, with `provenance` in the file metadata."""
    rows = [
        {name: record[name] for name in SCHEMA.names if name != "num_critical"}
        | {"num_critical": sum(record["critical_mask"])}
        for record in sorted(records, key=lambda r: r["index"])
    ]
    metadata = {METADATA_KEY: json.dumps(provenance, sort_keys=True).encode()}
    table = pa.Table.from_pylist(rows, schema=SCHEMA.with_metadata(metadata))
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temporary)
    temporary.replace(path)
    return path


def read_provenance(path: str | Path) -> dict[str, Any]:
    """The settings and model a dataset was made with."""
    metadata = pq.read_schema(path).metadata or {}
    return json.loads(metadata[METADATA_KEY]) if METADATA_KEY in metadata else {}


def load_identified(path: str | Path):
    """The dataset as a `datasets.Dataset` (path: the parquet file or the run directory)."""
    import datasets

    path = Path(path)
    if path.is_dir():
        path = path / IDENTIFY_DATASET
    return datasets.Dataset.from_parquet(str(path))


def finished_shards(out_dir: Path, expected: list[int]) -> tuple[list[ShardFiles], list[int]]:
    """All shards of a run and the indices of those not done with their `expected[i]`
    questions (a shard finished with fewer, under a lower data.limit, is not done with this
    one; one finished with more holds them as its prefix)."""
    shards = [ShardFiles(out_dir, index, len(expected)) for index in range(len(expected))]

    def done(shard: ShardFiles) -> bool:
        count = shard.done_questions()
        return count is not None and count >= expected[shard.shard_index]

    return shards, [shard.shard_index for shard in shards if not done(shard)]


def merged_records(shards: list[ShardFiles]) -> list[dict[str, Any]]:
    """Every question's result across shards, by index."""
    records: dict[int, dict[str, Any]] = {}
    for shard in shards:
        records.update(shard.results())
    return [records[index] for index in sorted(records)]
