"""The few names the modules of `cft-rl report compare` share: the base group's name, the
bootstrap's replicate count and the record of a GRPO run. compare.py reads the experiment and
computes its numbers, compare_markdown.py renders them and compare_plots.py draws them; this
module sits under all three so that imports go one way only (compare.py imports the other two,
they import only this one) and no cycle can form.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE = "base"  # the eval group of the model every method starts from
N_BOOT = 10000  # replicates of the paired bootstrap


@dataclass
class GrpoRun:
    """A GRPO run's curves, as compare.py reads them from its logs."""

    start: str
    seed: int | None
    validation: list[tuple[int, float]]  # (step, validation reward mean)
    entropy: list[tuple[int, float]]  # (step, rollout entropy)
    probe_critical: list[tuple[int, float]]
    probe_noncritical: list[tuple[int, float]]
