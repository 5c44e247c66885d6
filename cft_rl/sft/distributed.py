"""DeepSpeed around the loss module: process group, engine config, learning-rate schedule.

One process (`cft-rl sft ...`) or several (`torchrun --nproc_per_node N -m cft_rl.cli sft ...`
or `deepspeed --no_local_rank --module cft_rl.cli sft ...`): the launchers set RANK,
WORLD_SIZE, LOCAL_RANK and MASTER_ADDR/PORT; without them a one-process group is made here.
CUDA with NCCL where there is a GPU, DeepSpeed's CPU accelerator with gloo otherwise.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cft_rl.commands import LAUNCHER_ENV
from cft_rl.config import ConfigError
from cft_rl.sft.config import SftConfig, SftOptimSettings
from cft_rl.sft.model import LossModule

# Keys of a DeepSpeed JSON config that the recipe sets (absent or "auto" in the JSON files).
RECIPE_KEYS = (
    "train_batch_size",
    "train_micro_batch_size_per_gpu",
    "gradient_accumulation_steps",
    "gradient_clipping",
    "optimizer",
    "scheduler",
    "bf16",
    "fp16",
)


@dataclass(frozen=True)
class Topology:
    rank: int
    world_size: int
    local_rank: int


def coming_world_size() -> int:
    """The world size process_group() will give, known before it starts (slow, on first
    use): the caller's group's, else the launcher's, else 1."""
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1")) if "RANK" in os.environ else 1


@contextmanager
def process_group() -> Iterator[Topology]:
    """The launcher's process group (or one the caller made); else a one-process group made
    here. That one stays for the life of the process (DeepSpeed keeps state about it, and
    in-process callers train again), but the environment variables set for it are restored
    on exit, so that processes started later (another launcher, tests) do not inherit them.
    A group made here for a launcher is destroyed when the run ends well: a gloo group left
    to the interpreter's exit can abort a rank as it shuts down (pytorch#190489)."""
    import deepspeed
    import torch.distributed as dist
    from deepspeed.accelerator import get_accelerator

    saved = {key: os.environ.get(key) for key in LAUNCHER_ENV}
    if "RANK" not in os.environ:  # no launcher; DeepSpeed's engine reads these too
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    accelerator = get_accelerator()
    if accelerator.device_name() == "cuda":
        accelerator.set_device(local_rank)
    made_for_launcher = not dist.is_initialized() and saved["RANK"] is not None
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend=accelerator.communication_backend_name())
    try:
        yield Topology(dist.get_rank(), dist.get_world_size(), local_rank)
        if made_for_launcher:
            # After a failure it is left as it is: with NCCL, destroying a group whose
            # peers are stuck in a collective can block instead of exiting.
            dist.barrier()  # no rank tears down while another still talks to it
            dist.destroy_process_group()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def deepspeed_config(config: SftConfig, world_size: int) -> dict[str, Any]:
    """The JSON file of train.deepspeed_config with the recipe's batch sizes, optimizer,
    clipping and precision filled in."""
    path = Path(config.train.deepspeed_config)
    if not path.is_file():
        raise ConfigError(f"train.deepspeed_config: no such file {path} (see recipes/deepspeed/)")
    try:
        loaded = json.loads(path.read_text())
    except ValueError as err:
        raise ConfigError(f"{path}: not valid JSON: {err}") from None
    for key in RECIPE_KEYS:
        if loaded.get(key, "auto") != "auto":
            raise ConfigError(
                f"{path}: key '{key}' is set by the SFT recipe (train.*, optim.*, model.dtype); "
                'remove it from the JSON file or set it to "auto"'
            )
    train, optim, dtype = config.train, config.optim, config.model.dtype
    filled = {key: value for key, value in loaded.items() if key not in RECIPE_KEYS}
    filled.update(
        train_micro_batch_size_per_gpu=train.micro_batch_size,
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        train_batch_size=train.micro_batch_size * train.gradient_accumulation_steps * world_size,
        gradient_clipping=optim.max_grad_norm,
        bf16={"enabled": dtype == "bfloat16"},
        fp16={"enabled": dtype == "float16"},
        optimizer={
            "type": "AdamW",
            "params": {
                "lr": optim.lr,
                "betas": list(optim.betas),
                "eps": optim.eps,
                "weight_decay": optim.weight_decay,
                "torch_adam": optim.torch_adam,
            },
        },
    )
    filled.setdefault("steps_per_print", 10**9)  # progress is ours
    return filled


class LrSchedule:
    """Multiplier of the base learning rate for optimizer step s (0-based): linear warm-up to 1
    over the first warmup steps (step 0 already trains, at 1 / warmup), then constant, or a
    linear or cosine decay to min_ratio at the last step. An object, not a closure, so that
    LambdaLR's state_dict (in every checkpoint) records it."""

    def __init__(self, optim: SftOptimSettings, total_steps: int):
        warmup = optim.warmup_steps
        if warmup is None:
            warmup = math.floor(optim.warmup_ratio * total_steps)
        self.warmup = min(warmup, total_steps)
        self.total = total_steps
        self.kind = optim.schedule
        self.min_ratio = optim.min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        if self.kind == "constant":
            return 1.0
        progress = (step - self.warmup) / max(1, self.total - self.warmup - 1)
        progress = min(progress, 1.0)
        if self.kind == "linear":
            shape = 1.0 - progress
        else:
            shape = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * shape


def build_engine(config: SftConfig, model: torch.nn.Module, total_steps: int, world_size: int):
    """The DeepSpeed engine training LossModule(model), with the warm-up schedule."""
    import deepspeed

    module = LossModule(model, config.loss)
    schedule = LrSchedule(config.optim, total_steps)
    engine, _, _, _ = deepspeed.initialize(
        model=module,
        model_parameters=[p for p in module.parameters() if p.requires_grad],
        config=deepspeed_config(config, world_size),
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
    )
    if engine.zero_optimization_stage() == 3:
        engine.module.register_head_for_zero3()
    return engine
