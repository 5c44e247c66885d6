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
cells known so far, so a runner calls it again as cells finish.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cft_rl.config import ConfigError, apply_mapping, read_recipe, validate
from cft_rl.experiment.config import ExperimentConfig, Method

# stage -> its recipe schema, imported when a cell of it is planned
SCHEMAS = {
    "identify": "cft_rl.critical.config:IdentifyConfig",
    "sft": "cft_rl.sft.config:SftConfig",
    "grpo": "cft_rl.rl.config:GrpoConfig",
    "eval": "cft_rl.eval.config:EvalConfig",
}
# Written by `cft-rl sft` next to its export (cft_rl.sft.trainer.EXPORT_INFO).
EXPORT_INFO = "export.json"


@dataclass(frozen=True)
class Cell:
    name: str  # its directory, relative to the experiment's output_dir
    stage: str
    recipe: dict[str, Any]  # validated and resolved: what the stage will run
    after: tuple[str, ...] = ()  # cells that must finish first
    # What report compare needs to know about it.
    info: dict[str, Any] = field(default_factory=dict, compare=False)


def lr_label(lr: float) -> str:
    return f"lr{lr:.0e}"


class Grid:
    """The cells of `config`; `is_done(cell name)` says which have finished."""

    def __init__(self, config: ExperimentConfig, is_done: Callable[[str], bool]) -> None:
        self.config = config
        self.out = Path(config.output_dir)
        self.is_done = is_done
        self._recipes: dict[str, dict[str, Any]] = {}

    # -- the cells ----------------------------------------------------------------------------

    def cells(self) -> list[Cell]:
        """Every cell known now, in an order that runs dependencies first."""
        config = self.config
        cells = []
        if config.identify.recipe is not None:
            cells.append(
                self._cell(
                    "identify", "identify", config.identify.recipe, config.identify.overrides
                )
            )
        if config.probe is not None:
            cells.append(
                self._cell("probe", "identify", config.probe.recipe, config.probe.overrides)
            )
        if config.reference is not None:
            cells.append(
                self._cell("reference", "sft", config.reference.recipe, config.reference.overrides)
            )
        finals: dict[tuple[str, int], Cell] = {}
        for method in config.methods:
            runs = {cell.name: cell for cell in self.sweep_cells(method)}
            chosen = self.choose_lr(method)
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

    def planned_counts(self) -> dict[str, int]:
        """Cells per stage once every learning rate is chosen (for the plan printed first)."""
        config = self.config
        counts = {
            "identify": int(config.identify.recipe is not None) + int(config.probe is not None)
        }
        sft = int(config.reference is not None)
        for method in config.methods:
            lrs = config.lrs_of(method)
            seeds = config.seeds_of(method)
            sweep = len(lrs) if len(lrs) > 1 else 0
            sft += sweep + len(seeds) - int(sweep > 0 and config.lr_sweep.seed in seeds)
        counts["sft"] = sft
        grpo = len(config.grpo.start_from) * len(config.grpo.seeds) if config.grpo else 0
        counts["grpo"] = grpo
        finals = sum(len(config.seeds_of(m)) for m in config.methods)
        counts["eval"] = finals + grpo + int(config.eval.base)
        return counts

    def sweep_cells(self, method: Method) -> list[Cell]:
        lrs = self.config.lrs_of(method)
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
        if scores is None:
            return None
        best = max(scores.values())
        return min(lr for lr, score in scores.items() if score == best)

    def sweep_scores(self, method: Method) -> dict[float, float] | None:
        """Validation accuracy of each sweep run's export; None until all have finished."""
        scores = {}
        for cell in self.sweep_cells(method):
            if not self.is_done(cell.name):
                return None
            info = json.loads((self.out / cell.name / EXPORT_INFO).read_text())
            if not info.get("validation"):
                raise ConfigError(
                    f"{self.out / cell.name}: a learning-rate sweep needs validation; set "
                    "validation.benchmark in the experiment's sft recipe or overrides"
                )
            scores[cell.info["lr"]] = info["validation"]["accuracy"]
        return scores

    # -- one cell of each kind ----------------------------------------------------------------

    def _sft_cell(self, method: Method, lr: float, seed: int, selected: bool) -> Cell:
        name = f"sft/{method.name}/{lr_label(lr)}/seed{seed}"
        data = self._method_recipe(method)
        after = []
        if data["data"]["format"] == "identify":
            after += self._identify_cells()
        if (data.get("reference_model") or {}).get("path") == self.reference_model():
            after.append("reference")
        data = apply_mapping(data, {"optim.lr": lr, "seed": seed})
        info = {"method": method.name, "lr": lr, "seed": seed, "selected": selected}
        return self._finish(name, "sft", data, tuple(after), info, f"methods '{method.name}'")

    def _grpo_cell(self, method: str, seed: int, start: Cell) -> Cell:
        grpo = self.config.grpo
        data = apply_mapping(read_recipe(grpo.recipe), grpo.overrides)
        data = apply_mapping(
            data, {"model.path": str(self.out / start.name / "hf_model"), "seed": seed}
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
                model = f"{source.name}/hf_model"
            data = apply_mapping(read_recipe(spec.recipe), spec.overrides)
            data = apply_mapping(data, {"model.path": str(self.out / model) if source else model})
            if group in spec.n_samples:
                data = apply_mapping(data, {"n_samples": spec.n_samples[group]})
            info = {"group": group, "seed": seed, "model": model}
            result.append(self._finish(name, "eval", data, after, info, f"eval of {group}"))
        return result

    def _cell(self, name: str, stage: str, recipe: str, overrides: dict[str, Any]) -> Cell:
        data = apply_mapping(read_recipe(recipe), overrides)
        return self._finish(name, stage, data, (), {}, name)

    def _finish(
        self, name: str, stage: str, data: dict, after: tuple[str, ...], info: dict, what: str
    ) -> Cell:
        """Validate the cell's recipe with its stage's schema; the error names the cell."""
        data = apply_mapping(data, {"output_dir": str(self.out / name)})
        if name not in self._recipes:
            self._recipes[name] = _validated(stage, data, f"experiment cell {name} ({what})")
        return Cell(name, stage, self._recipes[name], after, info)

    def _method_recipe(self, method: Method) -> dict[str, Any]:
        """The method's sft recipe with the experiment's and its own overrides; methods that train
        on identify data train on this experiment's identify run."""
        sft = self.config.sft
        data = read_recipe(method.recipe or sft.recipe)
        data = apply_mapping(apply_mapping(data, sft.overrides), method.overrides)
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
        return str(self.out / "reference" / "hf_model")

    def identify_dir(self) -> str:
        path = self.config.identify.path
        return path if path is not None else str(self.out / "identify")

    def _identify_cells(self) -> list[str]:
        return ["identify"] if self.config.identify.recipe is not None else []


def _validated(stage: str, data: dict[str, Any], source: str) -> dict[str, Any]:
    module, _, name = SCHEMAS[stage].partition(":")
    schema: type[BaseModel] = getattr(importlib.import_module(module), name)
    return validate(schema, data, source).model_dump(mode="json")
