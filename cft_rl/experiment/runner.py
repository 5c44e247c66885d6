"""`cft-rl experiment`: run the cells of a grid (cft_rl.experiment.grid), `jobs` at a time.

Each cell is a child process running its stage on the recipe written into its directory
(`cft-rl <stage> --recipe OUT/<cell>/recipe.yaml`, output in OUT/<cell>/log.txt). A cell is
finished when its `cell.json` marker exists, written after the child exits cleanly; a
rerun skips finished cells and restarts the others, which resume from their own
checkpoints and logs. Children die with the experiment (Linux: PR_SET_PDEATHSIG), so a
`kill -9` leaves nothing running, and a lock on OUT keeps two experiments apart. A cell
whose recipe changed under an existing directory is an error naming it and its keys.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cft_rl.checkpointing import changed_settings
from cft_rl.errors import UserError
from cft_rl.experiment.config import ExperimentConfig
from cft_rl.experiment.grid import Cell, Grid
from cft_rl.report.compare import report_compare

CELL_DONE = "cell.json"
CELL_RECIPE = "recipe.yaml"
CELL_LOG = "log.txt"
PLAN = "plan.json"
LOCK = ".experiment.lock"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Seconds per cell on the toy recipes on 2 CPU cores, for the first estimate; once cells of
# a stage have finished, their mean time is used instead.
TOY_SECONDS = {"identify": 120, "sft": 45, "grpo": 240, "eval": 60}


def run_experiment(config: ExperimentConfig) -> Path:
    """Run (or resume, or with dry_run only print) the grid; returns the report directory."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with _exclusive(out / LOCK):
        grid = Grid(config, lambda name: (out / name / CELL_DONE).is_file())
        cells = grid.cells()
        _print_plan(grid, cells, config.jobs)
        if config.dry_run:
            _print_commands(grid, cells)
            return out
        _Scheduler(grid, config.jobs).run()
        _write_plan(grid, grid.cells())
    report_dir = out / "report"
    report_compare([str(out)], out=str(report_dir))
    return report_dir


def cell_command(cell: Cell, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cft_rl.cli",
        cell.stage,
        "--recipe",
        str(_recipe_path(cell, out)),
    ]


def write_cell_recipe(cell: Cell, out: Path) -> Path:
    """Write the cell's recipe. A directory where the cell has already run (anything besides
    its recipe there) must have been run with the same recipe; a recipe nothing ran from
    (a dry run, or a learning-rate choice that has changed since) is replaced."""
    path = _recipe_path(cell, out)
    ran = path.parent.is_dir() and any(p.name != CELL_RECIPE for p in path.parent.iterdir())
    if ran and path.is_file():
        changed = changed_settings(yaml.safe_load(path.read_text()), cell.recipe)
        if changed:
            raise UserError(
                f"experiment cell {cell.name}: {path.parent} was run with other settings "
                f"({', '.join(changed)}); restore them, or use another output_dir, or delete "
                "that directory to run the cell again"
            )
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"# cft-rl {cell.stage} --recipe {path}\n# written by `cft-rl experiment`\n"
    _write_atomic(path, header + yaml.safe_dump(cell.recipe, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------


@dataclass
class _Running:
    cell: Cell
    process: subprocess.Popen
    started: float


class _Scheduler:
    def __init__(self, grid: Grid, jobs: int) -> None:
        self.grid, self.jobs, self.out = grid, jobs, grid.out
        self.running: dict[str, _Running] = {}
        self.failed: dict[str, int] = {}

    def run(self) -> None:
        try:
            while True:
                cells = self.grid.cells()
                for cell in self._ready(cells)[: self.jobs - len(self.running)]:
                    self._start(cell)
                if not self.running:
                    break
                self._reap()
                _write_plan(self.grid, cells)
        finally:
            for run in self.running.values():  # interrupted: stop what runs (it resumes)
                run.process.send_signal(signal.SIGINT)
            for run in self.running.values():
                run.process.wait()
        if self.failed:
            logs = "\n".join(
                f"  {name}: exit status {code}, see {self.out / name / CELL_LOG}"
                for name, code in self.failed.items()
            )
            raise UserError(f"{len(self.failed)} cell(s) failed (finished cells are kept):\n{logs}")

    def _ready(self, cells: list[Cell]) -> list[Cell]:
        ready = []
        for cell in cells:
            if self._done(cell.name) or cell.name in self.running or cell.name in self.failed:
                continue
            write_cell_recipe(cell, self.out)  # also refuses changed settings up front
            if all(self._done(name) for name in cell.after):
                ready.append(cell)
        return ready

    def _done(self, name: str) -> bool:
        return self.grid.is_done(name)

    def _start(self, cell: Cell) -> None:
        log = open(self.out / cell.name / CELL_LOG, "a")  # noqa: SIM115 (closed with the child)
        log.write(
            f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cell_command(cell, self.out))}\n"
        )
        log.flush()
        process = subprocess.Popen(
            cell_command(cell, self.out),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_child_env(self.jobs),
            preexec_fn=_die_with_parent(os.getpid()),
        )
        log.close()  # the child holds its own copy
        self.running[cell.name] = _Running(cell, process, time.monotonic())
        print(f"started {cell.name} ({cell.stage})", flush=True)

    def _reap(self) -> None:
        """Wait until some child exits; mark it finished or failed."""
        while True:
            exited = [name for name, run in self.running.items() if run.process.poll() is not None]
            if exited:
                break
            time.sleep(0.5)
        for name in exited:
            run = self.running.pop(name)
            seconds = time.monotonic() - run.started
            code = run.process.returncode
            if code == 0:
                marker = {
                    "stage": run.cell.stage,
                    "seconds": round(seconds, 1),
                    "finished": time.time(),
                }
                _write_atomic(self.out / name / CELL_DONE, json.dumps(marker, indent=1))
                print(f"finished {name} in {seconds:.0f} s", flush=True)
            else:
                self.failed[name] = code
                print(f"FAILED {name} (exit {code}); log: {self.out / name / CELL_LOG}", flush=True)


def _print_plan(grid: Grid, cells: list[Cell], jobs: int) -> None:
    counts = grid.planned_counts()
    done = {stage: 0 for stage in counts}
    seconds = {stage: [] for stage in counts}
    for cell in cells:
        marker = grid.out / cell.name / CELL_DONE
        if marker.is_file():
            done[cell.stage] += 1
            seconds[cell.stage].append(json.loads(marker.read_text())["seconds"])
    left = 0.0
    lines = []
    for stage, count in counts.items():
        if not count:
            continue
        per_cell = (
            sum(seconds[stage]) / len(seconds[stage]) if seconds[stage] else TOY_SECONDS[stage]
        )
        left += per_cell * max(0, count - done[stage])
        lines.append(
            f"  {stage:9s} {count:3d} cells, {done[stage]:3d} finished, ~{per_cell:.0f} s each"
        )
    print(f"experiment {grid.out}: {sum(counts.values())} cells", flush=True)
    print("\n".join(lines))
    print(
        f"  about {left / 60 / jobs:.0f} min left with jobs={jobs} (per-cell times: this "
        "experiment's finished cells, else toy-recipe times on 2 CPU cores)",
        flush=True,
    )


def _print_commands(grid: Grid, cells: list[Cell]) -> None:
    """One command per known cell, in waves a scheduler can run in order."""
    known = {cell.name for cell in cells}
    wave_of: dict[str, int] = {}
    for cell in cells:  # grid.cells() lists dependencies first
        wave_of[cell.name] = 1 + max((wave_of.get(name, 0) for name in cell.after), default=0)
    for wave in sorted(set(wave_of.values())):
        print(f"# wave {wave}" + (f": after wave {wave - 1} has finished" if wave > 1 else ""))
        for cell in cells:
            if wave_of[cell.name] == wave and not grid.is_done(cell.name):
                write_cell_recipe(cell, grid.out)
                print(f"cft-rl {cell.stage} --recipe {_recipe_path(cell, grid.out)}")
    waiting = sum(grid.planned_counts().values()) - len(known)
    if waiting:
        print(
            f"# {waiting} more cells wait on learning-rate sweeps (validation of the sweep "
            "runs above); rerun with dry_run=true once those have finished"
        )


def _write_plan(grid: Grid, cells: list[Cell]) -> None:
    """OUT/plan.json: what `cft-rl report compare` reads (see cft_rl.report.compare)."""
    config = grid.config

    lr_choice = {}
    for method in config.methods:
        scores = grid.sweep_scores(method)
        chosen = grid.choose_lr(method)
        lr_choice[method.name] = {
            "chosen": chosen,
            "validation_accuracy": {str(lr): score for lr, score in (scores or {}).items()},
        }
    plan: dict[str, Any] = {
        "baseline": config.baseline,
        "methods": [method.name for method in config.methods],
        "identify": "identify" if config.identify.recipe is not None else config.identify.path,
        "probe": "probe" if config.probe is not None else None,
        "sft": [
            {**{k: cell.info[k] for k in ("method", "lr", "seed", "selected")}, "dir": cell.name}
            for cell in cells
            if cell.stage == "sft" and cell.info
        ],
        "lr_choice": lr_choice,
        "grpo": [{**cell.info, "dir": cell.name} for cell in cells if cell.stage == "grpo"],
        "evals": [{**cell.info, "dir": cell.name} for cell in cells if cell.stage == "eval"],
    }
    _write_atomic(grid.out / PLAN, json.dumps(plan, indent=1))


def _recipe_path(cell: Cell, out: Path) -> Path:
    return out / cell.name / CELL_RECIPE


def _child_env(jobs: int) -> dict[str, str]:
    """The cores are shared among the cells that run at once (unless the user says)."""
    env = dict(os.environ)
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, threads)
    return env


def _die_with_parent(parent: int):
    """A child's pre-exec hook: it gets SIGKILL when the experiment process dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: the hook only calls

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the hook ran
            os._exit(1)

    return hook


class _exclusive:
    """A lock on `path` for the life of the experiment (released by the OS if it dies)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.handle = open(self.path, "w")  # noqa: SIM115
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.close()
            raise UserError(
                f"{self.path.parent}: another `cft-rl experiment` is running on it"
            ) from None

    def __exit__(self, *exc: object) -> None:
        self.handle.close()


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
