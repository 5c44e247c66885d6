"""`cft-rl experiment`: run the cells of a grid (cft_rl.experiment.grid), `jobs` at a time.

Each cell is a child process running its stage on the recipe written into its directory
(`cft-rl <stage> --recipe OUT/<cell>/recipe.yaml`, output in OUT/<cell>/log.txt). A cell is
finished when its `cell.json` marker exists, written after the child exits cleanly, and
records when each cell it was made from finished; a rerun skips finished cells and restarts
the others, which resume from their own checkpoints and logs. Children die with the
experiment (Linux: PR_SET_PDEATHSIG), so a `kill -9` leaves nothing running; a lock on OUT
keeps two schedulers apart and a lock per cell keeps two runs of a cell apart. A cell whose
recipe changed under a directory it ran in, or that was made from an earlier run of a cell
that has been run again since, is an error naming it.

`cell=NAME` runs one cell in the foreground (what `dry_run=true` prints, for a cluster
scheduler to run).
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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from cft_rl.commands import LAUNCHER_ENV
from cft_rl.config import save_resolved
from cft_rl.errors import UserError
from cft_rl.experiment.config import ExperimentConfig
from cft_rl.experiment.grid import Cell, Grid
from cft_rl.experiment_plan import EvalEntry, ExperimentPlan, GrpoEntry, LrChoice, SftEntry
from cft_rl.files import write_text_atomic
from cft_rl.outputs import CELL_DONE
from cft_rl.report.compare import report_compare
from cft_rl.run_settings import changed_settings

CELL_RECIPE = "recipe.yaml"
CELL_LOG = "log.txt"
CELL_LOCK = ".cell.lock"
LOCK = ".experiment.lock"
# The experiment's resolved recipe that the commands of a dry run name.
RESOLVED = "experiment.yaml"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
# Seconds per cell on the toy recipes on 2 CPU cores, for the first estimate; once cells of
# a stage have finished, their mean time is used instead.
TOY_SECONDS = {"identify": 120, "sft": 45, "grpo": 240, "eval": 60}
# A stopped cell gets this long to save its state after SIGINT before it is killed.
_STOP_TIMEOUT_S = 60


def run_experiment(config: ExperimentConfig) -> Path:
    """Run (or resume) the grid and write its report; with dry_run, print one command per
    cell; with `cell`, run only that cell. Returns the experiment directory."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    markers = Markers(out)
    grid = Grid(config, markers.is_done)
    planned = grid.check()  # every cell validated before anything runs
    if config.cell is not None:
        _run_one(grid, markers, config.cell)
        _write_plan(grid, grid.cells())
        return out
    with _exclusive(out / LOCK):
        cells = grid.cells()
        for cell in cells:
            markers.check(cell)
        _write_plan(grid, cells)  # `report compare` works on a partial experiment too
        _print_plan(markers, planned, config.jobs)
        if config.dry_run:
            _print_commands(grid, markers, cells, planned)
            return out
        _Scheduler(grid, markers, config.jobs).run()
        _write_plan(grid, grid.cells())
    report_compare([str(out)], out=str(out / "report"))
    return out


def cell_command(cell: Cell, out: Path) -> list[str]:
    recipe = str(out / cell.name / CELL_RECIPE)
    return [sys.executable, "-m", "cft_rl.cli", cell.stage, "--recipe", recipe]


class Markers:
    """The cell.json markers of finished cells, and the checks a cell passes before it runs."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self._recipes_checked: set[str] = set()  # cell name + recipe already checked

    def read(self, name: str) -> dict[str, Any] | None:
        path = self.out / name / CELL_DONE
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except ValueError as err:
            raise UserError(f"{path}: not a cell marker ({err}); delete it to rerun") from None

    def is_done(self, name: str) -> bool:
        return (self.out / name / CELL_DONE).is_file()

    def write(self, cell: Cell, seconds: float) -> None:
        marker = {
            "stage": cell.stage,
            "seconds": round(seconds, 1),
            "finished": time.time(),
            # when the cells it was made from finished: a rerun of one of them outdates it
            "after": {name: self.read(name)["finished"] for name in cell.after},
        }
        write_text_atomic(self.out / cell.name / CELL_DONE, json.dumps(marker, indent=1))

    def check(self, cell: Cell) -> None:
        """Write the cell's recipe (or check it against the one it ran with; once per cell
        and recipe, as the scheduler asks again each time a cell finishes) and refuse a
        finished cell made from an earlier run of one of its inputs."""
        key = cell.name + json.dumps(cell.recipe, sort_keys=True)
        if key not in self._recipes_checked:
            write_cell_recipe(cell, self.out)
            self._recipes_checked.add(key)
        marker = self.read(cell.name)
        if marker is None:
            return
        for name, finished in marker.get("after", {}).items():
            current = self.read(name)
            if current is not None and current["finished"] != finished:
                raise UserError(
                    f"experiment cell {cell.name} was made from an earlier run of {name}, "
                    f"which has run again since; delete {self.out / cell.name} to redo it"
                )


# What a cell's start writes before its stage does any work: a cell holding nothing else
# (a dry run's recipe, or a start that failed, say on a wrong model path) did no work.
_STARTUP_FILES = {CELL_RECIPE, CELL_LOG, CELL_LOCK, "config.yaml"}


def write_cell_recipe(cell: Cell, out: Path) -> Path:
    """Write the cell's recipe. A directory where the cell has done work (a file besides
    what its start writes) must have been run with the same recipe; a recipe nothing ran
    from (a dry run, a failed start, a learning-rate choice that has changed since) is
    replaced."""
    path = out / cell.name / CELL_RECIPE
    ran = path.parent.is_dir() and any(
        p.is_file() and p.relative_to(path.parent).as_posix() not in _STARTUP_FILES
        for p in path.parent.rglob("*")
    )
    if ran and path.is_file():
        changed = changed_settings(yaml.safe_load(path.read_text()), cell.recipe)
        if changed:
            raise UserError(
                f"experiment cell {cell.name}: {path.parent} was run with other settings "
                f"({', '.join(changed)}); restore them, or use another output_dir, or delete "
                "that directory to run the cell again"
            )
        return path
    header = f"# cft-rl {cell.stage} --recipe {path}\n# written by `cft-rl experiment`\n"
    write_text_atomic(path, header + yaml.safe_dump(cell.recipe, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------


@dataclass
class _Running:
    cell: Cell
    process: subprocess.Popen
    lock: IO[str]
    started: float


def _launch(cell: Cell, out: Path, jobs: int) -> tuple[subprocess.Popen, IO[str]] | None:
    """Start the cell's stage, holding its lock; None when another process holds it."""
    lock = _try_lock(out / cell.name / CELL_LOCK)
    if lock is None:
        return None
    command = cell_command(cell, out)
    with open(out / cell.name / CELL_LOG, "a") as log:
        log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(command)}\n")
        log.flush()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_child_env(jobs),
            preexec_fn=_die_with_parent(os.getpid()),
            start_new_session=True,  # Ctrl-C reaches the experiment, which stops each cell once
        )
    return process, lock


class _Scheduler:
    def __init__(self, grid: Grid, markers: Markers, jobs: int) -> None:
        self.grid, self.markers, self.jobs, self.out = grid, markers, jobs, grid.out
        self.running: dict[str, _Running] = {}
        self.failed: dict[str, int] = {}
        self.held: set[str] = set()  # cells another process is running

    def run(self) -> None:
        try:
            while True:
                cells = self.grid.cells()
                self.held.clear()
                for cell in self._ready(cells):
                    if len(self.running) == self.jobs:
                        break
                    self._start(cell)
                if not self.running:
                    break
                self._reap()
                _write_plan(self.grid, cells)
        finally:
            _stop([run.process for run in self.running.values()])
        self._raise_for_leftovers(self.grid.cells())

    def _ready(self, cells: list[Cell]) -> list[Cell]:
        ready = []
        for cell in cells:
            if cell.name in self.running or cell.name in self.failed:
                continue
            self.markers.check(cell)
            if not self.markers.is_done(cell.name) and all(
                self.markers.is_done(name) for name in cell.after
            ):
                ready.append(cell)
        return ready

    def _start(self, cell: Cell) -> None:
        launched = _launch(cell, self.out, self.jobs)
        if launched is None:
            self.held.add(cell.name)
            return
        process, lock = launched
        self.running[cell.name] = _Running(cell, process, lock, time.monotonic())
        print(f"started {cell.name} ({cell.stage})", flush=True)

    def _reap(self) -> None:
        """Wait until some child exits; mark it finished or failed."""
        while not (exited := [n for n, r in self.running.items() if r.process.poll() is not None]):
            time.sleep(0.5)
        for name in exited:
            run = self.running.pop(name)
            seconds = time.monotonic() - run.started
            code = run.process.returncode
            if code == 0:
                self.markers.write(run.cell, seconds)
                print(f"finished {name} in {seconds:.0f} s", flush=True)
            else:
                self.failed[name] = code
                print(f"FAILED {name} (exit {code}): {_last_line(self.out / name / CELL_LOG)}")
                print(f"  log: {self.out / name / CELL_LOG}", flush=True)
            run.lock.close()

    def _raise_for_leftovers(self, cells: list[Cell]) -> None:
        """Name every cell that did not finish, and why."""
        lines = [
            f"  {name}: exit status {code}: {_last_line(self.out / name / CELL_LOG)}"
            for name, code in self.failed.items()
        ]
        for cell in cells:
            if self.markers.is_done(cell.name) or cell.name in self.failed:
                continue
            if cell.name in self.held:
                lines.append(f"  {cell.name}: another process is running it")
            else:
                waiting = [n for n in cell.after if not self.markers.is_done(n)]
                lines.append(f"  {cell.name}: waits for {', '.join(waiting)}")
        waiting = len(self.grid.cells(provisional=True)) - len(cells)
        if waiting:
            lines.append(f"  {waiting} more: wait for learning-rate sweeps above to finish")
        if lines:
            raise UserError(
                f"{len(lines)} cell(s) did not finish (finished cells are kept; rerun to go "
                "on):\n" + "\n".join(lines)
            )


def _run_one(grid: Grid, markers: Markers, name: str) -> None:
    """`cell=NAME`: run one cell in the foreground, as a cluster job would."""
    cells = {cell.name: cell for cell in grid.cells()}
    if name not in cells:
        planned = [cell.name for cell in grid.cells(provisional=True)]
        if name in planned:
            raise UserError(f"cell {name} waits for its method's learning-rate sweep to finish")
        more = len(planned) - len(cells)
        later = f"; {more} more once the learning-rate sweeps have finished" if more else ""
        raise UserError(f"no cell named {name} (cells now: {', '.join(cells)}{later})")
    cell = cells[name]
    markers.check(cell)
    if markers.is_done(name):
        print(f"{name} has finished already")
        return
    waiting = [n for n in cell.after if not markers.is_done(n)]
    if waiting:
        raise UserError(f"cell {name} waits for {', '.join(waiting)} to finish")
    launched = _launch(cell, grid.out, jobs=1)
    if launched is None:
        raise UserError(f"cell {name}: another process is running it")
    process, lock = launched
    started = time.monotonic()
    print(f"running {name} ({cell.stage}); log: {grid.out / name / CELL_LOG}", flush=True)
    try:
        code = process.wait()
    finally:
        _stop([process])
        lock.close()
    if code != 0:
        log = grid.out / name / CELL_LOG
        raise UserError(f"cell {name} failed (exit {code}): {_last_line(log)} (log: {log})")
    markers.write(cell, time.monotonic() - started)
    print(f"finished {name} in {time.monotonic() - started:.0f} s")


def _last_line(log: Path) -> str:
    """The last non-empty line a failed cell wrote (its error, as a rule)."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def _stop(processes: list[subprocess.Popen]) -> None:
    """Interrupt the cells still running (each saves its state and resumes when rerun)."""
    alive = [process for process in processes if process.poll() is None]
    for process in alive:
        process.send_signal(signal.SIGINT)
    for process in alive:
        try:
            process.wait(timeout=_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _print_plan(markers: Markers, planned: list[Cell], jobs: int) -> None:
    counts = Counter(cell.stage for cell in planned)
    done = Counter(cell.stage for cell in planned if markers.is_done(cell.name))
    seconds: dict[str, list[float]] = {stage: [] for stage in counts}
    for cell in planned:
        marker = markers.read(cell.name)
        if marker is not None and "seconds" in marker:
            seconds[cell.stage].append(marker["seconds"])
    left = 0.0
    print(f"experiment {markers.out}: {len(planned)} cells", flush=True)
    for stage, count in counts.items():
        measured = seconds[stage]
        per_cell = sum(measured) / len(measured) if measured else TOY_SECONDS[stage]
        left += per_cell * (count - done[stage])
        print(f"  {stage:9s} {count:3d} cells, {done[stage]:3d} finished, ~{per_cell:.0f} s each")
    print(
        f"  about {left / 60 / jobs:.0f} min left with jobs={jobs} (per-cell times: this "
        "experiment's finished cells, else the full toy recipes' times on 2 CPU cores, so a "
        "grid that shortens its stages, as the smoke grid does, takes less)",
        flush=True,
    )


def _print_commands(grid: Grid, markers: Markers, cells: list[Cell], planned: list[Cell]) -> None:
    """One command per known cell, in waves a scheduler can run in order."""
    resolved = grid.out / RESOLVED
    save_resolved(
        grid.config.model_copy(update={"dry_run": False, "cell": None}), grid.out, RESOLVED
    )
    wave_of: dict[str, int] = {}  # finished cells are wave 0: what waits only on them runs now
    for cell in cells:  # grid.cells() lists dependencies first
        if markers.is_done(cell.name):
            wave_of[cell.name] = 0
        else:
            wave_of[cell.name] = 1 + max((wave_of.get(n, 0) for n in cell.after), default=0)
    todo = [cell for cell in cells if not markers.is_done(cell.name)]
    for wave in sorted({wave_of[cell.name] for cell in todo}):
        print(f"# wave {wave}" + (f": after wave {wave - 1} has finished" if wave > 1 else ""))
        for cell in todo:
            if wave_of[cell.name] == wave:
                print(f"cft-rl experiment --recipe {resolved} cell={cell.name}")
    waiting = len(planned) - len(cells)
    if waiting:
        print(
            f"# {waiting} more cells wait on learning-rate sweeps (validation of the sweep "
            "runs above); rerun with dry_run=true once those have finished"
        )
    print(
        f"# then `cft-rl experiment --recipe {resolved}` checks every cell, runs any left and "
        "writes the report"
    )


def _write_plan(grid: Grid, cells: list[Cell]) -> None:
    """OUT/plan.json (cft_rl.experiment_plan): what `cft-rl report compare` reads."""
    config = grid.config
    lr_choice = {}
    for method in config.methods:
        scores = grid.sweep_scores(method)
        lr_choice[method.name] = LrChoice(
            chosen=grid.choose_lr(method),
            validation_accuracy={str(lr): score for lr, score in (scores or {}).items()},
        )
    ExperimentPlan(
        baseline=config.baseline,
        compare_with=config.compare_with,
        methods=[method.name for method in config.methods],
        identify=_relative(Path(grid.identify_dir()), grid.out),
        probe="probe" if config.probe is not None else None,
        sft=[
            SftEntry(**cell.info, dir=cell.name)
            for cell in cells
            if cell.stage == "sft" and cell.info
        ],
        lr_choice=lr_choice,
        grpo=[GrpoEntry(**cell.info, dir=cell.name) for cell in cells if cell.stage == "grpo"],
        evals=[EvalEntry(**cell.info, dir=cell.name) for cell in cells if cell.stage == "eval"],
    ).write(grid.out)


def _relative(path: Path, out: Path) -> str:
    """`path` relative to the experiment directory (what plan.json holds)."""
    return os.path.relpath(path.resolve(), out.resolve())


def _child_env(jobs: int) -> dict[str, str]:
    """The cores are shared among the cells that run at once (unless the user says)."""
    # a cell must not inherit launcher variables: concurrent DeepSpeed cells would share a port
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHER_ENV}
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(key, threads)
    return env


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A child's pre-exec hook: it gets SIGKILL when the experiment process dies."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before the fork: the hook only calls

    def hook() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the hook ran
            os._exit(1)

    return hook


def _try_lock(path: Path) -> IO[str] | None:
    """An exclusive lock on `path` (released when the handle closes or the process dies), or
    None when another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w")  # noqa: SIM115 (the caller closes it)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


class _exclusive:
    """The experiment's lock for the life of the scheduler."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.handle = _try_lock(self.path)
        if self.handle is None:
            raise UserError(f"{self.path.parent}: another `cft-rl experiment` is running on it")

    def __exit__(self, *exc: object) -> None:
        self.handle.close()
