"""`cft-rl report passk RUN_DIR [RUN_DIR ...]`: pass@k curves of several eval runs.

Reads each run's summary.json (written by `cft-rl eval`) and writes passk.png (one
panel per benchmark, one curve per run, k on a log2 axis) and passk.md (a table).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cft_rl.errors import UserError
from cft_rl.outputs import EVAL_SUMMARY_JSON

PNG_NAME = "passk.png"
TABLE_NAME = "passk.md"
ONE_RUN_NOTE = (
    "One run per model (one training seed, one set of samples): differences of a few points "
    "are within the noise. Seeds, intervals and paired tests: `cft-rl experiment` and "
    "`cft-rl report compare` (docs/experiments.md, docs/results.md)."
)


def report_passk(run_dirs: list[str], out: str | None = None) -> None:
    """Plot and tabulate pass@k of the eval runs in `run_dirs` into `out` (default: the first)."""
    runs = [_load_run(run_dir) for run_dir in run_dirs]
    labels = [run["label"] for run in runs]
    if len(set(labels)) < len(labels):  # same folder names under different parents
        for run, run_dir in zip(runs, run_dirs, strict=True):
            run["label"] = run_dir
    out_dir = Path(out if out is not None else run_dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    benchmarks = list(dict.fromkeys(b["benchmark"] for run in runs for b in run["benchmarks"]))
    _plot(runs, benchmarks, out_dir / PNG_NAME)
    table = _table(runs, benchmarks)
    (out_dir / TABLE_NAME).write_text(table)
    print(table)
    print(f"wrote {out_dir / PNG_NAME} and {out_dir / TABLE_NAME}")


def _load_run(run_dir: str) -> dict[str, Any]:
    path = Path(run_dir) / EVAL_SUMMARY_JSON
    if not path.is_file():
        raise UserError(f"{path} not found: is {run_dir} the output_dir of a `cft-rl eval` run?")
    try:
        summary = json.loads(path.read_text())
        benchmarks = {b["benchmark"]: b for b in summary["benchmarks"]}
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(
            f"{path}: not an eval summary ({err}): is {run_dir} the output_dir of a "
            "`cft-rl eval` run?"
        ) from None
    return {"label": _label(run_dir), "benchmarks": summary["benchmarks"], "by_name": benchmarks}


def _label(run_dir: str) -> str:
    path = Path(run_dir).resolve()
    return path.name or str(path)


def _plot(runs: list[dict[str, Any]], benchmarks: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(benchmarks))
    rows = -(-len(benchmarks) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for axis, name in zip(axes.flat, benchmarks, strict=False):
        all_ks: set[int] = {1}
        for index, run in enumerate(runs):
            result = run["by_name"].get(name)
            if result is None:
                continue
            color = colors[index % len(colors)]  # one colour per run in every panel
            ks = sorted(int(k) for k in result["pass_at_k"])
            all_ks.update(ks)
            if ks:
                values = [100 * result["pass_at_k"][str(k)] for k in ks]
                axis.plot(ks, values, marker="o", color=color, label=run["label"])
            # a greedy-only run (n_samples 0) has its marker alone; drawn over the lines,
            # with an edge, so that a greedy accuracy of 0 does not hide under them
            axis.scatter(
                [1],
                [100 * result["greedy_accuracy"]],
                marker="X",
                s=60,
                color=color,
                edgecolors="white",
                zorder=3,
                label=None if ks else f"{run['label']} (greedy only)",
            )
        axis.set_xscale("log", base=2)
        axis.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
        if len(all_ks) == 1:
            axis.set_xlim(0.7, 1.4)
        axis.set_title(name)
        axis.set_xlabel("k (samples)")
        axis.set_ylabel("pass@k (%)")
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
    for axis in list(axes.flat)[len(benchmarks) :]:
        axis.set_visible(False)
    figure.suptitle("pass@k (lines) and greedy accuracy (x at k=1)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _table(runs: list[dict[str, Any]], benchmarks: list[str]) -> str:
    ks = sorted({int(k) for run in runs for b in run["benchmarks"] for k in b["pass_at_k"]})
    header = ["benchmark", "run", "problems", "greedy", *(f"pass@{k}" for k in ks)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|",
    ]
    for name in benchmarks:
        for run in runs:
            result = run["by_name"].get(name)
            if result is None:
                continue
            passk = result["pass_at_k"]
            cells = [
                name,
                run["label"],
                str(result["problems"]),
                f"{100 * result['greedy_accuracy']:.1f}",
                *(f"{100 * passk[str(k)]:.1f}" if str(k) in passk else "" for k in ks),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", ONE_RUN_NOTE]
    return "\n".join(lines) + "\n"
