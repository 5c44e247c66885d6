"""The matplotlib plots of `cft-rl report compare`: accuracy.png (greedy accuracy per group,
mean and interval over seeds) and passk.png (pass@k against k) drawn from the results dict that
compare.py computes, and grpo.png (validation reward and rollout entropy against step) from the
GRPO runs' curves; matplotlib is imported only when a plot is drawn, with the Agg backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cft_rl.report.compare_common import BASE, GrpoRun

MIN_Y_SPAN = 20.0  # percentage points: a y-axis never zooms in further


def y_limits(values: list[float], min_span: float = MIN_Y_SPAN) -> tuple[float, float]:
    """Percent axis limits around `values`: padded, at least `min_span` wide (so that noise
    does not look like a cliff), inside [0, 100]."""
    low, high = min(values), max(values)
    pad = 0.1 * (high - low)
    low, high = low - pad, high + pad
    if high - low < min_span:
        middle = (low + high) / 2
        low, high = middle - min_span / 2, middle + min_span / 2
    if low < 0:
        low, high = 0.0, high - low
    if high > 100:
        low, high = max(0.0, low - (high - 100)), 100.0
    return low, min(high, 100.0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _panels(count: int, width: float, height: float):
    plt = _pyplot()
    columns = max(1, min(3, count))
    rows = max(1, -(-count // columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False
    )
    for axis in list(axes.flat)[count:]:
        axis.set_visible(False)
    return plt, figure, list(axes.flat)


def _save(plt, figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_accuracy(result: dict[str, Any], path: Path) -> None:
    """Greedy accuracy per group: mean and 95% interval, seeds as faint dots, base dashed."""
    benchmarks = result["benchmarks"]
    colors = {group: f"C{i % 10}" for i, group in enumerate(result["groups"])}
    plt, figure, axes = _panels(len(benchmarks), max(6.5, 0.8 * len(colors) + 1.5), 3.8)
    for axis, (name, benchmark) in zip(axes, benchmarks.items(), strict=False):
        rows = benchmark["groups"]
        shown: list[float] = []
        for x, (group, row) in enumerate(rows.items()):
            summary = {k: 100 * row["greedy_accuracy"][k] for k in ("mean", "low", "high")}
            seeds = [100 * v for v in row["greedy_accuracy"]["values"]]
            jitter = np.linspace(-0.12, 0.12, len(seeds)) if len(seeds) > 1 else [0.0]
            axis.scatter(x + np.asarray(jitter), seeds, s=12, color=colors[group], alpha=0.35)
            axis.errorbar(
                [x],
                [summary["mean"]],
                yerr=[[summary["mean"] - summary["low"]], [summary["high"] - summary["mean"]]],
                fmt="o",
                color=colors[group],
                capsize=4,
            )
            shown += [*seeds, summary["low"], summary["high"]]
        if BASE in rows:
            base = 100 * rows[BASE]["greedy_accuracy"]["mean"]
            axis.axhline(base, color="gray", linestyle="--", linewidth=1, label="base")
            axis.legend(fontsize="small")
        if shown:
            axis.set_ylim(*y_limits(shown))
        axis.set_xticks(range(len(rows)), list(rows), rotation=30, ha="right")
        axis.set_title(name)
        axis.set_ylabel("greedy accuracy (%)")
        axis.grid(alpha=0.3, axis="y")
    figure.suptitle(
        "greedy accuracy: mean and 95% t interval over seeds (faint: each seed)", fontsize=10
    )
    _save(plt, figure, path)


def plot_passk(result: dict[str, Any], path: Path) -> None:
    """pass@k against k per group: mean over seeds with its 95% interval as a band."""
    benchmarks = result["benchmarks"]
    colors = {group: f"C{i % 10}" for i, group in enumerate(result["groups"])}
    plt, figure, axes = _panels(len(benchmarks), 4.5, 3.6)
    for axis, (name, benchmark) in zip(axes, benchmarks.items(), strict=False):
        shown: list[float] = []
        all_ks: set[int] = set()
        for group, row in benchmark["groups"].items():
            ks = sorted(int(k) for k in row["pass_at_k"])
            if len(ks) < 2:
                continue
            points = [row["pass_at_k"][str(k)] for k in ks]
            mean, low, high = ([100 * p[key] for p in points] for key in ("mean", "low", "high"))
            axis.plot(ks, mean, marker="o", color=colors[group], label=group)
            axis.fill_between(ks, low, high, color=colors[group], alpha=0.2, linewidth=0)
            shown += low + high
            all_ks.update(ks)
        axis.set_xscale("log", base=2)
        if all_ks:
            axis.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
            axis.set_ylim(*y_limits(shown))
            axis.legend(fontsize="small")
        axis.set_title(name)
        axis.set_xlabel("k (samples)")
        axis.set_ylabel("pass@k (%)")
        axis.grid(alpha=0.3)
    figure.suptitle("pass@k: mean over seeds, band: 95% t interval", fontsize=10)
    _save(plt, figure, path)


def plot_grpo(runs: list[GrpoRun], path: Path) -> None:
    """Validation reward and rollout entropy against step, per start method."""
    starts = list(dict.fromkeys(run.start for run in runs))
    plt, figure, axes = _panels(2, 5.0, 3.6)
    for axis, (title, attribute) in zip(
        axes,
        (("validation reward", "validation"), ("rollout entropy (nats)", "entropy")),
        strict=True,
    ):
        shown: list[float] = []
        for index, start in enumerate(starts):
            curves = [getattr(run, attribute) for run in runs if run.start == start]
            steps, mean, low, high = band(curves)
            if not steps:
                continue
            color = f"C{index % 10}"
            seeds = f"{len(curves)} seed{'s' if len(curves) > 1 else ''}"
            axis.plot(steps, mean, color=color, marker=".", label=f"from {start} ({seeds})")
            axis.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
            shown += low + high
        if shown and attribute == "validation":  # a reward in [0, 1]: the percent-axis rule
            axis.set_ylim(*(limit / 100 for limit in y_limits([100 * v for v in shown])))
        elif shown:  # entropy: from zero, so that a wobble stays a wobble
            axis.set_ylim(0, 1.2 * max(shown))
        axis.set_title(f"{title}: mean, band min-max over seeds", fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    _save(plt, figure, path)


def band(
    curves: list[list[tuple[int, float]]],
) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps every non-empty curve has, and the mean, min and max over curves at each."""
    maps = [dict(curve) for curve in curves if curve]
    if not maps:
        return [], [], [], []
    steps = sorted(set.intersection(*(set(m) for m in maps)))
    values = np.array([[m[s] for m in maps] for s in steps]).reshape(len(steps), len(maps))
    return steps, list(values.mean(1)), list(values.min(1)), list(values.max(1))
