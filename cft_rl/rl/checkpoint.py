"""Resumable GRPO checkpoints and the Hugging Face export, each written atomically.

A checkpoint is a directory `checkpoints/step_NNNNNN/` with the model weights, the optimizer
and scheduler states, the RNG states and `trainer_state.json` (step, resume settings). It is
written under a temporary name and renamed into place, so a directory with a step name is
always complete; a crash leaves at worst a temporary directory, removed on the next save.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from cft_rl.errors import UserError

CHECKPOINTS = "checkpoints"
HF_EXPORT = "hf_model"
_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


@dataclass
class TrainingState:
    """What a resumed run restores besides the weights."""

    step: int
    settings: dict[str, Any]


def checkpoint_dir(out_dir: str | Path, step: int) -> Path:
    return Path(out_dir) / CHECKPOINTS / f"{_PREFIX}{step:06d}"


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    """The complete checkpoint with the highest step, if any."""
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    steps = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX))
    return steps[-1] if steps else None


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    settings: dict[str, Any],
    keep: int,
) -> Path:
    """Write step `step`'s checkpoint, then keep only the newest `keep` of them."""
    final = checkpoint_dir(out_dir, step)
    temporary = final.with_name(_TMP_PREFIX + final.name)
    _remove(temporary)
    temporary.mkdir(parents=True)
    save_model(model, str(temporary / "model.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
        },
        temporary / "trainer.pt",
    )
    state = {"step": step, "settings": settings}
    (temporary / "trainer_state.json").write_text(json.dumps(state, indent=1, sort_keys=True))
    _remove(final)
    temporary.rename(final)
    for old in sorted(final.parent.iterdir()):
        if old.name.startswith(_TMP_PREFIX) and old != temporary:
            _remove(old)
    complete = sorted(p for p in final.parent.iterdir() if p.name.startswith(_PREFIX))
    for old in complete[:-keep]:
        _remove(old)
    return final


def read_training_state(path: Path) -> TrainingState:
    state = json.loads((path / "trainer_state.json").read_text())
    return TrainingState(step=state["step"], settings=state["settings"])


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    """Restore weights, optimizer, scheduler and RNG states from `path`."""
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: checkpoint does not fit the model ({missing or unexpected})")
    trainer = torch.load(path / "trainer.pt", weights_only=False, map_location="cpu")
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    torch.set_rng_state(trainer["rng"]["torch"])
    random.setstate(trainer["rng"]["python"])


def check_resume_settings(path: Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """A resumed run must be the run it continues: name every setting that changed."""
    changed = sorted(_diff(saved, current))
    if changed:
        listing = ", ".join(changed)
        raise UserError(
            f"{path} was written with different settings ({listing}); use a new output_dir "
            "or restore those settings"
        )


def export_hf(out_dir: str | Path, model: torch.nn.Module, tokenizer) -> Path:
    """Save model (safetensors), tokenizer and generation config to `out_dir`/hf_model."""
    final = Path(out_dir) / HF_EXPORT
    temporary = final.with_name(_TMP_PREFIX + final.name)
    _remove(temporary)
    model.save_pretrained(temporary, safe_serialization=True)
    tokenizer.save_pretrained(temporary)
    # Replace the old export: rename it aside first, so some complete export always exists.
    retired = final.with_name(_TMP_PREFIX + final.name + "-old")
    _remove(retired)
    if final.exists():
        final.rename(retired)
    temporary.rename(final)
    _remove(retired)
    return final


def _diff(saved: Any, current: Any, prefix: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = set(saved) | set(current)
        return [
            k for key in keys for k in _diff(saved.get(key), current.get(key), f"{prefix}{key}.")
        ]
    return [] if saved == current else [prefix.rstrip(".")]


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
