"""Resumable checkpoints of `cft-rl sft`, written atomically.

    OUT/checkpoints/step_000040/deepspeed/      DeepSpeed checkpoint (weights, optimizer and
                                                scheduler states, ZeRO partitions)
    OUT/checkpoints/step_000040/rng_rank0.pt    each rank's RNG states
    OUT/checkpoints/step_000040/hf_model/       Hugging Face export of these weights
    OUT/checkpoints/step_000040/trainer_state.json   step and settings: written last
    OUT/hf_model/                               the export of the newest checkpoint

A checkpoint is written under `.tmp-step_NNNNNN`, its marker `trainer_state.json` last, and
renamed into place by rank 0 after every rank has finished writing. Only directories named
step_* that hold the marker count: a crash at any moment leaves the previous checkpoint as
the newest valid one. The data order is a function of the step (cft_rl.sft.plan), so the step
is all a resumed run needs besides the states above. Ranks are assumed to share the file
system (multi-node runs: a shared output_dir).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

from cft_rl.sft.export import export_hf

CHECKPOINTS = "checkpoints"
HF_EXPORT = "hf_model"
MARKER = "trainer_state.json"
DEEPSPEED_TAG = "deepspeed"
_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"{_PREFIX}{step:06d}"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The valid checkpoint with the highest step, if any."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    valid = [
        path
        for path in root.iterdir()
        if path.name.startswith(_PREFIX) and (path / MARKER).is_file()
    ]
    return max(valid, key=lambda path: path.name, default=None)


def read_state(path: Path) -> dict[str, Any]:
    return json.loads((path / MARKER).read_text())


def save_checkpoint(
    engine, tokenizer, out_dir: str | Path, step: int, state: dict[str, Any], keep: int, rank: int
) -> Path:
    """Every rank calls this: DeepSpeed states, RNG, HF export, then the marker and rename."""
    import torch.distributed as dist

    final = checkpoint_dir(out_dir, step)
    temporary = final.with_name(_TMP_PREFIX + final.name)
    if rank == 0:
        _remove(temporary)
        temporary.mkdir(parents=True)
    dist.barrier()
    engine.save_checkpoint(str(temporary), tag=DEEPSPEED_TAG, save_latest=False)
    torch.save(_rng_state(), temporary / f"rng_rank{rank}.pt")
    export_hf(engine.module.model, tokenizer, temporary / HF_EXPORT, rank)
    dist.barrier()
    if rank == 0:
        _write_marker(temporary / MARKER, {"step": step, **state})
        _remove(final)
        temporary.rename(final)
        _prune(final.parent, keep)
    dist.barrier()
    return final


def load_checkpoint(engine, path: Path, rank: int) -> dict[str, Any]:
    """Restore the engine (weights, optimizer, scheduler) and this rank's RNG from `path`."""
    loaded, _ = engine.load_checkpoint(
        str(path), tag=DEEPSPEED_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if loaded is None:
        raise RuntimeError(f"{path}: DeepSpeed could not load its checkpoint")
    _set_rng_state(torch.load(path / f"rng_rank{rank}.pt", weights_only=False))
    return read_state(path)


def publish_export(checkpoint: Path, out_dir: str | Path) -> Path:
    """Make OUT/hf_model the export of `checkpoint` (hard links where possible), atomically:
    the old export is renamed aside before the new one is renamed into place."""
    final = Path(out_dir) / HF_EXPORT
    temporary = final.with_name(_TMP_PREFIX + final.name)
    retired = final.with_name(_TMP_PREFIX + final.name + "-old")
    _remove(temporary)
    _remove(retired)
    shutil.copytree(checkpoint / HF_EXPORT, temporary, copy_function=_link_or_copy)
    if final.exists():
        final.rename(retired)
    temporary.rename(final)
    _remove(retired)
    return final


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_marker(path: Path, state: dict[str, Any]) -> None:
    with open(path, "w") as handle:
        handle.write(json.dumps(state, indent=1, sort_keys=True))
        handle.flush()
        os.fsync(handle.fileno())


def _prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` valid checkpoints; drop leftovers of interrupted writes."""
    valid = sorted(
        p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / MARKER).exists()
    )
    for path in valid[:-keep]:
        _remove(path)
    for path in root.iterdir():
        if path.name.startswith(_TMP_PREFIX) or (
            path.name.startswith(_PREFIX) and not (path / MARKER).exists()
        ):
            _remove(path)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
