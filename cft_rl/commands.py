"""The commands of `cft-rl`: for each, its recipe schema and the function that runs it.

Both are "module:name" import paths, imported only when the command runs, so that
`cft-rl --help` stays fast; the experiment grid validates a cell's recipe with the same
schema.
"""

from __future__ import annotations

import importlib
from typing import Any

# What the launchers (torchrun, deepspeed) set for each process of a multi-process command.
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

# stage name -> ("module:SchemaClass", "module:run_function", help text)
STAGES: dict[str, tuple[str, str, str]] = {
    "identify": (
        "cft_rl.identify.config:IdentifyConfig",
        "cft_rl.identify.runner:run_identify",
        "correct set + critical tokens by counterfactual perturbation",
    ),
    "sft": (
        "cft_rl.sft.config:SftConfig",
        "cft_rl.sft.trainer:run_sft",
        "CFT (or an SFT/DFT/... baseline) with DeepSpeed, resumable",
    ),
    "eval": (
        "cft_rl.eval.config:EvalConfig",
        "cft_rl.eval.runner:run_eval",
        "greedy accuracy and pass@k on benchmarks",
    ),
    "grpo": (
        "cft_rl.grpo.config:GrpoConfig",
        "cft_rl.grpo.runner:run_grpo",
        "GRPO from a checkpoint (local engine or verl), entropy monitored",
    ),
    "experiment": (
        "cft_rl.experiment.config:ExperimentConfig",
        "cft_rl.experiment.runner:run_experiment",
        "a grid of the stages above: methods x learning rates x seeds, GRPO, eval, report",
    ),
}

# report kind -> ("module:function", help text); each takes a list of run directories.
REPORTS: dict[str, tuple[str, str]] = {
    "tokens": (
        "cft_rl.report.tokens:report_tokens",
        "critical-token statistics and highlighted responses of an identify run",
    ),
    "passk": ("cft_rl.report.passk:report_passk", "pass@k curves of several eval runs"),
    "entropy": ("cft_rl.report.entropy:report_entropy", "entropy and reward curves of GRPO runs"),
    "compare": ("cft_rl.report.compare:report_compare", "statistics and plots of an experiment"),
}

TOY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "build": (
        "cft_rl.toy.config:ToyBuildConfig",
        "cft_rl.toy.build:build_toy_model",
        "train the embedded toy tokenizer and model from scratch",
    ),
}


def resolve(target: str) -> Any:
    """The object a "module:name" path names, imported when asked for."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
