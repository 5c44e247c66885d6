"""The policy update of one GRPO step: the log-probs before it (sampling policy, reference),
then PPO epochs over mini-batches, each accumulated over micro-batches whose losses sum to
the mini-batch loss (so micro-batching does not change the gradient)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from cft_rl.grpo import algos
from cft_rl.grpo.config import GrpoConfig
from cft_rl.grpo.rollouts import Rollouts
from cft_rl.grpo.sequences import pad_rows, token_stats

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
                old |= zip(rows, _unpad(stats.log_prob, stats.response_mask), strict=True)
                entropies |= zip(rows, _unpad(stats.entropy, stats.response_mask), strict=True)
            if self.reference is not None:
                ref_stats = token_stats(
                    self.reference, prompts, responses, self.pad_id, temperature
                )
                ref |= zip(rows, _unpad(ref_stats.log_prob, ref_stats.response_mask), strict=True)

        def in_order(values: dict[int, torch.Tensor]) -> PerSequence | None:
            return [values[i] for i in range(len(rollouts))] if values else None

        return BeforeUpdate(in_order(old), in_order(entropies), in_order(ref))

    def run(
        self,
        rollouts: Rollouts,
        advantages: torch.Tensor,
        before: BeforeUpdate,
        entropy_coeff: float,
    ) -> tuple[dict[str, float], PerSequence]:
        """PPO epochs over mini-batches, with one advantage per sequence. Returns the update's
        metrics (means over mini-batches) and the per-sequence entropies of the first epoch."""
        config = self.config
        per_mini = config.batch.mini_batch * config.rollout.n
        totals: dict[str, float] = {}
        lr = self.scheduler.get_last_lr()[0]
        updates, entropies = 0, []
        for epoch in range(config.algorithm.ppo_epochs):
            for start in range(0, len(rollouts), per_mini):
                rows = list(range(start, min(start + per_mini, len(rollouts))))
                self.optimizer.zero_grad(set_to_none=True)
                metrics, seen = self.backward(rollouts, rows, advantages, before, entropy_coeff)
                metrics["grad_norm"] = self._apply_gradients()
                for key, value in metrics.items():
                    totals[key] = totals.get(key, 0.0) + value
                updates += 1
                entropies += seen if epoch == 0 else []
        self.scheduler.step()
        return {key: value / updates for key, value in totals.items()} | {"lr": lr}, entropies

    def backward(
        self,
        rollouts: Rollouts,
        rows: list[int],
        advantages: torch.Tensor,
        before: BeforeUpdate,
        entropy_coeff: float,
    ) -> tuple[dict[str, float], PerSequence]:
        """Accumulate the gradient of mini-batch `rows`' loss, one micro-batch at a time (the
        micro-batch losses sum to the mini-batch loss). Without `before.old_log_probs` the
        update is on-policy: the old log-probs are this forward's, detached. Returns the loss
        metrics and each row's token entropies."""
        config, algo = self.config, self.config.algorithm
        policy_loss = algos.POLICY_LOSSES[algo.policy_loss]
        params = algos.PolicyLossParams(
            clip_ratio_low=algo.clip_ratio_low,
            clip_ratio_high=algo.clip_ratio_high,
            clip_ratio_c=algo.clip_ratio_c,
        )
        device = next(self.model.parameters()).device
        tokens = sum(len(rollouts.responses[i]) for i in rows)
        normaliser = {"batch_num_tokens": tokens, "global_batch_size": len(rows)}
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
            entropies |= zip(micro, _unpad(stats.entropy, mask), strict=True)
            if before.old_log_probs is None:
                old = stats.log_prob.detach()
            else:
                old = pad_rows([before.old_log_probs[i] for i in micro]).to(device)
            adv = advantages[micro].to(device)[:, None] * mask
            policy = policy_loss(
                stats.log_prob,
                old,
                adv,
                mask,
                params,
                loss_agg_mode=algo.loss_agg_mode,
                loss_scale_factor=config.rollout.max_new_tokens,
                **normaliser,
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
            share = float(mask.sum()) / tokens
            weighted["pg_clipfrac"] += share * float(policy.clipfrac)
            weighted["pg_clipfrac_lower"] += share * float(policy.clipfrac_lower)
            weighted["ppo_kl"] += share * float(policy.ppo_kl)
        if entropy_coeff == 0:
            sums.pop("entropy_loss")
        if before.ref_log_probs is None:
            sums.pop("kl_loss")
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
        """`rows` cut into micro-batches of similar lengths (less padding to compute)."""
        rows = sorted(rows, key=lambda i: len(rollouts.prompts[i]) + len(rollouts.responses[i]))
        size = self.config.batch.micro_batch_size
        return [rows[start : start + size] for start in range(0, len(rows), size)]

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


def _unpad(values: torch.Tensor, mask: torch.Tensor) -> PerSequence:
    lengths = mask.sum(-1).long().tolist()
    return [row[:length].detach().cpu() for row, length in zip(values, lengths, strict=True)]
