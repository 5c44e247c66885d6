"""The local GRPO engine: one process on CPU or one GPU, the same math as verl.

Each step: sample `prompts_per_step` questions and `rollout.n` responses to each, score them
with the pooled verifier (cft_rl.grpo.rollouts), turn scores into group-relative advantages
(or, for PPO, into GAE advantages with the critic of cft_rl.grpo.critic, which is updated
first), then update the policy (cft_rl.grpo.update). This module runs the steps: resume, the probe
and validation passes, checkpoints, metrics and the export.

Outputs in output_dir: metrics.jsonl (one record per step, names of
cft_rl.grpo.entropy_monitor.METRIC_NAMES plus timings; TensorBoard and W&B as `logging` asks),
probe.jsonl, validation.jsonl, collapse_events.jsonl, checkpoints/step_N (exact resume),
hf_model/ (the final policy) and entropy.png.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from cft_rl.checkpointing import latest_checkpoint
from cft_rl.data import Example
from cft_rl.data.prompts import encode_prompts
from cft_rl.generation.hf import HFBackend
from cft_rl.grpo import algos
from cft_rl.grpo.algos import ADVANTAGE_ESTIMATORS
from cft_rl.grpo.checkpoint import (
    export_hf,
    load_checkpoint,
    read_training_state,
    save_checkpoint,
)
from cft_rl.grpo.config import GrpoConfig
from cft_rl.grpo.critic import Critic, outcome_token_rewards
from cft_rl.grpo.curves import plot_runs
from cft_rl.grpo.entropy_monitor import EntropyMonitor
from cft_rl.grpo.probe import load_probe_set, probe_entropy
from cft_rl.grpo.prompts import PromptSchedule
from cft_rl.grpo.rollouts import (
    Rollouts,
    RolloutSampler,
    Scorer,
    VerifierScorer,
    group_spread,
    validation_seed,
)
from cft_rl.grpo.sequences import pad_rows, response_mask
from cft_rl.grpo.update import (
    Controls,
    PerSequence,
    PolicyUpdate,
    constant_after_warmup,
    needs_policy_before_update,
    unpad,
)
from cft_rl.jsonl import EVENTS, PROBE, VALIDATION, StepLog
from cft_rl.metric_sinks import MetricSinks
from cft_rl.modeling import load_causal_lm, load_tokenizer
from cft_rl.run_settings import check_same_settings, data_fingerprint


def run_local(config: GrpoConfig, scorer: Scorer | None = None) -> Path:
    """Train (or resume) as `config` says; returns the HF export's directory."""
    owned = scorer is None
    if scorer is None:
        scorer = VerifierScorer(config.verifier.make())
    try:
        return LocalGrpo(config, scorer).run()
    finally:
        if owned:
            scorer.close()


class LocalGrpo:
    def __init__(self, config: GrpoConfig, scorer: Scorer) -> None:
        self.config = config
        self.scorer = scorer
        self.out_dir = Path(config.output_dir)
        if config.cpu_threads is not None:
            torch.set_num_threads(config.cpu_threads)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        examples = config.data.load()
        self.tokenizer = load_tokenizer(config.model)
        self.pad_id = self.tokenizer.pad_token_id
        self.model = load_causal_lm(config.model)
        self.reference = load_causal_lm(config.model) if config.kl.use_reference else None
        if self.reference is not None:
            self.reference.requires_grad_(False)
        self.backend = HFBackend(self.model, self.tokenizer, config.rollout.batch_size)
        prompt_ids = encode_prompts(
            self.tokenizer, examples, config.data.template, config.data.max_prompt_tokens
        )
        schedule = PromptSchedule(len(examples), config.batch.prompts_per_step, config.seed)
        self.sampler = RolloutSampler(
            self.backend, config.rollout, prompt_ids, examples, schedule, config.seed
        )
        questions = data_fingerprint(
            json.dumps([ids, example.answer]).encode()
            for ids, example in zip(prompt_ids, examples, strict=True)
        )
        self.resume_settings = {**config.resume_settings(), "training_questions": questions}
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        self.scheduler = constant_after_warmup(self.optimizer, config.optim.warmup_steps)
        self.update = PolicyUpdate(
            config, self.model, self.reference, self.optimizer, self.scheduler, self.pad_id
        )
        estimator = ADVANTAGE_ESTIMATORS.get(config.algorithm.advantage_estimator)
        self.critic = Critic(config, self.pad_id) if estimator.needs_critic else None
        self.monitor = EntropyMonitor(
            config.monitor, config.algorithm.entropy_coeff, config.algorithm.policy_loss.loss_mode
        )
        self.sinks: MetricSinks | None = None  # opened by _resume, which knows the start step
        self.probe_log = StepLog(self.out_dir / PROBE)
        self.validation_log = StepLog(self.out_dir / VALIDATION)
        self.events = StepLog(self.out_dir / EVENTS)
        self.probe = (
            load_probe_set(config.probe.path, config.probe.limit) if config.probe.path else None
        )
        self.validation = self._validation_set()

    # -----------------------------------------------------------------------------------------
    # The run

    def run(self) -> Path:
        config = self.config
        if self.critic is not None and config.steps <= config.critic.steps_before_actor:
            print(
                f"note: steps={config.steps} <= critic.steps_before_actor="
                f"{config.critic.steps_before_actor}: every step trains the critic alone, "
                "and the exported policy is the starting one",
                flush=True,
            )
        start = self._resume()
        try:
            last_saved = self._train(start)
        finally:
            self.sinks.close()
        if start >= config.steps:
            print(f"{self.out_dir}: already trained to step {start} (steps={config.steps})")
        export = export_hf(self.out_dir, self.model, self.tokenizer)
        self._plot()
        print(f"policy after step {last_saved} exported to {export}")
        return export

    def _train(self, start: int) -> int:
        """Steps start + 1 .. steps (fewer if the monitor stops the run); returns the step of
        the last checkpoint."""
        config = self.config
        if start == 0:
            self._periodic(0)
        last_saved = start
        started = time.perf_counter()
        for step in range(start + 1, config.steps + 1):
            record = self.train_step(step)
            record.update(self._periodic(step))
            self.sinks.write(record)
            if config.logging.progress:
                per_step = (time.perf_counter() - started) / (step - start)
                left = per_step * (config.steps - step)
                print(_summary_line(record, config.steps, left), flush=True)
            for event in self.monitor.update(step, record):
                self.events.append(event.to_record())
                print(f"entropy monitor: {event.message}", flush=True)
            due = config.checkpoint.every_steps and step % config.checkpoint.every_steps == 0
            if due or step == config.steps or self.monitor.should_stop:
                self._save(step)
                last_saved = step
            if self.monitor.should_stop:
                print(f"stopped at step {step} by the entropy monitor", flush=True)
                break
        return last_saved

    def _resume(self) -> int:
        """Restore the newest checkpoint, if any; returns its step (0 for a fresh run)."""
        path = latest_checkpoint(self.out_dir)
        run_config = self.config.model_dump(mode="json")
        if path is None:
            self.sinks = MetricSinks(self.out_dir, self.config.logging, run_config, 0)
            for log in (self.probe_log, self.validation_log, self.events):
                log.rewind(0)
            return 0
        state = read_training_state(path)
        check_same_settings(path, state.settings, self.resume_settings)
        load_checkpoint(path, self.model, self.optimizer, self.scheduler, self.critic)
        self.sinks = MetricSinks(self.out_dir, self.config.logging, run_config, state.step)
        kept = self.sinks.kept
        self.probe_log.rewind(state.step)
        self.validation_log.rewind(state.step)
        self.events.rewind(state.step)
        # The monitor's state (history, quiet period, raised coefficient) is a function of the
        # metrics it was fed: replaying them restores it exactly.
        for record in kept:
            self.monitor.update(record["step"], record)
        print(f"resumed from {path} (step {state.step})", flush=True)
        return state.step

    def _save(self, step: int) -> None:
        save_checkpoint(
            self.out_dir,
            step,
            self.model,
            self.optimizer,
            self.scheduler,
            self.resume_settings,
            self.config.checkpoint.keep,
            self.critic,
        )

    def _periodic(self, step: int) -> dict[str, Any]:
        """The probe and the validation, when due at `step` (0: before training, and the last
        step, so that a run always has an end value); their results prefixed for the step's
        metrics record."""
        self.model.eval()
        found: dict[str, Any] = {}
        last = step == self.config.steps
        if self.probe is not None and (step % self.config.probe.every == 0 or last):
            result = probe_entropy(
                self.model, self.probe, self.pad_id, self.config.probe.micro_batch_size
            )
            self.probe_log.append({"step": step, **result})
            found |= {f"probe_{key}": value for key, value in result.items()}
        if self.validation is not None and (step % self.config.validation.every == 0 or last):
            result = self._validate()
            self.validation_log.append({"step": step, **result})
            found |= {f"val_{key}": value for key, value in result.items()}
        return found

    def _validation_set(self) -> tuple[list[list[int]], list[Example]] | None:
        spec = self.config.validation
        if spec.benchmark is None:
            return None
        examples = spec.load("validation")
        prompts = encode_prompts(
            self.tokenizer, examples, spec.template, self.config.data.max_prompt_tokens
        )
        return prompts, examples

    def _validate(self) -> dict[str, float]:
        """Mean reward of `n` samples per validation question, with the same seeds each time."""
        spec = self.config.validation
        prompts, examples = self.validation
        params = self.sampler.sampling(n=spec.n, seed=validation_seed(spec.seed))
        results = self.backend.generate(prompts, params)
        texts = [c.text for completions in results for c in completions]
        scores = self.scorer(texts, [example for example in examples for _ in range(spec.n)])
        return {"reward_mean": sum(scores) / len(scores), "samples": len(scores)}

    def _plot(self) -> None:
        plot_runs([self.out_dir], self.out_dir / "entropy.png")

    # -----------------------------------------------------------------------------------------
    # One step

    def train_step(self, step: int) -> dict[str, Any]:
        config = self.config
        clock = _Clock()
        self.model.eval()
        rollouts = self.sampler.sample(step)
        clock.lap("time_generate_s")
        scores = torch.tensor(self.scorer(rollouts.texts, rollouts.examples), dtype=torch.float32)
        clock.lap("time_reward_s")
        critic_metrics: dict[str, float] = {}
        if self.critic is None:
            advantages = self.outcome_advantages(rollouts, scores)
        else:
            advantages, critic_metrics = self._critic_step(rollouts, scores)
            clock.lap("time_critic_s")
        # PPO's warm-up: the first critic.steps_before_actor steps train the critic alone.
        actor_updates = self.critic is None or step > config.critic.steps_before_actor
        before = self.update.before_update(
            rollouts, with_policy=needs_policy_before_update(config) or not actor_updates
        )
        clock.lap("time_logprob_s")
        controls = Controls(self.monitor.entropy_coeff, self.monitor.loss_mode)
        metrics, update_entropies = {}, None
        if actor_updates:
            self.model.train()
            metrics, update_entropies = self.update.run(rollouts, advantages, before, controls)
        clock.lap("time_update_s")
        entropies = before.entropies if before.entropies is not None else update_entropies
        entropy = self.update.aggregate(pad_rows(entropies), response_mask(rollouts.lengths))
        return {
            "step": step,
            **_rollout_metrics(rollouts, scores, entropy),
            **metrics,
            **critic_metrics,
            "entropy_coeff": controls.entropy_coeff,
            "loss_mode": controls.loss_mode,
            **clock.laps,
            "step_time_s": clock.total(),
        }

    def outcome_advantages(self, rollouts: Rollouts, scores: torch.Tensor) -> PerSequence:
        """Group-relative advantages: each response's one value on all its tokens."""
        per_response = algos.sequence_advantages(
            self.config.algorithm.advantage_estimator, scores, rollouts.group
        )
        return [
            torch.full((len(response),), float(a))
            for a, response in zip(per_response, rollouts.responses, strict=True)
        ]

    def _critic_step(
        self, rollouts: Rollouts, scores: torch.Tensor
    ) -> tuple[PerSequence, dict[str, float]]:
        """PPO: the critic's values, GAE advantages and returns from them, then the critic's
        update toward the returns (before the policy's, as verl orders them)."""
        algo = self.config.algorithm
        values = self.critic.values(rollouts)
        mask = response_mask(rollouts.lengths)
        padded_values = pad_rows(values)
        rewards = outcome_token_rewards(scores, rollouts.lengths)
        advantages, returns = algos.gae_advantages(
            rewards, padded_values, mask, algo.gamma, algo.lam
        )
        metrics = self.critic.update(rollouts, unpad(returns, mask), values)
        metrics["values_mean"] = float(algos.masked_mean(padded_values, mask))
        metrics["returns_mean"] = float(algos.masked_mean(returns, mask))
        return unpad(advantages, mask), metrics


def _rollout_metrics(rollouts: Rollouts, scores: torch.Tensor, entropy: torch.Tensor) -> dict:
    """What a step's samples say before the update: entropy, rewards, lengths."""
    lengths = torch.tensor(rollouts.lengths, dtype=torch.float32)
    spread = group_spread(scores, rollouts.group)
    return {
        "entropy": float(entropy),
        "reward_mean": float(scores.mean()),
        "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
        "zero_signal_groups": float((spread == 0).float().mean()),
        "response_length_mean": float(lengths.mean()),
        "response_clip_ratio": sum(rollouts.truncated) / len(rollouts),
    }


class _Clock:
    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[name] = now - self.last
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.start


def _summary_line(record: dict[str, Any], steps: int, seconds_left: float) -> str:
    """The console's line of a step: where the run is and when it should end first (80
    columns keep them), then what the step did."""
    left = (
        f"~{seconds_left / 60:.0f} min left"
        if seconds_left >= 60
        else f"~{seconds_left:.0f} s left"
    )
    line = f"step {record['step']}/{steps} ({left})  "
    if record.get("zero_signal_groups") == 1.0 and "vf_loss" not in record:
        # every group had one reward: all group advantages are 0, the policy did not move
        # (PPO's advantages come from its critic and are not 0)
        line += "no learning signal (each group's rollouts had the same reward)  "
    line += (
        f"reward {record['reward_mean']:.3f}  "
        f"entropy {record['entropy']:.3f}  length {record['response_length_mean']:.1f}  "
    )
    # A PPO warm-up step trains the critic alone: no policy loss to show.
    line += f"clipfrac {record['pg_clipfrac']:.3f}" if "pg_clipfrac" in record else "critic only"
    if "vf_loss" in record:
        line += f"  vf loss {record['vf_loss']:.4f}"
    if "kl_loss" in record:
        line += f"  kl {record['kl_loss']:.4f}"
    if "val_reward_mean" in record:
        line += f"  val reward {record['val_reward_mean']:.3f}"
    if record.get("probe_entropy_critical") is not None:
        line += f"  probe H crit/other {record['probe_entropy_critical']:.3f}"
        line += f"/{record['probe_entropy_noncritical'] or float('nan'):.3f}"
    return line + (
        f"  ({record['step_time_s']:.1f}s: generate {record['time_generate_s']:.1f}, "
        f"reward {record['time_reward_s']:.1f}, update {record['time_update_s']:.1f})"
    )
