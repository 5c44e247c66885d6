"""What `cft-rl sft` shows of each optimizer step (rank 0 only): the shared metric sinks
(cft_rl.metric_sinks), and a progress bar (a plain line per step when stderr is not a
terminal, e.g. a log file)."""

from __future__ import annotations

import sys
from typing import Any

from rich.progress import Progress

from cft_rl.console import progress_bar
from cft_rl.metric_sinks import MetricSinks
from cft_rl.sft.config import SftConfig


class SftMetrics:
    """The step records into the metric sinks, and the progress display."""

    def __init__(self, config: SftConfig, resumed_step: int, total_steps: int) -> None:
        run_config = config.model_dump(mode="json")
        self.sinks = MetricSinks(config.output_dir, config.logging, run_config, resumed_step)
        self.total_steps = total_steps
        self.plain_lines = config.logging.progress and not sys.stderr.isatty()
        self.progress = (
            _progress_bar(resumed_step, total_steps)
            if config.logging.progress and not self.plain_lines
            else None
        )

    def write(self, record: dict[str, Any]) -> None:
        self.sinks.write(record)
        step = record["step"]
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
        self.sinks.close()


def _progress_bar(done: int, total: int) -> Progress:
    progress = progress_bar(
        "loss {task.fields[loss]} lr {task.fields[lr]} {task.fields[tokens]} tok/s, "
        "{task.fields[supervised]} supervised tok/s"
    )
    progress.add_task(
        "sft", total=total, completed=done, loss="-", lr="-", tokens="-", supervised="-"
    )
    progress.start()
    return progress
