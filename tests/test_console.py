"""The progress bar of every stage keeps done/total and the time left visible at 80 columns."""

import io
import os
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


def test_library_noise_is_off_unless_asked_for(monkeypatch):
    from transformers.utils import logging as transformers_logging

    from cft_rl.console import LIBRARY_LOGS_ENV, quiet_libraries

    monkeypatch.setenv(LIBRARY_LOGS_ENV, "1")
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    transformers_logging.enable_progress_bar()
    quiet_libraries()
    assert transformers_logging.is_progress_bar_enabled()  # asked for: left alone

    monkeypatch.delenv(LIBRARY_LOGS_ENV)
    quiet_libraries()
    assert not transformers_logging.is_progress_bar_enabled()
    assert transformers_logging.get_verbosity() == transformers_logging.ERROR
    assert os.environ["DS_ACCELERATOR"] == "cpu"  # no CUDA here: no accelerator warning
    transformers_logging.enable_progress_bar()
    transformers_logging.set_verbosity_warning()
