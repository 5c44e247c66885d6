"""Recipe schema of `cft-rl experiment`: a grid of ordinary stage runs (docs/experiments.md).

Every cell of the grid is a recipe of one stage (`identify`, `sft`, `grpo`, `eval`) plus
dotted overrides, the same `key=value` pairs the command line takes, given here as a mapping.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from cft_rl.config import Section


class StageRecipe(Section):
    """A stage's recipe and the overrides this experiment applies to it."""

    recipe: str
    # Dotted keys, e.g. {"loss.name": "cft", "train.epochs": 3}; values are YAML values.
    overrides: dict[str, Any] = {}


class IdentifyCell(Section):
    """The identify run the methods train on: a recipe to run, or an existing output_dir."""

    recipe: str | None = None
    overrides: dict[str, Any] = {}
    path: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> IdentifyCell:
        if (self.recipe is None) == (self.path is None):
            raise ValueError("give identify.recipe (run it) or identify.path (an earlier run)")
        if self.path is not None and self.overrides:
            raise ValueError("identify.overrides apply to identify.recipe, not to identify.path")
        return self


class Method(Section):
    """One training method: an sft recipe with the experiment's and these overrides."""

    # Label in reports and directory name, e.g. "cft".
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # An sft recipe of its own; null: the experiment's `sft.recipe`. The experiment's
    # `sft.overrides` apply first either way, then these.
    recipe: str | None = None
    overrides: dict[str, Any] = {}
    # Seeds of this method; null: the experiment's `seeds`.
    seeds: list[int] | None = Field(default=None, min_length=1)
    # Learning rates to choose from on validation; null: the experiment's `lr_sweep.values`;
    # []: no sweep, the recipe's optim.lr.
    lrs: list[float] | None = None

    @model_validator(mode="after")
    def _lr_not_overridden(self) -> Method:
        if self.name == "base" or self.name.startswith("grpo-"):
            raise ValueError(
                f"methods '{self.name}': 'base' and 'grpo-*' name report groups of their own"
            )
        if "optim.lr" in self.overrides:
            raise ValueError(f"methods '{self.name}': set learning rates with `lrs`, not optim.lr")
        return self


class LrSweep(Section):
    """Each method's learning rate is chosen on validation questions (the sft recipe's
    `validation` section), never on test sets: every value is trained with `seed`, the one
    whose exported checkpoint scores the highest validation accuracy is used for all seeds
    (the smallest on ties)."""

    values: list[float] = []
    seed: int = 0
    # When the best value is the grid's smallest or largest, add the next one beyond it (on
    # the half-decade grid 1, 3, 10, 30, ...) and train it too, at most this many times per
    # method: so that no chosen value sits at the edge of what was tried. 0: the grid as given.
    extend_at_edge: int = Field(default=0, ge=0)


class GrpoCells(StageRecipe):
    """GRPO from the exports of some methods: seed s starts from that method's seed-s run."""

    start_from: list[str] = Field(min_length=1)
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1)


class EvalCells(StageRecipe):
    """`cft-rl eval` of every final model (selected-lr runs, GRPO runs, the base model)."""

    # Also evaluate the starting model of the sft recipe, as group "base".
    base: bool = True
    # Samples per problem by group (a method name, "base" or "grpo-<method>"); others take
    # the eval recipe's n_samples.
    n_samples: dict[str, int] = {}


class ExperimentConfig(Section):
    """`cft-rl experiment`: identify -> methods x learning rates x seeds -> GRPO -> eval."""

    output_dir: str
    # Cells run at once; each gets cpu_count / jobs threads.
    jobs: int = Field(default=1, ge=1)
    # Print one command per cell (in waves, for a cluster scheduler); run nothing.
    dry_run: bool = False
    # Run only this cell (e.g. "sft/cft/lr1e-04/seed0"), in the foreground: what a dry run's
    # commands do.
    cell: str | None = None
    identify: IdentifyCell
    # An identify run on held-out questions: its responses and critical masks are where
    # `report compare` measures each model's token entropy. null: no entropy probe.
    probe: StageRecipe | None = None
    # Rho-1's reference model: an sft run (e.g. on reference solutions) whose export is the
    # `reference_model` of every method with loss rho1 that sets none. null: none.
    reference: StageRecipe | None = None
    sft: StageRecipe
    methods: list[Method] = Field(min_length=1)
    # The method every other is compared with, pairwise; null: none.
    baseline: str | None = "sft"
    # Further methods every other is compared with in the report (e.g. [cft], for the
    # token-selection controls against it).
    compare_with: list[str] = []
    seeds: list[int] = Field(default=[0, 1, 2], min_length=1)
    lr_sweep: LrSweep = LrSweep()
    grpo: GrpoCells | None = None
    eval: EvalCells

    @model_validator(mode="after")
    def _names_known(self) -> ExperimentConfig:
        if self.cell is not None and self.dry_run:
            raise ValueError("cell runs one cell and dry_run runs none: give one of them")
        names = [method.name for method in self.methods]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"methods: each name may appear once, repeated: {repeated}")
        starts = self.grpo.start_from if self.grpo is not None else []
        referenced = [("baseline", self.baseline)] if self.baseline is not None else []
        referenced += [("grpo.start_from", name) for name in starts]
        referenced += [("compare_with", name) for name in self.compare_with]
        for key, name in referenced:
            if name not in names:
                raise ValueError(f"{key}: no method named '{name}' (methods: {', '.join(names)})")
        groups = {"base", *names, *(f"grpo-{name}" for name in starts)}
        unknown = sorted(set(self.eval.n_samples) - groups)
        if unknown:
            raise ValueError(
                f"eval.n_samples: no group {unknown} (groups: {', '.join(sorted(groups))})"
            )
        if self.grpo is not None:
            for name in self.grpo.start_from:
                missing = sorted(set(self.grpo.seeds) - set(self.method(name).seeds or self.seeds))
                if missing:
                    raise ValueError(
                        f"grpo.seeds: method '{name}' has no seed {missing} to start from"
                    )
        return self

    def method(self, name: str) -> Method:
        return next(method for method in self.methods if method.name == name)

    def seeds_of(self, method: Method) -> list[int]:
        return method.seeds if method.seeds is not None else self.seeds

    def lrs_of(self, method: Method) -> list[float]:
        return method.lrs if method.lrs is not None else self.lr_sweep.values
