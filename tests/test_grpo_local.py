"""The local GRPO engine on a tiny random Qwen2: per-token statistics, updates, resume, outputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_lm import char_tokenizer, save_tiny_model, tiny_qwen2

from cft_rl.checkpointing import latest_checkpoint
from cft_rl.grpo import algos
from cft_rl.grpo.config import GrpoConfig
from cft_rl.grpo.critic import Critic
from cft_rl.grpo.local_engine import LocalGrpo, run_local
from cft_rl.grpo.prompts import PromptSchedule
from cft_rl.grpo.sequences import token_stats
from cft_rl.grpo.update import BeforeUpdate, Controls

torch.set_num_threads(1)

TIMINGS = {
    "time_generate_s",
    "time_reward_s",
    "time_critic_s",
    "time_logprob_s",
    "time_update_s",
    "step_time_s",
}


def digit_share(texts: list[str], examples: list) -> list[float]:
    """A dense test reward the random model can climb: the share of digits in the response."""
    return [sum(ch.isdigit() for ch in text) / max(1, len(text)) for text in texts]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    rows = [{"question": f"{i}+{i % 3}?", "answer": f"so\n#### {i + i % 3}"} for i in range(12)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def make_config(model_dir: Path, train_file: Path, out: Path, **changes) -> GrpoConfig:
    settings = {
        "output_dir": str(out),
        "model": {"path": str(model_dir), "device": "cpu"},
        "data": {"benchmark": "gsm8k", "path": str(train_file), "template": "toy"},
        "rollout": {"n": 4, "max_new_tokens": 6},
        "batch": {"prompts_per_step": 4, "mini_batch_prompts": 2, "micro_batch_size": 3},
        "optim": {"lr": 1e-2},
        "steps": 4,
        "checkpoint": {"every_steps": 2},
        "monitor": {"enabled": False},
    }
    for dotted, value in changes.items():
        node = settings
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return GrpoConfig.model_validate(settings)


def first_step(trainer: LocalGrpo):
    """Step 1's rollouts and their group advantages, as the engine computes them."""
    rollouts = trainer.sampler.sample(step=1)
    scores = torch.tensor(digit_share(rollouts.texts, rollouts.examples))
    return rollouts, trainer.outcome_advantages(rollouts, scores)


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in records]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_token_stats_match_a_full_forward_pass():
    tokenizer = char_tokenizer()
    model = tiny_qwen2(len(tokenizer), seed=3)
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13]]
    responses = [[20, 21], [22, 23, 24, 25], [26]]
    stats = token_stats(model, prompts, responses, pad_id=0, temperature=0.7, with_entropy=True)
    assert stats.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        logits = model(torch.tensor([prompt + response])).logits[0].float() / 0.7
        predicting = logits[len(prompt) - 1 : len(prompt) + len(response) - 1]
        expected = predicting.log_softmax(-1).gather(1, torch.tensor(response)[:, None])[:, 0]
        torch.testing.assert_close(stats.log_prob[row, : len(response)], expected)
        torch.testing.assert_close(
            stats.entropy[row, : len(response)], algos.entropy_from_logits(predicting)
        )
    assert stats.log_prob[0, 2:].abs().sum() == 0  # padding stays zero


def test_prompt_schedule_is_a_function_of_seed_and_step():
    schedule = PromptSchedule(num_examples=10, per_step=4, seed=1)
    first_epoch = schedule.indices(1) + schedule.indices(2) + schedule.indices(3)[:2]
    assert sorted(first_epoch) == list(range(10))
    again = PromptSchedule(num_examples=10, per_step=4, seed=1)
    assert again.indices(3) == schedule.indices(3)  # straight to step 3, as a resumed run does
    assert PromptSchedule(10, 4, seed=2).indices(1) != schedule.indices(1)


def test_a_step_learns_from_the_reward_and_logs_metrics(model_dir, train_file, tmp_path):
    config = make_config(
        model_dir, train_file, tmp_path / "run", steps=6, checkpoint__every_steps=0, optim__lr=3e-2
    )
    run_local(config, scorer=digit_share)
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 7))
    for key in ("entropy", "reward_mean", "response_length_mean", "pg_clipfrac", "grad_norm"):
        assert all(math.isfinite(r[key]) for r in records), key
    rewards = [r["reward_mean"] for r in records]
    assert sum(rewards[-2:]) / 2 > sum(rewards[:2]) / 2 + 0.1  # climbs the dense reward
    # The first mini-batch of each step is on-policy: nothing clipped, ratio 1.
    assert records[0]["pg_clipfrac"] <= 0.5


def test_validation_asks_the_same_questions_with_the_same_seeds(model_dir, train_file, tmp_path):
    validation = {"benchmark": "gsm8k", "path": str(train_file), "limit": 6, "n": 3, "every": 2}
    curves = {}
    # A frozen policy (under two run seeds), and one that climbs the digit reward.
    for lr, seed in ((1e-12, 0), (1e-12, 5), (3e-2, 0)):
        out = tmp_path / f"lr{lr}-seed{seed}"
        config = make_config(
            model_dir, train_file, out, optim__lr=lr, seed=seed, validation=validation
        )
        run_local(config, scorer=digit_share)
        records = read_jsonl(out / "validation.jsonl")
        assert [(r["step"], r["samples"]) for r in records] == [(0, 18), (2, 18), (4, 18)]
        metrics = read_jsonl(out / "metrics.jsonl")
        assert [r.get("val_reward_mean") for r in metrics] == [
            None,
            records[1]["reward_mean"],
            None,
            records[2]["reward_mean"],
        ]
        curves[lr, seed] = [r["reward_mean"] for r in records]
    frozen = curves[1e-12, 0]
    assert len(set(frozen)) == 1  # unchanged policy, same questions and seeds
    assert curves[1e-12, 5] == frozen  # validation draws do not depend on the run's seed
    climbing = curves[3e-2, 0]
    assert climbing[0] == frozen[0] and climbing[-1] > climbing[0]


@pytest.mark.parametrize("mode", list(algos.LOSS_AGG_MODES))
def test_micro_batching_does_not_change_the_gradient(model_dir, train_file, tmp_path, mode):
    """TRL-style invariance: 8 sequences as 8 x 1, 3 + 3 + 2 or 1 x 8 give one gradient; so
    does the on-policy shortcut (old log-probs = the update's own, detached)."""
    changes = {"kl__use_reference": True, "kl__coef": 0.1, "algorithm__entropy_coeff": 0.01}
    config = make_config(model_dir, train_file, tmp_path, algorithm__loss_agg_mode=mode, **changes)
    trainer = LocalGrpo(config, digit_share)
    rollouts, advantages = first_step(trainer)
    before = trainer.update.before_update(rollouts, with_policy=True)
    on_policy = BeforeUpdate(None, None, before.ref_log_probs)
    rows = list(range(8))  # one mini-batch: 2 prompts x 4 responses
    gradients = []
    controls = Controls(config.algorithm.entropy_coeff, "vanilla")
    for micro, given in ((1, before), (3, before), (8, before), (3, on_policy)):
        trainer.config.batch.micro_batch_size = micro
        trainer.model.zero_grad(set_to_none=True)
        _, seen = trainer.update.backward(rollouts, rows, advantages, given, controls)
        gradients.append({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
        for row in rows:
            torch.testing.assert_close(seen[row], before.entropies[row])
    assert any(g.abs().sum() > 0 for g in gradients[0].values())
    for other in gradients[1:]:
        for name, grad in gradients[0].items():
            torch.testing.assert_close(other[name], grad, rtol=1e-4, atol=1e-7)


def test_resume_equals_uninterrupted(model_dir, train_file, tmp_path, capsys):
    changes = {"kl__use_reference": True, "kl__coef": 0.05, "algorithm__entropy_coeff": 0.01}
    straight = make_config(model_dir, train_file, tmp_path / "straight", **changes)
    run_local(straight, scorer=digit_share)

    # Interrupted: train to step 2, then a crash that logged step 3 but saved no checkpoint.
    broken = tmp_path / "broken"
    run_local(make_config(model_dir, train_file, broken, steps=2, **changes), scorer=digit_share)
    with (broken / "metrics.jsonl").open("a") as handle:
        handle.write(json.dumps({"step": 3, "entropy": 9.9}) + "\n" + '{"step": 4, "ent')
    capsys.readouterr()
    run_local(make_config(model_dir, train_file, broken, **changes), scorer=digit_share)
    resumed = capsys.readouterr().out
    assert "(step 2)" in resumed and "step 3/4" in resumed and "step 2/4" not in resumed

    assert without_timings(read_jsonl(broken / "metrics.jsonl")) == without_timings(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    )
    final = load_file(broken / "hf_model" / "model.safetensors")
    for name, value in load_file(tmp_path / "straight" / "hf_model" / "model.safetensors").items():
        assert torch.equal(final[name], value), name
    assert latest_checkpoint(broken).name == "step_000004"


def test_resume_refuses_changed_settings(model_dir, train_file, tmp_path):
    out, data = tmp_path / "run", tmp_path / "train.jsonl"
    data.write_text(train_file.read_text())
    run_local(make_config(model_dir, data, out, steps=2), scorer=digit_share)
    changed = make_config(model_dir, data, out, steps=4, optim__lr=1e-3)
    with pytest.raises(Exception, match=r"optim\.lr"):
        LocalGrpo(changed, digit_share).run()
    # The same settings, but the training file was edited: refused too.
    original = data.read_text()
    data.write_text(original.replace('"1+1?"', '"1+2?"'))
    with pytest.raises(Exception, match="training_questions"):
        LocalGrpo(make_config(model_dir, data, out, steps=4), digit_share).run()
    data.write_text(original)
    # Validation only measures: turning it on when resuming is allowed.
    validation = {"benchmark": "gsm8k", "path": str(data), "limit": 2, "n": 1, "every": 1}
    measured = make_config(model_dir, data, out, steps=3, validation=validation)
    LocalGrpo(measured, digit_share).run()
    assert [r["step"] for r in read_jsonl(out / "validation.jsonl")] == [3]
    # A checkpoint from before the data hash was recorded resumes (unchecked for it).
    marker = latest_checkpoint(out) / "trainer_state.json"
    state = json.loads(marker.read_text())
    del state["settings"]["training_questions"]
    marker.write_text(json.dumps(state))
    LocalGrpo(make_config(model_dir, data, out, steps=4), digit_share).run()
    assert latest_checkpoint(out).name == "step_000004"


def test_kl_to_the_reference_starts_at_zero(model_dir, train_file, tmp_path):
    config = make_config(
        model_dir,
        train_file,
        tmp_path / "run",
        steps=1,
        kl__use_reference=True,
        kl__coef=0.1,
        batch__mini_batch_prompts=4,  # one mini-batch: the policy still equals the reference
    )
    run_local(config, scorer=digit_share)
    [record] = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert record["kl_loss"] == pytest.approx(0.0, abs=1e-7)
    assert record["pg_clipfrac"] == 0.0 and record["ppo_kl"] == pytest.approx(0.0, abs=1e-6)


def test_monitor_stop_ends_the_run_with_a_checkpoint(model_dir, train_file, tmp_path):
    out = tmp_path / "run"
    config = make_config(
        model_dir,
        train_file,
        out,
        steps=4,
        checkpoint__every_steps=0,
        monitor={"floor": 100.0, "max_relative_drop": None, "action": "stop"},
    )
    run_local(config, scorer=digit_share)
    assert [r["step"] for r in read_jsonl(out / "metrics.jsonl")] == [1]
    [event] = read_jsonl(out / "collapse_events.jsonl")
    assert event["reason"] == "floor" and event["step"] == 1
    assert latest_checkpoint(out).name == "step_000001"
    assert (out / "hf_model" / "config.json").is_file()


def test_raise_entropy_coeff_takes_effect_and_survives_resume(model_dir, train_file, tmp_path):
    monitor = {
        "floor": 100.0,
        "max_relative_drop": None,
        "window": 3,
        "action": "raise_entropy_coeff",
        "raise_from": 0.002,
    }
    out = tmp_path / "run"
    run_local(make_config(model_dir, train_file, out, steps=2, monitor=monitor), digit_share)
    run_local(make_config(model_dir, train_file, out, steps=5, monitor=monitor), digit_share)
    coeffs = [r["entropy_coeff"] for r in read_jsonl(out / "metrics.jsonl")]
    # fires at step 1 (0 -> 0.002), quiet for the window, fires again at step 4 (-> 0.004)
    assert coeffs == [0.0, 0.002, 0.002, 0.002, 0.004]


def test_metrics_reach_tensorboard_and_offline_wandb(model_dir, train_file, tmp_path):
    """The same sinks as `cft-rl sft` (cft_rl.metric_sinks), from the same `logging` keys."""
    logging = {"progress": False, "tensorboard": True, "wandb": {"enabled": True}}
    config = make_config(model_dir, train_file, tmp_path, steps=2, logging=logging)
    run_local(config, scorer=digit_share)
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2]
    [events] = (tmp_path / "tensorboard").glob("events.out.tfevents.*")
    scalars = EventAccumulator(str(events)).Reload().Scalars("train/reward_mean")
    assert [s.step for s in scalars] == [1, 2]
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_switch_loss_mode_takes_effect_next_step_and_survives_resume(
    model_dir, train_file, tmp_path
):
    monitor = {
        "floor": 100.0,
        "max_relative_drop": None,
        "window": 3,
        "action": "switch_loss_mode",
        "switch_to": "clip_cov",
    }
    out = tmp_path / "run"
    run_local(make_config(model_dir, train_file, out, steps=2, monitor=monitor), digit_share)
    run_local(make_config(model_dir, train_file, out, steps=3, monitor=monitor), digit_share)
    modes = [r["loss_mode"] for r in read_jsonl(out / "metrics.jsonl")]
    assert modes == ["vanilla", "clip_cov", "clip_cov"]  # fired at step 1, replayed on resume
    [event] = read_jsonl(out / "collapse_events.jsonl")
    assert event["loss_mode"] == "clip_cov" and "vanilla -> clip_cov" in event["message"]


@pytest.mark.parametrize("loss_mode", ["clip_cov", "kl_cov", "gspo"])
def test_every_policy_loss_trains_locally(model_dir, train_file, tmp_path, loss_mode):
    loss = {"loss_mode": loss_mode, "clip_cov_ratio": 0.05, "kl_cov_ratio": 0.05}
    config = make_config(model_dir, train_file, tmp_path, steps=2, algorithm__policy_loss=loss)
    run_local(config, scorer=digit_share)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["loss_mode"] for r in records] == [loss_mode] * 2
    assert all(math.isfinite(r["pg_loss"]) and r["grad_norm"] > 0 for r in records)


def test_top_entropy_tokens_only_and_micro_batching_still_invariant(
    model_dir, train_file, tmp_path
):
    """With top_entropy_fraction the policy gradient sees about that share of the tokens
    (the threshold is over the whole mini-batch, so micro-batching does not move it), and
    the gradient differs from training on every token."""
    config = make_config(
        model_dir,
        train_file,
        tmp_path,
        algorithm__policy_loss={"top_entropy_fraction": 0.25},
        batch__mini_batch_prompts=4,  # one mini-batch: the first update is on-policy
    )
    trainer = LocalGrpo(config, digit_share)
    rollouts, advantages = first_step(trainer)
    before = trainer.update.before_update(rollouts, with_policy=True)
    rows = list(range(len(rollouts)))
    selected = trainer.update.selected_tokens(rows, before)
    share = sum(int(s.sum()) for s in selected.values()) / sum(len(s) for s in selected.values())
    assert 0.2 <= share <= 0.35
    controls = Controls(0.0, "vanilla")
    gradients, metrics = [], []
    for micro, chosen in ((16, selected), (3, selected), (16, None)):
        trainer.config.batch.micro_batch_size = micro
        trainer.model.zero_grad(set_to_none=True)
        found, _ = trainer.update.backward(rollouts, rows, advantages, before, controls, chosen)
        metrics.append(found)
        gradients.append({n: p.grad.clone() for n, p in trainer.model.named_parameters()})
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, rtol=1e-4, atol=1e-7)
    assert any(not torch.allclose(gradients[2][n], g) for n, g in gradients[0].items())
    assert metrics[0]["pg_token_share"] == pytest.approx(share)


PPO = {
    "algorithm__advantage_estimator": "gae",
    "algorithm__lam": 0.95,
    "critic__optim__lr": 1e-2,
    "critic__steps_before_actor": 1,
}


def test_ppo_warms_the_critic_up_then_trains_both(model_dir, train_file, tmp_path):
    config = make_config(model_dir, train_file, tmp_path, steps=3, **PPO)
    run_local(config, scorer=digit_share)
    records = read_jsonl(tmp_path / "metrics.jsonl")
    assert "pg_loss" not in records[0] and "pg_loss" in records[1]  # step 1: critic alone
    assert all(math.isfinite(r["vf_loss"]) and r["critic_grad_norm"] > 0 for r in records)
    # A zero-initialised head values everything at 0 first; it then learns toward the returns.
    assert records[0]["values_mean"] == 0.0 and records[-1]["values_mean"] != 0.0
    assert (latest_checkpoint(tmp_path) / "critic.safetensors").is_file()


def test_a_ppo_run_shorter_than_the_critics_warm_up_says_so(
    model_dir, train_file, tmp_path, capsys
):
    changes = {**PPO, "critic__steps_before_actor": 2}
    run_local(make_config(model_dir, train_file, tmp_path, steps=2, **changes), scorer=digit_share)
    assert "every step trains the critic alone" in capsys.readouterr().out
    run_local(make_config(model_dir, train_file, tmp_path, steps=3, **changes), scorer=digit_share)
    assert "critic alone" not in capsys.readouterr().out


def test_ppo_critic_starts_from_its_own_model_when_given(model_dir, train_file, tmp_path):
    own = save_tiny_model(tmp_path / "critic", seed=1)
    policy_model = tiny_qwen2(len(char_tokenizer()), seed=0).base_model.state_dict()
    critic_model = tiny_qwen2(len(char_tokenizer()), seed=1).base_model.state_dict()
    for given, expected in (
        (None, policy_model),
        ({"path": str(own), "device": "cpu"}, critic_model),
    ):
        config = make_config(model_dir, train_file, tmp_path / "out", **PPO, critic__model=given)
        backbone = Critic(config, pad_id=0).model.backbone.state_dict()
        assert all(torch.equal(backbone[name], value) for name, value in expected.items())


def test_ppo_resume_with_the_critic_equals_uninterrupted(model_dir, train_file, tmp_path):
    straight = tmp_path / "straight"
    run_local(make_config(model_dir, train_file, straight, **PPO), scorer=digit_share)
    broken = tmp_path / "broken"
    run_local(make_config(model_dir, train_file, broken, steps=2, **PPO), scorer=digit_share)
    run_local(make_config(model_dir, train_file, broken, **PPO), scorer=digit_share)
    assert without_timings(read_jsonl(broken / "metrics.jsonl")) == without_timings(
        read_jsonl(straight / "metrics.jsonl")
    )
    for name in ("model.safetensors", "critic.safetensors"):
        final = load_file(broken / "checkpoints" / "step_000004" / name)
        for key, value in load_file(straight / "checkpoints" / "step_000004" / name).items():
            assert torch.equal(final[key], value), (name, key)


def test_resume_settings_keep_what_shapes_the_run():
    """The micro-batch size is speed only, except for the losses that choose tokens per
    micro-batch; the critic's settings count only for PPO."""
    plain = GrpoConfig().resume_settings()
    assert "micro_batch_size" not in plain["batch"] and "critic" not in plain
    clip_cov = GrpoConfig(algorithm={"policy_loss": {"loss_mode": "clip_cov"}}).resume_settings()
    assert "micro_batch_size" in clip_cov["batch"]
    ppo = GrpoConfig(algorithm={"advantage_estimator": "gae"}).resume_settings()
    assert ppo["critic"]["optim"]["lr"] == 1e-5


def test_the_console_line_says_time_left_first_and_when_a_step_had_no_signal():
    from cft_rl.grpo.local_engine import _summary_line

    record = {
        "step": 3, "reward_mean": 0.5, "entropy": 0.2, "response_length_mean": 40.0,
        "pg_clipfrac": 0.0, "step_time_s": 2.0, "time_generate_s": 1.0,
        "time_reward_s": 0.5, "time_update_s": 0.5, "zero_signal_groups": 0.25,
    }  # fmt: skip
    line = _summary_line(record, 10, 14.0)
    assert line.startswith("step 3/10 (~14 s left)  reward 0.500")
    assert _summary_line(record, 10, 600.0).startswith("step 3/10 (~10 min left)")
    flat = _summary_line({**record, "zero_signal_groups": 1.0}, 10, 14.0)
    assert "no learning signal" in flat
    ppo = {**record, "zero_signal_groups": 1.0, "vf_loss": 0.1}
    assert "no learning signal" not in _summary_line(ppo, 10, 14.0)


def test_validation_also_runs_after_the_last_step(model_dir, train_file, tmp_path):
    validation = {"benchmark": "gsm8k", "path": str(train_file), "limit": 2, "n": 1, "every": 2}
    out = tmp_path / "run"
    config = make_config(
        model_dir, train_file, out, steps=3, checkpoint__every_steps=0, validation=validation
    )
    run_local(config, scorer=digit_share)
    assert [r["step"] for r in read_jsonl(out / "validation.jsonl")] == [0, 2, 3]
