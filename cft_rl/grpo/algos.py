"""RL math for GRPO-style training: pure functions of tensors, each registered where it is
defined under the name a recipe gives it (the recipe's choices are the registries' keys).

Names and semantics follow verl 0.9.1's `verl.trainer.ppo.core_algos` so a recipe means the
same thing on the local engine and on verl (tests/test_grpo_algos.py runs the same tensors
through both). verl is not imported here: importing it pulls in Ray.

Shapes: `scores` and `group_ids` are [batch]; everything per token is [batch, response_len]
with a 0/1 `response_mask` (bool or numeric) marking the response tokens that count.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cft_rl.registry import Registry

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AdvantageEstimator",
    "KL_PENALTIES",
    "LOSS_AGG_MODES",
    "POLICY_LOSSES",
    "PolicyLoss",
    "PolicyLossParams",
    "agg_loss",
    "clip_cov_policy_loss",
    "entropy_from_logits",
    "gae_advantages",
    "group_index",
    "gspo_policy_loss",
    "kl_cov_policy_loss",
    "kl_penalty",
    "masked_mean",
    "masked_sum",
    "masked_var",
    "masked_whiten",
    "register_advantage_estimator",
    "register_policy_loss",
    "sequence_advantages",
    "top_entropy_mask",
    "vanilla_policy_loss",
    "value_loss",
]

# verl's constants, kept so results agree: the masked-mean guard, the advantage std guard,
# and the log-ratio clamp applied before exp() in the policy loss.
MASK_EPS = 1e-8
ADV_EPS = 1e-6
LOG_RATIO_CLAMP = 20.0
# GSPO's upper clamp on the log of its sequence ratio before exp().
GSPO_LOG_RATIO_MAX = 10.0


# ---------------------------------------------------------------------------------------------
# Masked reductions


def masked_sum(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of `values` where `mask` is set; NaN/inf outside the mask cannot leak in."""
    kept = torch.where(mask.bool(), values, torch.zeros_like(values))
    return kept.sum() if dim is None else kept.sum(dim=dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is set (0 when nothing is set)."""
    count = mask.sum() if dim is None else mask.sum(dim=dim)
    return masked_sum(values, mask, dim) / (count + MASK_EPS)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of `values` where `mask` is set (needs at least 2 such entries)."""
    count = mask.sum()
    if count < 2:
        raise ValueError(f"masked_var needs 2 or more masked entries, got {int(count)}")
    centred = values - masked_mean(values, mask)
    return masked_mean(centred**2, mask) * count / (count - 1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`values` shifted and scaled to mean 0 and variance 1 over the masked entries."""
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    return (values - mean) * torch.rsqrt(var + 1e-8)


def group_index(group_ids: torch.Tensor | Sequence[Hashable]) -> torch.Tensor:
    """Map arbitrary group labels (prompt uids, ints) to contiguous ids 0..G-1, [batch] long."""
    if isinstance(group_ids, torch.Tensor):
        return torch.unique(group_ids, return_inverse=True)[1].reshape(-1)
    first_seen: dict[Hashable, int] = {}
    ids = [first_seen.setdefault(label, len(first_seen)) for label in group_ids]
    return torch.tensor(ids, dtype=torch.long)


def _group_sums(values: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Per-sample sum of `values` over the sample's group, [batch]."""
    totals = torch.zeros(int(group.max()) + 1, dtype=values.dtype, device=values.device)
    return totals.index_add(0, group, values)[group]


@dataclass(frozen=True)
class AdvantageEstimator:
    """One response's advantage from its group's scores, and verl's spelling of the same:
    `algorithm.adv_estimator` with `algorithm.norm_adv_by_std_in_grpo`."""

    fn: Callable[..., Any]
    verl_name: str
    verl_norm_by_std: bool = True
    # GAE: per-token advantages from a learned value function (PPO with a critic), not one
    # advantage per response from its group's scores.
    needs_critic: bool = False


# algorithm.advantage_estimator -> its estimator
ADVANTAGE_ESTIMATORS: Registry[AdvantageEstimator] = Registry("advantage estimator")


def register_advantage_estimator(
    name: str, verl_name: str, verl_norm_by_std: bool = True, needs_critic: bool = False
):
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        ADVANTAGE_ESTIMATORS.add(
            name, AdvantageEstimator(fn, verl_name, verl_norm_by_std, needs_critic)
        )
        return fn

    return register


@register_advantage_estimator("grpo", verl_name="grpo")
def grpo_advantages(
    scores: torch.Tensor,
    group: torch.Tensor,
    epsilon: float = ADV_EPS,
    norm_adv_by_std: bool = True,
) -> torch.Tensor:
    """GRPO: (score - group mean) / (group std + epsilon), std with Bessel's correction.

    A group of one has no baseline: like verl, its mean counts as 0 and its std as 1, so its
    advantage is its own score (divided by 1 + epsilon when normalising).
    """
    count = _group_sums(torch.ones_like(scores), group)
    mean = _group_sums(scores, group) / count
    sq_dev = _group_sums((scores - mean) ** 2, group)
    std = (sq_dev / (count - 1).clamp_min(1)).sqrt()
    single = count == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    centred = scores - mean
    if not norm_adv_by_std:
        return centred
    std = torch.where(single, torch.ones_like(std), std)
    return centred / (std + epsilon)


@register_advantage_estimator("dr_grpo", verl_name="grpo", verl_norm_by_std=False)
def dr_grpo_advantages(
    scores: torch.Tensor, group: torch.Tensor, epsilon: float = ADV_EPS
) -> torch.Tensor:
    """Dr. GRPO (arXiv 2503.20783): group-mean baseline without dividing by the std.

    verl spells this `adv_estimator=grpo` with `norm_adv_by_std_in_grpo=False`.
    """
    return grpo_advantages(scores, group, epsilon, norm_adv_by_std=False)


@register_advantage_estimator("rloo", verl_name="rloo")
def rloo_advantages(
    scores: torch.Tensor, group: torch.Tensor, epsilon: float = ADV_EPS
) -> torch.Tensor:
    """RLOO (arXiv 2402.14740): score minus the mean of the *other* responses of the group.

    A group of one keeps its raw score, as verl's `rloo` does. `epsilon` is unused: every
    estimator takes the same arguments.
    """
    count = _group_sums(torch.ones_like(scores), group)
    others = count - 1
    leave_one_out_mean = (_group_sums(scores, group) - scores) / others.clamp_min(1)
    return torch.where(others > 0, scores - leave_one_out_mean, scores)


def sequence_advantages(
    estimator: str,
    scores: torch.Tensor,
    group_ids: torch.Tensor | Sequence[Hashable],
    epsilon: float = ADV_EPS,
) -> torch.Tensor:
    """One advantage per response [batch]. `scores` [batch] are outcome rewards; responses
    with the same `group_ids` label answer the same prompt. Computed without gradient, in
    float32 at least."""
    found = ADVANTAGE_ESTIMATORS.get(estimator)
    if found.needs_critic:
        raise ValueError(f"{estimator!r} needs a critic's values: use gae_advantages")
    fn = found.fn
    with torch.no_grad():
        values = scores if scores.dtype == torch.float64 else scores.float()
        group = group_index(group_ids).to(values.device)
        if group.shape != values.shape:
            raise ValueError(f"group_ids {tuple(group.shape)} do not match scores {values.shape}")
        return fn(values, group, epsilon)


@register_advantage_estimator("gae", verl_name="gae", needs_critic=True)
def gae_advantages(
    token_rewards: torch.Tensor,
    values: torch.Tensor,
    response_mask: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (arXiv 1506.02438) for PPO with a critic: per-token advantages, whitened over the
    batch's response tokens, and the returns the critic learns, both [batch, response_len].

    `token_rewards` holds each response's outcome reward on its last token; `values` the
    critic's value before each response token. Masked positions pass the running values
    through untouched.
    """
    with torch.no_grad():
        mask = response_mask.to(values.dtype)
        next_value = torch.zeros_like(values[:, 0])
        running = torch.zeros_like(values[:, 0])
        backwards = []
        for t in reversed(range(token_rewards.shape[-1])):
            delta = token_rewards[:, t] + gamma * next_value - values[:, t]
            step = delta + gamma * lam * running
            next_value = values[:, t] * mask[:, t] + (1 - mask[:, t]) * next_value
            running = step * mask[:, t] + (1 - mask[:, t]) * running
            backwards.append(running)
        advantages = torch.stack(backwards[::-1], dim=1)
        returns = advantages + values
        return masked_whiten(advantages, response_mask), returns


# ---------------------------------------------------------------------------------------------
# Loss aggregation: how a [batch, response_len] loss matrix becomes one number.
#
# With micro-batches, pass the whole mini-batch's `batch_num_tokens` (token modes) or
# `global_batch_size` (count of non-empty responses, seq modes): the micro-batch losses then
# sum to the mini-batch loss, so gradient accumulation matches one big batch. Local counts are
# floored at 1 (verl divides by 0 and returns NaN for a fully masked batch; otherwise equal).


def _token_mean(loss_mat, mask, batch_num_tokens=None, global_batch_size=None, scale=None):
    total = mask.sum().clamp_min(1) if batch_num_tokens is None else batch_num_tokens
    return masked_sum(loss_mat, mask) / total


def _token_sum(loss_mat, mask, batch_num_tokens=None, global_batch_size=None, scale=None):
    return masked_sum(loss_mat, mask)


def _seq_mean(per_seq: torch.Tensor, mask: torch.Tensor, global_batch_size) -> torch.Tensor:
    # Responses with no loss tokens do not count as sequences.
    non_empty = mask.sum(dim=-1) > 0
    total = non_empty.sum().clamp_min(1) if global_batch_size is None else global_batch_size
    return masked_sum(per_seq, non_empty) / total


def _seq_mean_token_sum(loss_mat, mask, batch_num_tokens=None, global_batch_size=None, scale=None):
    return _seq_mean(masked_sum(loss_mat, mask, dim=-1), mask, global_batch_size)


def _seq_mean_token_sum_norm(
    loss_mat, mask, batch_num_tokens=None, global_batch_size=None, scale=None
):
    # Dr. GRPO's constant normaliser: the padded response length unless a fixed one is given.
    divisor = mask.shape[-1] if scale is None else scale
    return _seq_mean_token_sum(loss_mat, mask, global_batch_size=global_batch_size) / divisor


def _seq_mean_token_mean(loss_mat, mask, batch_num_tokens=None, global_batch_size=None, scale=None):
    return _seq_mean(masked_mean(loss_mat, mask, dim=-1), mask, global_batch_size)


LOSS_AGG_MODES: Registry[Callable[..., torch.Tensor]] = Registry("loss_agg_mode")
for _name, _fn in (
    ("token-mean", _token_mean),
    ("token-sum", _token_sum),
    ("seq-mean-token-sum", _seq_mean_token_sum),
    ("seq-mean-token-mean", _seq_mean_token_mean),
    ("seq-mean-token-sum-norm", _seq_mean_token_sum_norm),
):
    LOSS_AGG_MODES.add(_name, _fn)


def agg_loss(
    loss_mat: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    batch_num_tokens: int | torch.Tensor | None = None,
    global_batch_size: int | torch.Tensor | None = None,
    loss_scale_factor: float | None = None,
) -> torch.Tensor:
    """Aggregate a per-token loss matrix with one of LOSS_AGG_MODES (verl's `loss_agg_mode`)."""
    fn = LOSS_AGG_MODES.get(mode)
    return fn(loss_mat, mask, batch_num_tokens, global_batch_size, loss_scale_factor)


# ---------------------------------------------------------------------------------------------
# Policy loss


@dataclass
class PolicyLoss:
    """A policy loss and its diagnostics; the diagnostics are detached 0-d tensors."""

    loss: torch.Tensor
    # Fraction of masked tokens where the clipped surrogate was the pessimistic one.
    clipfrac: torch.Tensor
    # Fraction of masked tokens with a negative advantage cut by the dual-clip bound.
    clipfrac_lower: torch.Tensor
    # Mean of (old - new) log-prob: a k1 estimate of KL(old || new) on the sampled tokens.
    ppo_kl: torch.Tensor


@dataclass(frozen=True)
class PolicyLossParams:
    """Every policy loss's parameters, named as verl names them (`actor.clip_ratio_*`,
    `actor.policy_loss.*`); each loss reads the ones it uses."""

    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    # Dual-clip bound for negative advantages (vanilla).
    clip_ratio_c: float = 3.0
    # clip_cov: share of tokens whose gradient is cut, drawn among those whose covariance
    # of advantage and log-prob lies in (clip_cov_lb, clip_cov_ub).
    clip_cov_ratio: float = 0.0002
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    # kl_cov: share of tokens (the highest covariance) that get a |log-ratio| penalty.
    kl_cov_ratio: float = 0.0002
    ppo_kl_coef: float = 0.1


# algorithm.policy_loss.loss_mode (verl: actor.policy_loss.loss_mode) -> its loss function,
# fn(log_prob, old_log_prob, advantages, response_mask, params, loss_agg_mode, normalisers)
POLICY_LOSSES: Registry[Callable[..., PolicyLoss]] = Registry("policy loss")
register_policy_loss = POLICY_LOSSES.register


@register_policy_loss("vanilla")
def vanilla_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    params: PolicyLossParams = PolicyLossParams(),
    loss_agg_mode: str = "token-mean",
    batch_num_tokens: int | torch.Tensor | None = None,
    global_batch_size: int | torch.Tensor | None = None,
    loss_scale_factor: float | None = None,
) -> PolicyLoss:
    """PPO's clipped surrogate with clip-higher (arXiv 2503.14476) and dual-clip (1912.09729).

    The ratio is clipped to [1 - clip_ratio_low, 1 + clip_ratio_high]; for tokens with a
    negative advantage the loss is further capped at -A * clip_ratio_c (needs c > 1), so a
    huge ratio on a bad token cannot blow up the update.
    """
    clip_ratio_low, clip_ratio_high = params.clip_ratio_low, params.clip_ratio_high
    clip_ratio_c = params.clip_ratio_c
    if clip_ratio_c <= 1.0:
        raise ValueError(f"clip_ratio_c must be > 1 for dual-clip PPO, got {clip_ratio_c}")
    log_ratio = (log_prob - old_log_prob).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - clip_ratio_low, 1 + clip_ratio_high)
    pessimistic = torch.maximum(unclipped, clipped)
    dual_bound = -advantages * clip_ratio_c
    negative = advantages < 0
    per_token = torch.where(negative, torch.minimum(pessimistic, dual_bound), pessimistic)
    loss = agg_loss(
        per_token,
        response_mask,
        loss_agg_mode,
        batch_num_tokens,
        global_batch_size,
        loss_scale_factor,
    )
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), response_mask)
        clipfrac_lower = masked_mean((negative & (pessimistic > dual_bound)).float(), response_mask)
        ppo_kl = masked_mean(-log_ratio, response_mask)
    return PolicyLoss(loss, clipfrac, clipfrac_lower, ppo_kl)


@register_policy_loss("clip_cov")
def clip_cov_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    params: PolicyLossParams = PolicyLossParams(),
    loss_agg_mode: str = "token-mean",
    batch_num_tokens: int | torch.Tensor | None = None,
    global_batch_size: int | torch.Tensor | None = None,
    loss_scale_factor: float | None = None,
) -> PolicyLoss:
    """Clip-Cov (arXiv 2505.22617): PPO's clip, and no gradient at a few random tokens whose
    centred advantage x log-prob product lies in (clip_cov_lb, clip_cov_ub). Those tokens
    drive the entropy down; cutting them holds it. The draw uses torch's global generator,
    as verl's does (so seeding it gives verl's choice)."""
    if params.clip_cov_ratio <= 0:
        raise ValueError(f"clip_cov_ratio must be > 0, got {params.clip_cov_ratio}")
    real = response_mask > 0
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - params.clip_ratio_low, 1 + params.clip_ratio_high)
    clipped_by_ratio = (clipped > unclipped) & real
    covariance = _token_covariance(advantages, log_prob, response_mask)
    eligible = (covariance > params.clip_cov_lb) & (covariance < params.clip_cov_ub) & real
    eligible &= ~clipped_by_ratio
    candidates = torch.nonzero(eligible)
    count = max(int(params.clip_cov_ratio * response_mask.sum().item()), 1)
    if len(candidates) > 0:
        candidates = candidates[torch.randperm(len(candidates))[: min(count, len(candidates))]]
    keep = torch.ones_like(advantages)
    keep[candidates[:, 0], candidates[:, 1]] = 0
    per_token = torch.maximum(unclipped, clipped) * keep
    loss = agg_loss(
        per_token, response_mask, loss_agg_mode, batch_num_tokens, global_batch_size,
        loss_scale_factor,
    )  # fmt: skip
    return _covariance_loss(loss, keep == 0, log_ratio, response_mask)


@register_policy_loss("kl_cov")
def kl_cov_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    params: PolicyLossParams = PolicyLossParams(),
    loss_agg_mode: str = "token-mean",
    batch_num_tokens: int | torch.Tensor | None = None,
    global_batch_size: int | torch.Tensor | None = None,
    loss_scale_factor: float | None = None,
) -> PolicyLoss:
    """KL-Cov (arXiv 2505.22617): the unclipped policy gradient, plus ppo_kl_coef x
    |log-ratio| at the kl_cov_ratio share of tokens with the largest centred advantage x
    log-prob product. `clipfrac` reports that share."""
    if params.kl_cov_ratio <= 0:
        raise ValueError(f"kl_cov_ratio must be > 0, got {params.kl_cov_ratio}")
    real = response_mask > 0
    log_ratio = log_prob - old_log_prob
    ratio = log_ratio.exp()
    surrogate = -advantages * ratio
    penalised = surrogate + params.ppo_kl_coef * log_ratio.abs()
    chosen = torch.zeros_like(real)
    flat = torch.nonzero(real.reshape(-1), as_tuple=True)[0]
    if len(flat) > 0:
        covariance = _token_covariance(advantages, log_prob, response_mask)[real]
        count = max(1, int(len(covariance) * params.kl_cov_ratio))
        top = flat[torch.topk(covariance, count, largest=True).indices]
        chosen.view(-1)[top] = True
    per_token = torch.where(chosen, penalised, surrogate)
    loss = agg_loss(
        per_token, response_mask, loss_agg_mode, batch_num_tokens, global_batch_size,
        loss_scale_factor,
    )  # fmt: skip
    return _covariance_loss(loss, chosen, log_ratio, response_mask)


def _token_covariance(
    advantages: torch.Tensor, log_prob: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    """Per token: centred advantage x centred log-prob (means over the response tokens),
    without gradient; Clip-Cov and KL-Cov pick their tokens by it."""
    log_prob = log_prob.detach()
    return (advantages - masked_mean(advantages, response_mask)) * (
        log_prob - masked_mean(log_prob, response_mask)
    )


def _covariance_loss(
    loss: torch.Tensor, picked: torch.Tensor, log_ratio: torch.Tensor, response_mask: torch.Tensor
) -> PolicyLoss:
    """Clip-Cov's and KL-Cov's result: `clipfrac` is the share of tokens they picked."""
    with torch.no_grad():
        share = masked_mean(picked.float(), response_mask)
        return PolicyLoss(loss, share, torch.zeros(()), masked_mean(-log_ratio, response_mask))


@register_policy_loss("gspo")
def gspo_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    params: PolicyLossParams = PolicyLossParams(),
    loss_agg_mode: str = "token-mean",
    batch_num_tokens: int | torch.Tensor | None = None,
    global_batch_size: int | torch.Tensor | None = None,
    loss_scale_factor: float | None = None,
) -> PolicyLoss:
    """GSPO (arXiv 2507.18071): one importance ratio per sequence, the geometric mean of its
    tokens' ratios, clipped as in PPO; each token's gradient flows through its own log-prob
    (verl's token-level form, s_i,t = sg[s_i] * p_t / sg[p_t]). verl's paper recipe uses
    loss_agg_mode seq-mean-token-mean."""
    log_ratio = log_prob - old_log_prob
    lengths = response_mask.sum(-1).clamp(min=1)
    sequence_log_ratio = (log_ratio * response_mask).sum(-1) / lengths
    token_log_ratio = log_prob - log_prob.detach() + sequence_log_ratio.detach()[:, None]
    ratio = token_log_ratio.clamp(max=GSPO_LOG_RATIO_MAX).exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1 - params.clip_ratio_low, 1 + params.clip_ratio_high)
    loss = agg_loss(
        torch.maximum(unclipped, clipped),
        response_mask,
        loss_agg_mode,
        batch_num_tokens,
        global_batch_size,
        loss_scale_factor,
    )
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), response_mask)
        return PolicyLoss(loss, clipfrac, torch.zeros(()), masked_mean(-log_ratio, response_mask))


def top_entropy_mask(
    entropies: torch.Tensor, response_mask: torch.Tensor, fraction: float
) -> torch.Tensor:
    """The response tokens among the top `fraction` by entropy ("Beyond the 80/20 rule",
    arXiv 2506.01939): the threshold is the (1 - fraction) quantile over the batch's real
    tokens only, never padding. Bool [batch, response_len]."""
    real = response_mask.bool()
    values = entropies[real].float()
    if values.numel() == 0:
        return torch.zeros_like(real)
    threshold = torch.quantile(values, 1 - fraction)
    return (entropies * response_mask.float() >= threshold) & real


# ---------------------------------------------------------------------------------------------
# The critic's loss (PPO with a value model)


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor,
    response_mask: torch.Tensor,
    clip_range_value: float,
    loss_agg_mode: str = "token-mean",
    batch_num_tokens: int | torch.Tensor | None = None,
    global_batch_size: int | torch.Tensor | None = None,
    loss_scale_factor: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss: half the larger of the squared errors of the new values and
    of the new values clipped to old +- clip_range_value; and the share of tokens where the
    clipped one was larger."""
    clipped = torch.maximum(
        torch.minimum(values, old_values + clip_range_value), old_values - clip_range_value
    )
    plain_error = (values - returns) ** 2
    clipped_error = (clipped - returns) ** 2
    loss = 0.5 * agg_loss(
        torch.maximum(plain_error, clipped_error),
        response_mask,
        loss_agg_mode,
        batch_num_tokens,
        global_batch_size,
        loss_scale_factor,
    )
    with torch.no_grad():
        return loss, masked_mean((clipped_error > plain_error).float(), response_mask)


# ---------------------------------------------------------------------------------------------
# KL penalties to a reference policy (http://joschu.net/blog/kl-approx.html), on sampled tokens


def _kl_k1(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    return log_prob - ref_log_prob


def _kl_abs(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    return (log_prob - ref_log_prob).abs()


def _kl_k2(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    return 0.5 * (log_prob - ref_log_prob).square()


def _kl_k3(log_prob: torch.Tensor, ref_log_prob: torch.Tensor) -> torch.Tensor:
    # r - log r - 1 with r = p_ref / p: non-negative and low variance; clamped as verl does.
    log_r = (ref_log_prob - log_prob).clamp(-20, 20)
    return (log_r.exp() - log_r - 1).clamp(-10, 10)


# A trailing "+" on a name (e.g. "k3+") keeps the estimator's value but takes k2's
# gradient, which is the unbiased gradient of KL; for k2 itself it changes nothing.
KL_PENALTIES: Registry[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = Registry(
    "KL penalty"
)
for _name, _fn in (
    ("kl", _kl_k1),
    ("k1", _kl_k1),
    ("abs", _kl_abs),
    ("mse", _kl_k2),
    ("k2", _kl_k2),
    ("low_var_kl", _kl_k3),
    ("k3", _kl_k3),
):
    KL_PENALTIES.add(_name, _fn)
    KL_PENALTIES.add(f"{_name}+", _fn)


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-token KL estimate between the policy and the reference; `kind` in KL_PENALTIES."""
    straight_through = kind.endswith("+")
    fn = KL_PENALTIES.get(kind)
    value = fn(log_prob, ref_log_prob)
    if not straight_through or fn is _kl_k2:
        return value
    gradient_carrier = _kl_k2(log_prob, ref_log_prob)
    return gradient_carrier - gradient_carrier.detach() + value.detach()


# ---------------------------------------------------------------------------------------------
# Entropy


def entropy_from_logits(logits: torch.Tensor, chunk_size: int | None = None) -> torch.Tensor:
    """Entropy of softmax(logits) over the last dim, float32, differentiable.

    H = logsumexp(z) - sum_v softmax(z)_v z_v. With `chunk_size`, rows are upcast and reduced
    `chunk_size` at a time, so at most that many float32 rows of probabilities exist at once.
    """
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    rows = logits.reshape(-1, logits.shape[-1])
    if rows.shape[0] == 0:
        return rows.new_empty(logits.shape[:-1], dtype=torch.float32)
    step = rows.shape[0] if chunk_size is None else chunk_size
    pieces = []
    for start in range(0, rows.shape[0], step):
        chunk = rows[start : start + step].float()
        pieces.append(torch.logsumexp(chunk, dim=-1) - (chunk.softmax(dim=-1) * chunk).sum(dim=-1))
    return torch.cat(pieces).reshape(logits.shape[:-1])
