"""`cft-rl report entropy RUN_DIR [RUN_DIR ...]`: entropy and reward curves of GRPO runs.

Reads each run's metrics.jsonl (and probe.jsonl when the entropy probe ran), both written
by `cft-rl grpo` with either engine. Runs whose recipes differ only in `seed` (and
output_dir) form one group, drawn as the mean over seeds with a min-max band, so CFT-init
vs SFT-init comparisons show their spread. Writes entropy.png and entropy.md.
"""

from __future__ import annotations

from pathlib import Path

from cft_rl.grpo.curves import Group, group_runs, load_run, plot_groups
from cft_rl.jsonl import METRICS, PROBE, VALIDATION

PNG_NAME = "entropy.png"
TABLE_NAME = "entropy.md"


def report_entropy(run_dirs: list[str], out: str | None = None) -> None:
    """Plot and summarise the GRPO runs in `run_dirs` into `out` (default: the first)."""
    groups = group_runs([load_run(run_dir) for run_dir in run_dirs])
    out_dir = Path(out if out is not None else run_dirs[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_groups(groups, out_dir / PNG_NAME)
    (out_dir / TABLE_NAME).write_text(summary_table(groups))
    print(f"wrote {out_dir / PNG_NAME} and {out_dir / TABLE_NAME}")


def summary_table(groups: list[Group]) -> str:
    """Markdown: per group, start and end values (mean over seeds, min-max in brackets)."""
    lines = [
        "| run | seeds | steps | reward first 10% | reward last 10% | entropy first 10% "
        "| entropy last 10% | validation reward start -> end | probe H critical start -> end "
        "| probe H other start -> end | collapse events |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in groups:
        steps = [max((s for s, _ in r.series[METRICS].get("reward_mean", [])), default=0)
                 for r in group.runs]  # fmt: skip
        cells = [group.label, str(len(group.runs)), _spread(steps, "{:.0f}")]
        for key in ("reward_mean", "entropy"):
            for part in ("first", "last"):
                cells.append(_spread([_window_mean(r.series[METRICS].get(key, []), part)
                                      for r in group.runs]))  # fmt: skip
        for file, key in ((VALIDATION, "reward_mean"), (PROBE, "entropy_critical"),
                          (PROBE, "entropy_noncritical")):  # fmt: skip
            curves = [r.series[file].get(key, []) for r in group.runs]
            start = _spread([_end(curve, 0) for curve in curves])
            end = _spread([_end(curve, -1) for curve in curves])
            if start == "-":
                cells.append("-")
            elif all(len(curve) <= 1 for curve in curves):  # a run shorter than one interval
                cells.append(f"{start} (one point)")
            else:
                cells.append(f"{start} -> {end}")
        cells.append(str(sum(r.events for r in group.runs)))
        lines.append("| " + " | ".join(cells) + " |")
    notes = (
        "\nfirst/last 10%: mean over the first/last tenth of the steps. With several seeds: "
        "mean [min, max] over seeds. Validation: the same held-out questions and sampling "
        "seeds at every point. Probe: entropy of the policy on the fixed CFT responses "
        "(teacher-forced) at critical and other tokens.\n"
    )
    return "\n".join(lines) + "\n" + notes


def _window_mean(curve: list[tuple[int, float]], part: str) -> float | None:
    if not curve:
        return None
    width = max(1, len(curve) // 10)
    window = curve[:width] if part == "first" else curve[-width:]
    return sum(v for _, v in window) / len(window)


def _end(curve: list[tuple[int, float]], index: int) -> float | None:
    return curve[index][1] if curve else None


def _spread(values: list[float | None], fmt: str = "{:.3f}") -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    mean = fmt.format(sum(present) / len(present))
    if min(present) == max(present):
        return mean
    return f"{mean} [{fmt.format(min(present))}, {fmt.format(max(present))}]"
