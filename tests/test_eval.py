"""`cft-rl eval` end to end on the shipped toy model, and resuming a killed run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from cft_rl.cli import main
from cft_rl.config import ConfigError, load_config
from cft_rl.eval.config import EvalConfig
from cft_rl.eval.passk import mean_pass_at_k

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "toy" / "eval.yaml")
SMALL = [
    "benchmarks=[{benchmark: toy, limit: 6, template: toy},"
    " {benchmark: toy-hard, limit: 3, template: toy}]",
    "n_samples=4",
    "generation.batch_size=16",
    "verifier.num_workers=1",
]


def run(output_dir) -> dict:
    assert main(["eval", "--recipe", RECIPE, f"output_dir={output_dir}", *SMALL]) == 0
    return json.loads((output_dir / "summary.json").read_text())


def read_log(path) -> dict:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return {(r["id"], r["sample"]): r for r in records}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run"
    return out, run(out)


def test_summary_agrees_with_the_logged_generations(first_run):
    out, summary = first_run
    assert (out / "config.yaml").is_file()
    assert summary["ks"] == [1, 2, 4]
    assert [b["benchmark"] for b in summary["benchmarks"]] == ["toy", "toy-hard"]
    for result in summary["benchmarks"]:
        log = read_log(out / "generations" / f"{result['benchmark']}.jsonl")
        ids = sorted({problem_id for problem_id, _ in log})
        assert len(ids) == result["problems"]
        assert set(log) == {(i, s) for i in ids for s in ["greedy", 0, 1, 2, 3]}
        greedy = [log[(i, "greedy")]["correct"] for i in ids]
        assert result["greedy_accuracy"] == pytest.approx(sum(greedy) / len(ids))
        counts = [sum(log[(i, s)]["correct"] for s in range(4)) for i in ids]
        for k in (1, 2, 4):
            assert result["pass_at_k"][str(k)] == pytest.approx(mean_pass_at_k(counts, 4, k))
    toy_log = read_log(out / "generations" / "toy.jsonl")
    assert any(r["correct"] for r in toy_log.values()), "the toy model solved nothing"
    assert all(r["predicted"] is not None for r in toy_log.values() if r["correct"])
    table = (out / "summary.md").read_text()
    assert "| benchmark | problems | greedy | pass@1 | pass@2 | pass@4 |" in table


def test_rerun_after_a_kill_mid_write_repeats_the_uninterrupted_run(first_run, tmp_path):
    out, summary = first_run
    resumed = tmp_path / "run"
    shutil.copytree(out, resumed)
    log_path = resumed / "generations" / "toy.jsonl"
    lines = log_path.read_text().splitlines(keepends=True)
    # Killed while writing: 10 lines written, the 11th torn; toy-hard never started.
    log_path.write_text("".join(lines[:10]) + lines[10][:25])
    (resumed / "generations" / "toy-hard.jsonl").unlink()
    (resumed / "summary.json").unlink()

    again = run(resumed)
    for name in ("toy", "toy-hard"):
        before = read_log(out / "generations" / f"{name}.jsonl")
        after = read_log(resumed / "generations" / f"{name}.jsonl")
        assert after.keys() == before.keys()
        assert {k: r["text"] for k, r in after.items()} == {k: r["text"] for k, r in before.items()}
    for old, new in zip(summary["benchmarks"], again["benchmarks"], strict=True):
        old.pop("seconds_this_run"), new.pop("seconds_this_run")
        assert new == old


def test_rerun_of_a_finished_run_generates_nothing(first_run, tmp_path):
    out, _ = first_run
    done = tmp_path / "run"
    shutil.copytree(out, done)
    before = (done / "generations" / "toy.jsonl").read_bytes()
    run(done)
    assert (done / "generations" / "toy.jsonl").read_bytes() == before


def test_resuming_with_other_sampling_settings_is_refused(first_run, tmp_path, capsys):
    out, _ = first_run
    shutil.copytree(out, tmp_path / "run")
    args = ["eval", "--recipe", RECIPE, f"output_dir={tmp_path / 'run'}", *SMALL, "seed=1"]
    assert main(args) == 2
    assert "seed: 0 -> 1" in capsys.readouterr().err


def test_ks_beyond_n_samples_name_the_key():
    with pytest.raises(ConfigError, match="ks"):
        load_config(EvalConfig, RECIPE, ["n_samples=4", "ks=[1,8]"])


def test_default_ks_are_powers_of_two_and_n():
    config = load_config(EvalConfig, RECIPE, ["n_samples=12"])
    assert config.pass_ks() == [1, 2, 4, 8, 12]


def test_resuming_on_changed_data_is_refused(first_run, tmp_path, capsys):
    out, _ = first_run
    shutil.copytree(out, tmp_path / "run")
    log_path = tmp_path / "run" / "generations" / "toy.jsonl"
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    records[0]["reference"] = "-1"  # as if problem toy-0 had been another problem
    log_path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["eval", "--recipe", RECIPE, f"output_dir={tmp_path / 'run'}", *SMALL]) == 2
    assert "other reference answers" in capsys.readouterr().err


def test_a_benchmark_without_samples_gets_greedy_answers_only(tmp_path):
    benchmarks = (
        "benchmarks=[{benchmark: toy, limit: 3, template: toy}, "
        "{benchmark: toy-hard, limit: 3, template: toy, samples: false}]"
    )
    argv = ["eval", "--recipe", RECIPE, f"output_dir={tmp_path}", benchmarks, "n_samples=2"]
    assert main(argv) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    sampled, greedy_only = summary["benchmarks"]
    assert (sampled["n_samples"], sorted(sampled["pass_at_k"])) == (2, ["1", "2"])
    assert (greedy_only["n_samples"], greedy_only["pass_at_k"]) == (0, {})
    log = read_log(tmp_path / "generations" / "toy-hard.jsonl")
    assert {sample for _, sample in log} == {"greedy"} and len(log) == 3
    assert "| toy-hard | 3 |" in (tmp_path / "summary.md").read_text()
