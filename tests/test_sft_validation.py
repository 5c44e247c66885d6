"""Validation in `cft-rl sft`: greedy accuracy on held-out questions, the best-validation
export, and the checkpoint pruning that keeps it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from sft_trainer_data import REPO, tiny_config, write_identify_dataset
from test_sft_trainer_toy import toy_records

from cft_rl.checkpointing import best_checkpoint, checkpoint_dir, commit_checkpoint, temporary_dir
from cft_rl.config import ModelSpec
from cft_rl.data import load_benchmark
from cft_rl.errors import UserError
from cft_rl.modeling import TOY_MODEL_DIR, load_causal_lm, load_tokenizer
from cft_rl.sft import trainer as trainer_module
from cft_rl.sft.config import SftConfig
from cft_rl.sft.validation import ValidationSet, validation_accuracy
from cft_rl.toy.evaluate import generate_solutions, parse_answer
from reward import Verifier

torch.set_num_threads(1)

# accuracy the scripted validator reports after each step (step 0: before training)
SCRIPTED = {0: 0.5, 2: 0.6, 4: 0.8, 6: 0.7, 8: 0.8}


class ScriptedValidator:
    """Stands in for ValidationSet: reports SCRIPTED[step], counting the calls."""

    calls = 0

    def __init__(self, config, tokenizer) -> None:
        pass

    def validate(self, model, verifier) -> dict:
        step = sorted(SCRIPTED)[ScriptedValidator.calls]
        ScriptedValidator.calls += 1
        return scripted_result(SCRIPTED[step])


def scripted_result(accuracy: float) -> dict:
    return {"accuracy": accuracy, "loss": None, "problems": 1}


def _run(tmp_path: Path, monkeypatch, export: str) -> Path:
    data = tmp_path / "identify"
    if not data.exists():
        write_identify_dataset(data, records=toy_records(TOY_MODEL_DIR, 16))
    ScriptedValidator.calls = 0
    monkeypatch.setattr(trainer_module, "ValidationSet", ScriptedValidator)
    out = tmp_path / export
    trainer_module.run_sft(scripted_config(tmp_path, out, export))
    return out


def scripted_config(tmp_path: Path, out: Path, export: str, limit: int = 2) -> SftConfig:
    """8 steps on the identify data of `_run`, a checkpoint (and validation) every 2."""
    return tiny_config(
        TOY_MODEL_DIR,
        tmp_path / "identify",
        out,
        train__max_steps=8,
        checkpoint={"every_steps": 2, "keep": 1, "export": export},
        validation={"benchmark": "toy-val", "limit": limit},
    )


def _weights(model_dir: Path) -> str:
    return hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()


def test_best_validation_checkpoint_is_exported_and_kept(tmp_path, monkeypatch):
    out = _run(tmp_path, monkeypatch, "best")
    logged = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert [(r["step"], r["accuracy"]) for r in logged] == list(SCRIPTED.items())
    info = json.loads((out / "export.json").read_text())
    # 0.8 first at step 4 (the tie at step 8 goes to the earlier checkpoint)
    assert info == {"step": 4, "select": "best", "validation": scripted_result(0.8)}
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert kept == ["step_000004", "step_000008"]  # keep=1 newest, and the best
    assert _weights(out / "hf_model") == _weights(checkpoint_dir(out, 4) / "hf_model")
    assert _weights(out / "hf_model") != _weights(checkpoint_dir(out, 8) / "hf_model")


def test_last_checkpoint_is_exported_by_default(tmp_path, monkeypatch):
    out = _run(tmp_path, monkeypatch, "last")
    assert json.loads((out / "export.json").read_text())["step"] == 8
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000008"]
    assert _weights(out / "hf_model") == _weights(checkpoint_dir(out, 8) / "hf_model")


def test_best_export_needs_validation():
    with pytest.raises(ValueError, match="needs validation.benchmark"):
        SftConfig.model_validate(
            {"data": {"path": "x"}, "checkpoint": {"export": "best"}, "validation": {}}
        )


def test_pruning_keeps_the_best_checkpoint_and_ties_go_to_the_earliest(tmp_path):
    def commit(step: int, accuracy: float | None) -> None:
        temporary = temporary_dir(checkpoint_dir(tmp_path, step))
        temporary.mkdir(parents=True)
        state = {"step": step, "validation": None if accuracy is None else {"accuracy": accuracy}}
        commit_checkpoint(temporary, state, keep=1, keep_best=validation_accuracy)

    for step, accuracy in [(1, 0.2), (2, 0.5), (3, None), (4, 0.5), (5, 0.1)]:
        commit(step, accuracy)
    assert best_checkpoint(tmp_path, validation_accuracy) == checkpoint_dir(tmp_path, 2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_000002",
        "step_000005",
    ]


def validation_config(limit: int, max_new_tokens: int) -> SftConfig:
    return SftConfig.model_validate(
        {
            "data": {"path": "unused"},
            "validation": {"benchmark": "toy-val", "limit": limit, "batch_size": 5,
                           "max_new_tokens": max_new_tokens},
        }
    )  # fmt: skip


def test_validation_matches_an_independent_greedy_evaluation_and_loss():
    tokenizer = load_tokenizer(ModelSpec())
    model = load_causal_lm(ModelSpec())
    with Verifier(1, 5.0) as verifier:
        result = ValidationSet(validation_config(12, 160), tokenizer).validate(model, verifier)
    problems = load_benchmark("toy-val", limit=12)
    solutions = generate_solutions(
        model, tokenizer, [p.question for p in problems], max_new_tokens=160
    )
    expected = sum(
        parse_answer(s[0]) == int(p.answer) for s, p in zip(solutions, problems, strict=True)
    )
    assert result["problems"] == 12
    assert result["accuracy"] == pytest.approx(expected / 12)
    # the loss: mean NLL of the reference solutions' tokens, one example at a time here
    total, count = 0.0, 0
    with torch.no_grad():
        for problem in problems:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": problem.question}],
                tokenize=False,
                add_generation_prompt=True,
            )
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            solution = tokenizer(problem.solution, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([prompt_ids + solution])
            logprobs = model(input_ids=ids).logits[0, :-1].log_softmax(-1)
            targets = ids[0, 1:]
            picked = logprobs[torch.arange(len(targets)), targets][len(prompt_ids) - 1 :]
            total -= float(picked.sum())
            count += len(solution)
    assert result["loss"] == pytest.approx(total / count, rel=1e-4)


def test_validation_restores_training_mode():
    tokenizer = load_tokenizer(ModelSpec())
    model = load_causal_lm(ModelSpec()).train()
    with Verifier(1, 5.0) as verifier:
        ValidationSet(validation_config(2, 8), tokenizer).validate(model, verifier)
    assert model.training


def test_validation_with_zero3_is_refused_before_training(tmp_path):
    config = tiny_config(
        TOY_MODEL_DIR,
        tmp_path / "missing-identify",
        tmp_path / "out",
        validation={"benchmark": "toy-val", "limit": 2},
        train__deepspeed_config=str(REPO / "recipes/deepspeed/zero3.json"),
    )
    write_identify_dataset(tmp_path / "missing-identify", records=toy_records(TOY_MODEL_DIR, 4))
    with pytest.raises(UserError, match="ZeRO-3"):
        trainer_module.run_sft(config)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_fresh_restart_does_not_repeat_the_step_0_validation(tmp_path, monkeypatch):
    out = _run(tmp_path, monkeypatch, "best")
    for path in (out / "checkpoints").iterdir():  # as if killed before the first checkpoint
        shutil.rmtree(path)
    ScriptedValidator.calls = 0
    trainer_module.run_sft(scripted_config(tmp_path, out, "best"))
    steps = [
        json.loads(line)["step"] for line in (out / "validation.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(SCRIPTED)


def test_a_resumed_best_export_run_may_not_change_its_validation(tmp_path, monkeypatch):
    out = _run(tmp_path, monkeypatch, "best")
    with pytest.raises(UserError, match="validation.limit"):
        trainer_module.run_sft(scripted_config(tmp_path, out, "best", limit=3))
