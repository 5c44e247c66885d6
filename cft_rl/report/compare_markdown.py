"""compare.md of `cft-rl report compare`: `render_markdown` turns the results dict that
compare.py computes (plain JSON-able data, the same as compare.json) into the markdown report, one
table per part (learning-rate choice, each benchmark's groups, paired differences and diversity,
response tokens trained, entropy probe, GRPO) and the notes on how the intervals and p-values were
made; it reads nothing from disk and computes no statistics of its own.
"""

from __future__ import annotations

from typing import Any

from cft_rl.report.compare_common import N_BOOT
from cft_rl.report.stats import student_t_quantile

MAX_TABLE_KS = 5  # more pass@k columns than this: only k=1 and the largest k
PAPER_CRITICAL = "under 12%"


def render_markdown(result: dict[str, Any]) -> str:
    lines = [f"# Experiment comparison: `{result['experiment']}`", ""]
    lines += _header(result)
    swept = {m: c for m, c in result["lr_choice"].items() if c.get("validation_accuracy")}
    if swept:  # methods without a sweep have no row: no table at all when none has one
        lines += ["", "## Learning-rate choice", "", *_lr_table(swept)]
    for name, benchmark in result["benchmarks"].items():
        lines += ["", f"## {name}", ""]
        lines += _benchmark_table(benchmark["groups"])
        if benchmark["differences"]:
            lines += [
                "",
                "Paired differences (percentage points; bootstrap over problems and seeds):",
                "",
                *_difference_table(benchmark["differences"]),
            ]
        if benchmark["diversity"]:
            lines += ["", "Diversity of the sampled answers (per problem, mean over seeds):", ""]
            lines += _diversity_table(benchmark["diversity"])
    if result["token_fraction"]:
        lines += ["", "## Response tokens trained", "", *_token_table(result["token_fraction"])]
    if result["probe_entropy"]:
        lines += ["", "## Entropy probe (nats)", "", *_probe_table(result["probe_entropy"])]
    if result["grpo"]:
        lines += ["", "## GRPO", "", *_grpo_table(result["grpo"])]
    lines += ["", "## Notes", "", *_notes(result)]
    return "\n".join(lines) + "\n"


def _header(result: dict[str, Any]) -> list[str]:
    entries = result["entries"]
    lines = [
        f"{entries['complete']} of {entries['total']} runs this report reads are complete "
        "(evaluations and GRPO runs; the experiment's identify and sft cells feed them), "
        f"{len(result['pending'])} pending."
    ]
    if result["baseline"]:
        lines[0] += f" Baseline: `{result['baseline']}`."
    if result["pending"]:
        lines += ["", *(f"- pending: {p['kind']} `{p['dir']}`" for p in result["pending"])]
    identify = result["identify"]
    if identify is not None:
        lines += [
            "",
            f"Identify: {identify['kept']} of {identify['questions']} questions kept "
            f"({_percent(identify['kept_fraction'])}%, greedy answer verified); "
            f"{identify['critical_tokens']} of {identify['response_tokens']} response tokens "
            f"critical ({_percent(identify['critical_fraction'])}%; the paper: "
            f"{PAPER_CRITICAL}).",
        ]
    return lines


def _lr_table(lr_choice: dict[str, Any]) -> list[str]:
    lines = ["| method | lr | validation accuracy (%) | |", "|---|---:|---:|---|"]
    for method, choice in lr_choice.items():
        chosen = choice.get("chosen")
        for lr, accuracy in choice.get("validation_accuracy", {}).items():
            mark = "chosen" if chosen is not None and float(lr) == float(chosen) else ""
            cell = "-" if accuracy is None else _percent(accuracy)
            lines.append(f"| {method} | {float(lr):.0e} | {cell} | {mark} |")
    return lines


def table_ks(groups: dict[str, Any]) -> list[str]:
    """The pass@k columns: all ks when they fit, else k=1 and the largest."""
    ks = sorted({int(k) for row in groups.values() for k in row["pass_at_k"]})
    if len(ks) > MAX_TABLE_KS:
        ks = sorted({ks[0], ks[-1]})
    return [str(k) for k in ks]


def _benchmark_table(groups: dict[str, Any]) -> list[str]:
    ks = table_ks(groups)
    header = ["group", "seeds", "greedy accuracy", *(f"pass@{k}" for k in ks)]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
    for group, row in groups.items():
        cells = [group, str(len(row["seeds"])), _percent_ci(row["greedy_accuracy"])]
        cells += [_percent_ci(row["pass_at_k"][k]) if k in row["pass_at_k"] else "-" for k in ks]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "In %: mean over seeds [95% t interval, clipped to 0-100]; n=1: a single run, no interval.",
    ]
    return lines


def _difference_table(differences: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| group | against | metric | difference [95% interval] | p | problems |",
        "|---|---|---|---:|---:|---:|",
    ]
    for d in differences:
        problems = str(d["problems"])
        if d["problems"] < d["problems_available"]:
            problems += f" of {d['problems_available']}"
        cells = [
            d["group"],
            d["against"],
            d["metric"],
            f"{_signed(d['estimate'])} [{_signed(d['low'])}, {_signed(d['high'])}]",
            _p_value(d["p_value"]),
            problems,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _diversity_table(table: dict[str, Any]) -> list[str]:
    lines = ["| group | samples | distinct answers | distinct solutions |", "|---|---:|---:|---:|"]
    for group, row in table.items():
        cells = [
            group,
            f"{row['samples']['mean']:.0f}",
            _ci(row["distinct_answers"], "{:.2f}"),
            _ci(row["distinct_solutions"], "{:.2f}"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _token_table(table: dict[str, Any]) -> list[str]:
    lines = ["| method | runs | response tokens trained (%) |", "|---|---:|---:|"]
    for method, row in table.items():
        cell = "unknown" if row["fraction"] is None else _percent_ci(row["fraction"])
        if row["unknown"] and row["fraction"] is not None:
            cell += f" ({row['unknown']} runs unknown)"
        lines.append(f"| {method} | {row['runs']} | {cell} |")
    lines += [
        "",
        "sum of supervised tokens / sum of response tokens over all steps of the runs "
        "at the chosen learning rate; unknown: runs that did not log response_tokens.",
    ]
    return lines


def _probe_table(table: dict[str, Any]) -> list[str]:
    lines = ["| group | critical | non-critical | all |", "|---|---:|---:|---:|"]
    for group, row in table.items():
        cells = [
            _ci(row[k], "{:.3f}")
            for k in ("entropy_critical", "entropy_noncritical", "entropy_all")
        ]
        lines.append("| " + " | ".join([group, *cells]) + " |")
    lines += [
        "",
        "Mean token entropy of each model on the fixed probe responses (teacher-forced), "
        "mean over seeds [95% t interval].",
    ]
    return lines


def _grpo_table(table: dict[str, Any]) -> list[str]:
    lines = [
        "| start | seeds | steps | validation reward first -> last | rollout entropy, first "
        "-> last 10% | entropy moved at step | probe H critical first -> last "
        "| probe H non-critical first -> last |",
        "|---|---:|---:|---|---|---|---|---|",
    ]
    for start, row in table.items():
        steps = "-" if row["steps"] is None else str(row["steps"])
        cells = [
            start,
            str(len(row["seeds"])),
            steps,
            _first_last(row, "validation_reward"),
            _entropy_first_last(row),
            _moved(row.get("entropy_moved_at", [])),
            _first_last(row, "probe_entropy_critical"),
            _first_last(row, "probe_entropy_noncritical"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "first/last: the first and the last validation or probe point of each run, "
        "mean over seeds [95% t interval]. Entropy moved at step: per seed, the first step at "
        "which the rollout entropy's rolling mean over 10% of the steps is more than 25% away "
        "from its mean over the first 10% (never: it stayed within 25%).",
    ]
    return lines


def _entropy_first_last(row: dict[str, Any]) -> str:
    first, last = row.get("entropy_first_10pct"), row["entropy_last_10pct"]
    if last is None:
        return "-"
    return f"{_ci(first, '{:.3f}')} -> {_ci(last, '{:.3f}')}" if first else _ci(last, "{:.3f}")


def _moved(steps: list[int | None]) -> str:
    return ", ".join("never" if step is None else str(step) for step in steps) or "-"


def _first_last(row: dict[str, Any], name: str) -> str:
    first, last = row[f"{name}_first"], row[f"{name}_last"]
    return "-" if first is None else f"{_ci(first, '{:.3f}')} -> {_ci(last, '{:.3f}')}"


def _notes(result: dict[str, Any]) -> list[str]:
    tests = sum(len(b["differences"]) for b in result["benchmarks"].values())
    seeds = sorted({len(row["greedy_accuracy"]["values"]) for b in result["benchmarks"].values()
                    for row in b["groups"].values()} - {1})  # fmt: skip
    half_widths = ", ".join(f"{student_t_quantile(0.975, n - 1):.2f} with {n}" for n in seeds)
    return [
        "- Intervals over seeds are Student-t, wide with few seeds: the half-width is "
        f"this many standard errors: {half_widths or '-'} seeds.",
        "- Differences: paired bootstrap over the problems both have (resampled together) and "
        f"each side's seeds (their spread widened by sqrt(n/(n-1)) so that resampling n seeds "
        f"has the variance of their mean), {N_BOOT} replicates; a percentile interval, so "
        "still narrower than a t interval would be over 3 seeds. p is the two-sided bootstrap "
        f"sign-test p-value, resolution 2/{N_BOOT}.",
        f"- The {tests} p-values are not corrected for multiple comparisons.",
    ]


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _percent_ci(summary: dict[str, Any]) -> str:
    scaled = {**summary, **{k: 100 * summary[k] for k in ("mean", "low", "high")}}
    return _ci(scaled, "{:.1f}")


def _ci(summary: dict[str, Any] | None, fmt: str) -> str:
    if summary is None:
        return "-"
    mean = fmt.format(summary["mean"])
    if summary["n"] == 1:
        return f"{mean} (n=1)"
    return f"{mean} [{fmt.format(summary['low'])}, {fmt.format(summary['high'])}]"


def _signed(value: float) -> str:
    return f"{100 * value:+.1f}"


def _p_value(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"
