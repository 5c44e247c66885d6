"""The progress bar of every stage keeps done/total and the time left visible at 80 columns."""

import io
import re

from rich.console import Console

from cft_rl.console import progress_bar


def rendered(details: str, width: int, **fields) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False, color_system=None)
    progress = progress_bar(details, console=console)
    task = progress.add_task("sft", total=510, completed=0, **fields)
    progress.update(task, completed=123)
    console.print(progress.get_renderable())
    return out.getvalue()


def test_done_total_and_time_left_fit_80_columns_with_long_details():
    details = "loss {task.fields[loss]} lr {task.fields[lr]} {task.fields[tokens]} tok/s, " * 3
    line = rendered(details, 80, loss="0.0057", lr="3.00e-05", tokens="12345")
    assert "123/510" in line
    assert re.search(r"\d:\d\d:\d\d ETA (-:--:--|\d:\d\d:\d\d)", line), line
    assert all(len(row) <= 80 for row in line.splitlines())


def test_details_show_when_there_is_room():
    line = rendered("loss {task.fields[loss]}", 120, loss="0.0057")
    assert "loss 0.0057" in line and "123/510" in line
