"""PPO's critic in the local engine (advantage_estimator: gae): a value head on a copy of a
causal LM, its value before every response token, and its clipped value-loss update over the
same epochs and mini-batches as the policy's."""

from __future__ import annotations

import torch

from cft_rl.grpo import algos
from cft_rl.grpo.config import GrpoConfig
from cft_rl.grpo.rollouts import Rollouts
from cft_rl.grpo.sequences import pad_rows, response_hidden_states, scatter_rows
from cft_rl.grpo.update import (
    PerSequence,
    clip_and_step,
    constant_after_warmup,
    micro_batches,
    ppo_mini_batches,
    unpad,
)
from cft_rl.modeling import load_causal_lm


class ValueModel(torch.nn.Module):
    """V(prompt, response<t) for every response position t, from the backbone's hidden state
    there. The head starts at zero (every value 0), so the first advantages are the
    returns themselves rather than noise."""

    def __init__(self, causal_lm: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = causal_lm.base_model
        device = next(causal_lm.parameters()).device
        self.head = torch.nn.Linear(causal_lm.config.hidden_size, 1, device=device)
        torch.nn.init.zeros_(self.head.weight)
        torch.nn.init.zeros_(self.head.bias)

    def forward(
        self, prompts: list[list[int]], responses: list[list[int]], pad_id: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Values [rows, response_len] and the response mask."""
        picked, mask = response_hidden_states(self.backbone, prompts, responses, pad_id)
        values = self.head(picked.float()).squeeze(-1)
        return scatter_rows(values, mask), mask


class Critic:
    """The value model with its own optimizer and learning-rate warm-up (`critic.optim`)."""

    def __init__(self, config: GrpoConfig, pad_id: int) -> None:
        self.config = config
        settings = config.critic
        self.model = ValueModel(load_causal_lm(settings.model or config.model))
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=settings.optim.lr, weight_decay=settings.optim.weight_decay
        )
        self.scheduler = constant_after_warmup(self.optimizer, settings.optim.warmup_steps)
        self.pad_id = pad_id

    @torch.no_grad()
    def values(self, rollouts: Rollouts) -> PerSequence:
        """The values the step's advantages are computed with (and its value clip is about)."""
        self.model.eval()
        found: dict[int, torch.Tensor] = {}
        size = self.config.batch.micro_batch_size
        for rows in micro_batches(rollouts, range(len(rollouts)), size):
            values, mask = self._forward(rollouts, rows)
            found |= zip(rows, unpad(values, mask), strict=True)
        return [found[i] for i in range(len(rollouts))]

    def update(
        self, rollouts: Rollouts, returns: PerSequence, old_values: PerSequence
    ) -> dict[str, float]:
        """Epochs over mini-batches of the clipped value loss; metrics are means over them."""
        self.model.train()
        totals = {"vf_loss": 0.0, "vf_clipfrac": 0.0, "critic_grad_norm": 0.0}
        updates = 0
        for _, rows in ppo_mini_batches(self.config, len(rollouts)):
            self.optimizer.zero_grad(set_to_none=True)
            loss, clipfrac = self._backward(rollouts, rows, returns, old_values)
            totals["vf_loss"] += loss
            totals["vf_clipfrac"] += clipfrac
            totals["critic_grad_norm"] += self._apply_gradients()
            updates += 1
        self.scheduler.step()
        return {key: value / updates for key, value in totals.items()}

    def _backward(
        self,
        rollouts: Rollouts,
        rows: list[int],
        returns: PerSequence,
        old_values: PerSequence,
    ) -> tuple[float, float]:
        """Accumulate mini-batch `rows`' value-loss gradient, micro-batch by micro-batch
        (their losses sum to the mini-batch's); returns its loss and clip fraction."""
        config = self.config
        tokens = sum(len(rollouts.responses[i]) for i in rows)
        normaliser = {"batch_num_tokens": tokens, "global_batch_size": len(rows)}
        loss_sum, clipped = 0.0, 0.0
        for micro in micro_batches(rollouts, rows, config.batch.micro_batch_size):
            values, mask = self._forward(rollouts, micro)
            device = values.device
            loss, clipfrac = algos.value_loss(
                values,
                pad_rows([returns[i] for i in micro]).to(device),
                pad_rows([old_values[i] for i in micro]).to(device),
                mask,
                config.critic.clip_range_value,
                config.algorithm.loss_agg_mode,
                loss_scale_factor=config.rollout.max_new_tokens,
                **normaliser,
            )
            loss.backward()
            loss_sum += float(loss.detach())
            clipped += float(clipfrac) * float(mask.sum()) / tokens
        return loss_sum, clipped

    def _forward(self, rollouts: Rollouts, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        prompts = [rollouts.prompts[i] for i in rows]
        responses = [rollouts.responses[i] for i in rows]
        return self.model(prompts, responses, self.pad_id)

    def _apply_gradients(self) -> float:
        return clip_and_step(self.model, self.optimizer, self.config.critic.optim.max_grad_norm)


def outcome_token_rewards(scores: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Each response's score on its last token, [rows, max length] (where verl puts it)."""
    rewards = torch.zeros(len(lengths), max(lengths))
    rewards[torch.arange(len(lengths)), torch.tensor(lengths) - 1] = scores
    return rewards
