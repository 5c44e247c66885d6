"""Resumable checkpoint directories of `cft-rl sft` and `cft-rl grpo` (and the settings
comparison that identify and the toy build use too).

    OUT/checkpoints/step_000040/                 one checkpoint; what it holds is the trainer's
    OUT/checkpoints/step_000040/trainer_state.json   step and settings: the marker, written last
    OUT/hf_model/                                the newest Hugging Face export

A checkpoint is written under `.tmp-step_NNNNNN`, its marker last, and renamed into place.
Only step_* directories that hold the marker count, so a crash at any moment leaves the
previous checkpoint as the newest valid one; leftovers are removed by the next commit.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CHECKPOINTS = "checkpoints"
MARKER = "trainer_state.json"
_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"{_PREFIX}{step:06d}"


def temporary_dir(final: Path) -> Path:
    """Where `final` is written before it is renamed into place."""
    return final.with_name(_TMP_PREFIX + final.name)


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The valid checkpoint with the highest step, if any."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    return max(_valid(root), key=lambda path: path.name, default=None)


# A checkpoint's score from its marker (higher is better; None: not scored).
Score = Callable[[dict[str, Any]], float | None]


def best_checkpoint(out_dir: str | Path, score: Score) -> Path | None:
    """The valid checkpoint with the highest score (the earliest on ties), if any is scored."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    scored = [(score(read_marker(p)), p) for p in sorted(_valid(root))]
    scored = [(value, p) for value, p in scored if value is not None]
    if not scored:
        return None
    top = max(value for value, _ in scored)
    return next(p for value, p in scored if value == top)


def commit_checkpoint(
    temporary: Path, state: dict[str, Any], keep: int, keep_best: Score | None = None
) -> Path:
    """Publish the complete checkpoint written in `temporary` (see `temporary_dir`): marker
    last, then renamed into place, then only the newest `keep` kept, and the best by
    `keep_best` when given. Returns its path."""
    final = temporary.with_name(temporary.name.removeprefix(_TMP_PREFIX))
    _write_marker(temporary, state)
    replace_dir(temporary, final)
    _prune(final.parent, keep, keep_best)
    return final


def _write_marker(checkpoint: Path, state: dict[str, Any]) -> None:
    """Flush every file of `checkpoint` to disk, then write the marker, durably: once the
    marker exists, the checkpoint is trusted."""
    for path in sorted(checkpoint.rglob("*")):
        if path.is_file():
            _fsync(path)
    with open(checkpoint / MARKER, "w") as handle:
        handle.write(json.dumps(state, indent=1, sort_keys=True))
        handle.flush()
        os.fsync(handle.fileno())


def read_marker(checkpoint: Path) -> dict[str, Any]:
    return json.loads((checkpoint / MARKER).read_text())


def _prune(root: Path, keep: int, keep_best: Score | None) -> None:
    """Keep the newest `keep` valid checkpoints (and the best by `keep_best`); drop
    leftovers of interrupted writes."""
    valid = sorted(_valid(root))
    best = best_checkpoint(root.parent, keep_best) if keep_best is not None else None
    for path in valid[:-keep]:
        if path != best:
            remove(path)
    for path in root.iterdir():
        if path.name.startswith(_TMP_PREFIX) or (
            path.name.startswith(_PREFIX) and not (path / MARKER).exists()
        ):
            remove(path)


def replace_dir(temporary: Path, final: Path) -> None:
    """Put the complete directory `temporary` at `final`. The old `final` is renamed aside
    first, so a crash leaves either the old or the new directory under a known name."""
    retired = final.with_name(_TMP_PREFIX + final.name + "-old")
    remove(retired)
    if final.exists():
        final.rename(retired)
    temporary.rename(final)
    _fsync(final.parent)  # the renames themselves
    remove(retired)


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _valid(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / MARKER).is_file()]
