"""The cells of an experiment: which stage runs, with which recipe, after which other cells.

A cell is one ordinary stage run in its own directory under the experiment's output_dir:

    identify/                          the identify run the methods train on
    probe/                             identify on held-out questions (entropy probe)
    reference/                         Rho-1's reference model (an sft run)
    sft/<method>/lr<lr>/seed<seed>/    one training run
    grpo/<method>/seed<seed>/          GRPO from sft/<method>/<chosen lr>/seed<seed>
    eval/base/, eval/<group>/seed<seed>/   `cft-rl eval` of every final model

Most cells are known from the recipe alone; the runs of a method at its chosen learning rate
become known once that method's sweep runs have finished (`choose_lr`). `cells` returns the
cells known so far, so a runner calls it again as cells finish; `cells(provisional=True)`
plans every method at its first learning rate, so that every cell's recipe is validated and
counted before anything runs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cft_rl.commands import STAGES, resolve
from cft_rl.config import ConfigError, apply_mapping, read_recipe, validate
from cft_rl.data import BENCHMARKS
from cft_rl.errors import UserError
from cft_rl.experiment.config import ExperimentConfig, Method
from cft_rl.outputs import EXPORT_INFO, HF_EXPORT, IDENTIFY_DATASET
from cft_rl.registry import did_you_mean


@dataclass(frozen=True)
class Cell:
    name: str  # its directory, relative to the experiment's output_dir
    stage: str
    recipe: dict[str, Any]  # validated and resolved: what the stage will run
    after: tuple[str, ...] = ()  # cells that must finish first
    # What report compare needs to know about it.
    info: dict[str, Any] = field(default_factory=dict, compare=False)


def _best(scores: dict[float, float]) -> float:
    """The learning rate with the highest validation accuracy, the smallest on ties."""
    top = max(scores.values())
    return min(lr for lr, score in scores.items() if score == top)


def next_half_decade(lr: float, down: bool) -> float:
    """The neighbour of `lr` on the grid 1e-5, 3e-5, 1e-4, 3e-4, ... below or above it (a
    value off that grid moves by a factor of sqrt(10), to one significant digit)."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    mantissa = lr / 10**exponent
    if math.isclose(mantissa, 1.0):
        return float(f"3e{exponent - 1}") if down else float(f"3e{exponent}")
    if math.isclose(mantissa, 3.0):
        return float(f"1e{exponent}") if down else float(f"1e{exponent + 1}")
    return float(f"{lr / math.sqrt(10) if down else lr * math.sqrt(10):.0e}")


def lr_label(lr: float) -> str:
    """ "lr3e-04": the shortest scientific form that reads back as `lr` (so that no two
    learning rates share a directory)."""
    digits = next(n for n in range(17) if float(f"{lr:.{n}e}") == lr)
    return f"lr{lr:.{digits}e}"


class Grid:
    """The cells of `config`; `is_done(cell name)` says which have finished."""

    def __init__(self, config: ExperimentConfig, is_done: Callable[[str], bool]) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.is_done = is_done
        self._validated: dict[str, dict[str, Any]] = {}  # by the recipe's JSON
        self._method_recipes: dict[str, dict[str, Any]] = {}  # by method name

    # -- the cells ----------------------------------------------------------------------------

    def cells(self, provisional: bool = False) -> list[Cell]:
        """Every cell known now (with `provisional`, every cell, methods whose sweep is
        unfinished at their first learning rate), dependencies first."""
        config = self.config
        cells = []
        if config.identify.recipe is not None:
            identify = config.identify
            cells.append(self._cell("identify", "identify", identify.recipe, identify.overrides))
        if config.probe is not None:
            cells.append(
                self._cell("probe", "identify", config.probe.recipe, config.probe.overrides)
            )
        if config.reference is not None:
            reference = config.reference
            cells.append(self._cell("reference", "sft", reference.recipe, reference.overrides))
        finals: dict[tuple[str, int], Cell] = {}
        for method in config.methods:
            runs = {cell.name: cell for cell in self.sweep_cells(method)}
            chosen = self.choose_lr(method)
            if chosen is None and provisional:
                chosen = config.lrs_of(method)[0]
            for seed in config.seeds_of(method) if chosen is not None else []:
                # the sweep run at the chosen lr and seed, if any, is that seed's run
                cell = self._sft_cell(method, chosen, seed, selected=True)
                runs[cell.name] = cell
                finals[(method.name, seed)] = cell
            cells += runs.values()
        if config.grpo is not None:
            for name in config.grpo.start_from:
                for seed in config.grpo.seeds:
                    start = finals.get((name, seed))
                    if start is not None:
                        cells.append(self._grpo_cell(name, seed, start))
        cells += self._eval_cells(finals, cells)
        return cells

    def check(self) -> list[Cell]:
        """Validate every cell and the protocol before anything runs; returns all cells."""
        cells = self.cells(provisional=True)
        if (
            self.config.identify.path is not None
            and not (Path(self.config.identify.path) / IDENTIFY_DATASET).is_file()
        ):
            raise ConfigError(
                f"identify.path: {self.config.identify.path} holds no {IDENTIFY_DATASET}; "
                "give the output_dir of a finished `cft-rl identify` run"
            )
        for cell in cells:
            for key, name in _benchmarks(cell, registry_only=True):
                if name not in BENCHMARKS:
                    hint = did_you_mean(name, BENCHMARKS)
                    raise ConfigError(
                        f"experiment cell {cell.name}: {key}: unknown benchmark '{name}'{hint}"
                    )
        tested = {name for cell in cells if cell.stage == "eval" for _, name in _benchmarks(cell)}
        for method in self.config.methods:
            validation = self._method_recipe(method)["validation"]["benchmark"]
            if len(self.config.lrs_of(method)) > 1 and validation is None:
                raise ConfigError(
                    f"methods '{method.name}': a learning-rate sweep chooses on validation; set "
                    "validation.benchmark in the experiment's sft.overrides"
                )
            if validation in tested or (validation or "").endswith("-train"):
                raise ConfigError(
                    f"methods '{method.name}': validation.benchmark '{validation}' is a test "
                    "or training set of this experiment; choose on held-out validation questions"
                )
        for cell in cells:  # nothing trains or chooses on a test set
            if cell.stage in ("sft", "grpo", "identify"):
                leaked = [(k, n) for k, n in _benchmarks(cell) if n in tested]
                if leaked:
                    key, name = leaked[0]
                    raise ConfigError(
                        f"experiment cell {cell.name}: {key} '{name}' is one of this "
                        "experiment's test sets"
                    )
        return cells

    def sweep_lrs(self, method: Method) -> list[float]:
        """The learning rates swept: the grid, and (lr_sweep.extend_at_edge) a value beyond
        its edge each time the best finished value sits at that edge."""
        return self._sweep(method)[0]

    def sweep_cells(self, method: Method) -> list[Cell]:
        lrs = self.sweep_lrs(method)
        if len(lrs) < 2:
            return []
        return [self._sft_cell(method, lr, self.config.lr_sweep.seed, selected=False) for lr in lrs]

    def choose_lr(self, method: Method) -> float | None:
        """The method's learning rate: the only one given, else the sweep's best on validation
        (the smallest on ties); None while sweep runs are unfinished."""
        lrs = self.config.lrs_of(method)
        if not lrs:
            return self._method_recipe(method)["optim"]["lr"]
        if len(lrs) == 1:
            return lrs[0]
        scores = self.sweep_scores(method)
        return None if scores is None else _best(scores)

    def sweep_scores(self, method: Method) -> dict[float, float] | None:
        """Validation accuracy of each sweep run's export; None until all have finished."""
        return self._sweep(method)[1]

    def _sweep(self, method: Method) -> tuple[list[float], dict[float, float] | None]:
        """The learning rates swept and their scores (None while a run is unfinished), in
        one pass over the sweep's results (again only after the grid grew)."""
        lrs = sorted(self.config.lrs_of(method))
        if len(lrs) < 2:
            return lrs, {}
        scores = self._scores(method, lrs)
        for _ in range(self.config.lr_sweep.extend_at_edge):
            if scores is None:
                break
            best = _best(scores)
            if sum(score == scores[best] for score in scores.values()) > 1:
                break  # tied with an inner value: the optimum is not beyond the edge
            if best == lrs[0]:
                lrs.insert(0, next_half_decade(lrs[0], down=True))
            elif best == lrs[-1]:
                lrs.append(next_half_decade(lrs[-1], down=False))
            else:
                break
            scores = self._scores(method, lrs)
        return lrs, scores

    def _scores(self, method: Method, lrs: list[float]) -> dict[float, float] | None:
        scores = {}
        for lr in lrs:
            cell = self._sft_cell(method, lr, self.config.lr_sweep.seed, selected=False)
            if not self.is_done(cell.name):
                return None
            path = self.out / cell.name / EXPORT_INFO
            try:
                validation = json.loads(path.read_text())["validation"]
            except (OSError, ValueError, KeyError) as err:
                raise UserError(f"{path}: not the export record of `cft-rl sft` ({err})") from None
            if not validation:
                raise UserError(
                    f"{path}: this sweep run has no validation result; the sweep chooses on it"
                )
            scores[cell.info["lr"]] = validation["accuracy"]
        return scores

    # -- one cell of each kind ----------------------------------------------------------------

    def _sft_cell(self, method: Method, lr: float, seed: int, selected: bool) -> Cell:
        name = f"sft/{method.name}/{lr_label(lr)}/seed{seed}"
        data = self._method_recipe(method)
        after = []
        if data["data"]["format"] == "identify":
            after += self._identify_cells()
        reference = (data.get("reference_model") or {}).get("path")
        if self.config.reference is not None and reference == self.reference_model():
            after.append("reference")
        data = apply_mapping(data, {"optim.lr": lr, "seed": seed})
        info = {"method": method.name, "lr": lr, "seed": seed, "selected": selected}
        return self._finish(name, "sft", data, tuple(after), info, f"methods '{method.name}'")

    def _grpo_cell(self, method: str, seed: int, start: Cell) -> Cell:
        grpo = self.config.grpo
        data = _mapped(_read(grpo.recipe, "grpo.recipe"), grpo.overrides, "grpo.overrides")
        data = apply_mapping(
            data, {"model.path": str(self.out / start.name / HF_EXPORT), "seed": seed}
        )
        after = [start.name]
        if self.config.probe is not None:
            data = apply_mapping(data, {"probe.path": str(self.out / "probe")})
            after.append("probe")
        info = {"start": method, "seed": seed}
        return self._finish(f"grpo/{method}/seed{seed}", "grpo", data, tuple(after), info, "grpo")

    def _eval_cells(self, finals: dict[tuple[str, int], Cell], cells: list[Cell]) -> list[Cell]:
        # (group, seed, model path, the cell that makes the model)
        models: list[tuple[str, int | None, str, Cell | None]] = []
        if self.config.eval.base:
            models.append(
                ("base", None, self._method_recipe(self.config.methods[0])["model"]["path"], None)
            )
        for (method, seed), cell in finals.items():
            models.append((method, seed, "", cell))
        for cell in cells:
            if cell.stage == "grpo":
                models.append((f"grpo-{cell.info['start']}", cell.info["seed"], "", cell))
        spec = self.config.eval
        result = []
        for group, seed, model, source in models:
            name = "eval/base" if seed is None else f"eval/{group}/seed{seed}"
            after = (source.name,) if source is not None else ()
            if source is not None:  # in reports, relative to the experiment directory
                model = f"{source.name}/{HF_EXPORT}"
            data = _mapped(_read(spec.recipe, "eval.recipe"), spec.overrides, "eval.overrides")
            data = apply_mapping(data, {"model.path": str(self.out / model) if source else model})
            if group in spec.n_samples:
                data = apply_mapping(data, {"n_samples": spec.n_samples[group]})
            info = {"group": group, "seed": seed, "model": model}
            result.append(self._finish(name, "eval", data, after, info, f"eval of {group}"))
        return result

    def _cell(self, name: str, stage: str, recipe: str, overrides: dict[str, Any]) -> Cell:
        data = _mapped(_read(recipe, f"{name}.recipe"), overrides, f"{name}.overrides")
        return self._finish(name, stage, data, (), {}, name)

    def _finish(
        self, name: str, stage: str, data: dict, after: tuple[str, ...], info: dict, what: str
    ) -> Cell:
        """Validate the cell's recipe with its stage's schema; the error names the cell."""
        source = f"experiment cell {name} ({what})"
        data = _mapped(data, {"output_dir": str(self.out / name)}, source)
        key = json.dumps(data, sort_keys=True)
        if key not in self._validated:
            self._validated[key] = _validated(stage, data, source)
        return Cell(name, stage, self._validated[key], after, info)

    def _method_recipe(self, method: Method) -> dict[str, Any]:
        """The method's sft recipe with the experiment's and its own overrides; methods that train
        on identify data train on this experiment's identify run. Read and validated once."""
        if method.name not in self._method_recipes:
            self._method_recipes[method.name] = self._read_method_recipe(method)
        return self._method_recipes[method.name]

    def _read_method_recipe(self, method: Method) -> dict[str, Any]:
        sft = self.config.sft
        key = f"methods '{method.name}' recipe" if method.recipe else "sft.recipe"
        data = _read(method.recipe or sft.recipe, key)
        data = _mapped(data, sft.overrides, "sft.overrides")
        data = _mapped(data, method.overrides, f"methods '{method.name}' overrides")
        if data.get("data", {}).get("format", "identify") == "identify":
            data = apply_mapping(data, {"data.path": self.identify_dir()})
        rho1 = data.get("loss", {}).get("name") == "rho1"
        if rho1 and data.get("reference_model") is None and self.config.reference is not None:
            data = apply_mapping(data, {"reference_model.path": self.reference_model()})
        try:
            return _validated("sft", data, f"methods '{method.name}'")
        except ConfigError as err:
            raise ConfigError(f"experiment: {err}") from None

    def reference_model(self) -> str:
        return str(self.out / "reference" / HF_EXPORT)

    def identify_dir(self) -> str:
        path = self.config.identify.path
        return path if path is not None else str(self.out / "identify")

    def _identify_cells(self) -> list[str]:
        return ["identify"] if self.config.identify.recipe is not None else []


def _benchmarks(cell: Cell, registry_only: bool = False) -> list[tuple[str, str]]:
    """(key, benchmark name) of every benchmark a cell's recipe names; `registry_only`:
    leave out files of one's own (a data section with `fields`), whose names are labels."""
    recipe = cell.recipe
    sections = [(f"benchmarks[{i}]", b) for i, b in enumerate(recipe.get("benchmarks") or [])]
    sections += [(name, recipe.get(name) or {}) for name in ("data", "validation")]
    if cell.stage != "eval":
        sections = [(key, data) for key, data in sections if not key.startswith("benchmarks")]
    found = []
    for key, data in sections:
        if data.get("benchmark") is not None and not (registry_only and data.get("fields")):
            found.append((f"{key}.benchmark", data["benchmark"]))
    return found


def _read(recipe: str, key: str) -> dict[str, Any]:
    """The recipe a key of the experiment names (paths are relative to where it runs)."""
    try:
        return read_recipe(recipe)
    except ConfigError as err:
        raise ConfigError(f"experiment {key}: {err} (from {Path.cwd()})") from None


def _mapped(data: dict[str, Any], overrides: dict[str, Any], source: str) -> dict[str, Any]:
    try:
        return apply_mapping(data, overrides)
    except ConfigError as err:
        raise ConfigError(f"experiment {source}: {err}") from None


def _validated(stage: str, data: dict[str, Any], source: str) -> dict[str, Any]:
    """`data` validated by the schema the command line uses for `stage`, resolved."""
    schema: type[BaseModel] = resolve(STAGES[stage][0])
    return validate(schema, data, source).model_dump(mode="json")
