"""Resumable GRPO checkpoints (plain torch states) and the Hugging Face export.

A checkpoint (layout and atomicity: cft_rl.checkpointing) holds the model weights, the
optimizer and scheduler states, the RNG states and the marker with the step and the settings
a resumed run must match; with PPO, the critic's weights and optimizer and scheduler too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from cft_rl.checkpointing import (
    checkpoint_dir,
    commit_checkpoint,
    read_marker,
    remove,
    replace_dir,
    rng_state,
    set_rng_state,
    temporary_dir,
)
from cft_rl.errors import UserError
from cft_rl.grpo.critic import Critic
from cft_rl.outputs import HF_EXPORT

CRITIC_WEIGHTS = "critic.safetensors"


@dataclass
class TrainingState:
    """What a resumed run restores besides the weights."""

    step: int
    settings: dict[str, Any]


def save_checkpoint(
    out_dir: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    settings: dict[str, Any],
    keep: int,
    critic: Critic | None = None,
) -> Path:
    """Write step `step`'s checkpoint, then keep only the newest `keep` of them."""
    temporary = temporary_dir(checkpoint_dir(out_dir, step))
    remove(temporary)
    temporary.mkdir(parents=True)
    save_model(model, str(temporary / "model.safetensors"))
    trainer = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    if critic is not None:
        save_model(critic.model, str(temporary / CRITIC_WEIGHTS))
        trainer["critic"] = {
            "optimizer": critic.optimizer.state_dict(),
            "scheduler": critic.scheduler.state_dict(),
        }
    torch.save({**trainer, "rng": rng_state()}, temporary / "trainer.pt")
    return commit_checkpoint(temporary, {"step": step, "settings": settings}, keep)


def read_training_state(path: Path) -> TrainingState:
    state = read_marker(path)
    return TrainingState(step=state["step"], settings=state["settings"])


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    critic: Critic | None = None,
) -> None:
    """Restore weights, optimizer, scheduler and RNG states from `path`."""
    _load_weights(path, model, "model.safetensors")
    trainer = torch.load(path / "trainer.pt", weights_only=False, map_location="cpu")
    optimizer.load_state_dict(trainer["optimizer"])
    scheduler.load_state_dict(trainer["scheduler"])
    if critic is not None:
        if "critic" not in trainer:
            raise UserError(f"{path}: the checkpoint has no critic to resume PPO from")
        _load_weights(path, critic.model, CRITIC_WEIGHTS)
        critic.optimizer.load_state_dict(trainer["critic"]["optimizer"])
        critic.scheduler.load_state_dict(trainer["critic"]["scheduler"])
    set_rng_state(trainer["rng"])


def _load_weights(path: Path, model: torch.nn.Module, name: str) -> None:
    missing, unexpected = load_model(model, str(path / name), strict=False)
    if missing or unexpected:
        raise UserError(f"{path}: {name} does not fit the model ({missing or unexpected})")


def export_hf(out_dir: str | Path, model: torch.nn.Module, tokenizer) -> Path:
    """Save model (safetensors), tokenizer and generation config to `out_dir`/hf_model."""
    final = Path(out_dir) / HF_EXPORT
    temporary = temporary_dir(final)
    remove(temporary)
    model.save_pretrained(temporary, safe_serialization=True)
    tokenizer.save_pretrained(temporary)
    replace_dir(temporary, final)
    return final
