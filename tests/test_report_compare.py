"""`cft-rl report compare`: t intervals, the paired bootstrap, and the report of an experiment."""

import json
import math
import random

import numpy as np
import pytest

from cft_rl.cli import main
from cft_rl.errors import UserError
from cft_rl.report import compare as compare_module
from cft_rl.report.compare import report_compare
from cft_rl.report.compare_plots import y_limits
from cft_rl.report.stats import mean_ci, paired_bootstrap, student_t_quantile

# Two-sided 95% Student-t quantiles t(0.975, df) from published tables.
T_975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 9: 2.2622, 30: 2.0423}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# ---- mean_ci ----


@pytest.mark.parametrize("df", sorted(T_975))
def test_t_quantiles_match_the_tables(df):
    assert student_t_quantile(0.975, df) == pytest.approx(T_975[df], abs=1e-4)
    assert student_t_quantile(0.025, df) == pytest.approx(-T_975[df], abs=1e-4)


def test_t_quantile_at_other_levels():
    assert student_t_quantile(0.95, 4) == pytest.approx(2.1318, abs=1e-4)
    assert student_t_quantile(0.995, 10) == pytest.approx(3.1693, abs=1e-4)
    assert student_t_quantile(0.5, 7) == pytest.approx(0.0, abs=1e-12)
    assert student_t_quantile(0.975, 10_000) == pytest.approx(1.9602, abs=1e-4)  # ~ normal


@pytest.mark.parametrize("values", [[0.5, 0.6, 0.7], [0.31, 0.35, 0.29, 0.4, 0.33]])
def test_mean_ci_is_the_t_interval(values):
    mean, low, high = mean_ci(values)
    half = T_975[len(values) - 1] * np.std(values, ddof=1) / math.sqrt(len(values))
    assert mean == pytest.approx(np.mean(values))
    assert low == pytest.approx(np.mean(values) - half, abs=1e-5)
    assert high == pytest.approx(np.mean(values) + half, abs=1e-5)


def test_mean_ci_of_one_value_has_no_width():
    assert mean_ci([0.42]) == (0.42, 0.42, 0.42)
    with pytest.raises(ValueError):
        mean_ci([])


# ---- paired_bootstrap ----


def scores(seed, shape, p=0.5):
    return (np.random.default_rng(seed).random(shape) < p).astype(float)


def test_bootstrap_is_reproducible_by_seed():
    a, b = scores(1, (3, 40), 0.6), scores(2, (3, 40))
    first = paired_bootstrap(a, b, n_boot=2000, seed=5)
    assert paired_bootstrap(a, b, n_boot=2000, seed=5) == first
    other = paired_bootstrap(a, b, n_boot=2000, seed=6)
    assert (other["low"], other["high"]) != (first["low"], first["high"])
    assert first["estimate"] == pytest.approx(a.mean() - b.mean())
    assert first["estimate"] == other["estimate"]


def test_bootstrap_of_a_constant_shift_is_tight():
    b = np.tile(np.random.default_rng(3).random(50) * 0.8, (3, 1))  # the same on every seed
    result = paired_bootstrap(b + 0.2, b, n_boot=1000)
    assert result["estimate"] == pytest.approx(0.2)
    assert result["low"] == pytest.approx(0.2) and result["high"] == pytest.approx(0.2)
    assert result["p_value"] == 0.0


def test_bootstrap_of_identical_scores():
    tie = {"estimate": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}
    a = scores(4, (1, 30))
    assert paired_bootstrap(a, a.copy(), n_boot=1000) == tie
    # seeds that agree: every replicate is an exact tie, up to the rounding of the sums
    same = np.tile(np.random.default_rng(3).random(50), (5, 1))
    assert paired_bootstrap(same, same.copy(), n_boot=1000) == tie
    several = scores(5, (3, 30))
    result = paired_bootstrap(several, several.copy(), n_boot=2000)
    assert result["estimate"] == 0.0
    assert result["low"] < 0 < result["high"]
    assert result["p_value"] > 0.5  # the replicates straddle zero


def test_bootstrap_matches_a_loop_over_replicates():
    """The same draws, in the documented order, resampled by plain indexing."""
    rng = np.random.default_rng(11)
    a, b = rng.random((3, 25)), rng.random((2, 25)) * 0.9
    n_boot, seed = 3000, 7
    result = paired_bootstrap(a, b, n_boot=n_boot, seed=seed)
    assert result["estimate"] == pytest.approx(a.mean() - b.mean())
    # the seeds' spread about their mean widened by sqrt(n / (n - 1)), computed here directly
    a = a.mean(0) + math.sqrt(3 / 2) * (a - a.mean(0))
    b = b.mean(0) + math.sqrt(2 / 1) * (b - b.mean(0))
    draws = np.random.default_rng(seed)
    problems = draws.integers(0, 25, size=(n_boot, 25))
    seeds_a = draws.integers(0, 3, size=(n_boot, 3))
    seeds_b = draws.integers(0, 2, size=(n_boot, 2))
    stats = []
    for r in range(n_boot):
        total_a = sum(a[s, p] for s in seeds_a[r] for p in problems[r]) / (3 * 25)
        total_b = sum(b[s, p] for s in seeds_b[r] for p in problems[r]) / (2 * 25)
        stats.append(total_a - total_b)
    stats = np.array(stats)
    assert result["low"] == pytest.approx(np.percentile(stats, 2.5), abs=1e-12)
    assert result["high"] == pytest.approx(np.percentile(stats, 97.5), abs=1e-12)
    p = 2 * min(np.mean(stats <= 0), np.mean(stats >= 0))
    assert result["p_value"] == pytest.approx(min(1.0, p))


def test_widened_seed_resampling_has_the_variance_of_a_mean_of_seeds():
    """Over many replicates, the seed part of the bootstrap has variance s^2 / n."""
    rng = np.random.default_rng(2)
    seed_effects = np.array([0.0, 0.1, 0.3])  # three seeds, one problem's worth each
    a = np.tile(seed_effects[:, None], (1, 40))  # the same on every problem: only seeds vary
    b = np.zeros((1, 40))
    spread = np.std(
        [paired_bootstrap(a, b, n_boot=1, seed=int(s))["low"] for s in rng.integers(0, 10**9, 4000)]
    )
    expected = np.std(seed_effects, ddof=1) / math.sqrt(3)
    assert spread == pytest.approx(expected, rel=0.05)


def test_y_limits_never_zoom_into_noise():
    low, high = y_limits([50.0, 50.3])
    assert high - low >= 20 and low < 50 and high > 50.3
    assert y_limits([1.0, 2.0]) == (0.0, 20.0)
    assert y_limits([99.5, 99.9]) == (80.0, 100.0)
    assert y_limits([0.0, 100.0]) == (0.0, 100.0)


# ---- the report on a synthetic experiment ----

BENCHMARKS = ("alpha", "beta")
PROBLEMS = [f"p{i}" for i in range(20)]
N_SAMPLES = 4
KS = [1, 2, 4]


def generations(rng, skill, problems):
    """Greedy and sampled records of one benchmark, a few answers and texts repeating."""
    records = []
    for problem in problems:
        correct = rng.random() < skill
        records.append(
            {
                "id": problem,
                "sample": "greedy",
                "reference": "1",
                "predicted": "1" if correct else "2",
                "correct": correct,
                "reason": "ok",
                "finish_reason": "stop",
                "num_tokens": 5,
                "text": "greedy",
            }
        )
        for sample in range(N_SAMPLES):
            predicted = (
                rng.choice(["1", "1", "2", "3", None]) if rng.random() < skill + 0.2 else None
            )
            records.append(
                {
                    "id": problem,
                    "sample": sample,
                    "reference": "1",
                    "predicted": predicted,
                    "correct": predicted == "1",
                    "reason": "ok",
                    "finish_reason": "stop",
                    "num_tokens": 5,
                    "text": f"{predicted} by way {rng.randint(0, 2)}",
                }
            )
    return records


def greedy_accuracy(records):
    greedy = [r["correct"] for r in records if r["sample"] == "greedy"]
    return sum(greedy) / len(greedy)


def per_problem(records, key):
    out = {}
    for r in records:
        if r["sample"] != "greedy":
            out.setdefault(r["id"], []).append(r[key])
    return out


def pass_k(records, k):
    values = [
        1 - math.comb(len(c) - sum(c), k) / math.comb(len(c), k)
        for c in per_problem(records, "correct").values()
    ]
    return sum(values) / len(values)


def distinct_answers(records):
    answers = per_problem(records, "predicted").values()
    return sum(len(set(a)) for a in answers) / len(answers)


def write_jsonl(path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_eval(run_dir, data, complete=True):
    for name, records in data.items():
        write_jsonl(run_dir / "generations" / f"{name}.jsonl", records)
    if complete:
        benchmarks = [
            {
                "benchmark": name,
                "problems": len({r["id"] for r in records}),
                "greedy_accuracy": greedy_accuracy(records),
                "pass_at_k": {str(k): pass_k(records, k) for k in KS},
            }
            for name, records in data.items()
        ]
        summary = {
            "model": "m",
            "n_samples": N_SAMPLES,
            "temperature": 0.6,
            "top_p": 1.0,
            "ks": KS,
            "benchmarks": benchmarks,
        }
        (run_dir / "summary.json").write_text(json.dumps(summary))


def write_sft(run_dir, rng, with_response_tokens=True):
    records = []
    for step in range(1, 6):
        record = {"step": step, "loss": 1.0, "supervised_tokens": rng.randint(10, 30)}
        if with_response_tokens:
            record["response_tokens"] = rng.randint(100, 200)
        records.append(record)
    write_jsonl(run_dir / "metrics.jsonl", records)
    (run_dir / "export.json").write_text(json.dumps({"step": 5, "select": "last"}))
    if not with_response_tokens:
        return None
    return sum(r["supervised_tokens"] for r in records) / sum(r["response_tokens"] for r in records)


def write_grpo(run_dir, rng):
    metrics = [
        {"step": s, "entropy": rng.random(), "reward_mean": rng.random()} for s in range(1, 21)
    ]
    validation = [{"step": s, "reward_mean": rng.random(), "samples": 8} for s in (0, 10, 20)]
    write_jsonl(run_dir / "metrics.jsonl", metrics)
    write_jsonl(run_dir / "validation.jsonl", validation)
    (run_dir / "hf_model").mkdir()
    return metrics, validation


@pytest.fixture
def experiment(tmp_path):
    """An experiment with base, sft and cft (3 seeds), one GRPO run, and runs still pending."""
    rng = random.Random(0)
    root = tmp_path / "exp"
    truth = {"evals": {}, "fractions": {}}
    evals = [{"group": "base", "seed": None, "dir": "eval/base", "model": "toy"}]
    skills = {"base": 0.3, "sft": 0.45, "cft": 0.6, "grpo-cft": 0.7}
    sft_entries = []
    for method in ("sft", "cft"):
        for seed in range(3):
            run = f"sft/{method}/lr3e-04/seed{seed}"
            sft_entries.append(
                {"method": method, "lr": 3e-4, "seed": seed, "dir": run, "selected": True}
            )
            truth["fractions"].setdefault(method, []).append(write_sft(root / run, rng))
            evals.append(
                {
                    "group": method,
                    "seed": seed,
                    "dir": f"eval/{method}/seed{seed}",
                    "model": f"{run}/hf_model",
                }
            )
    sweep = "sft/cft/lr1e-04/seed0"  # not at the chosen lr: not counted
    sft_entries.append({"method": "cft", "lr": 1e-4, "seed": 0, "dir": sweep, "selected": False})
    write_sft(root / sweep, rng)
    old = "sft/random/lr3e-04/seed0"  # logged no response_tokens: fraction unknown
    sft_entries.append({"method": "random", "lr": 3e-4, "seed": 0, "dir": old, "selected": True})
    write_sft(root / old, rng, with_response_tokens=False)
    evals.append({"group": "grpo-cft", "seed": 0, "dir": "eval/grpo-cft/seed0", "model": "x"})
    for entry in evals:
        problems = {name: PROBLEMS for name in BENCHMARKS}
        if entry["dir"] == "eval/sft/seed1":
            problems["beta"] = PROBLEMS[:-1]  # one problem short
        data = {
            name: generations(rng, skills[entry["group"]], problems[name]) for name in BENCHMARKS
        }
        write_eval(root / entry["dir"], data)
        truth["evals"][entry["dir"]] = data
    torn = root / "eval/cft/seed0/generations/alpha.jsonl"
    with torn.open("a") as handle:
        handle.write('{"id": "p0", "sample": 3, "ref')  # killed mid-write
    pending_eval = {"group": "cft", "seed": 3, "dir": "eval/cft/seed3", "model": "y"}
    write_eval(root / pending_eval["dir"], {"alpha": generations(rng, 0.0, PROBLEMS)}, False)
    truth["grpo"] = write_grpo(root / "grpo/cft/seed0", rng)
    (root / "identify").mkdir()
    (root / "identify" / "summary.json").write_text(
        json.dumps(
            {
                "questions": 50,
                "kept": 30,
                "kept_fraction": 0.6,
                "critical_fraction": 0.1,
                "response_tokens": 1000,
                "critical_tokens": 100,
            }
        )
    )
    plan = {
        "baseline": "sft",
        "methods": ["sft", "cft", "random"],
        "identify": "identify",
        "probe": None,
        "sft": sft_entries,
        "lr_choice": {
            "cft": {"chosen": 3e-4, "validation_accuracy": {"0.0001": 0.51, "0.0003": 0.55}}
        },
        "grpo": [
            {"start": "cft", "seed": 0, "dir": "grpo/cft/seed0"},
            {"start": "cft", "seed": 1, "dir": "grpo/cft/seed1"},
        ],
        "evals": evals + [pending_eval],
    }
    (root / "plan.json").write_text(json.dumps(plan))
    return root, truth


def t_interval(values):
    """The 95% t interval of a share, clipped to [0, 1]."""
    mean = float(np.mean(values))
    if len(values) == 1:
        return mean, mean, mean
    half = T_975[len(values) - 1] * np.std(values, ddof=1) / math.sqrt(len(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def seeds_of(truth, group, benchmark):
    return [truth["evals"][f"eval/{group}/seed{s}"][benchmark] for s in range(3)]


def test_report_holds_the_means_differences_and_fractions(experiment):
    root, truth = experiment
    assert main(["report", "compare", str(root)]) == 0
    out = root / "report"
    result = json.loads((out / "compare.json").read_text())
    markdown = (out / "compare.md").read_text()

    for group in ("sft", "cft"):
        for name in BENCHMARKS:
            row = result["benchmarks"][name]["groups"][group]
            accuracies = [greedy_accuracy(r) for r in seeds_of(truth, group, name)]
            mean, low, high = t_interval(accuracies)
            assert row["greedy_accuracy"]["mean"] == pytest.approx(mean)
            assert row["greedy_accuracy"]["low"] == pytest.approx(low, abs=1e-4)
            assert row["greedy_accuracy"]["high"] == pytest.approx(high, abs=1e-4)
            pass4 = np.mean([pass_k(r, 4) for r in seeds_of(truth, group, name)])
            assert row["pass_at_k"]["4"]["mean"] == pytest.approx(pass4)
            assert row["seeds"] == [0, 1, 2]  # the pending seed 3 is left out
    cft_alpha = [greedy_accuracy(r) for r in seeds_of(truth, "cft", "alpha")]
    mean, low, high = t_interval(cft_alpha)
    assert f"| cft | 3 | {100 * mean:.1f} [{100 * low:.1f}, {100 * high:.1f}] |" in markdown
    base_alpha = greedy_accuracy(truth["evals"]["eval/base"]["alpha"])
    assert f"| base | 1 | {100 * base_alpha:.1f} (n=1) |" in markdown

    differences = {
        (d["group"], d["against"], d["metric"]): d
        for d in result["benchmarks"]["alpha"]["differences"]
    }
    cft_vs_sft = differences[("cft", "sft", "greedy")]
    sft_alpha = [greedy_accuracy(r) for r in seeds_of(truth, "sft", "alpha")]
    assert cft_vs_sft["estimate"] == pytest.approx(np.mean(cft_alpha) - np.mean(sft_alpha))
    assert cft_vs_sft["problems"] == 20 and cft_vs_sft["seeds"] == [3, 3]
    assert 0 <= cft_vs_sft["p_value"] <= 1
    assert {
        ("cft", "base", "pass@1"),
        ("cft", "base", "pass@4"),
        ("grpo-cft", "sft", "greedy"),
    } <= set(differences)
    assert all(d["group"] != "base" for d in result["benchmarks"]["alpha"]["differences"])

    # beta: one sft seed lacks p19, so the comparison runs on the 19 problems all have
    beta = next(
        d
        for d in result["benchmarks"]["beta"]["differences"]
        if (d["group"], d["against"], d["metric"]) == ("cft", "sft", "greedy")
    )
    common = PROBLEMS[:-1]

    def greedy_matrix(group):
        rows = []
        for records in seeds_of(truth, group, "beta"):
            by_id = {r["id"]: r["correct"] for r in records if r["sample"] == "greedy"}
            rows.append([float(by_id[p]) for p in common])
        return np.array(rows)

    assert beta["estimate"] == pytest.approx(
        greedy_matrix("cft").mean() - greedy_matrix("sft").mean()
    )
    assert (beta["problems"], beta["problems_available"]) == (19, 20)
    assert "19 of 20" in markdown

    fractions = result["token_fraction"]
    assert fractions["cft"]["runs"] == 3
    assert fractions["cft"]["fraction"]["mean"] == pytest.approx(np.mean(truth["fractions"]["cft"]))
    assert fractions["random"]["fraction"] is None and fractions["random"]["unknown"] == 1
    assert "| random | 1 | unknown |" in markdown

    diversity = result["benchmarks"]["alpha"]["diversity"]
    expected = np.mean([distinct_answers(r) for r in seeds_of(truth, "cft", "alpha")])
    assert diversity["cft"]["distinct_answers"]["mean"] == pytest.approx(expected)
    assert diversity["base"]["samples"]["mean"] == N_SAMPLES

    metrics, validation = truth["grpo"]
    grpo = result["grpo"]["cft"]
    assert grpo["validation_reward_first"]["mean"] == pytest.approx(validation[0]["reward_mean"])
    assert grpo["validation_reward_last"]["mean"] == pytest.approx(validation[-1]["reward_mean"])
    last = np.mean([m["entropy"] for m in metrics[-2:]])  # the last 10% of 20 steps
    assert grpo["entropy_last_10pct"]["mean"] == pytest.approx(last)

    assert result["entries"] == {"total": 1 + 8 + 2 + 9, "complete": 18}
    assert {"kind": "eval", "dir": "eval/cft/seed3"} in result["pending"]
    assert {"kind": "grpo", "dir": "grpo/cft/seed1"} in result["pending"]
    assert "pending: eval `eval/cft/seed3`" in markdown
    assert "10.0%; the paper: under 12%" in markdown
    assert "| cft | 3e-04 | 55.0 | chosen |" in markdown
    assert "not corrected for multiple comparisons" in markdown
    for name in ("accuracy.png", "passk.png", "grpo.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_partial_experiment_lists_pending_runs(tmp_path):
    rng = random.Random(1)
    write_eval(tmp_path / "eval/base", {"alpha": generations(rng, 0.5, PROBLEMS)})
    write_eval(tmp_path / "eval/cft/seed0", {"alpha": generations(rng, 0.5, PROBLEMS)}, False)
    plan = {
        "baseline": None,
        "methods": ["cft"],
        "identify": "identify",
        "probe": None,
        "sft": [],
        "grpo": [],
        "evals": [
            {"group": "base", "seed": None, "dir": "eval/base", "model": "toy"},
            {"group": "cft", "seed": 0, "dir": "eval/cft/seed0", "model": "m"},
        ],
        # what the runner writes for a method without a sweep
        "lr_choice": {"cft": {"chosen": None, "validation_accuracy": {}}},
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    out = tmp_path / "elsewhere"
    report_compare([str(tmp_path)], out=str(out))
    result = json.loads((out / "compare.json").read_text())
    assert list(result["benchmarks"]["alpha"]["groups"]) == ["base"]
    assert result["benchmarks"]["alpha"]["differences"] == []
    assert result["entries"] == {"total": 3, "complete": 1}
    text = (out / "compare.md").read_text()
    assert "1 of 3 runs this report reads are complete (evaluations and GRPO runs;" in text
    assert "), 2 pending." in text
    assert (out / "accuracy.png").is_file() and not (out / "grpo.png").exists()
    assert "Learning-rate choice" not in text  # no method had a sweep: no empty table


def test_missing_plan_names_the_file(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "plan.json")):
        report_compare([str(tmp_path)])
    with pytest.raises(UserError, match="one experiment directory"):
        report_compare([str(tmp_path), str(tmp_path)])


def test_plan_entry_without_a_dir_is_named(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps({"evals": [{"group": "base", "model": "toy"}]}))
    with pytest.raises(UserError, match=r"plan.json: not an experiment plan \(evals.0.dir: Field"):
        report_compare([str(tmp_path)])


def test_the_plan_the_runner_writes_is_the_plan_the_report_reads(tmp_path):
    from cft_rl.experiment_plan import EvalEntry, ExperimentPlan, LrChoice, SftEntry

    plan = ExperimentPlan(
        baseline="sft",
        methods=["sft"],
        sft=[SftEntry(method="sft", lr=1e-4, seed=0, selected=True, dir="sft/sft/lr1e-04/seed0")],
        lr_choice={"sft": LrChoice(chosen=1e-4, validation_accuracy={"0.0001": 0.5})},
        evals=[EvalEntry(group="base", model="toy", dir="eval/base")],
    )
    plan.write(tmp_path)
    assert ExperimentPlan.read(tmp_path) == plan
    assert plan.entries() == [("sft", "sft/sft/lr1e-04/seed0"), ("eval", "eval/base")]
    twice = plan.model_dump() | {"evals": [plan.evals[0].model_dump()] * 2}
    (tmp_path / "plan.json").write_text(json.dumps(twice))
    with pytest.raises(UserError, match="an eval group and seed appear twice"):
        ExperimentPlan.read(tmp_path)


def write_probe_set(probe_dir, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    probe_dir.mkdir(parents=True, exist_ok=True)
    columns = {
        "prompt_token_ids": [[5, 6, 7]] * rows,
        "response_token_ids": [[8 + i, 9, 10, 11] for i in range(rows)],
        "critical_mask": [[0, 1, 0, 0]] * rows,
    }
    pq.write_table(pa.table(columns), probe_dir / "critical_tokens.parquet")
    (probe_dir / "summary.json").write_text("{}")


def test_probe_entropy_with_the_toy_model_is_cached(tmp_path, monkeypatch):
    rng = random.Random(2)
    write_eval(tmp_path / "eval/base", {"alpha": generations(rng, 0.5, PROBLEMS[:4])})
    write_probe_set(tmp_path / "probe", rows=2)
    plan = {
        "probe": "probe",
        "evals": [{"group": "base", "seed": None, "dir": "eval/base", "model": "toy"}],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    report_compare([str(tmp_path)])
    cache = json.loads((tmp_path / "eval/base/probe_entropy.json").read_text())
    probe = json.loads((tmp_path / "report/compare.json").read_text())["probe_entropy"]["base"]
    assert cache["entropy"]["critical_tokens"] == 2 and cache["entropy"]["noncritical_tokens"] == 6
    assert probe["entropy_all"]["mean"] == pytest.approx(cache["entropy"]["entropy_all"])
    assert probe["entropy_all"]["mean"] > 0

    def recompute(*_):
        raise AssertionError("recomputed")

    monkeypatch.setattr(compare_module, "compute_probe_entropy", recompute)
    report_compare([str(tmp_path)])  # the cache answers
    write_probe_set(tmp_path / "probe", rows=3)
    with pytest.raises(AssertionError, match="recomputed"):
        report_compare([str(tmp_path)])


def test_gain_from_sampling_and_grpo_against_grpo_from_the_baseline(experiment):
    root, truth = experiment
    rng = random.Random(5)
    data = {name: generations(rng, 0.5, PROBLEMS) for name in BENCHMARKS}
    write_eval(root / "eval/grpo-sft/seed0", data)
    plan = json.loads((root / "plan.json").read_text())
    plan["evals"].append(
        {"group": "grpo-sft", "seed": 0, "dir": "eval/grpo-sft/seed0", "model": "z"}
    )
    (root / "plan.json").write_text(json.dumps(plan))
    assert main(["report", "compare", str(root)]) == 0
    result = json.loads((root / "report/compare.json").read_text())
    differences = {
        (d["group"], d["against"], d["metric"]): d
        for d in result["benchmarks"]["alpha"]["differences"]
    }
    # gain@4 = pass@4 - pass@1 per problem: how much more 4 samples solve than one
    gain = {
        group: np.mean([pass_k(r, 4) - pass_k(r, 1) for r in seeds_of(truth, group, "alpha")])
        for group in ("sft", "cft")
    }
    assert differences[("cft", "sft", "gain@4")]["estimate"] == pytest.approx(
        gain["cft"] - gain["sft"]
    )
    grpo = differences[("grpo-cft", "grpo-sft", "greedy")]
    own = greedy_accuracy(truth["evals"]["eval/grpo-cft/seed0"]["alpha"])
    assert grpo["estimate"] == pytest.approx(own - greedy_accuracy(data["alpha"]))
    assert ("grpo-sft", "grpo-sft", "greedy") not in differences


def test_comparison_pairs_take_the_baseline_the_base_model_and_further_references():
    from cft_rl.report.compare import comparison_pairs

    groups = dict.fromkeys(["base", "sft", "cft", "random", "grpo-cft", "grpo-sft"])
    pairs = comparison_pairs(groups, "sft", ["cft"])
    assert ("random", "cft") in pairs and ("cft", "sft") in pairs
    assert ("sft", "cft") not in pairs  # the same comparison as cft against sft
    assert ("grpo-cft", "grpo-sft") in pairs
    assert not [pair for pair in pairs if pair[0] == "base" or pair[0] == pair[1]]
    assert len(pairs) == len(set(pairs))
    assert comparison_pairs(groups, "sft") == [p for p in pairs if p[1] != "cft"]


def test_the_step_where_the_rollout_entropy_moves():
    from cft_rl.report.compare import entropy_moved_at

    flat = [(step, 0.5 + 0.01 * (step % 2)) for step in range(1, 101)]
    assert entropy_moved_at(flat) is None
    # falls from 0.5 to 0.2 from step 51 on: the 10-step window passes 0.375 at step 55
    falling = [(step, 0.5 if step <= 50 else 0.2) for step in range(1, 101)]
    assert entropy_moved_at(falling) == 55
    # rises from 0.4 to 1.0 from step 81 on: the window passes 0.5 at step 82
    rising = [(step, 0.4 if step <= 80 else 1.0) for step in range(1, 101)]
    assert entropy_moved_at(rising) == 82
