"""The progress bar every stage shows on a terminal: what is counted, done of total, the
time so far and the time left first, then the stage's own figures. At 80 columns the
first part always fits (the stage's figures are what gets cut), so a narrow terminal
still says how far along a run is and when it should end."""

from __future__ import annotations

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


def progress_bar(details: str = "", console: Console | None = None) -> Progress:
    """A rich Progress: `{task.description} bar done/total elapsed ETA left details`, where
    `details` is a rich template over the task's fields ("loss {task.fields[loss]}")."""

    def kept() -> Column:  # never shrunk: the details give way first
        return Column(no_wrap=True, min_width=1)

    columns = [
        TextColumn("{task.description}", table_column=kept()),
        BarColumn(bar_width=BAR_WIDTH, table_column=kept()),
        MofNCompleteColumn(table_column=kept()),
        TimeElapsedColumn(table_column=kept()),
        TextColumn("ETA", table_column=kept()),
        TimeRemainingColumn(table_column=kept()),
    ]
    if details:
        shrinks = Column(no_wrap=True, overflow="ellipsis", ratio=1)
        columns.append(TextColumn(details, table_column=shrinks))
    return Progress(*columns, console=console, expand=True)
