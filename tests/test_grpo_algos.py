"""cft_rl.grpo.algos against verl 0.9.1's core_algos on the same tensors, and hand-checked cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from cft_rl.grpo import algos

AGG_MODES = list(algos.LOSS_AGG_MODES)
# Group sizes 4, 4, 3 and a singleton; the ids are unsorted strings, as verl's uids are.
GROUPS = ["a", "b", "a", "c", "b", "a", "d", "c", "b", "a", "c", "b"]


@pytest.fixture(scope="module")
def verl():
    """verl's core_algos and torch_functional, imported once (it pulls in Ray: seconds)."""
    core_algos = pytest.importorskip("verl.trainer.ppo.core_algos")
    import verl.utils.torch_functional as verl_f

    return core_algos, verl_f


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    size, length = len(GROUPS), 9
    lengths = torch.tensor([9, 3, 7, 1, 9, 5, 2, 8, 6, 4, 9, 3])
    mask = (torch.arange(length)[None, :] < lengths[:, None]).float()
    mask[3] = 0.0  # one response with no loss tokens: excluded by the seq-mean modes
    log_prob = -torch.rand(size, length, generator=gen) * 3
    # Old log-probs far enough away that both clip bounds and the dual clip are hit.
    old_log_prob = log_prob + torch.randn(size, length, generator=gen) * 0.8
    scores = torch.randint(0, 2, (size,), generator=gen).float()
    scores[4] = 0.5
    return {
        "mask": mask,
        "log_prob": log_prob,
        "old_log_prob": old_log_prob,
        "ref_log_prob": log_prob + torch.randn(size, length, generator=gen) * 0.5,
        "advantages": torch.randn(size, length, generator=gen) * mask,
        "loss_mat": torch.randn(size, length, generator=gen),
        "scores": scores,
    }


def token_advantages(estimator, scores, group_ids, mask):
    """Each response's advantage on its masked tokens: verl's [batch, response_len] layout."""
    return algos.sequence_advantages(estimator, scores, group_ids).unsqueeze(-1) * mask


def _token_rewards(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Outcome reward on each response's last token, as verl's reward managers place it."""
    rewards = torch.zeros_like(mask)
    last = (mask.sum(-1).long() - 1).clamp_min(0)
    rewards[torch.arange(len(scores)), last] = scores
    return rewards


# --- advantage estimators --------------------------------------------------------------------


OUTCOME_ESTIMATORS = [n for n, e in algos.ADVANTAGE_ESTIMATORS.items() if not e.needs_critic]


@pytest.mark.parametrize("estimator", OUTCOME_ESTIMATORS)
def test_advantages_match_verl(verl, batch, estimator):
    core_algos, _ = verl
    ours_spec = algos.ADVANTAGE_ESTIMATORS.get(estimator)  # its verl spelling is what is tested
    kwargs = {"norm_adv_by_std_in_grpo": ours_spec.verl_norm_by_std}
    if ours_spec.verl_name != "grpo":
        kwargs = {}
    mask = batch["mask"]
    expected, _ = core_algos.get_adv_estimator_fn(ours_spec.verl_name)(
        token_level_rewards=_token_rewards(batch["scores"], mask),
        response_mask=mask,
        index=np.array(GROUPS, dtype=object),
        **kwargs,
    )
    ours = token_advantages(estimator, batch["scores"], GROUPS, mask)
    assert_close(ours, expected)
    per_sequence = algos.sequence_advantages(estimator, batch["scores"], GROUPS)
    assert_close(per_sequence.unsqueeze(-1) * mask, expected)


@pytest.mark.parametrize(
    ("estimator", "verl_name", "kwargs"),
    [
        ("grpo", "grpo_vectorized", {"norm_adv_by_std_in_grpo": True}),
        ("dr_grpo", "grpo_vectorized", {"norm_adv_by_std_in_grpo": False}),
        ("rloo", "rloo_vectorized", {}),
    ],
)
def test_advantages_match_verl_vectorized_without_singletons(
    verl, batch, estimator, verl_name, kwargs
):
    # verl's vectorized rloo gives a singleton 0 instead of its score; compare on groups >= 2.
    core_algos, _ = verl
    keep = [i for i, g in enumerate(GROUPS) if GROUPS.count(g) > 1]
    mask, scores = batch["mask"][keep], batch["scores"][keep]
    groups = [GROUPS[i] for i in keep]
    expected, _ = core_algos.get_adv_estimator_fn(verl_name)(
        token_level_rewards=_token_rewards(scores, mask),
        response_mask=mask,
        index=np.array(groups, dtype=object),
        **kwargs,
    )
    assert_close(token_advantages(estimator, scores, groups, mask), expected)


def test_grpo_by_hand():
    mask = torch.ones(5, 2)
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.7])
    adv = token_advantages("grpo", scores, torch.tensor([3, 3, 3, 3, 8]), mask)
    # Group of four: mean 0.5, sample std sqrt(1/3); the singleton keeps its score.
    expected = torch.tensor([1.0, -1.0, -1.0, 1.0]) * 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert_close(adv[:4, 0], expected)
    assert_close(adv[4], torch.full((2,), 0.7 / (1 + 1e-6)))
    dr = token_advantages("dr_grpo", scores, [0, 0, 0, 0, 1], mask)
    assert_close(dr[:, 1], torch.tensor([0.5, -0.5, -0.5, 0.5, 0.7]))


def test_grpo_equal_scores_give_zero_advantage():
    adv = token_advantages("grpo", torch.ones(4), [0, 0, 0, 0], torch.ones(4, 3))
    assert torch.equal(adv, torch.zeros(4, 3))


def test_rloo_by_hand():
    scores = torch.tensor([1.0, 0.0, 0.0, 2.0])
    adv = token_advantages("rloo", scores, ["q", "q", "q", "r"], torch.ones(4, 1))
    # 1 - mean(0, 0) = 1; 0 - mean(1, 0) = -0.5; a singleton keeps its score.
    assert_close(adv[:, 0], torch.tensor([1.0, -0.5, -0.5, 2.0]))


def test_advantages_only_on_response_tokens_and_integer_scores():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    adv = token_advantages("dr_grpo", torch.tensor([1, 0]), [0, 0], mask)
    assert adv.dtype == torch.float32
    assert_close(adv, torch.tensor([[0.5, 0.5, 0.0], [-0.5, 0.0, 0.0]]))


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="dr_grpo, gae, grpo, rloo"):
        token_advantages("ppo", torch.ones(2), [0, 0], torch.ones(2, 1))
    with pytest.raises(ValueError, match="token-mean"):
        algos.agg_loss(torch.ones(1, 1), torch.ones(1, 1), "mean")
    with pytest.raises(ValueError, match="low_var_kl"):
        algos.kl_penalty(torch.zeros(1), torch.zeros(1), "k4")


# --- loss aggregation ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize(
    "normalisers",
    [{}, {"batch_num_tokens": 37, "global_batch_size": 20, "loss_scale_factor": 4}],
    ids=["local", "global"],
)
def test_agg_loss_matches_verl(verl, batch, mode, normalisers):
    core_algos, _ = verl
    expected = core_algos.agg_loss(batch["loss_mat"], batch["mask"], mode, **normalisers)
    assert_close(algos.agg_loss(batch["loss_mat"], batch["mask"], mode, **normalisers), expected)


def test_agg_loss_by_hand():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0], [9.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    expected = {
        "token-mean": 10 / 4,
        "token-sum": 10.0,
        "seq-mean-token-sum": (6 + 4) / 2,
        "seq-mean-token-mean": (2 + 4) / 2,
        "seq-mean-token-sum-norm": (6 + 4) / 2 / 3,
    }
    for mode, value in expected.items():
        assert_close(algos.agg_loss(loss, mask, mode), torch.tensor(value), msg=mode)


def test_fully_masked_batch_gives_zero_not_nan():
    for mode in AGG_MODES:
        assert algos.agg_loss(torch.ones(2, 3), torch.zeros(2, 3), mode).item() == 0.0


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batches_with_global_normalisers_sum_to_the_full_batch(batch, mode):
    # What a local engine does with gradient accumulation: same loss and gradient as one batch.
    mask, old, adv = batch["mask"], batch["old_log_prob"], batch["advantages"]
    full_lp = batch["log_prob"].clone().requires_grad_()
    full = algos.vanilla_policy_loss(full_lp, old, adv, mask, loss_agg_mode=mode).loss
    full.backward()
    normalisers = {
        "batch_num_tokens": mask.sum(),
        "global_batch_size": (mask.sum(-1) > 0).sum(),
    }
    micro_lp = batch["log_prob"].clone().requires_grad_()
    total = torch.zeros(())
    for rows in torch.arange(len(GROUPS)).split(5):
        part = algos.vanilla_policy_loss(
            micro_lp[rows], old[rows], adv[rows], mask[rows], loss_agg_mode=mode, **normalisers
        ).loss
        part.backward()
        total = total + part.detach()
    assert_close(total, full.detach())
    assert_close(micro_lp.grad, full_lp.grad)


# --- policy loss -----------------------------------------------------------------------------

CLIPS = {
    "symmetric": {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2},
    "clip_higher": {"clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.28},
    "tight_dual_clip": {
        "clip_ratio": 0.1,
        "clip_ratio_low": 0.1,
        "clip_ratio_high": 0.3,
        "clip_ratio_c": 1.5,
    },
}


def _verl_policy_loss(core_algos, batch, mode, clip, log_prob, global_batch_info):
    from omegaconf import OmegaConf

    config = OmegaConf.create({**clip, "global_batch_info": global_batch_info})
    return core_algos.get_policy_loss_fn("vanilla")(
        old_log_prob=batch["old_log_prob"],
        log_prob=log_prob,
        advantages=batch["advantages"],
        response_mask=batch["mask"],
        loss_agg_mode=mode,
        config=config,
    )


@pytest.mark.parametrize("clip_name", list(CLIPS))
@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize(
    "normalisers",
    [{}, {"batch_num_tokens": 51, "global_batch_size": 16, "loss_scale_factor": 3}],
    ids=["local", "global"],
)
def test_policy_loss_matches_verl(verl, batch, clip_name, mode, normalisers):
    core_algos, _ = verl
    clip = CLIPS[clip_name]
    theirs_lp = batch["log_prob"].clone().requires_grad_()
    theirs, metrics = _verl_policy_loss(core_algos, batch, mode, clip, theirs_lp, normalisers)
    theirs.backward()

    ours_lp = batch["log_prob"].clone().requires_grad_()
    params = algos.PolicyLossParams(
        clip_ratio_low=clip["clip_ratio_low"],
        clip_ratio_high=clip["clip_ratio_high"],
        clip_ratio_c=clip.get("clip_ratio_c", 3.0),
    )
    ours = algos.POLICY_LOSSES.get("vanilla")(
        ours_lp,
        batch["old_log_prob"],
        batch["advantages"],
        batch["mask"],
        params,
        loss_agg_mode=mode,
        **normalisers,
    )
    ours.loss.backward()

    assert_close(ours.loss, theirs)
    assert_close(ours_lp.grad, theirs_lp.grad)
    assert ours.clipfrac.item() == pytest.approx(metrics["actor/pg_clipfrac"])
    assert ours.clipfrac_lower.item() == pytest.approx(metrics["actor/pg_clipfrac_lower"])
    assert ours.ppo_kl.item() == pytest.approx(metrics["actor/ppo_kl"])
    # The batch is built so that every mechanism is exercised, else equality proves little.
    assert 0 < ours.clipfrac.item() < 1
    assert ours.clipfrac_lower.item() > 0


def test_policy_loss_by_hand():
    mask = torch.ones(3, 1)
    # Ratio 1.5 with A=+1: clipped to 1.28. Ratio 5 with A=-1: dual-clipped to c=3.
    # Ratio 0.5 with A=-2: raised to the low bound 0.8, loss 1.6.
    old = torch.zeros(3, 1)
    new = torch.log(torch.tensor([[1.5], [5.0], [0.5]]))
    adv = torch.tensor([[1.0], [-1.0], [-2.0]])
    params = algos.PolicyLossParams(clip_ratio_high=0.28, clip_ratio_c=3.0)
    out = algos.vanilla_policy_loss(new, old, adv, mask, params)
    assert_close(out.loss, torch.tensor((-1.28 + 3.0 + 1.6) / 3))
    assert_close(out.clipfrac, torch.tensor(2 / 3))  # the first and the last token
    assert_close(out.clipfrac_lower, torch.tensor(1 / 3))
    assert_close(out.ppo_kl, -new.mean())


def test_policy_loss_rejects_dual_clip_at_or_below_one():
    with pytest.raises(ValueError, match="clip_ratio_c"):
        algos.vanilla_policy_loss(
            *[torch.zeros(1, 1)] * 4, algos.PolicyLossParams(clip_ratio_c=1.0)
        )


# --- KL penalties ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", algos.KL_PENALTIES.names())
def test_kl_penalty_matches_verl(verl, batch, kind):
    core_algos, _ = verl
    theirs_lp = batch["log_prob"].clone().requires_grad_()
    theirs = core_algos.kl_penalty(theirs_lp, batch["ref_log_prob"], kind)
    (theirs * batch["mask"]).sum().backward()
    ours_lp = batch["log_prob"].clone().requires_grad_()
    ours = algos.kl_penalty(ours_lp, batch["ref_log_prob"], kind)
    (ours * batch["mask"]).sum().backward()
    assert_close(ours, theirs)
    assert_close(ours_lp.grad, theirs_lp.grad)


def test_kl_estimators_by_hand():
    log_prob, ref = torch.tensor([0.0]), torch.log(torch.tensor([0.5]))
    assert_close(algos.kl_penalty(log_prob, ref, "k1"), torch.tensor([math.log(2)]))
    assert_close(algos.kl_penalty(log_prob, ref, "k2"), torch.tensor([0.5 * math.log(2) ** 2]))
    # k3 = r - log r - 1 with r = p_ref / p = 0.5
    assert_close(algos.kl_penalty(log_prob, ref, "k3"), torch.tensor([0.5 + math.log(2) - 1]))
    # "k3+": k3's value, k2's gradient d/dlogp 0.5 (logp - ref)^2 = logp - ref
    lp = log_prob.clone().requires_grad_()
    value = algos.kl_penalty(lp, ref, "k3+")
    value.sum().backward()
    assert_close(value.detach(), torch.tensor([0.5 + math.log(2) - 1]))
    assert_close(lp.grad, torch.tensor([math.log(2)]))


# --- entropy and masked helpers --------------------------------------------------------------


def test_entropy_matches_verl(verl):
    _, verl_f = verl
    logits = torch.randn(3, 5, 50, generator=torch.Generator().manual_seed(1)) * 4
    assert_close(algos.entropy_from_logits(logits), verl_f.entropy_from_logits(logits))
    chunked = algos.entropy_from_logits(logits, chunk_size=4)
    assert_close(chunked, verl_f.entropy_from_logits(logits))
    half = logits.reshape(15, 50).bfloat16()
    assert_close(
        algos.entropy_from_logits(half, chunk_size=7),
        verl_f.entropy_from_logits_with_chunking(half, chunk_size=7),
    )


def test_entropy_by_hand_and_gradient_through_chunks():
    uniform = torch.zeros(2, 8)
    assert_close(algos.entropy_from_logits(uniform), torch.full((2,), math.log(8)))
    certain = torch.tensor([[100.0, 0.0, 0.0]])
    assert algos.entropy_from_logits(certain).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(2), requires_grad=True)
    algos.entropy_from_logits(logits).sum().backward()
    whole = logits.grad.clone()
    logits.grad = None
    algos.entropy_from_logits(logits, chunk_size=4).sum().backward()
    assert_close(logits.grad, whole)
    assert algos.entropy_from_logits(torch.zeros(0, 4)).shape == (0,)


def test_masked_helpers_match_verl(verl, batch):
    _, verl_f = verl
    values, mask = batch["loss_mat"], batch["mask"]
    values = values.masked_fill(mask == 0, float("nan"))  # NaN outside the mask must not leak
    assert_close(algos.masked_mean(values, mask), verl_f.masked_mean(values, mask))
    assert_close(algos.masked_mean(values, mask, dim=-1), verl_f.masked_mean(values, mask, -1))


# --- entropy-preserving policy losses (verl's clip_cov, kl_cov, gspo) -----------------------

COV_PARAMS = {
    # Ratios large enough that several tokens of the 60-token batch are chosen, bounds wide
    # enough that the covariance window holds some.
    "clip_cov": {"clip_cov_ratio": 0.1, "clip_cov_lb": 0.05, "clip_cov_ub": 3.0},
    "kl_cov": {"kl_cov_ratio": 0.1, "ppo_kl_coef": 0.7},
    "gspo": {},
}


@pytest.mark.parametrize("loss_mode", list(COV_PARAMS))
@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize(
    "normalisers",
    [{}, {"batch_num_tokens": 51, "global_batch_size": 16, "loss_scale_factor": 3}],
    ids=["local", "global"],
)
def test_entropy_preserving_losses_match_verl(verl, batch, loss_mode, mode, normalisers):
    from omegaconf import OmegaConf

    core_algos, _ = verl
    clip = CLIPS["clip_higher"]
    if loss_mode == "gspo":  # verl's gspo insists on its ActorConfig class
        from verl.workers.config import ActorConfig

        config = ActorConfig(
            strategy="fsdp",
            ppo_mini_batch_size=4,
            ppo_micro_batch_size_per_gpu=1,
            rollout_n=1,
            clip_ratio_low=clip["clip_ratio_low"],
            clip_ratio_high=clip["clip_ratio_high"],
            global_batch_info=normalisers,
        )
    else:
        config = OmegaConf.create(
            {**clip, "policy_loss": COV_PARAMS[loss_mode], "global_batch_info": normalisers}
        )
    theirs_lp = batch["log_prob"].clone().requires_grad_()
    torch.manual_seed(7)  # clip_cov draws its tokens from the global generator
    theirs, metrics = core_algos.get_policy_loss_fn(loss_mode)(
        old_log_prob=batch["old_log_prob"],
        log_prob=theirs_lp,
        advantages=batch["advantages"],
        response_mask=batch["mask"],
        loss_agg_mode=mode,
        config=config,
    )
    theirs.backward()

    params = algos.PolicyLossParams(
        clip_ratio_low=clip["clip_ratio_low"],
        clip_ratio_high=clip["clip_ratio_high"],
        **COV_PARAMS[loss_mode],
    )
    ours_lp = batch["log_prob"].clone().requires_grad_()
    torch.manual_seed(7)
    ours = algos.POLICY_LOSSES.get(loss_mode)(
        ours_lp,
        batch["old_log_prob"],
        batch["advantages"],
        batch["mask"],
        params,
        loss_agg_mode=mode,
        **normalisers,
    )
    ours.loss.backward()

    assert_close(ours.loss, theirs)
    assert_close(ours_lp.grad, theirs_lp.grad)
    if loss_mode != "kl_cov":  # verl reports no clip fraction for kl_cov
        assert ours.clipfrac.item() == pytest.approx(metrics["actor/pg_clipfrac"])
    if loss_mode == "clip_cov":
        assert ours.clipfrac > 0, "the test batch should have tokens cut"


def test_kl_cov_penalises_the_largest_covariance_tokens_by_hand():
    log_prob = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    old = torch.tensor([[-1.2, -2.3, -0.1]])
    advantages = torch.tensor([[2.0, -1.0, 0.5]])
    mask = torch.ones(1, 3)
    params = algos.PolicyLossParams(kl_cov_ratio=0.34, ppo_kl_coef=1.0)  # one token of three
    out = algos.kl_cov_policy_loss(log_prob, old, advantages, mask, params)
    # (A - mean A) x (logp - mean logp) = [1.5 x 0.17, -1.5 x -0.83, 0 x 0.67]: token 1
    ratio = (log_prob.detach() - old).exp()
    expected = (-advantages * ratio).clone()
    expected[0, 1] += 0.3
    assert_close(out.loss, expected.mean())
    assert out.clipfrac.item() == pytest.approx(1 / 3, abs=1e-6)


def test_gspo_ratio_is_per_sequence():
    """Two tokens with log-ratios +0.2 and -0.2 give one sequence ratio of exactly 1."""
    log_prob = torch.tensor([[-1.0, -1.0]], requires_grad=True)
    old = torch.tensor([[-1.2, -0.8]])
    out = algos.gspo_policy_loss(log_prob, old, torch.ones(1, 2), torch.ones(1, 2))
    assert_close(out.loss, torch.tensor(-1.0))
    assert out.clipfrac.item() == 0.0


# --- PPO with a critic: GAE and the value loss -----------------------------------------------


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 1.0), (1.0, 0.95), (0.9, 0.8)])
def test_gae_matches_verl(verl, batch, gamma, lam):
    core_algos, _ = verl
    mask = batch["mask"].clone()
    mask[3] = 0.0  # an empty row (no response tokens): ours must treat it as verl does
    values = batch["loss_mat"]
    rewards = _token_rewards(batch["scores"], mask)
    expected = core_algos.get_adv_estimator_fn("gae")(
        token_level_rewards=rewards, values=values, response_mask=mask, gamma=gamma, lam=lam
    )
    ours = algos.gae_advantages(rewards, values, mask, gamma, lam)
    assert_close(ours[0], expected[0])
    assert_close(ours[1], expected[1])


def test_gae_by_hand():
    """One response of 2 tokens, reward 1 at the end, gamma = lam = 1: the return of every
    token is the reward, the advantage is reward - value (before whitening)."""
    values = torch.tensor([[0.25, 0.5]])
    rewards = torch.tensor([[0.0, 1.0]])
    advantages, returns = algos.gae_advantages(rewards, values, torch.ones(1, 2), 1.0, 1.0)
    assert_close(returns, torch.tensor([[1.0, 1.0]]))
    raw = torch.tensor([[0.75, 0.5]])
    assert_close(advantages, (raw - raw.mean()) / (raw.var() + 1e-8).sqrt())


@pytest.mark.parametrize("mode", AGG_MODES)
@pytest.mark.parametrize(
    "normalisers",
    [{}, {"batch_num_tokens": 51, "global_batch_size": 16, "loss_scale_factor": 3}],
    ids=["local", "global"],
)
def test_value_loss_matches_verl(verl, batch, mode, normalisers):
    core_algos, _ = verl
    old_values = batch["loss_mat"]
    returns = old_values + batch["advantages"]
    theirs_v = (
        old_values + torch.randn(old_values.shape, generator=torch.Generator().manual_seed(3))
    ).requires_grad_()
    ours_v = theirs_v.detach().clone().requires_grad_()
    theirs, theirs_frac = core_algos.compute_value_loss(
        vpreds=theirs_v,
        returns=returns,
        values=old_values,
        response_mask=batch["mask"],
        cliprange_value=0.5,
        loss_agg_mode=mode,
        **normalisers,
    )
    theirs.backward()
    ours, ours_frac = algos.value_loss(
        ours_v, returns, old_values, batch["mask"], 0.5, mode, **normalisers
    )
    ours.backward()
    assert_close(ours, theirs)
    assert_close(ours_v.grad, theirs_v.grad)
    assert_close(ours_frac, theirs_frac)
    assert 0 < ours_frac < 1, "the test values should be clipped at some tokens, not all"


# --- top-entropy token selection, against TRL's ---------------------------------------------


class _OneProcess:
    """What TRL's GRPOTrainer.get_high_entropy_mask asks of its accelerator, on one process."""

    def pad_across_processes(self, tensor, dim=0, pad_index=0):
        return tensor

    def gather(self, tensor):
        return tensor


@pytest.mark.parametrize("fraction", [0.2, 0.5, 1.0, 0.0])
def test_top_entropy_mask_matches_trl(batch, fraction):
    grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
    entropies = batch["loss_mat"].abs()
    # Padding holds the largest entropies: a threshold taken over all positions would differ.
    entropies = torch.where(batch["mask"].bool(), entropies, torch.full_like(entropies, 50.0))
    trainer = type("Trainer", (), {"accelerator": _OneProcess()})()
    theirs = grpo_trainer.GRPOTrainer.get_high_entropy_mask(
        trainer, entropies, batch["mask"], 1 - fraction
    )
    ours = algos.top_entropy_mask(entropies, batch["mask"], fraction)
    assert torch.equal(ours, theirs)
    assert not (ours & ~batch["mask"].bool()).any()
    kept = ours.sum() / batch["mask"].sum()
    if 0 < fraction < 1:
        assert abs(float(kept) - fraction) < 0.1
