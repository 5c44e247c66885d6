"""The policy update of one GRPO step: the log-probs before it (sampling policy, reference),
then PPO epochs over mini-batches, each accumulated over micro-batches whose losses sum to
the mini-batch loss (so micro-batching does not change the gradient)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from cft_rl.grpo import algos
from cft_rl.grpo.config import GrpoConfig
from cft_rl.grpo.rollouts import Rollouts
from cft_rl.grpo.sequences import pad_rows, response_mask, token_stats

# Per sequence, one tensor of its response tokens' values.
PerSequence = list[torch.Tensor]


@dataclass
class BeforeUpdate:
    """Per sequence, before any gradient step: the sampling policy's log-probs and token
    entropies (None when the update is on-policy and its own forward gives them), and the
    reference policy's log-probs (None without a reference)."""

    old_log_probs: PerSequence | None
    entropies: PerSequence | None
    ref_log_probs: PerSequence | None


@dataclass(frozen=True)
class Controls:
    """What the entropy monitor may change from one step to the next."""

    entropy_coeff: float
    loss_mode: str


def policy_loss_params(config: GrpoConfig) -> algos.PolicyLossParams:
    algo, loss = config.algorithm, config.algorithm.policy_loss
    return algos.PolicyLossParams(
        clip_ratio_low=algo.clip_ratio_low,
        clip_ratio_high=algo.clip_ratio_high,
        clip_ratio_c=algo.clip_ratio_c,
        clip_cov_ratio=loss.clip_cov_ratio,
        clip_cov_lb=loss.clip_cov_lb,
        clip_cov_ub=loss.clip_cov_ub,
        kl_cov_ratio=loss.kl_cov_ratio,
        ppo_kl_coef=loss.ppo_kl_coef,
    )


def needs_policy_before_update(config: GrpoConfig) -> bool:
    """A separate pass for the sampling policy's log-probs and entropies is needed when later
    mini-batches or epochs are off-policy, or when the top-entropy tokens are chosen by the
    sampling policy's entropies over a whole mini-batch. Otherwise a single update's own
    forward gives them (detached)."""
    batch = config.batch
    return (
        config.algorithm.ppo_epochs > 1
        or batch.mini_batch != batch.prompts_per_step
        or config.algorithm.policy_loss.top_entropy_fraction is not None
    )


class PolicyUpdate:
    """Owns the policy's optimizer step; the model, reference and optimizer are the engine's."""

    def __init__(
        self,
        config: GrpoConfig,
        model: torch.nn.Module,
        reference: torch.nn.Module | None,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        pad_id: int,
    ) -> None:
        self.config = config
        self.model = model
        self.reference = reference
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.pad_id = pad_id

    @torch.no_grad()
    def before_update(self, rollouts: Rollouts, with_policy: bool) -> BeforeUpdate:
        """The reference's log-probs, and the policy's (with its entropies) if `with_policy`."""
        old: dict[int, torch.Tensor] = {}
        entropies: dict[int, torch.Tensor] = {}
        ref: dict[int, torch.Tensor] = {}
        temperature = self.config.rollout.temperature
        for rows in self.micro_batches(rollouts, range(len(rollouts))):
            prompts = [rollouts.prompts[i] for i in rows]
            responses = [rollouts.responses[i] for i in rows]
            if with_policy:
                stats = token_stats(
                    self.model, prompts, responses, self.pad_id, temperature, with_entropy=True
                )
                old |= zip(rows, unpad(stats.log_prob, stats.response_mask), strict=True)
                entropies |= zip(rows, unpad(stats.entropy, stats.response_mask), strict=True)
            if self.reference is not None:
                ref_stats = token_stats(
                    self.reference, prompts, responses, self.pad_id, temperature
                )
                ref |= zip(rows, unpad(ref_stats.log_prob, ref_stats.response_mask), strict=True)

        def in_order(values: dict[int, torch.Tensor]) -> PerSequence | None:
            return [values[i] for i in range(len(rollouts))] if values else None

        return BeforeUpdate(in_order(old), in_order(entropies), in_order(ref))

    def run(
        self,
        rollouts: Rollouts,
        advantages: PerSequence,
        before: BeforeUpdate,
        controls: Controls,
    ) -> tuple[dict[str, float], PerSequence]:
        """PPO epochs over mini-batches, with per-token advantages. Returns the update's
        metrics (means over mini-batches) and the per-sequence entropies of the first epoch."""
        totals: dict[str, float] = {}
        lr = self.scheduler.get_last_lr()[0]
        updates, entropies = 0, []
        for epoch, rows in ppo_mini_batches(self.config, len(rollouts)):
            self.optimizer.zero_grad(set_to_none=True)
            selected = self.selected_tokens(rows, before)
            metrics, seen = self.backward(rollouts, rows, advantages, before, controls, selected)
            metrics["grad_norm"] = self._apply_gradients()
            for key, value in metrics.items():
                totals[key] = totals.get(key, 0.0) + value
            updates += 1
            entropies += seen if epoch == 0 else []
        self.scheduler.step()
        return {key: value / updates for key, value in totals.items()} | {"lr": lr}, entropies

    def selected_tokens(
        self, rows: list[int], before: BeforeUpdate
    ) -> dict[int, torch.Tensor] | None:
        """The tokens of mini-batch `rows` that the policy gradient trains on when
        top_entropy_fraction is set (the threshold over these rows' real tokens), else None."""
        fraction = self.config.algorithm.policy_loss.top_entropy_fraction
        if fraction is None:
            return None
        entropies = [before.entropies[i] for i in rows]
        mask = response_mask([len(e) for e in entropies])
        chosen = algos.top_entropy_mask(pad_rows(entropies), mask, fraction)
        return {
            row: chosen[j, : len(e)] for j, (row, e) in enumerate(zip(rows, entropies, strict=True))
        }

    def backward(
        self,
        rollouts: Rollouts,
        rows: list[int],
        advantages: PerSequence,
        before: BeforeUpdate,
        controls: Controls,
        selected: dict[int, torch.Tensor] | None = None,
    ) -> tuple[dict[str, float], PerSequence]:
        """Accumulate the gradient of mini-batch `rows`' loss, one micro-batch at a time (the
        micro-batch losses sum to the mini-batch loss). Without `before.old_log_probs` the
        update is on-policy: the old log-probs are this forward's, detached. `selected`: the
        only tokens of each row the policy gradient sees (top-entropy selection). Returns the
        loss metrics and each row's token entropies."""
        config, algo = self.config, self.config.algorithm
        policy_loss = algos.POLICY_LOSSES.get(controls.loss_mode)
        params = policy_loss_params(config)
        entropy_coeff = controls.entropy_coeff
        device = next(self.model.parameters()).device
        tokens = sum(len(rollouts.responses[i]) for i in rows)
        normaliser = {"batch_num_tokens": tokens, "global_batch_size": len(rows)}
        pg_tokens, pg_normaliser = tokens, normaliser
        if selected is not None:
            pg_tokens = int(sum(selected[i].sum() for i in rows))
            pg_normaliser = {"batch_num_tokens": max(pg_tokens, 1), "global_batch_size": len(rows)}
        sums = {"pg_loss": 0.0, "kl_loss": 0.0, "entropy_loss": 0.0}
        weighted = {"pg_clipfrac": 0.0, "pg_clipfrac_lower": 0.0, "ppo_kl": 0.0}
        entropies = {}
        for micro in self.micro_batches(rollouts, rows):
            stats = token_stats(
                self.model,
                [rollouts.prompts[i] for i in micro],
                [rollouts.responses[i] for i in micro],
                self.pad_id,
                config.rollout.temperature,
                with_entropy=True,
                entropy_grad=entropy_coeff > 0,
            )
            mask = stats.response_mask
            entropies |= zip(micro, unpad(stats.entropy, mask), strict=True)
            if before.old_log_probs is None:
                old = stats.log_prob.detach()
            else:
                old = pad_rows([before.old_log_probs[i] for i in micro]).to(device)
            adv = pad_rows([advantages[i] for i in micro]).to(device) * mask
            pg_mask = mask
            if selected is not None:
                pg_mask = mask * pad_rows([selected[i].float() for i in micro]).to(device)
            policy = policy_loss(
                stats.log_prob,
                old,
                adv,
                pg_mask,
                params,
                loss_agg_mode=algo.loss_agg_mode,
                loss_scale_factor=config.rollout.max_new_tokens,
                **pg_normaliser,
            )
            loss = policy.loss
            sums["pg_loss"] += float(policy.loss.detach())
            if entropy_coeff > 0:
                entropy_loss = self.aggregate(stats.entropy, mask, **normaliser)
                loss = loss - entropy_coeff * entropy_loss
                sums["entropy_loss"] += float(entropy_loss.detach())
            if before.ref_log_probs is not None:
                ref = pad_rows([before.ref_log_probs[i] for i in micro]).to(device)
                kl = self.aggregate(
                    algos.kl_penalty(stats.log_prob, ref, config.kl.type), mask, **normaliser
                )
                loss = loss + config.kl.coef * kl
                sums["kl_loss"] += float(kl.detach())
            loss.backward()
            share = float(pg_mask.sum()) / pg_tokens if pg_tokens else 0.0
            weighted["pg_clipfrac"] += share * float(policy.clipfrac)
            weighted["pg_clipfrac_lower"] += share * float(policy.clipfrac_lower)
            weighted["ppo_kl"] += share * float(policy.ppo_kl)
        if entropy_coeff == 0:
            sums.pop("entropy_loss")
        if before.ref_log_probs is None:
            sums.pop("kl_loss")
        if selected is not None:
            weighted["pg_token_share"] = pg_tokens / tokens
        return sums | weighted, [entropies[row] for row in rows]

    def aggregate(
        self, values: torch.Tensor, mask: torch.Tensor, **normaliser: int
    ) -> torch.Tensor:
        """`values` [batch, len] to one number the way the policy loss aggregates."""
        return algos.agg_loss(
            values,
            mask,
            self.config.algorithm.loss_agg_mode,
            loss_scale_factor=self.config.rollout.max_new_tokens,
            **normaliser,
        )

    def micro_batches(self, rollouts: Rollouts, rows: Iterable[int]) -> list[list[int]]:
        return micro_batches(rollouts, rows, self.config.batch.micro_batch_size)

    def _apply_gradients(self) -> float:
        return clip_and_step(self.model, self.optimizer, self.config.optim.max_grad_norm)


def ppo_mini_batches(config: GrpoConfig, count: int) -> Iterator[tuple[int, list[int]]]:
    """(epoch, rows) of every optimizer step of a GRPO step over `count` sequences: the
    `ppo_epochs` passes, each cut into mini-batches of `mini_batch` prompts' responses. The
    policy and the critic take the same ones."""
    per_mini = config.batch.mini_batch * config.rollout.n
    for epoch in range(config.algorithm.ppo_epochs):
        for start in range(0, count, per_mini):
            yield epoch, list(range(start, min(start + per_mini, count)))


def micro_batches(rollouts: Rollouts, rows: Iterable[int], size: int) -> list[list[int]]:
    """`rows` cut into micro-batches of similar lengths (less padding to compute)."""
    rows = sorted(rows, key=lambda i: len(rollouts.prompts[i]) + len(rollouts.responses[i]))
    return [rows[start : start + size] for start in range(0, len(rows), size)]


def clip_and_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, max_grad_norm: float
) -> float:
    """Clip the gradient norm (0: no clip) and step; returns the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_grad_norm or math.inf))
    if math.isfinite(grad_norm):
        optimizer.step()
    else:  # as verl: a non-finite gradient skips the update instead of poisoning the weights
        print(f"warning: gradient norm {grad_norm}, update skipped", flush=True)
    return grad_norm


def constant_after_warmup(
    optimizer: torch.optim.Optimizer, warmup_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over `warmup_steps` steps to a constant rate (verl's default)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda done: min(1.0, (done + 1) / warmup_steps) if warmup_steps else 1.0
    )


def unpad(values: torch.Tensor, mask: torch.Tensor) -> PerSequence:
    lengths = mask.sum(-1).long().tolist()
    return [row[:length].detach().cpu() for row, length in zip(values, lengths, strict=True)]
