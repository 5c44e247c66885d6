"""The reward and entropy curves of GRPO runs: read from each run's JSONL logs, grouped
over seeds, and drawn (by `cft-rl grpo` at the end of a run and by `cft-rl report entropy`).

Runs whose recipes differ only in `seed` (and output_dir) form one group, drawn as the mean
over seeds with a min-max band.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cft_rl.errors import UserError
from cft_rl.jsonl import EVENTS, METRICS, PROBE, VALIDATION, read_records

# (panel title, file, key) of each curve drawn; the first two always, the others when some
# run has them.
PANELS = [
    ("policy entropy on rollouts (nats)", METRICS, "entropy"),
    ("reward mean (training questions)", METRICS, "reward_mean"),
    ("reward mean (fixed validation questions)", VALIDATION, "reward_mean"),
    ("probe entropy, critical tokens", PROBE, "entropy_critical"),
    ("probe entropy, non-critical tokens", PROBE, "entropy_noncritical"),
]
_SEED_SUFFIX = re.compile(r"[-_.]?(seed|s)\d+$")


@dataclass
class Run:
    path: Path
    label: str
    # file name -> key -> [(step, value)]
    series: dict[str, dict[str, list[tuple[int, float]]]]
    events: int
    group_key: str


@dataclass
class Group:
    label: str
    runs: list[Run] = field(default_factory=list)


def plot_runs(run_dirs: list[str | Path], png_path: str | Path) -> None:
    """Just the figure (what a GRPO run draws for itself at the end)."""
    plot_groups(group_runs([load_run(str(run_dir)) for run_dir in run_dirs]), Path(png_path))


def load_run(run_dir: str) -> Run:
    path = Path(run_dir)
    metrics_path = path / METRICS
    if not metrics_path.is_file():
        raise UserError(f"{metrics_path} not found: is {run_dir} the output_dir of `cft-rl grpo`?")
    series = {name: _read_series(path / name) for name in (METRICS, PROBE, VALIDATION)}
    if not series[METRICS].get("reward_mean"):
        raise UserError(
            f"{metrics_path} holds no GRPO step (no reward_mean): is {run_dir} the output_dir "
            "of `cft-rl grpo`? (an sft run writes a metrics.jsonl too)"
        )
    events = len(read_records(path / EVENTS))
    return Run(path, _label(path), series, events, _group_key(path))


def group_runs(runs: list[Run]) -> list[Group]:
    """Runs with the same recipe apart from the seed, in order of first appearance. A group of
    several seeds is named after its first folder without a seed suffix ("cft-seed1" -> "cft")."""
    groups: dict[str, Group] = {}
    for run in runs:
        groups.setdefault(run.group_key, Group(run.label)).runs.append(run)
    for group in groups.values():
        if len(group.runs) > 1:
            group.label = _SEED_SUFFIX.sub("", group.label) or group.label
    labels = [g.label for g in groups.values()]
    for group in groups.values():
        if labels.count(group.label) > 1:  # same name, different recipes: use the folders
            group.label = ", ".join(run.label for run in group.runs)
        if len(group.runs) > 1:
            group.label += f" ({len(group.runs)} seeds)"
    return list(groups.values())


def plot_groups(groups: list[Group], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    panels = PANELS[:2] + [
        (title, file, key)
        for title, file, key in PANELS[2:]
        if any(r.series[file].get(key) for g in groups for r in g.runs)
    ]
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.6 * columns, 3.4 * rows), squeeze=False)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    for axis, (title, file, key) in zip(axes.flat, panels, strict=False):
        drawn: set[int] = set()
        for index, group in enumerate(groups):
            steps, mean, low, high = _band([r.series[file].get(key, []) for r in group.runs])
            if not steps:
                continue
            drawn.update(steps)
            color = f"C{index % 10}"
            # Validation and probe points are measured every few steps: mark each, so that
            # one point (a run of a few steps) shows too.
            marker = None if file == METRICS else "."
            axis.plot(steps, mean, color=color, label=group.label, marker=marker)
            if len(group.runs) > 1:
                axis.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
        axis.set_title(title, fontsize=10)
        axis.set_xlabel("step")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
        if len(drawn) == 1:  # one point: a readable axis around it, not a 1e-6 span
            (only,) = drawn
            axis.set_xlim(only - 1, only + 1)
        axis.grid(alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _band(curves: list[list[tuple[int, float]]]):
    """Mean, min and max over runs at the steps every run has."""
    maps = [dict(curve) for curve in curves if curve]
    if not maps:
        return [], [], [], []
    steps = sorted(set.intersection(*(set(m) for m in maps)))
    values = [[m[s] for m in maps] for s in steps]
    return (
        steps,
        [sum(v) / len(v) for v in values],
        [min(v) for v in values],
        [max(v) for v in values],
    )


def _read_series(path: Path) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for record in read_records(path):
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(key, []).append((record["step"], float(value)))
    return series


def _group_key(path: Path) -> str:
    """The run's recipe without seed and output_dir (its own folder when it has none)."""
    config_path = path / "config.yaml"
    if not config_path.is_file():
        return str(path.resolve())
    config = yaml.safe_load(config_path.read_text()) or {}
    for key in ("seed", "output_dir", "steps", "checkpoint", "dry_run"):
        config.pop(key, None)
    return json.dumps(config, sort_keys=True)


def _label(path: Path) -> str:
    resolved = path.resolve()
    return resolved.name or str(resolved)
