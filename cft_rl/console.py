"""The progress bar every stage shows on a terminal: what is counted, done of total, the
time so far and the time left first, then the stage's own figures. At 80 columns the
first part always fits (the stage's figures are what gets cut), so a narrow terminal
still says how far along a run is and when it should end."""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column

BAR_WIDTH = 10
# Set to 1 to see the libraries' own logs and bars again.
LIBRARY_LOGS_ENV = "CFT_RL_LIBRARY_LOGS"


def quiet_libraries() -> None:
    """Library noise off (unless $CFT_RL_LIBRARY_LOGS is set): transformers' weight-loading
    and shard-writing bars and its messages below errors, and DeepSpeed's "Setting
    accelerator to CPU" warning on a machine without CUDA. Child processes inherit it."""
    if os.environ.get(LIBRARY_LOGS_ENV):
        return
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def progress_bar(details: str = "", console: Console | None = None) -> Progress:
    """A rich Progress: `{task.description} bar done/total elapsed ETA left details`, where
    `details` is a rich template over the task's fields ("loss {task.fields[loss]}")."""

    def kept() -> Column:  # never shrunk: the details give way first
        return Column(no_wrap=True)

    columns = [
        TextColumn("{task.description}", table_column=kept()),
        BarColumn(bar_width=BAR_WIDTH, table_column=kept()),
        MofNCompleteColumn(table_column=kept()),
        TimeElapsedColumn(table_column=kept()),
        TextColumn("ETA", table_column=kept()),
        TimeRemainingColumn(table_column=kept()),
    ]
    # The details take the rest of the line (the bar expands to the terminal's width) and
    # are cut first; with none, the empty column keeps the others at their own widths.
    shrinks = Column(no_wrap=True, overflow="ellipsis", ratio=1)
    columns.append(TextColumn(details, table_column=shrinks))
    return Progress(*columns, console=console, expand=True)
