"""plan.json, the one schema of an experiment's plan: `cft-rl experiment` writes it into its
output_dir and `cft-rl report compare` reads it, both through this module."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError, model_validator

from cft_rl.config import Section
from cft_rl.errors import UserError
from cft_rl.files import write_text_atomic
from cft_rl.outputs import EXPERIMENT_PLAN


class SftEntry(Section):
    """One sft cell: a method at a learning rate and seed; `selected` for the runs at the
    method's chosen learning rate (the ones evaluated)."""

    method: str
    lr: float | None = None
    seed: int | None = None
    selected: bool = False
    dir: str


class GrpoEntry(Section):
    """One GRPO run, from the export of method `start` with `seed`."""

    start: str
    seed: int | None = None
    dir: str


class EvalEntry(Section):
    """One evaluation of a final model: its report group ("base", a method, "grpo-<method>")."""

    group: str
    seed: int | None = None
    model: str
    dir: str


class LrChoice(Section):
    """A method's learning-rate choice: each swept value's validation accuracy, the chosen."""

    chosen: float | None = None
    validation_accuracy: dict[str, float | None] = {}


class ExperimentPlan(Section):
    """Every run of the experiment and what the report needs to know of it. Directories are
    relative to the experiment's output_dir."""

    baseline: str | None = None
    compare_with: list[str] = []
    methods: list[str] = []
    identify: str | None = None
    probe: str | None = None
    sft: list[SftEntry] = []
    lr_choice: dict[str, LrChoice] = {}
    grpo: list[GrpoEntry] = []
    evals: list[EvalEntry] = []

    @model_validator(mode="after")
    def _groups_once(self) -> ExperimentPlan:
        groups = [(entry.group, entry.seed) for entry in self.evals]
        if len(set(groups)) < len(groups):
            raise ValueError("evals: an eval group and seed appear twice")
        return self

    def entries(self) -> list[tuple[str, str]]:
        """(kind, dir) of every run the plan names, in the order they run."""
        found = [
            (kind, path)
            for kind, path in (("identify", self.identify), ("probe", self.probe))
            if path
        ]
        found += [("sft", entry.dir) for entry in self.sft]
        found += [("grpo", entry.dir) for entry in self.grpo]
        found += [("eval", entry.dir) for entry in self.evals]
        return found

    def write(self, experiment: Path) -> None:
        write_text_atomic(experiment / EXPERIMENT_PLAN, self.model_dump_json(indent=1))

    @classmethod
    def read(cls, experiment: Path) -> ExperimentPlan:
        path = experiment / EXPERIMENT_PLAN
        if not path.is_file():
            raise UserError(
                f"{path} not found: is {experiment} the output_dir of `cft-rl experiment`?"
            )
        try:
            return cls.model_validate(json.loads(path.read_text()))
        except ValueError as err:  # malformed JSON, or pydantic's ValidationError
            detail = _first_problem(err)
            raise UserError(f"{path}: not an experiment plan ({detail})") from None


def _first_problem(err: ValueError) -> str:
    if isinstance(err, ValidationError):
        problem = err.errors()[0]
        where = ".".join(str(part) for part in problem["loc"])
        return f"{where}: {problem['msg']}" if where else problem["msg"]
    return str(err)
