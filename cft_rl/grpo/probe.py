"""Entropy probe: the policy's token entropy on fixed CFT responses, at critical and other tokens.

The probe set is the dataset of `cft-rl identify` (prompt and response token ids and the
critical mask per response token). Teacher-forcing those responses through the current
policy and splitting the entropy by the mask shows whether RL keeps the diversity that CFT
preserved, and where: at the few tokens that decide the answer, or everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cft_rl.data import DataError
from cft_rl.grpo.algos import masked_sum
from cft_rl.grpo.sequences import pad_rows, token_stats
from cft_rl.outputs import IDENTIFY_DATASET

COLUMNS = ("prompt_token_ids", "response_token_ids", "critical_mask")


@dataclass
class ProbeSet:
    prompts: list[list[int]]
    responses: list[list[int]]
    critical: list[list[int]]


def load_probe_set(path: str | Path, limit: int | None) -> ProbeSet:
    """The first `limit` responses of an identify dataset (its parquet or its output dir)."""
    import pyarrow.parquet as pq

    path = Path(path)
    if path.is_dir():
        path = path / IDENTIFY_DATASET
    if not path.is_file():
        raise DataError(f"probe.path: {path} not found (the output of `cft-rl identify`)")
    schema = pq.read_schema(path)
    missing = [c for c in COLUMNS if c not in schema.names]
    if missing:
        raise DataError(f"{path}: not an identify dataset, columns {missing} are missing")
    table = pq.read_table(path, columns=list(COLUMNS))
    if limit is not None:
        table = table.slice(0, limit)
    rows = table.to_pydict()
    probe = ProbeSet(rows["prompt_token_ids"], rows["response_token_ids"], rows["critical_mask"])
    for index, (response, mask) in enumerate(zip(probe.responses, probe.critical, strict=True)):
        if len(response) != len(mask) or not response:
            raise DataError(
                f"{path}: row {index} has {len(response)} response tokens and "
                f"{len(mask)} critical-mask entries"
            )
    if not probe.responses:
        raise DataError(f"{path}: the probe set is empty")
    return probe


@torch.no_grad()
def probe_entropy(
    model: torch.nn.Module, probe: ProbeSet, pad_id: int, micro_batch_size: int
) -> dict[str, Any]:
    """Mean token entropy (nats, temperature 1) over critical, non-critical and all positions."""
    device = next(model.parameters()).device
    sums = {"critical": 0.0, "noncritical": 0.0}
    counts = {"critical": 0, "noncritical": 0}
    for start in range(0, len(probe.responses), micro_batch_size):
        end = start + micro_batch_size
        stats = token_stats(
            model, probe.prompts[start:end], probe.responses[start:end], pad_id, with_entropy=True
        )
        critical = pad_rows([torch.tensor(m, device=device) for m in probe.critical[start:end]])
        critical = critical.bool() & stats.response_mask.bool()
        other = stats.response_mask.bool() & ~critical
        for name, mask in (("critical", critical), ("noncritical", other)):
            sums[name] += float(masked_sum(stats.entropy, mask))
            counts[name] += int(mask.sum())
    total = counts["critical"] + counts["noncritical"]
    return {
        "entropy_critical": sums["critical"] / counts["critical"] if counts["critical"] else None,
        "entropy_noncritical": (
            sums["noncritical"] / counts["noncritical"] if counts["noncritical"] else None
        ),
        "entropy_all": (sums["critical"] + sums["noncritical"]) / total,
        "critical_tokens": counts["critical"],
        "noncritical_tokens": counts["noncritical"],
    }
