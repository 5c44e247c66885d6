"""Resumable checkpoints of `cft-rl sft` (DeepSpeed states); layout and atomicity:
cft_rl.checkpointing.

    OUT/checkpoints/step_000040/deepspeed/      DeepSpeed checkpoint (weights, optimizer and
                                                scheduler states, ZeRO partitions)
    OUT/checkpoints/step_000040/rng_rank0.pt    each rank's RNG states
    OUT/checkpoints/step_000040/hf_model/       Hugging Face export of these weights
    OUT/checkpoints/step_000040/trainer_state.json   step and settings: written last
    OUT/hf_model/                               the export of the newest checkpoint

Every rank writes its part into the temporary directory; rank 0 writes the marker and renames
it into place after every rank has finished. The data order is a function of the step
(cft_rl.sft.plan), so the step is all a resumed run needs besides the states above. Ranks are
assumed to share the file system (multi-node runs: a shared output_dir).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from cft_rl.checkpointing import (
    Score,
    checkpoint_dir,
    commit_checkpoint,
    read_marker,
    remove,
    replace_dir,
    rng_state,
    set_rng_state,
    temporary_dir,
)
from cft_rl.outputs import HF_EXPORT
from cft_rl.sft.export import export_hf

DEEPSPEED_TAG = "deepspeed"


def save_checkpoint(
    engine,
    tokenizer,
    out_dir: str | Path,
    step: int,
    state: dict[str, Any],
    keep: int,
    rank: int,
    keep_best: Score | None = None,
) -> Path:
    """Every rank calls this: DeepSpeed states, RNG, HF export, then the marker and rename
    (pruning keeps the newest `keep` and the best by `keep_best`)."""
    import torch.distributed as dist

    final = checkpoint_dir(out_dir, step)
    temporary = temporary_dir(final)
    if rank == 0:
        remove(temporary)
        temporary.mkdir(parents=True)
    dist.barrier()
    engine.save_checkpoint(str(temporary), tag=DEEPSPEED_TAG, save_latest=False)
    torch.save(rng_state(), temporary / f"rng_rank{rank}.pt")
    export_hf(engine.module.model, tokenizer, temporary / HF_EXPORT, rank)
    dist.barrier()
    if rank == 0:
        commit_checkpoint(temporary, {"step": step, **state}, keep, keep_best)
    dist.barrier()
    return final


def load_checkpoint(engine, path: Path, rank: int) -> dict[str, Any]:
    """Restore the engine (weights, optimizer, scheduler) and this rank's RNG from `path`."""
    loaded, _ = engine.load_checkpoint(
        str(path), tag=DEEPSPEED_TAG, load_optimizer_states=True, load_lr_scheduler_states=True
    )
    if loaded is None:
        raise RuntimeError(f"{path}: DeepSpeed could not load its checkpoint")
    set_rng_state(torch.load(path / f"rng_rank{rank}.pt", weights_only=False))
    return read_marker(path)


def publish_export(checkpoint: Path, out_dir: str | Path) -> Path:
    """Make OUT/hf_model the export of `checkpoint` (hard links where possible), atomically."""
    final = Path(out_dir) / HF_EXPORT
    temporary = temporary_dir(final)
    remove(temporary)
    shutil.copytree(checkpoint / HF_EXPORT, temporary, copy_function=_link_or_copy)
    replace_dir(temporary, final)
    return final


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)
