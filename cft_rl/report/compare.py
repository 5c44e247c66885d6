"""`cft-rl report compare EXPERIMENT_DIR`: statistics, plots and a report of an experiment grid.

Reads the plan.json that `cft-rl experiment` writes and every run it names that has
finished; the others are listed as pending and left out. Writes, into EXPERIMENT_DIR/report
unless --out says otherwise: compare.md, compare.json (every number of the markdown),
accuracy.png, passk.png and, when GRPO runs exist, grpo.png.

Eval runs form groups (one run per seed). Per benchmark and group: greedy accuracy and pass@k,
mean over seeds with a t interval; paired bootstrap differences, per problem, against the
baseline method and the base model; the diversity of the sampled answers. Besides: the
learning-rate choice, the share of response tokens each method trains on, the entropy probe
and the GRPO runs' validation reward and entropy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cft_rl.errors import UserError
from cft_rl.eval.config import SUMMARY_JSON
from cft_rl.eval.log import GREEDY
from cft_rl.eval.passk import pass_at_k
from cft_rl.report.stats import mean_ci, paired_bootstrap, student_t_quantile

PLAN = "plan.json"
MARKDOWN_NAME = "compare.md"
JSON_NAME = "compare.json"
ACCURACY_PNG = "accuracy.png"
PASSK_PNG = "passk.png"
GRPO_PNG = "grpo.png"
PROBE_CACHE = "probe_entropy.json"
BASE = "base"  # the eval group of the model every method starts from
N_BOOT = 10000
BOOT_SEED = 0
MIN_Y_SPAN = 20.0  # percentage points: a y-axis never zooms in further
MAX_TABLE_KS = 5  # more pass@k columns than this: only k=1 and the largest k
PAPER_CRITICAL = "under 12%"

# What each entry of these lists of the plan must have.
PLAN_FIELDS = {
    "sft": ("method", "dir"),
    "grpo": ("start", "dir"),
    "evals": ("group", "dir", "model"),
}

# What marks each kind of run in the plan as finished (a path inside its dir).
DONE_MARKER = {
    "identify": "summary.json",
    "probe": "summary.json",
    "sft": "export.json",
    "grpo": "hf_model",
    "eval": SUMMARY_JSON,
}


@dataclass(frozen=True)
class ProblemStats:
    """One problem of one eval run, from its generations."""

    greedy: bool | None  # None: no greedy generation logged
    samples: int
    correct: int
    answers: int  # distinct final answers among the samples (no answer counts as one)
    solutions: int  # distinct sampled texts


@dataclass
class EvalRun:
    group: str
    seed: int | None
    path: Path
    model: str
    summary: dict[str, Any]
    problems: dict[str, dict[Any, ProblemStats]]  # benchmark -> problem id -> stats

    def result(self, benchmark: str) -> dict[str, Any] | None:
        return next((b for b in self.summary["benchmarks"] if b["benchmark"] == benchmark), None)


@dataclass
class GrpoRun:
    start: str
    seed: int | None
    validation: list[tuple[int, float]]  # (step, validation reward mean)
    entropy: list[tuple[int, float]]  # (step, rollout entropy)
    probe_critical: list[tuple[int, float]]
    probe_noncritical: list[tuple[int, float]]


def report_compare(run_dirs: list[str], out: str | None = None) -> None:
    """Compare the runs of the experiment in `run_dirs` (exactly one directory) into `out`
    (default: EXPERIMENT_DIR/report)."""
    if len(run_dirs) != 1:
        raise UserError(
            f"`cft-rl report compare` takes one experiment directory, got {len(run_dirs)}"
        )
    experiment = Path(run_dirs[0])
    plan = load_plan(experiment)
    runs = [
        load_eval_run(experiment, entry)
        for entry in plan["evals"]
        if is_done(experiment, "eval", entry["dir"])
    ]
    grpo = [
        load_grpo_run(experiment, entry)
        for entry in plan["grpo"]
        if is_done(experiment, "grpo", entry["dir"])
    ]
    result = compare(experiment, plan, runs, grpo)
    out_dir = Path(out) if out is not None else experiment / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / JSON_NAME).write_text(json.dumps(result, indent=2) + "\n")
    (out_dir / MARKDOWN_NAME).write_text(render_markdown(result))
    written = [out_dir / name for name in (MARKDOWN_NAME, JSON_NAME, ACCURACY_PNG, PASSK_PNG)]
    plot_accuracy(result, out_dir / ACCURACY_PNG)
    plot_passk(result, out_dir / PASSK_PNG)
    if grpo:
        plot_grpo(grpo, out_dir / GRPO_PNG)
        written.append(out_dir / GRPO_PNG)
    print("wrote " + ", ".join(str(path) for path in written))


# ---- reading the experiment ----


def load_plan(experiment: Path) -> dict[str, Any]:
    """plan.json, its optional parts filled in (baseline, identify, probe: None; lists: [])."""
    path = experiment / PLAN
    if not path.is_file():
        raise UserError(f"{path} not found: is {experiment} the output_dir of `cft-rl experiment`?")
    try:
        plan = json.loads(path.read_text())
        for key, default in (("baseline", None), ("probe", None), ("identify", None)):
            plan.setdefault(key, default)
        for key in ("sft", "grpo", "evals"):
            plan.setdefault(key, [])
        plan.setdefault("lr_choice", {})
    except (ValueError, AttributeError) as err:
        raise UserError(f"{path}: not an experiment plan ({err})") from None
    for key, fields in PLAN_FIELDS.items():
        for index, entry in enumerate(plan[key]):
            missing = [name for name in fields if name not in entry]
            if missing:
                raise UserError(f"{path}: {key}[{index}] lacks {', '.join(missing)}")
    groups = [(entry["group"], entry.get("seed")) for entry in plan["evals"]]
    if len(set(groups)) < len(groups):
        raise UserError(f"{path}: an eval group and seed appear twice")
    return plan


def plan_entries(plan: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, dir) of every run the plan names, in the order they run."""
    entries = [(kind, plan[kind]) for kind in ("identify", "probe") if plan[kind] is not None]
    for kind, key in (("sft", "sft"), ("grpo", "grpo"), ("eval", "evals")):
        entries += [(kind, entry["dir"]) for entry in plan[key]]
    return entries


def is_done(experiment: Path, kind: str, run_dir: str) -> bool:
    return (experiment / run_dir / DONE_MARKER[kind]).exists()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSONL file that is appended to as a run goes: a missing file is empty,
    and a torn last line (a run killed mid-write, with or without its newline) is left out."""
    if not path.is_file():
        return []
    lines = path.read_bytes().split(b"\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as err:
            if number >= len(lines) - 1:
                break
            raise UserError(f"{path}:{number}: not a JSON record ({err})") from None
    return records


def read_generations(path: Path) -> dict[Any, ProblemStats]:
    """Per problem id, its greedy verdict and what its sampled generations hold. A record
    repeated for the same (id, sample) counts once, the first, as when `cft-rl eval` resumes."""
    greedy: dict[Any, bool] = {}
    sampled: dict[Any, dict[Any, dict[str, Any]]] = {}
    try:
        for record in read_jsonl(path):
            if record["sample"] == GREEDY:
                greedy.setdefault(record["id"], bool(record["correct"]))
            else:
                sampled.setdefault(record["id"], {}).setdefault(record["sample"], record)
    except (KeyError, TypeError) as err:
        raise UserError(f"{path}: not a generations file ({err!r})") from None
    stats = {}
    for problem_id in dict.fromkeys([*greedy, *sampled]):
        samples = list(sampled.get(problem_id, {}).values())
        stats[problem_id] = ProblemStats(
            greedy=greedy.get(problem_id),
            samples=len(samples),
            correct=sum(bool(r["correct"]) for r in samples),
            answers=len({r.get("predicted") for r in samples}),
            solutions=len({r.get("text") for r in samples}),
        )
    return stats


def load_eval_run(experiment: Path, entry: dict[str, Any]) -> EvalRun:
    path = experiment / entry["dir"]
    summary = _read_json(path / SUMMARY_JSON)
    try:
        names = [b["benchmark"] for b in summary["benchmarks"]]
    except (KeyError, TypeError) as err:
        raise UserError(f"{path / SUMMARY_JSON}: not an eval summary ({err!r})") from None
    problems = {name: read_generations(path / "generations" / f"{name}.jsonl") for name in names}
    return EvalRun(entry["group"], entry.get("seed"), path, entry["model"], summary, problems)


def load_grpo_run(experiment: Path, entry: dict[str, Any]) -> GrpoRun:
    path = experiment / entry["dir"]
    probe = read_jsonl(path / "probe.jsonl")
    return GrpoRun(
        start=entry["start"],
        seed=entry.get("seed"),
        validation=_series(read_jsonl(path / "validation.jsonl"), "reward_mean"),
        entropy=_series(read_jsonl(path / "metrics.jsonl"), "entropy"),
        probe_critical=_series(probe, "entropy_critical"),
        probe_noncritical=_series(probe, "entropy_noncritical"),
    )


def _series(records: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(step, value) of the records with a numeric `key` (NaN is logged as null), by step."""
    return sorted((int(r["step"]), float(r[key])) for r in records if _is_number(r.get(key)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise UserError(f"{path}: not JSON ({err})") from None


# ---- the numbers ----


def compare(
    experiment: Path, plan: dict[str, Any], runs: list[EvalRun], grpo: list[GrpoRun]
) -> dict[str, Any]:
    """Everything compare.md shows, as plain JSON-able data."""
    entries = plan_entries(plan)
    pending = [
        {"kind": kind, "dir": run_dir}
        for kind, run_dir in entries
        if not is_done(experiment, kind, run_dir)
    ]
    groups = group_runs(runs)
    references = list(dict.fromkeys(r for r in (plan["baseline"], BASE) if r in groups))
    benchmarks = list(
        dict.fromkeys(b["benchmark"] for run in runs for b in run.summary["benchmarks"])
    )
    return {
        "experiment": str(experiment),
        "entries": {"total": len(entries), "complete": len(entries) - len(pending)},
        "pending": pending,
        "baseline": plan["baseline"],
        "groups": list(groups),
        "identify": identify_summary(experiment, plan["identify"]),
        "lr_choice": plan["lr_choice"],
        "benchmarks": {
            name: {
                "groups": benchmark_groups(groups, name),
                "differences": paired_differences(groups, name, references),
                "diversity": diversity(groups, name),
            }
            for name in benchmarks
        },
        "token_fraction": token_fractions(experiment, plan),
        "probe_entropy": probe_entropies(experiment, plan["probe"], groups),
        "grpo": grpo_summary(grpo),
        "bootstrap": {"n_boot": N_BOOT, "seed": BOOT_SEED},
    }


def summarize(values: list[float], share: bool = False) -> dict[str, Any]:
    """mean, low, high (95% t interval over seeds), n and the values themselves. The interval
    of a `share` (accuracy, pass@k, a fraction) is clipped to [0, 1]: with few seeds a t
    interval easily reaches past it."""
    mean, low, high = mean_ci(values)
    if share:
        low, high = max(low, 0.0), min(high, 1.0)
    return {"mean": mean, "low": low, "high": high, "n": len(values), "values": list(values)}


def group_runs(runs: list[EvalRun]) -> dict[str, list[EvalRun]]:
    """Eval runs by group, in the plan's order."""
    groups: dict[str, list[EvalRun]] = {}
    for run in runs:
        groups.setdefault(run.group, []).append(run)
    return groups


def benchmark_groups(groups: dict[str, list[EvalRun]], benchmark: str) -> dict[str, Any]:
    """Per group: greedy accuracy and pass@k (the ks every seed has) over seeds, from the eval
    summaries."""
    table = {}
    for group, runs in groups.items():
        present = [(run, run.result(benchmark)) for run in runs]
        present = [(run, result) for run, result in present if result is not None]
        if not present:
            continue
        results = [result for _, result in present]
        ks = sorted(set.intersection(*({int(k) for k in r["pass_at_k"]} for r in results)))
        table[group] = {
            "seeds": [run.seed for run, _ in present],
            "problems": max(r["problems"] for r in results),
            "greedy_accuracy": summarize([r["greedy_accuracy"] for r in results], share=True),
            "pass_at_k": {
                str(k): summarize([r["pass_at_k"][str(k)] for r in results], share=True) for k in ks
            },
        }
    return table


def paired_differences(
    groups: dict[str, list[EvalRun]], benchmark: str, references: list[str]
) -> list[dict[str, Any]]:
    """Every group against each reference group (the base model only as a reference): greedy
    accuracy, pass@1 and pass@(largest k both have), paired over the problems both have."""
    differences = []
    for reference in references:
        for group, runs in groups.items():
            if group in (reference, BASE):
                continue
            for metric in shared_metrics(runs + groups[reference], benchmark):
                difference = compare_on_problems(runs, groups[reference], benchmark, metric)
                if difference is not None:
                    differences.append(
                        {"group": group, "against": reference, "metric": metric, **difference}
                    )
    return differences


def shared_metrics(runs: list[EvalRun], benchmark: str) -> list[str]:
    results = [r for r in (run.result(benchmark) for run in runs) if r is not None]
    ks = (
        set.intersection(*({int(k) for k in r["pass_at_k"]} for r in results)) if results else set()
    )
    metrics = ["greedy"]
    if 1 in ks:
        metrics.append("pass@1")
    if ks and max(ks) > 1:
        metrics.append(f"pass@{max(ks)}")
    return metrics


def compare_on_problems(
    runs_a: list[EvalRun], runs_b: list[EvalRun], benchmark: str, metric: str
) -> dict[str, Any] | None:
    """paired_bootstrap of runs_a against runs_b on the problems every run of both has."""
    scores_a = [s for s in (problem_scores(run, benchmark, metric) for run in runs_a) if s]
    scores_b = [s for s in (problem_scores(run, benchmark, metric) for run in runs_b) if s]
    if not scores_a or not scores_b:
        return None
    common = set.intersection(*(set(scores) for scores in scores_a + scores_b))
    if not common:
        return None
    order = sorted(common, key=str)
    a = np.array([[scores[i] for i in order] for scores in scores_a])
    b = np.array([[scores[i] for i in order] for scores in scores_b])
    available = max(len(set().union(*scores_a)), len(set().union(*scores_b)))
    return {
        **paired_bootstrap(a, b, n_boot=N_BOOT, seed=BOOT_SEED),
        "problems": len(order),
        "problems_available": available,
        "seeds": [len(scores_a), len(scores_b)],
    }


def problem_scores(run: EvalRun, benchmark: str, metric: str) -> dict[Any, float]:
    """Per problem id: greedy correctness (0/1), or the unbiased pass@k of its samples."""
    problems = run.problems.get(benchmark, {})
    if metric == "greedy":
        return {i: float(p.greedy) for i, p in problems.items() if p.greedy is not None}
    k = int(metric.removeprefix("pass@"))
    return {i: pass_at_k(p.samples, p.correct, k) for i, p in problems.items() if p.samples >= k}


def diversity(groups: dict[str, list[EvalRun]], benchmark: str) -> dict[str, Any]:
    """Per group, over seeds: the mean per problem of distinct final answers and of distinct
    solutions among its sampled (not greedy) generations."""
    table = {}
    for group, runs in groups.items():
        per_run = [
            [p for p in run.problems.get(benchmark, {}).values() if p.samples] for run in runs
        ]
        per_run = [problems for problems in per_run if problems]
        if not per_run:
            continue
        table[group] = {
            "samples": summarize([float(np.mean([p.samples for p in ps])) for ps in per_run]),
            "distinct_answers": summarize(
                [float(np.mean([p.answers for p in ps])) for ps in per_run]
            ),
            "distinct_solutions": summarize(
                [float(np.mean([p.solutions for p in ps])) for ps in per_run]
            ),
        }
    return table


def identify_summary(experiment: Path, run_dir: str | None) -> dict[str, Any] | None:
    if run_dir is None or not is_done(experiment, "identify", run_dir):
        return None
    summary = _read_json(experiment / run_dir / DONE_MARKER["identify"])
    keys = (
        "questions",
        "kept",
        "kept_fraction",
        "response_tokens",
        "critical_tokens",
        "critical_fraction",
    )
    return {key: summary.get(key) for key in keys}


def token_fractions(experiment: Path, plan: dict[str, Any]) -> dict[str, Any]:
    """Per method: the share of response tokens its selected runs trained on, over seeds."""
    by_method: dict[str, list[float | None]] = {}
    for entry in plan["sft"]:
        if entry.get("selected") and is_done(experiment, "sft", entry["dir"]):
            fraction = run_token_fraction(experiment / entry["dir"])
            by_method.setdefault(entry["method"], []).append(fraction)
    table = {}
    for method, fractions in by_method.items():
        known = [f for f in fractions if f is not None]
        table[method] = {
            "runs": len(fractions),
            "unknown": len(fractions) - len(known),
            "fraction": summarize(known, share=True) if known else None,
        }
    return table


def run_token_fraction(run_dir: Path) -> float | None:
    """sum(supervised_tokens) / sum(response_tokens) over all steps of an SFT run; None when
    the run logged no response_tokens (runs from before it was logged)."""
    records = read_jsonl(run_dir / "metrics.jsonl")
    if not records or any("response_tokens" not in r for r in records):
        return None
    total = sum(r["response_tokens"] for r in records)
    return sum(r["supervised_tokens"] for r in records) / total if total else None


def grpo_summary(runs: list[GrpoRun]) -> dict[str, Any]:
    """Per start method, over seeds: validation reward first and last, rollout entropy over the
    last 10% of steps, probe entropies first and last."""
    by_start: dict[str, list[GrpoRun]] = {}
    for run in runs:
        by_start.setdefault(run.start, []).append(run)
    table = {}
    for start, group in by_start.items():
        row: dict[str, Any] = {
            "seeds": [run.seed for run in group],
            "steps": max((s for run in group for s, _ in run.entropy), default=None),
        }
        for name, series in (
            ("validation_reward", [run.validation for run in group]),
            ("probe_entropy_critical", [run.probe_critical for run in group]),
            ("probe_entropy_noncritical", [run.probe_noncritical for run in group]),
        ):
            present = [curve for curve in series if curve]
            row[f"{name}_first"] = summarize([c[0][1] for c in present]) if present else None
            row[f"{name}_last"] = summarize([c[-1][1] for c in present]) if present else None
            row[f"{name}_steps"] = [[c[0][0], c[-1][0]] for c in present]
        tails = [_tail_mean(run.entropy) for run in group if run.entropy]
        row["entropy_last_10pct"] = summarize(tails) if tails else None
        table[start] = row
    return table


def _tail_mean(curve: list[tuple[int, float]]) -> float:
    width = max(1, len(curve) // 10)
    return float(np.mean([value for _, value in curve[-width:]]))


# ---- entropy probe ----


@dataclass
class ProbeSource:
    """The probe set (an identify run's dataset), fingerprinted so that a cache made with
    another probe set is recomputed; loaded only when some run needs it."""

    path: Path

    @cached_property
    def dataset(self) -> Path:
        from cft_rl.critical.store import DATASET_NAME

        return self.path / DATASET_NAME

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        with self.dataset.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    @cached_property
    def probe_set(self):
        from cft_rl.rl.probe import load_probe_set

        return load_probe_set(self.dataset, limit=None)


def probe_entropies(
    experiment: Path, probe_dir: str | None, groups: dict[str, list[EvalRun]]
) -> dict[str, Any]:
    """Per group, over seeds: the probe entropy of its models at critical, non-critical and
    all tokens (each eval run's result cached in its dir)."""
    if probe_dir is None or not is_done(experiment, "probe", probe_dir):
        return {}
    source = ProbeSource(experiment / probe_dir)
    table = {}
    for group, runs in groups.items():
        results = [
            cached_probe_entropy(run, model_path(experiment, run.model), source) for run in runs
        ]
        table[group] = {}
        for key in ("entropy_critical", "entropy_noncritical", "entropy_all"):
            values = [r[key] for r in results if r[key] is not None]
            table[group][key] = summarize(values) if values else None
    return table


def model_path(experiment: Path, model: str) -> str:
    """An eval entry's model: relative to the experiment dir when that path exists there; the
    toy model, other paths and hub names as they are."""
    if model != "toy" and (experiment / model).exists():
        return str(experiment / model)
    return model


def cached_probe_entropy(run: EvalRun, model: str, source: ProbeSource) -> dict[str, Any]:
    cache = run.path / PROBE_CACHE
    key = {"model": model, "probe": str(source.path), "probe_sha256": source.fingerprint}
    if cache.is_file():
        saved = _read_json(cache)
        if {k: saved.get(k) for k in key} == key:
            return saved["entropy"]
    entropy = compute_probe_entropy(model, source.probe_set)
    cache.write_text(json.dumps({**key, "entropy": entropy}, indent=2) + "\n")
    return entropy


def compute_probe_entropy(model: str, probe_set) -> dict[str, Any]:
    import torch

    from cft_rl.config import ModelSpec
    from cft_rl.modeling import load_causal_lm, load_tokenizer
    from cft_rl.rl.probe import probe_entropy

    torch.set_num_threads(1)  # a report should not take the cores of a running experiment
    spec = ModelSpec(path=model)
    tokenizer = load_tokenizer(spec)
    return probe_entropy(
        load_causal_lm(spec), probe_set, tokenizer.pad_token_id, micro_batch_size=16
    )


# ---- markdown ----


def render_markdown(result: dict[str, Any]) -> str:
    lines = [f"# Experiment comparison: `{result['experiment']}`", ""]
    lines += _header(result)
    if result["lr_choice"]:
        lines += ["", "## Learning-rate choice", "", *_lr_table(result["lr_choice"])]
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
        f"{entries['complete']} of {entries['total']} runs complete, "
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
        "| start | seeds | steps | validation reward first -> last | rollout entropy, last 10% "
        "| probe H critical first -> last | probe H non-critical first -> last |",
        "|---|---:|---:|---|---:|---|---|",
    ]
    for start, row in table.items():
        steps = "-" if row["steps"] is None else str(row["steps"])
        cells = [
            start,
            str(len(row["seeds"])),
            steps,
            _first_last(row, "validation_reward"),
            _ci(row["entropy_last_10pct"], "{:.3f}"),
            _first_last(row, "probe_entropy_critical"),
            _first_last(row, "probe_entropy_noncritical"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "first/last: the first and the last validation or probe point of each run, "
        "mean over seeds [95% t interval].",
    ]
    return lines


def _first_last(row: dict[str, Any], name: str) -> str:
    first, last = row[f"{name}_first"], row[f"{name}_last"]
    return "-" if first is None else f"{_ci(first, '{:.3f}')} -> {_ci(last, '{:.3f}')}"


def _notes(result: dict[str, Any]) -> list[str]:
    tests = sum(len(b["differences"]) for b in result["benchmarks"].values())
    return [
        "- Intervals over seeds are Student-t: with 3 seeds the half-width is "
        f"{student_t_quantile(0.975, 2):.2f} standard errors, so they are wide.",
        "- Differences: paired bootstrap over the problems both have (resampled together) and "
        f"each side's seeds, {N_BOOT} replicates; p is the two-sided bootstrap sign-test "
        f"p-value, resolution 1/{N_BOOT}.",
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


# ---- plots ----


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
    plt, figure, axes = _panels(len(benchmarks), max(4.5, 0.8 * len(colors) + 1.5), 3.8)
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
    figure.suptitle("greedy accuracy: mean and 95% t interval over seeds (faint: each seed)")
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
    figure.suptitle("pass@k: mean over seeds, band: 95% t interval")
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
        for index, start in enumerate(starts):
            curves = [getattr(run, attribute) for run in runs if run.start == start]
            steps, mean, low, high = band(curves)
            if not steps:
                continue
            color = f"C{index % 10}"
            seeds = f"{len(curves)} seed{'s' if len(curves) > 1 else ''}"
            axis.plot(steps, mean, color=color, marker=".", label=f"from {start} ({seeds})")
            axis.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
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
