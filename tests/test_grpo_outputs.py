"""`cft-rl grpo` end to end (real verifier), the entropy probe, and `cft-rl report entropy`."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from tiny_lm import save_tiny_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from cft_rl.cli import main
from cft_rl.config import ModelSpec
from cft_rl.data import DataError
from cft_rl.grpo.probe import load_probe_set, probe_entropy
from cft_rl.grpo.sequences import token_stats
from cft_rl.jsonl import VALIDATION
from cft_rl.modeling import load_causal_lm
from cft_rl.report.entropy import report_entropy

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=1)


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [{"question": f"{i}*2?", "answer": f"#### {2 * i}"} for i in range(6)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_probe_set(path: Path, rows: list[tuple[list[int], list[int], list[int]]]) -> Path:
    table = pa.Table.from_pylist(
        [
            {"id": str(i), "prompt_token_ids": p, "response_token_ids": r, "critical_mask": c}
            for i, (p, r, c) in enumerate(rows)
        ]
    )
    pq.write_table(table, path)
    return path


PROBE_ROWS = [
    ([5, 6, 7], [20, 21, 22], [0, 1, 0]),
    ([8, 9], [23, 24], [1, 1]),
    ([10, 11, 12], [25, 26, 27, 28], [0, 0, 0, 1]),
]


def grpo_args(model_dir: Path, train_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "grpo",
        f"output_dir={out}",
        f"model.path={model_dir}",
        "model.device=cpu",
        "data.benchmark=gsm8k",
        f"data.path={train_file}",
        "data.template=toy",
        "rollout.n=2",
        "rollout.max_new_tokens=5",
        "batch.prompts_per_step=2",
        "batch.micro_batch_size=4",
        "steps=2",
        "checkpoint.every_steps=1",
        "verifier.num_workers=1",
        *extra,
    ]


def test_cli_run_writes_metrics_checkpoint_export_and_plot(model_dir, train_file, tmp_path):
    out = tmp_path / "run"
    probe = write_probe_set(tmp_path / "probe.parquet", PROBE_ROWS)
    assert main(grpo_args(model_dir, train_file, out, f"probe.path={probe}", "probe.every=2")) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(0.0 <= r["reward_mean"] <= 1.0 for r in records)
    assert "probe_entropy_critical" in records[1] and "probe_entropy_critical" not in records[0]
    probes = [json.loads(line) for line in (out / "probe.jsonl").read_text().splitlines()]
    assert [p["step"] for p in probes] == [0, 2]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000001", "step_000002"]
    for name in ("config.yaml", "entropy.png", "hf_model/generation_config.json"):
        assert (out / name).is_file(), name
    exported = AutoModelForCausalLM.from_pretrained(out / "hf_model").state_dict()
    assert AutoTokenizer.from_pretrained(out / "hf_model").chat_template
    last = load_file(out / "checkpoints" / "step_000002" / "model.safetensors")
    assert last and all(torch.equal(exported[name], value) for name, value in last.items())
    # Re-running a finished run trains nothing more.
    assert main(grpo_args(model_dir, train_file, out, f"probe.path={probe}", "probe.every=2")) == 0
    again = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert again == records


def test_cli_reports_bad_settings_without_traceback(model_dir, train_file, tmp_path, capsys):
    args = grpo_args(model_dir, train_file, tmp_path / "run", "kl.coef=0.1")
    assert main(args) == 2
    assert "use_reference" in capsys.readouterr().err


def test_probe_splits_entropy_at_critical_tokens(model_dir, tmp_path):
    probe = load_probe_set(write_probe_set(tmp_path / "p.parquet", PROBE_ROWS), limit=None)
    model = load_causal_lm(ModelSpec(path=str(model_dir), device="cpu"))
    result = probe_entropy(model, probe, pad_id=0, micro_batch_size=2)
    critical, other = [], []
    for prompt, response, mask in PROBE_ROWS:
        stats = token_stats(model, [prompt], [response], pad_id=0, with_entropy=True)
        for entropy, flag in zip(stats.entropy[0].tolist(), mask, strict=True):
            (critical if flag else other).append(entropy)
    assert result["critical_tokens"] == len(critical) == 4
    assert result["noncritical_tokens"] == len(other) == 5
    assert result["entropy_critical"] == pytest.approx(sum(critical) / 4, rel=1e-5)
    assert result["entropy_noncritical"] == pytest.approx(sum(other) / 5, rel=1e-5)
    assert result["entropy_all"] == pytest.approx(sum(critical + other) / 9, rel=1e-5)
    assert load_probe_set(tmp_path / "p.parquet", limit=1).responses == [[20, 21, 22]]


def test_probe_rejects_files_that_are_not_identify_datasets(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"prompt_token_ids": [1]}]), tmp_path / "x.parquet")
    with pytest.raises(DataError, match="critical_mask"):
        load_probe_set(tmp_path / "x.parquet", limit=None)
    with pytest.raises(DataError, match="not found"):
        load_probe_set(tmp_path / "missing.parquet", limit=None)


def _fake_run(path: Path, seed: int, lr: float, entropies: list[float]) -> Path:
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(f"seed: {seed}\noutput_dir: {path}\noptim:\n  lr: {lr}\n")
    lines = [
        json.dumps({"step": step, "entropy": h, "reward_mean": 0.1 * step})
        for step, h in enumerate(entropies, start=1)
    ]
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_report_groups_seeds_and_summarises(tmp_path):
    runs = [
        _fake_run(tmp_path / "cft-seed0", 0, 1e-6, [1.0, 0.9, 0.8]),
        _fake_run(tmp_path / "cft-seed1", 1, 1e-6, [1.2, 1.1, 1.0]),
        _fake_run(tmp_path / "sft-seed0", 0, 2e-6, [0.5, 0.3, 0.1]),
    ]
    report_entropy([str(r) for r in runs], out=str(tmp_path / "report"))
    table = (tmp_path / "report" / "entropy.md").read_text()
    assert (tmp_path / "report" / "entropy.png").stat().st_size > 0
    rows = [line for line in table.splitlines() if line.startswith(("| cft", "| sft"))]
    assert rows[0].startswith("| cft (2 seeds) | 2 | 3 |")
    # entropy first 10% (one step): mean 1.1 over seeds, range [1.0, 1.2]
    assert "1.100 [1.000, 1.200]" in rows[0]
    assert rows[1].startswith("| sft-seed0 | 1 | 3 |") and "0.100" in rows[1]


def test_report_names_a_folder_that_is_not_a_grpo_run(tmp_path, capsys):
    assert main(["report", "entropy", str(tmp_path)]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err


def test_one_validation_point_is_reported_as_one(tmp_path):
    short = _fake_run(tmp_path / "short", 0, 1e-6, [1.0, 0.9])
    (short / VALIDATION).write_text(json.dumps({"step": 0, "reward_mean": 0.781}) + "\n")
    longer = _fake_run(tmp_path / "longer", 0, 1e-6, [1.0, 0.9])
    (longer / VALIDATION).write_text(
        "".join(json.dumps({"step": s, "reward_mean": v}) + "\n" for s, v in ((0, 0.5), (2, 0.7)))
    )
    for run, cell in ((short, "| 0.781 (one point) |"), (longer, "| 0.500 -> 0.700 |")):
        report_entropy([str(run)], out=str(tmp_path / run.name / "report"))
        assert cell in (tmp_path / run.name / "report" / "entropy.md").read_text()


def test_entropy_plot_has_whole_steps_and_a_readable_axis_for_one_point(tmp_path, monkeypatch):
    import warnings

    from matplotlib.figure import Figure

    run = _fake_run(tmp_path / "one-step", 0, 1e-6, [0.7])
    axes = {}
    real_savefig = Figure.savefig

    def savefig(figure, *args, **kwargs):
        axes["xlim"] = figure.axes[0].get_xlim()
        axes["ticks"] = list(figure.axes[0].get_xticks())
        return real_savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report_entropy([str(run)], out=str(tmp_path / "report"))
    assert axes["xlim"] == (0.0, 2.0)  # step 1 in the middle
    assert all(float(t).is_integer() for t in axes["ticks"])
