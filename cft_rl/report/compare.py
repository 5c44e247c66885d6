"""`cft-rl report compare EXPERIMENT_DIR`: reads the plan.json that `cft-rl experiment` writes
and every run it names that has finished (the others are listed as pending and left out), computes
the statistics of the grid as a plain JSON-able dict, and writes, into EXPERIMENT_DIR/report unless
--out says otherwise: compare.md (rendered by compare_markdown), compare.json (every number of the
markdown), accuracy.png, passk.png and, when GRPO runs exist, grpo.png (drawn by compare_plots).
Eval runs form groups (one run per seed); per benchmark and group: greedy accuracy and pass@k, mean
over seeds with a t interval; paired bootstrap differences, per problem, against the baseline
method and the base model; the diversity of the sampled answers; besides: the learning-rate choice,
the share of response tokens each method trains on, the entropy probe and the GRPO runs'
validation reward and entropy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from cft_rl.config import ModelSpec
from cft_rl.errors import UserError
from cft_rl.eval.log import GREEDY
from cft_rl.eval.passk import pass_at_k
from cft_rl.experiment_plan import EvalEntry, ExperimentPlan, GrpoEntry
from cft_rl.grpo.probe import ProbeSet, load_probe_set, probe_entropy
from cft_rl.jsonl import METRICS, PROBE, VALIDATION, read_records
from cft_rl.modeling import load_causal_lm, load_tokenizer
from cft_rl.outputs import (
    CELL_DONE,
    EVAL_SUMMARY_JSON,
    EXPORT_INFO,
    HF_EXPORT,
    IDENTIFY_DATASET,
    IDENTIFY_SUMMARY,
)
from cft_rl.report.compare_common import BASE, N_BOOT, GrpoRun
from cft_rl.report.compare_markdown import render_markdown
from cft_rl.report.compare_plots import plot_accuracy, plot_grpo, plot_passk
from cft_rl.report.stats import mean_ci, paired_bootstrap

MARKDOWN_NAME = "compare.md"
JSON_NAME = "compare.json"
ACCURACY_PNG = "accuracy.png"
PASSK_PNG = "passk.png"
GRPO_PNG = "grpo.png"
PROBE_CACHE = "probe_entropy.json"
BOOT_SEED = 0

# What marks each kind of run in the plan as finished (a path inside its dir).
DONE_MARKER = {
    "identify": IDENTIFY_SUMMARY,
    "probe": IDENTIFY_SUMMARY,
    "sft": EXPORT_INFO,
    "grpo": HF_EXPORT,
    "eval": EVAL_SUMMARY_JSON,
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


def report_compare(run_dirs: list[str], out: str | None = None) -> None:
    """Compare the runs of the experiment in `run_dirs` (exactly one directory) into `out`
    (default: EXPERIMENT_DIR/report)."""
    if len(run_dirs) != 1:
        raise UserError(
            f"`cft-rl report compare` takes one experiment directory, got {len(run_dirs)}"
        )
    experiment = Path(run_dirs[0])
    plan = ExperimentPlan.read(experiment)
    runs = [
        load_eval_run(experiment, entry)
        for entry in plan.evals
        if is_done(experiment, "eval", entry.dir)
    ]
    grpo = [
        load_grpo_run(experiment, entry)
        for entry in plan.grpo
        if is_done(experiment, "grpo", entry.dir)
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


def is_done(experiment: Path, kind: str, run_dir: str) -> bool:
    """Finished by the experiment's marker, or (a run made outside it) by its stage's output."""
    run = experiment / run_dir
    return (run / CELL_DONE).is_file() or (run / DONE_MARKER[kind]).exists()


def read_generations(path: Path) -> dict[Any, ProblemStats]:
    """Per problem id, its greedy verdict and what its sampled generations hold. A record
    repeated for the same (id, sample) counts once, the first, as when `cft-rl eval` resumes."""
    greedy: dict[Any, bool] = {}
    sampled: dict[Any, dict[Any, dict[str, Any]]] = {}
    try:
        for record in read_records(path):
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


def load_eval_run(experiment: Path, entry: EvalEntry) -> EvalRun:
    path = experiment / entry.dir
    summary = _read_json(path / EVAL_SUMMARY_JSON)
    try:
        names = [b["benchmark"] for b in summary["benchmarks"]]
    except (KeyError, TypeError) as err:
        raise UserError(f"{path / EVAL_SUMMARY_JSON}: not an eval summary ({err!r})") from None
    problems = {name: read_generations(path / "generations" / f"{name}.jsonl") for name in names}
    return EvalRun(entry.group, entry.seed, path, entry.model, summary, problems)


def load_grpo_run(experiment: Path, entry: GrpoEntry) -> GrpoRun:
    path = experiment / entry.dir
    probe = read_records(path / PROBE)
    return GrpoRun(
        start=entry.start,
        seed=entry.seed,
        validation=_series(read_records(path / VALIDATION), "reward_mean"),
        entropy=_series(read_records(path / METRICS), "entropy"),
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
    experiment: Path, plan: ExperimentPlan, runs: list[EvalRun], grpo: list[GrpoRun]
) -> dict[str, Any]:
    """Everything compare.md shows, as plain JSON-able data."""
    entries = plan.entries()
    pending = [
        {"kind": kind, "dir": run_dir}
        for kind, run_dir in entries
        if not is_done(experiment, kind, run_dir)
    ]
    groups = group_runs(runs)
    pairs = comparison_pairs(groups, plan.baseline, plan.compare_with)
    benchmarks = list(
        dict.fromkeys(b["benchmark"] for run in runs for b in run.summary["benchmarks"])
    )
    return {
        "experiment": str(experiment),
        "entries": {"total": len(entries), "complete": len(entries) - len(pending)},
        "pending": pending,
        "baseline": plan.baseline,
        "groups": list(groups),
        "identify": identify_summary(experiment, plan.identify),
        "lr_choice": {name: choice.model_dump() for name, choice in plan.lr_choice.items()},
        "benchmarks": {
            name: {
                "groups": benchmark_groups(groups, name),
                "differences": paired_differences(groups, name, pairs),
                "diversity": diversity(groups, name),
            }
            for name in benchmarks
        },
        "token_fraction": token_fractions(experiment, plan),
        "probe_entropy": probe_entropies(experiment, plan.probe, groups),
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


def comparison_pairs(
    groups: dict[str, Any], baseline: str | None, compare_with: list[str] = ()
) -> list[tuple[str, str]]:
    """(group, reference) pairs: every group against the baseline, the base model (only ever
    a reference) and each `compare_with` method, and GRPO runs also against GRPO from the
    baseline."""
    grpo_baseline = f"grpo-{baseline}"
    pairs = []
    references = (baseline, BASE, *compare_with)
    for reference in dict.fromkeys(r for r in references if r in groups):
        pairs += [(group, reference) for group in groups if group not in (reference, BASE)]
    if grpo_baseline in groups:
        pairs += [
            (group, grpo_baseline)
            for group in groups
            if group.startswith("grpo-") and group != grpo_baseline
        ]
    kept: list[tuple[str, str]] = []
    for pair in pairs:  # once per pair of groups: B against A is A against B, negated
        if pair not in kept and pair[::-1] not in kept:
            kept.append(pair)
    return kept


def paired_differences(
    groups: dict[str, list[EvalRun]], benchmark: str, pairs: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Each (group, reference) pair on greedy accuracy, pass@1, pass@K and gain@K (pass@K -
    pass@1, how much sampling adds; K the largest k both have), paired over the problems
    both have."""
    differences = []
    for group, reference in pairs:
        runs = groups[group]
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
        if 1 in ks:
            metrics.append(f"gain@{max(ks)}")
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
    kind, _, k = metric.partition("@")
    k = int(k)
    scores = {i: pass_at_k(p.samples, p.correct, k) for i, p in problems.items() if p.samples >= k}
    if kind == "gain":  # what k samples add over one
        return {
            i: score - pass_at_k(problems[i].samples, problems[i].correct, 1)
            for i, score in scores.items()
        }
    return scores


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


def token_fractions(experiment: Path, plan: ExperimentPlan) -> dict[str, Any]:
    """Per method: the share of response tokens its selected runs trained on, over seeds."""
    by_method: dict[str, list[float | None]] = {}
    for entry in plan.sft:
        if entry.selected and is_done(experiment, "sft", entry.dir):
            fraction = run_token_fraction(experiment / entry.dir)
            by_method.setdefault(entry.method, []).append(fraction)
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
    records = read_records(run_dir / METRICS)
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
        heads = [_head_mean(run.entropy) for run in group if run.entropy]
        tails = [_tail_mean(run.entropy) for run in group if run.entropy]
        row["entropy_first_10pct"] = summarize(heads) if heads else None
        row["entropy_last_10pct"] = summarize(tails) if tails else None
        row["entropy_moved_at"] = [entropy_moved_at(run.entropy) for run in group if run.entropy]
        table[start] = row
    return table


# The rollout entropy "moves" once its mean over the last 10% of the run's steps (a rolling
# window) is this far from its mean over the first 10%, relative to that first mean.
ENTROPY_MOVE = 0.25


def entropy_moved_at(curve: list[tuple[int, float]]) -> int | None:
    """The first step at which the rolling mean of the rollout entropy (over a window of 10%
    of the run's steps, at least one) differs from the mean of the first window by more
    than ENTROPY_MOVE of it; None when it never does."""
    width = max(1, len(curve) // 10)
    values = [value for _, value in curve]
    start = float(np.mean(values[:width]))
    for end in range(width, len(values) + 1):
        window = float(np.mean(values[end - width : end]))
        if start > 0 and abs(window - start) > ENTROPY_MOVE * start:
            return curve[end - 1][0]
    return None


def _head_mean(curve: list[tuple[int, float]]) -> float:
    width = max(1, len(curve) // 10)
    return float(np.mean([value for _, value in curve[:width]]))


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
        return self.path / IDENTIFY_DATASET

    @cached_property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        with self.dataset.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    @cached_property
    def probe_set(self) -> ProbeSet:
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


def compute_probe_entropy(model: str, probe_set: ProbeSet) -> dict[str, Any]:
    import torch
    from transformers.utils import logging as transformers_logging

    torch.set_num_threads(1)  # a report should not take the cores of a running experiment
    transformers_logging.disable_progress_bar()  # one bar per model would bury the report
    spec = ModelSpec(path=model)
    tokenizer = load_tokenizer(spec)
    return probe_entropy(
        load_causal_lm(spec), probe_set, tokenizer.pad_token_id, micro_batch_size=16
    )
