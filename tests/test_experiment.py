"""`cft-rl experiment`: the grid's cells and learning-rate choice, its errors, and a smoke
experiment end to end that is killed with SIGKILL halfway and finished by a rerun."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cft_rl.config import ConfigError, load_config
from cft_rl.errors import UserError
from cft_rl.experiment.config import ExperimentConfig
from cft_rl.experiment.grid import Grid, lr_label
from cft_rl.experiment.runner import CELL_LOG, Markers, run_experiment, write_cell_recipe
from cft_rl.outputs import CELL_DONE

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "recipes/toy/experiment-smoke.yaml"


def smoke_config(tmp_path: Path, *overrides: str) -> ExperimentConfig:
    return load_config(ExperimentConfig, SMOKE, [f"output_dir={tmp_path}", *overrides])


def finish(out: Path, name: str, validation_accuracy: float | None = None) -> None:
    """Make cell `name` look finished (with an sft export's validation result)."""
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / CELL_DONE).write_text("{}")
    if validation_accuracy is not None:
        info = {"step": 2, "select": "best", "validation": {"accuracy": validation_accuracy}}
        (out / name / "export.json").write_text(json.dumps(info))


def grid_of(config: ExperimentConfig) -> Grid:
    out = Path(config.output_dir)
    return Grid(config, lambda name: (out / name / CELL_DONE).is_file())


# --- the grid -----------------------------------------------------------------------------


def test_cells_of_a_method_wait_for_its_learning_rate_sweep(tmp_path):
    grid = grid_of(smoke_config(tmp_path))
    names = [cell.name for cell in grid.cells()]
    sweep = [f"sft/{m}/lr{lr}/seed0" for m in ("sft", "cft") for lr in ("1e-04", "3e-04")]
    assert names == ["identify", *sweep, "eval/base"]
    finish(tmp_path, "identify")
    finish(tmp_path, "sft/cft/lr1e-04/seed0", 0.25)
    finish(tmp_path, "sft/cft/lr3e-04/seed0", 0.75)
    finish(tmp_path, "sft/sft/lr1e-04/seed0", 0.5)
    assert grid.choose_lr(grid.config.method("cft")) == 3e-4
    assert grid.choose_lr(grid.config.method("sft")) is None  # one sweep run unfinished
    finish(tmp_path, "sft/sft/lr3e-04/seed0", 0.5)
    assert grid.choose_lr(grid.config.method("sft")) == 1e-4  # the smaller on ties
    cells = {cell.name: cell for cell in grid.cells()}
    assert cells["sft/cft/lr3e-04/seed1"].recipe["optim"]["lr"] == 3e-4
    assert cells["sft/cft/lr3e-04/seed1"].recipe["seed"] == 1
    assert cells["sft/cft/lr3e-04/seed0"].info["selected"]
    assert not cells["sft/cft/lr1e-04/seed0"].info["selected"]
    grpo = cells["grpo/cft/seed0"]
    assert grpo.after == ("sft/cft/lr3e-04/seed0",)
    assert grpo.recipe["model"]["path"] == str(tmp_path / "sft/cft/lr3e-04/seed0/hf_model")
    assert cells["eval/grpo-cft/seed0"].after == ("grpo/cft/seed0",)
    assert cells["sft/sft/lr1e-04/seed1"].recipe["data"]["path"] == str(tmp_path / "identify")
    # the provisional plan (validated and counted before anything runs) is the plan run
    assert [c.name for c in grid.check()] == list(cells)


def test_a_best_value_at_the_grids_edge_extends_the_sweep_beyond_it(tmp_path):
    grid = grid_of(smoke_config(tmp_path, "lr_sweep.extend_at_edge=2"))
    finish(tmp_path, "identify")
    cft = grid.config.method("cft")
    finish(tmp_path, "sft/cft/lr1e-04/seed0", 0.5)
    finish(tmp_path, "sft/cft/lr3e-04/seed0", 0.75)  # the largest is best: 1e-3 is tried
    assert grid.sweep_lrs(cft) == [1e-4, 3e-4, 1e-3] and grid.choose_lr(cft) is None
    assert "sft/cft/lr1e-03/seed0" in [cell.name for cell in grid.cells()]
    finish(tmp_path, "sft/cft/lr1e-03/seed0", 0.8)  # still the edge: 3e-3, the last extension
    assert grid.sweep_lrs(cft) == [1e-4, 3e-4, 1e-3, 3e-3]
    finish(tmp_path, "sft/cft/lr3e-03/seed0", 0.9)
    assert grid.choose_lr(cft) == 3e-3  # at the edge after 2 extensions: taken as it is
    sft = grid.config.method("sft")
    finish(tmp_path, "sft/sft/lr1e-04/seed0", 0.6)
    finish(tmp_path, "sft/sft/lr3e-04/seed0", 0.5)  # the smallest is best: 3e-5 below it
    finish(tmp_path, "sft/sft/lr3e-05/seed0", 0.55)  # inside now: no more
    assert grid.sweep_lrs(sft) == [3e-5, 1e-4, 3e-4] and grid.choose_lr(sft) == 1e-4
    without = grid_of(smoke_config(tmp_path))  # extend_at_edge 0: the grid as given
    assert without.sweep_lrs(cft) == [1e-4, 3e-4] and without.choose_lr(cft) == 3e-4


def test_a_tie_with_an_inner_value_does_not_extend_the_grid(tmp_path):
    grid = grid_of(smoke_config(tmp_path, "lr_sweep.extend_at_edge=2"))
    finish(tmp_path, "identify")
    finish(tmp_path, "sft/cft/lr1e-04/seed0", 0.75)
    finish(tmp_path, "sft/cft/lr3e-04/seed0", 0.75)
    cft = grid.config.method("cft")
    assert grid.sweep_lrs(cft) == [1e-4, 3e-4] and grid.choose_lr(cft) == 1e-4


def test_the_next_half_decade():
    from cft_rl.experiment.grid import next_half_decade

    assert [next_half_decade(x, down=True) for x in (3e-5, 1e-5, 1e-3)] == [1e-5, 3e-6, 3e-4]
    assert [next_half_decade(x, down=False) for x in (1e-3, 3e-3, 2e-4)] == [3e-3, 1e-2, 6e-4]


def test_a_sweep_without_validation_is_an_error(tmp_path):
    grid = grid_of(smoke_config(tmp_path))
    finish(tmp_path, "sft/cft/lr1e-04/seed0")
    (tmp_path / "sft/cft/lr1e-04/seed0/export.json").write_text(
        json.dumps({"step": 2, "select": "last", "validation": None})
    )
    finish(tmp_path, "sft/cft/lr3e-04/seed0", 0.5)
    with pytest.raises(UserError, match="sweep run has no validation result"):
        grid.choose_lr(grid.config.method("cft"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("baseline=sfft", "baseline: no method named 'sfft'"),
        ("grpo.start_from=[cfft]", "grpo.start_from: no method named 'cfft'"),
        ("eval.n_samples={cftt: 4}", "eval.n_samples: no group"),
        ("grpo.seeds=[0,7]", "has no seed"),
        ("compare_with=[rnd]", "compare_with: no method named 'rnd'"),
    ],
)
def test_a_misspelt_method_is_named(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        smoke_config(tmp_path, override)


def test_an_unknown_loss_names_the_method(tmp_path):
    methods = (
        "[{name: sft, overrides: {loss.name: sft}}, {name: cft, overrides: {loss.name: cfft}}]"
    )
    config = smoke_config(tmp_path, f"methods={methods}")
    with pytest.raises(ConfigError, match=r"(?s)methods 'cft'.*loss.name.*cfft"):
        grid_of(config).cells()


def test_an_unknown_key_in_overrides_names_the_cell(tmp_path):
    config = smoke_config(tmp_path, "eval.overrides.n_sample=3")
    with pytest.raises(ConfigError, match=r"(?s)cell eval/base.*unknown key 'n_sample'"):
        grid_of(config).cells()


def test_a_cell_whose_settings_changed_under_its_directory_is_refused(tmp_path):
    cell = grid_of(smoke_config(tmp_path)).cells()[1]
    write_cell_recipe(cell, tmp_path)
    # nothing ran yet: a changed recipe simply replaces the old one
    changed = cell.__class__(cell.name, cell.stage, {**cell.recipe, "seed": 5}, cell.after)
    write_cell_recipe(changed, tmp_path)
    # a start that failed before any work (its log only): still replaced
    (tmp_path / cell.name / CELL_LOG).write_text("error: ...\n")
    write_cell_recipe(changed, tmp_path)
    (tmp_path / cell.name / "metrics.jsonl").write_text('{"step": 1}\n')  # work was done
    with pytest.raises(UserError, match=rf"cell {cell.name}: .* other settings \(seed\)"):
        write_cell_recipe(cell, tmp_path)


def test_the_shipped_experiment_recipes_plan(tmp_path):
    """Every cell of the shipped experiments validates against its stage's schema."""
    for recipe in sorted((REPO / "recipes").glob("toy*/experiment*.yaml")):
        config = load_config(ExperimentConfig, recipe, [f"output_dir={tmp_path / recipe.stem}"])
        cells = grid_of(config).check()  # every cell, those after the lr sweeps included
        stages = {cell.stage for cell in cells}
        assert {"identify", "sft", "eval"} <= stages, recipe
        assert len(cells) > len(grid_of(config).cells()), recipe  # sweeps decide the rest


# --- end to end ---------------------------------------------------------------------------


def _experiment(out: Path) -> list[str]:
    return [sys.executable, "-m", "cft_rl.cli", "experiment", "--recipe", str(SMOKE),
            f"output_dir={out}"]  # fmt: skip


def _processes_writing(out: Path) -> list[int]:
    """Processes whose command line names `out` (the experiment's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if str(out).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_smoke_experiment_survives_kill_9_and_skips_finished_cells(tmp_path):
    out = tmp_path / "exp"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    first = subprocess.Popen(_experiment(out), cwd=REPO, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not list(out.glob("sft/*/*/*/" + CELL_DONE)):  # identify and a first sft cell done
        assert first.poll() is None, "the experiment ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.5)
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = sorted(str(p.parent.relative_to(out)) for p in out.rglob(CELL_DONE))
    time.sleep(2)
    assert _processes_writing(out) == []  # the children died with it

    rerun = subprocess.run(_experiment(out), cwd=REPO, env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for name in finished:  # finished cells were not run again
        assert (out / name / CELL_LOG).read_text().count("\n=== ") == 1, name
        assert f"started {name} " not in rerun.stdout
    plan = json.loads((out / "plan.json").read_text())
    assert {e["group"] for e in plan["evals"]} == {"base", "sft", "cft", "grpo-cft"}
    assert all((out / e["dir"] / "summary.json").is_file() for e in plan["evals"])
    assert len(list(out.rglob(CELL_DONE))) == 14
    assert "| cft |" in (out / "report/compare.md").read_text()

    again = subprocess.run(_experiment(out), cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0 and "started" not in again.stdout  # nothing left to run
    recipe = yaml.safe_load((out / "sft/cft/lr1e-04/seed0/recipe.yaml").read_text())
    assert recipe["output_dir"] == str(out / "sft/cft/lr1e-04/seed0")


def test_a_method_may_bring_its_own_sft_recipe(tmp_path):
    methods = (
        "[{name: sft, overrides: {loss.name: sft}},"
        " {name: cft, recipe: recipes/toy/cft.yaml, overrides: {train.micro_batch_size: 3}}]"
    )
    cells = {c.name: c for c in grid_of(smoke_config(tmp_path, f"methods={methods}")).cells()}
    cft = cells["sft/cft/lr1e-04/seed0"].recipe
    assert cft["loss"]["name"] == "cft"  # from its own recipe
    assert cft["train"]["micro_batch_size"] == 3  # its overrides win over the experiment's
    assert cft["train"]["max_steps"] == 2  # the experiment's sft.overrides still apply
    assert cells["sft/sft/lr1e-04/seed0"].recipe["train"]["micro_batch_size"] == 2


def test_learning_rates_never_share_a_directory(tmp_path):
    assert lr_label(1e-4) == "lr1e-04" and lr_label(3e-05) == "lr3e-05"
    assert lr_label(1.5e-5) == "lr1.5e-05" and lr_label(2e-5) == "lr2e-05"
    grid = grid_of(smoke_config(tmp_path, "lr_sweep.values=[2.5e-4, 3.0e-4]"))
    sweep = grid.sweep_cells(grid.config.method("cft"))
    assert [c.name for c in sweep] == ["sft/cft/lr2.5e-04/seed0", "sft/cft/lr3e-04/seed0"]
    assert [c.recipe["optim"]["lr"] for c in sweep] == [2.5e-4, 3e-4]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("grpo.overrides.rolout.n=2", r"(?s)cell grpo/cft/seed0.*unknown key 'rolout'"),
        (
            "sft.overrides={validation.benchmark: null, checkpoint.export: last}",
            "sweep chooses on validation",
        ),
        ("sft.overrides.validation.benchmark=toy-long", "is a test or training set"),
        ("sft.overrides.validation.benchmark=toy-long-train", "is a test or training set"),
        ("methods=[{name: base}]", "name report groups of their own"),
        (
            "identify.overrides.data.benchmark=toy-lng-train",
            r"cell identify: data.benchmark: unknown benchmark 'toy-lng-train' "
            r"\(did you mean 'toy-long-train'\?\)",
        ),
        ("grpo.overrides.validation.benchmark=toy-long", r"cell grpo/cft/seed0: .*test sets"),
        ("identify={path: /nonexistent}", "identify.path: /nonexistent holds no"),
        ("eval.recipe=recipes/toy/evl.yaml", "experiment eval.recipe: recipe not found"),
    ],
)
def test_the_whole_plan_is_checked_before_anything_runs(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        grid_of(smoke_config(tmp_path, override)).check()


def test_a_finished_cell_whose_settings_changed_is_refused(tmp_path):
    markers = Markers(tmp_path)
    cell = grid_of(smoke_config(tmp_path)).cells()[0]
    markers.check(cell)
    markers.write(cell, seconds=1.0)
    changed = grid_of(smoke_config(tmp_path, "identify.overrides.data.limit=7")).cells()[0]
    with pytest.raises(UserError, match=r"cell identify: .* other settings \(data.limit\)"):
        markers.check(changed)


def test_a_cell_made_from_an_earlier_run_of_its_input_is_refused(tmp_path):
    grid = grid_of(smoke_config(tmp_path))
    markers = Markers(tmp_path)
    identify, sweep = grid.cells()[:2]
    for cell in (identify, sweep):
        markers.check(cell)
        markers.write(cell, seconds=1.0)
    markers.check(sweep)  # consistent
    time.sleep(0.01)
    markers.write(identify, seconds=1.0)  # identify ran again: the sweep run is outdated
    with pytest.raises(
        UserError, match=rf"cell {sweep.name} was made from an earlier run of identify"
    ):
        markers.check(sweep)


def test_dry_run_prints_one_command_per_cell_that_runs_it(tmp_path, capsys):
    out = tmp_path / "exp"
    run_experiment(smoke_config(out, "dry_run=true"))
    printed = capsys.readouterr().out
    resolved = out / "experiment.yaml"
    assert f"cft-rl experiment --recipe {resolved} cell=identify" in printed
    assert "cell=sft/cft/lr3e-04/seed0" in printed
    assert "8 more cells wait on learning-rate sweeps" in printed
    assert json.loads((out / "plan.json").read_text())["evals"]  # report compare can run
    with pytest.raises(ConfigError, match="give one of them"):
        load_config(ExperimentConfig, resolved, ["cell=identify", "dry_run=true"])
    again = load_config(ExperimentConfig, resolved, ["cell=identify"])
    assert again.output_dir == str(out) and not again.dry_run
    with pytest.raises(UserError, match="cell sft/cft/lr3e-04/seed0 waits for identify"):
        run_experiment(load_config(ExperimentConfig, resolved, ["cell=sft/cft/lr3e-04/seed0"]))
    with pytest.raises(UserError, match="waits for its method's learning-rate sweep"):
        run_experiment(load_config(ExperimentConfig, resolved, ["cell=sft/cft/lr1e-04/seed1"]))
    with pytest.raises(UserError, match="no cell named sft/dft"):
        run_experiment(load_config(ExperimentConfig, resolved, ["cell=sft/dft/lr1e-04/seed0"]))
    run_experiment(again)  # a real identify run of 6 questions, as a cluster job would
    assert (out / "identify" / CELL_DONE).is_file()
    assert (out / "identify" / "summary.json").is_file()
