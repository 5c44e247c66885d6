"""The local GRPO engine: one process on CPU or one GPU, the same math as verl.

Each step: sample `prompts_per_step` questions, decode `rollout.n` responses per question with
the hf generation backend (sharing the policy's weights), score them with the pooled verifier,
turn scores into group-relative advantages, recompute the old log-probs once (and the
reference's, when there is one), then take PPO-clipped updates over mini-batches, each
accumulated over micro-batches whose losses sum to the mini-batch loss.

Outputs in output_dir: metrics.jsonl (one record per step, names of
cft_rl.grpo.entropy_monitor.METRIC_NAMES plus timings), probe.jsonl, validation.jsonl,
collapse_events.jsonl, checkpoints/step_N (exact resume), hf_model/ (the final policy) and
entropy.png.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cft_rl.checkpointing import check_resume_settings, data_fingerprint, latest_checkpoint
from cft_rl.data.prompts import encode_prompts
from cft_rl.generation import FINISH_LENGTH, SamplingParams
from cft_rl.generation.hf import HFBackend
from cft_rl.grpo import algos
from cft_rl.grpo.checkpoint import (
    export_hf,
    load_checkpoint,
    read_training_state,
    save_checkpoint,
)
from cft_rl.grpo.config import GrpoConfig
from cft_rl.grpo.curves import plot_runs
from cft_rl.grpo.entropy_monitor import EntropyMonitor
from cft_rl.grpo.probe import load_probe_set, probe_entropy
from cft_rl.grpo.prompts import PromptSchedule
from cft_rl.grpo.sequences import pad_rows, token_stats
from cft_rl.jsonl import EVENTS, METRICS, PROBE, VALIDATION, StepLog
from cft_rl.modeling import load_causal_lm, load_tokenizer
from reward import Verifier

# responses (texts), references -> one reward per response
Scorer = Callable[[list[str], list[str]], list[float]]


@dataclass
class Rollouts:
    """One step's sequences, flattened prompt-major: `group[i]` is the prompt of sequence i."""

    prompts: list[list[int]] = field(default_factory=list)
    responses: list[list[int]] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)
    group: list[int] = field(default_factory=list)
    truncated: list[bool] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.responses)


class VerifierScorer:
    """The reward: 1.0 for a verified correct final answer, else 0.0 (reward.Verifier)."""

    def __init__(self, num_workers: int, timeout_s: float) -> None:
        self.verifier = Verifier(num_workers=num_workers, timeout_s=timeout_s)

    def __call__(self, responses: list[str], references: list[str]) -> list[float]:
        return [verdict.score for verdict in self.verifier.verify_batch(responses, references)]

    def close(self) -> None:
        self.verifier.close()


def run_local(config: GrpoConfig, scorer: Scorer | None = None) -> Path:
    """Train (or resume) as `config` says; returns the HF export's directory."""
    owned = scorer is None
    if scorer is None:
        scorer = VerifierScorer(config.verifier.num_workers, config.verifier.timeout_s)
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
        self.references = [example.answer for example in examples]
        self.prompt_ids = encode_prompts(
            self.tokenizer, examples, config.data.template, config.data.max_prompt_tokens
        )
        self.schedule = PromptSchedule(len(examples), config.batch.prompts_per_step, config.seed)
        questions = data_fingerprint(
            json.dumps([ids, reference]).encode()
            for ids, reference in zip(self.prompt_ids, self.references, strict=True)
        )
        self.resume_settings = {**config.resume_settings(), "training_questions": questions}
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.optim.lr, weight_decay=config.optim.weight_decay
        )
        warmup = config.optim.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda done: min(1.0, (done + 1) / warmup) if warmup else 1.0
        )
        self.monitor = EntropyMonitor(config.monitor, config.algorithm.entropy_coeff)
        self.metrics = StepLog(self.out_dir / METRICS)
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
        start = self._resume()
        if start == 0:
            self._periodic(0)
        last_saved = start
        for step in range(start + 1, config.steps + 1):
            record = self.train_step(step)
            record.update(self._periodic(step))
            self.metrics.append(record)
            print(_summary_line(record, config.steps), flush=True)
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
        if start >= config.steps:
            print(f"{self.out_dir}: already trained to step {start} (steps={config.steps})")
        export = export_hf(self.out_dir, self.model, self.tokenizer)
        self._plot()
        print(f"policy after step {last_saved} exported to {export}")
        return export

    def _resume(self) -> int:
        """Restore the newest checkpoint, if any; returns its step (0 for a fresh run)."""
        path = latest_checkpoint(self.out_dir)
        if path is None:
            for log in (self.metrics, self.probe_log, self.validation_log, self.events):
                log.rewind(0)
            return 0
        state = read_training_state(path)
        check_resume_settings(path, state.settings, self.resume_settings)
        load_checkpoint(path, self.model, self.optimizer, self.scheduler)
        kept = self.metrics.rewind(state.step)
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
        )

    def _periodic(self, step: int) -> dict[str, Any]:
        """The probe and the validation, when due at `step` (0: before training); their
        results prefixed for the step's metrics record."""
        self.model.eval()
        found: dict[str, Any] = {}
        if self.probe is not None and step % self.config.probe.every == 0:
            result = probe_entropy(
                self.model, self.probe, self.pad_id, self.config.probe.micro_batch_size
            )
            self.probe_log.append({"step": step, **result})
            found |= {f"probe_{key}": value for key, value in result.items()}
        if self.validation is not None and step % self.config.validation.every == 0:
            result = self._validate()
            self.validation_log.append({"step": step, **result})
            found |= {f"val_{key}": value for key, value in result.items()}
        return found

    def _validation_set(self) -> tuple[list[list[int]], list[str]] | None:
        spec = self.config.validation
        if spec.benchmark is None:
            return None
        examples = spec.load()
        prompts = encode_prompts(
            self.tokenizer, examples, spec.template, self.config.data.max_prompt_tokens
        )
        return prompts, [example.answer for example in examples]

    def _validate(self) -> dict[str, float]:
        """Mean reward of `n` samples per validation question, with the same seeds each time."""
        r, spec = self.config.rollout, self.config.validation
        prompts, references = self.validation
        params = SamplingParams(
            max_new_tokens=r.max_new_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            n=spec.n,
            seed=validation_seed(spec.seed),
        )
        results = self.backend.generate(prompts, params)
        texts = [c.text for completions in results for c in completions]
        scores = self.scorer(texts, [ref for ref in references for _ in range(spec.n)])
        return {"reward_mean": sum(scores) / len(scores), "samples": len(scores)}

    def _plot(self) -> None:
        plot_runs([self.out_dir], self.out_dir / "entropy.png")

    # -----------------------------------------------------------------------------------------
    # One step

    def train_step(self, step: int) -> dict[str, Any]:
        config = self.config
        clock = _Clock()
        self.model.eval()
        rollouts = self.generate(step)
        clock.lap("time_generate_s")
        scores = torch.tensor(self.scorer(rollouts.texts, rollouts.references), dtype=torch.float32)
        clock.lap("time_reward_s")
        advantages = algos.compute_advantages(
            config.algorithm.advantage_estimator,
            scores,
            rollouts.group,
            torch.ones(len(rollouts), 1),
        )[:, 0]
        # A single update is on-policy: its own forward gives the old log-probs (detached) and
        # the pre-update entropies, so the separate pass is needed only for later mini-batches.
        on_policy = config.algorithm.ppo_epochs == 1 and (
            config.batch.mini_batch == config.batch.prompts_per_step
        )
        old_log_probs, entropies, ref_log_probs = self.old_log_probs(rollouts, not on_policy)
        clock.lap("time_logprob_s")
        self.model.train()
        update, update_entropies = self._update(rollouts, advantages, old_log_probs, ref_log_probs)
        clock.lap("time_update_s")
        entropies = entropies if entropies is not None else update_entropies

        lengths = torch.tensor([len(r) for r in rollouts.responses], dtype=torch.float32)
        mask = (torch.arange(int(lengths.max()))[None, :] < lengths[:, None]).float()
        entropy = self._aggregate(pad_rows(entropies), mask)
        group_std = _group_spread(scores, rollouts.group)
        record = {
            "step": step,
            "entropy": float(entropy),
            "reward_mean": float(scores.mean()),
            "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
            "zero_signal_groups": float((group_std == 0).float().mean()),
            "response_length_mean": float(lengths.mean()),
            "response_clip_ratio": sum(rollouts.truncated) / len(rollouts),
            **update,
            "entropy_coeff": self.monitor.entropy_coeff,
            **clock.laps,
            "step_time_s": clock.total(),
        }
        return record

    def generate(self, step: int) -> Rollouts:
        """`rollout.n` sampled responses for each of step `step`'s questions."""
        r = self.config.rollout
        indices = self.schedule.indices(step)
        params = SamplingParams(
            max_new_tokens=r.max_new_tokens,
            temperature=r.temperature,
            top_p=r.top_p,
            n=r.n,
            seed=step_seed(self.config.seed, step),
        )
        results = self.backend.generate([self.prompt_ids[i] for i in indices], params)
        rollouts = Rollouts()
        for group, (index, completions) in enumerate(zip(indices, results, strict=True)):
            for completion in completions:
                rollouts.prompts.append(self.prompt_ids[index])
                rollouts.responses.append(completion.token_ids)
                rollouts.texts.append(completion.text)
                rollouts.references.append(self.references[index])
                rollouts.group.append(group)
                rollouts.truncated.append(completion.finish_reason == FINISH_LENGTH)
        return rollouts

    @torch.no_grad()
    def old_log_probs(self, rollouts: Rollouts, policy: bool = True):
        """Per sequence: the sampling policy's log-probs and entropies (when `policy`), and the
        reference's (when there is one); None for what is not computed."""
        old, entropies, ref = {}, {}, {}
        temperature = self.config.rollout.temperature
        for rows in self._micro_batches(rollouts, range(len(rollouts))):
            prompts = [rollouts.prompts[i] for i in rows]
            responses = [rollouts.responses[i] for i in rows]
            if policy:
                stats = token_stats(
                    self.model, prompts, responses, self.pad_id, temperature, with_entropy=True
                )
                old |= zip(rows, _unpad(stats.log_prob, stats.response_mask), strict=True)
                entropies |= zip(rows, _unpad(stats.entropy, stats.response_mask), strict=True)
            if self.reference is not None:
                ref_stats = token_stats(
                    self.reference, prompts, responses, self.pad_id, temperature
                )
                ref |= zip(rows, _unpad(ref_stats.log_prob, ref_stats.response_mask), strict=True)
        return tuple(
            [values[i] for i in range(len(rollouts))] if values else None
            for values in (old, entropies, ref)
        )

    def _update(self, rollouts, advantages, old_log_probs, ref_log_probs):
        """PPO epochs over mini-batches. Returns the update's metrics (means over mini-batches)
        and the per-sequence entropies seen by the first epoch."""
        config = self.config
        per_mini = config.batch.mini_batch * config.rollout.n
        totals: dict[str, float] = {}
        lr = self.scheduler.get_last_lr()[0]
        updates, entropies = 0, []
        for epoch in range(config.algorithm.ppo_epochs):
            for start in range(0, len(rollouts), per_mini):
                rows = list(range(start, min(start + per_mini, len(rollouts))))
                self.optimizer.zero_grad(set_to_none=True)
                metrics, seen = self.backward(
                    rollouts, rows, advantages, old_log_probs, ref_log_probs
                )
                metrics["grad_norm"] = self._apply_gradients()
                for key, value in metrics.items():
                    totals[key] = totals.get(key, 0.0) + value
                updates += 1
                entropies += seen if epoch == 0 else []
        self.scheduler.step()
        return {key: value / updates for key, value in totals.items()} | {"lr": lr}, entropies

    def backward(self, rollouts, rows, advantages, old_log_probs, ref_log_probs):
        """Accumulate the gradient of mini-batch `rows`' loss, one micro-batch at a time (the
        micro-batch losses sum to the mini-batch loss). `old_log_probs` None: the update is
        on-policy, the old log-probs are this forward's, detached. Returns the loss metrics
        and each row's token entropies."""
        config, algo = self.config, self.config.algorithm
        device = next(self.model.parameters()).device
        tokens = sum(len(rollouts.responses[i]) for i in rows)
        normaliser = {"batch_num_tokens": tokens, "global_batch_size": len(rows)}
        sums = {"pg_loss": 0.0, "kl_loss": 0.0, "entropy_loss": 0.0}
        weighted = {"pg_clipfrac": 0.0, "pg_clipfrac_lower": 0.0, "ppo_kl": 0.0}
        coeff = self.monitor.entropy_coeff
        entropies = {}
        for micro in self._micro_batches(rollouts, rows):
            stats = token_stats(
                self.model,
                [rollouts.prompts[i] for i in micro],
                [rollouts.responses[i] for i in micro],
                self.pad_id,
                config.rollout.temperature,
                with_entropy=True,
                entropy_grad=coeff > 0,
            )
            mask = stats.response_mask
            entropies |= zip(micro, _unpad(stats.entropy, mask), strict=True)
            if old_log_probs is None:
                old = stats.log_prob.detach()
            else:
                old = pad_rows([old_log_probs[i] for i in micro]).to(device)
            adv = advantages[micro].to(device)[:, None] * mask
            policy = algos.vanilla_policy_loss(
                stats.log_prob,
                old,
                adv,
                mask,
                clip_ratio_low=algo.clip_ratio_low,
                clip_ratio_high=algo.clip_ratio_high,
                clip_ratio_c=algo.clip_ratio_c,
                loss_agg_mode=algo.loss_agg_mode,
                loss_scale_factor=config.rollout.max_new_tokens,
                **normaliser,
            )
            loss = policy.loss
            sums["pg_loss"] += float(policy.loss.detach())
            if coeff > 0:
                entropy_loss = self._aggregate(stats.entropy, mask, **normaliser)
                loss = loss - coeff * entropy_loss
                sums["entropy_loss"] += float(entropy_loss.detach())
            if ref_log_probs is not None:
                ref = pad_rows([ref_log_probs[i] for i in micro]).to(device)
                kl = self._aggregate(
                    algos.kl_penalty(stats.log_prob, ref, config.kl.type), mask, **normaliser
                )
                loss = loss + config.kl.coef * kl
                sums["kl_loss"] += float(kl.detach())
            loss.backward()
            share = float(mask.sum()) / tokens
            weighted["pg_clipfrac"] += share * float(policy.clipfrac)
            weighted["pg_clipfrac_lower"] += share * float(policy.clipfrac_lower)
            weighted["ppo_kl"] += share * float(policy.ppo_kl)
        if coeff == 0:
            sums.pop("entropy_loss")
        if ref_log_probs is None:
            sums.pop("kl_loss")
        return sums | weighted, [entropies[row] for row in rows]

    def _apply_gradients(self) -> float:
        """Clip and step; returns the gradient norm before clipping."""
        params = [p for p in self.model.parameters() if p.grad is not None]
        max_norm = self.config.optim.max_grad_norm or math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if math.isfinite(grad_norm):
            self.optimizer.step()
        else:  # as verl: a non-finite gradient skips the update instead of poisoning the weights
            print(f"warning: gradient norm {grad_norm}, update skipped", flush=True)
        return grad_norm

    def _aggregate(self, values: torch.Tensor, mask: torch.Tensor, **normaliser) -> torch.Tensor:
        return algos.agg_loss(
            values,
            mask,
            self.config.algorithm.loss_agg_mode,
            loss_scale_factor=self.config.rollout.max_new_tokens,
            **normaliser,
        )

    def _micro_batches(self, rollouts: Rollouts, rows) -> list[list[int]]:
        """`rows` cut into micro-batches of similar lengths (less padding to compute)."""
        rows = sorted(rows, key=lambda i: len(rollouts.prompts[i]) + len(rollouts.responses[i]))
        size = self.config.batch.micro_batch_size
        return [rows[start : start + size] for start in range(0, len(rows), size)]


def step_seed(seed: int, step: int) -> int:
    """The sampling seed of one step: a function of the run seed and the step only."""
    return _seed_from(f"grpo:{seed}:{step}")


def validation_seed(seed: int) -> int:
    """The sampling seed of every validation pass, whatever the run's seed."""
    return _seed_from(f"grpo-validation:{seed}")


def _seed_from(text: str) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 62) - 1)


def _unpad(values: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    lengths = mask.sum(-1).long().tolist()
    return [row[:length].detach().cpu() for row, length in zip(values, lengths, strict=True)]


def _group_spread(scores: torch.Tensor, group: list[int]) -> torch.Tensor:
    """Max minus min score of each group: 0 means the group carries no learning signal."""
    ids = torch.tensor(group)
    return torch.stack(
        [scores[ids == g].max() - scores[ids == g].min() for g in sorted(set(group))]
    )


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


def _summary_line(record: dict[str, Any], steps: int) -> str:
    line = (
        f"step {record['step']}/{steps}  reward {record['reward_mean']:.3f}  "
        f"entropy {record['entropy']:.3f}  length {record['response_length_mean']:.1f}  "
        f"clipfrac {record['pg_clipfrac']:.3f}"
    )
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
