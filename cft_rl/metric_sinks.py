"""Where a training stage's step records go: OUT/metrics.jsonl always, TensorBoard and
Weights & Biases when `logging` asks (both off by default; W&B offline-capable). The same
for `cft-rl sft` and the local `cft-rl grpo` engine."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from cft_rl.config import LoggingSettings
from cft_rl.jsonl import METRICS, StepLog


class MetricSinks:
    """Writes step records to every enabled sink. A resumed run first drops the records of
    steps after its checkpoint (written by the crashed run, about to be redone); `kept` holds
    the ones before it."""

    def __init__(
        self,
        out_dir: str | Path,
        settings: LoggingSettings,
        run_config: dict[str, Any],
        resumed_step: int,
    ) -> None:
        out = Path(out_dir)
        self.log = StepLog(out / METRICS)
        self.kept = self.log.rewind(resumed_step)
        self.tensorboard = None
        if settings.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(out / "tensorboard"), purge_step=resumed_step + 1)
        self.wandb = _start_wandb(out, settings, run_config) if settings.wandb.enabled else None

    def write(self, record: dict[str, Any]) -> None:
        self.log.append(record)
        step = record["step"]
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tensorboard is not None:
            for key, value in scalars.items():
                self.tensorboard.add_scalar(f"train/{key}", value, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{key}": value for key, value in scalars.items()}, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def _start_wandb(out: Path, settings: LoggingSettings, run_config: dict[str, Any]):
    """A W&B run that a resumed training continues (its id is kept in output_dir)."""
    import wandb

    id_file = out / "wandb_run_id"
    if not id_file.exists():
        id_file.write_text(uuid.uuid4().hex[:16])
    return wandb.init(
        project=settings.wandb.project,
        name=settings.wandb.name,
        mode=settings.wandb.mode,
        dir=str(out),
        id=id_file.read_text().strip(),
        resume="allow",
        config=run_config,
    )
