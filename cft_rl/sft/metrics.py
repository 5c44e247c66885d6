"""Where each optimizer step's metrics go (rank 0 only): metrics.jsonl (always), a progress
bar (a plain line per step when stderr is not a terminal, e.g. a log file), TensorBoard and
Weights & Biases (both off by default; W&B offline-capable)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cft_rl.jsonl import METRICS, StepLog
from cft_rl.sft.config import SftConfig


class MetricsSinks:
    """Writes step records to every enabled sink; a resumed run first drops the records of
    steps after its checkpoint (written by the crashed run, about to be redone)."""

    def __init__(self, config: SftConfig, resumed_step: int, total_steps: int) -> None:
        out = Path(config.output_dir)
        self.log = StepLog(out / METRICS)
        self.log.rewind(resumed_step)
        self.total_steps = total_steps
        self.plain_lines = config.logging.progress and not sys.stderr.isatty()
        self.progress = (
            _progress_bar(resumed_step, total_steps)
            if config.logging.progress and not self.plain_lines
            else None
        )
        self.tensorboard = None
        if config.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(out / "tensorboard"), purge_step=resumed_step + 1)
        self.wandb = _start_wandb(config) if config.logging.wandb.enabled else None

    def write(self, record: dict[str, Any]) -> None:
        self.log.append(record)
        step = record["step"]
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{key}": value for key, value in scalars.items()}, step=step)
        if self.plain_lines:
            print(
                f"sft step {step}/{self.total_steps}  loss {record['loss']:.4f}  "
                f"lr {record['lr']:.2e}  {record['tokens_per_s']:.0f} tok/s "
                f"({record['supervised_tokens_per_s']:.0f} supervised)",
                file=sys.stderr,
                flush=True,
            )
        if self.progress is not None:
            self.progress.update(
                self.progress.task_ids[0],
                completed=step,
                loss=f"{record['loss']:.4f}",
                lr=f"{record['lr']:.2e}",
                tokens=f"{record['tokens_per_s']:.0f}",
                supervised=f"{record['supervised_tokens_per_s']:.0f}",
            )

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _progress_bar(done: int, total: int) -> Progress:
    progress = Progress(
        TextColumn("sft"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]} lr {task.fields[lr]}"),
        TextColumn("{task.fields[tokens]} tok/s, {task.fields[supervised]} supervised tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    progress.add_task(
        "sft", total=total, completed=done, loss="-", lr="-", tokens="-", supervised="-"
    )
    progress.start()
    return progress


def _start_wandb(config: SftConfig):
    """A W&B run that a resumed training continues (its id is kept in output_dir)."""
    import wandb

    out = Path(config.output_dir)
    id_file = out / "wandb_run_id"
    if not id_file.exists():
        id_file.write_text(uuid.uuid4().hex[:16])
    settings = config.logging.wandb
    return wandb.init(
        project=settings.project,
        name=settings.name,
        mode=settings.mode,
        dir=str(out),
        id=id_file.read_text().strip(),
        resume="allow",
        config=config.model_dump(mode="json"),
    )
