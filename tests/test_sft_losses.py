"""Each loss against a direct full-logit computation on small tensors, plus the error cases."""

import pytest
import torch

from cft_rl.config import ConfigError, validate
from cft_rl.errors import UserError
from cft_rl.sft.losses import (
    LOSSES,
    LossConfig,
    TokenView,
    selected_token_loss,
    step_normalizer,
)

BATCH, SEQ, VOCAB, HIDDEN = 3, 10, 13, 6
LENGTHS = [10, 8, 6]  # right padding after these
PROMPT_LENGTHS = [3, 2, 2]


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    positions = torch.arange(SEQ)
    attention = positions < torch.tensor(LENGTHS)[:, None]
    response = attention & (positions >= torch.tensor(PROMPT_LENGTHS)[:, None])
    critical = response & (torch.rand(BATCH, SEQ, generator=generator) < 0.35)
    critical[:, PROMPT_LENGTHS[0]] = True  # at least one per example
    failure = torch.where(critical, 1.0, torch.randint(2, (BATCH, SEQ), generator=generator) * 0.5)
    input_ids = torch.randint(VOCAB, (BATCH, SEQ), generator=generator)
    return {
        "input_ids": input_ids,
        "attention_mask": attention.long(),
        "response_mask": response.long(),
        "critical_mask": critical.long(),
        "failure_fraction": failure,
        "digit_mask": (input_ids < 4).long(),
        "ref_logprobs": -3 * torch.rand(BATCH, SEQ, generator=generator, dtype=torch.float64),
        "attention_received": 4 * torch.rand(BATCH, SEQ, generator=generator) * response,
        "example_seed": torch.tensor([101, 202, 303]),
    }


def make_model_outputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed + 1)
    hidden = torch.randn(BATCH, SEQ, HIDDEN, generator=generator, dtype=torch.float64)
    weight = 2 * torch.randn(VOCAB, HIDDEN, generator=generator, dtype=torch.float64)
    return hidden.requires_grad_(True), weight.requires_grad_(True)


# ---- hand-written references: full logits at every position, masks built in plain Python ----


def full_logprobs(hidden, weight, input_ids):
    """log p and entropy of each next token: [batch, seq - 1]."""
    log_probs = (hidden[:, :-1] @ weight.T).log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    return log_probs.gather(-1, input_ids[:, 1:, None]).squeeze(-1), entropy


def response_positions(batch, row):
    """Prediction indices t (predicting token t + 1) that are response tokens of `row`."""
    return [t for t in range(SEQ - 1) if batch["response_mask"][row, t + 1] == 1]


def top_positions(scores, batch, budgets):
    picked = torch.zeros(BATCH, SEQ - 1)
    for row in range(BATCH):
        ranked = sorted(response_positions(batch, row), key=lambda t: (-float(scores[row, t]), t))
        for t in ranked[: budgets[row]]:
            picked[row, t] = 1.0
    return picked


def critical_counts(batch):
    return [int(batch["critical_mask"][row, 1:].sum()) for row in range(BATCH)]


def mask_of(batch, field):
    weights = torch.zeros(BATCH, SEQ - 1)
    for row in range(BATCH):
        for t in response_positions(batch, row):
            weights[row, t] = float(batch[field][row, t + 1])
    return weights


def reference(name, batch, hidden, weight, fraction=None):
    """(loss_sum, weight_sum) computed directly for loss `name`."""
    logprobs, entropy = full_logprobs(hidden, weight, batch["input_ids"])
    budgets = critical_counts(batch)
    if fraction is not None:
        budgets = [int(len(response_positions(batch, r)) * fraction + 0.5) for r in range(BATCH)]
    if name in ("sft", "dft"):
        weights = mask_of({**batch, "ones": batch["response_mask"]}, "ones")
    elif name == "cft":
        weights = mask_of(batch, "critical_mask")
    elif name == "cft_weighted":
        weights = mask_of(batch, "failure_fraction")
    elif name == "numbers_only":
        weights = mask_of(batch, "digit_mask")
    elif name == "entropy_topk":
        weights = top_positions(entropy.detach(), batch, budgets)
    elif name == "rho1":
        excess = batch["ref_logprobs"][:, 1:] - logprobs.detach()
        weights = top_positions(excess, batch, budgets)
    elif name == "attention_topk":
        weights = top_positions(batch["attention_received"][:, 1:], batch, budgets)
    else:
        raise AssertionError(name)
    weights = weights.double()
    per_token = weights * logprobs.detach().exp() if name == "dft" else weights
    return -(per_token * logprobs).sum(), weights.sum()


DIRECT_CASES = [
    *[(name, None) for name in ("sft", "cft", "cft_weighted", "dft", "numbers_only")],
    *[
        (name, fraction)
        for name in ("entropy_topk", "rho1", "attention_topk")
        for fraction in (None, 0.3)
    ],
]


@pytest.mark.parametrize(("name", "fraction"), DIRECT_CASES)
def test_loss_and_gradients_match_direct_computation(name, fraction):
    batch = make_batch()
    config = LossConfig(name=name, fraction=fraction, chunk_size=4)

    hidden, weight = make_model_outputs()
    sums = selected_token_loss(config, batch, hidden, weight)
    sums.loss_sum.backward()
    got_grads = hidden.grad, weight.grad

    hidden, weight = make_model_outputs()
    expected_loss, expected_weight = reference(name, batch, hidden, weight, fraction)
    expected_loss.backward()

    torch.testing.assert_close(sums.loss_sum, expected_loss)
    torch.testing.assert_close(sums.weight_sum.double(), expected_weight)
    torch.testing.assert_close(got_grads[0], hidden.grad)
    torch.testing.assert_close(got_grads[1], weight.grad)
    assert sums.loss_sum.item() > 0


def test_losses_select_different_tokens():
    """Guards against a reference that is trivially equal for several losses."""
    batch = make_batch()
    hidden, weight = make_model_outputs()
    values = {
        name: reference(name, batch, hidden, weight)[0].item()
        for name in ["sft", "cft", "entropy_topk", "rho1", "numbers_only", "attention_topk"]
    }
    assert len({round(v, 6) for v in values.values()}) == len(values)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_chunk_size_does_not_change_the_result(name):
    batch = make_batch(seed=3)
    results = []
    for chunk_size in (1, 5, 1000):
        hidden, weight = make_model_outputs(seed=3)
        sums = selected_token_loss(
            LossConfig(name=name, chunk_size=chunk_size), batch, hidden, weight
        )
        sums.loss_sum.backward()
        results.append((sums.loss_sum.detach(), hidden.grad, weight.grad))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_normaliser_equals_the_weights_the_loss_uses(name):
    """The step normaliser is computed without the model; it must match the forward pass."""
    batches = [make_batch(seed) for seed in range(3)]
    config = LossConfig(name=name)
    used = sum(
        selected_token_loss(config, batch, *make_model_outputs(seed)).weight_sum
        for seed, batch in enumerate(batches)
    )
    torch.testing.assert_close(step_normalizer(config, batches), used.float())


def picked_positions(batch, config):
    hidden, weight = make_model_outputs()
    weights = LOSSES.get(config.name).weights(TokenView(batch, config.name, hidden, weight), config)
    return [torch.nonzero(weights[row]).flatten().tolist() for row in range(BATCH)]


def test_random_picks_budget_of_response_tokens_reproducibly():
    batch = make_batch()
    config = LossConfig(name="random")
    picked = picked_positions(batch, config)
    for row, positions in enumerate(picked):
        assert len(positions) == critical_counts(batch)[row]
        assert set(positions) <= set(response_positions(batch, row))
    assert picked_positions(batch, config) == picked
    assert picked_positions(batch, LossConfig(name="random", seed=1)) != picked
    other_seeds = {**batch, "example_seed": torch.tensor([7, 8, 9])}
    assert picked_positions(other_seeds, config) != picked


def test_random_pick_of_an_example_ignores_padding_and_batch_mates():
    batch = make_batch()
    config = LossConfig(name="random", fraction=0.5)
    picked = picked_positions(batch, config)
    # the last example alone, shifted right by left padding of 2
    shifted = {}
    for key, value in batch.items():
        row = value[2:3]
        shifted[key] = (
            row if key == "example_seed" else torch.cat([row[:, :2] * 0, row], 1)[:, :SEQ]
        )
    alone = LOSSES.get("random").weights(TokenView(shifted, "random"), config)
    assert (torch.nonzero(alone[0]).flatten() - 2).tolist() == picked[2]


def test_rho1_prefers_tokens_where_the_reference_is_better():
    batch = make_batch()
    # reference far better than the model on exactly one response token per example
    ref = torch.full((BATCH, SEQ), -50.0, dtype=torch.float64)
    target_positions = [4, 5, 3]
    for row, t in enumerate(target_positions):
        ref[row, t + 1] = 0.0
    config = LossConfig(name="rho1", fraction=0.15)  # 7, 6, 4 response tokens: budget 1 each
    batch = {**batch, "ref_logprobs": ref}
    assert picked_positions(batch, config) == [[t] for t in target_positions]


def test_attention_topk_picks_the_most_attended_response_tokens():
    batch = make_batch()
    scores = torch.zeros(BATCH, SEQ)
    attended = [(5, 7), (4, 3), (3, 6)]  # token positions, two per example
    for row, tokens in enumerate(attended):
        for rank, token in enumerate(tokens):
            scores[row, token] = 2.0 - rank
    scores[0, 1] = 9.0  # a prompt token: never picked, whatever its score
    config = LossConfig(name="attention_topk", fraction=0.3)  # 7, 6, 4 tokens: 2, 2, 1
    picked = picked_positions({**batch, "attention_received": scores}, config)
    # prediction t trains token t + 1
    assert picked == [[4, 6], [2, 3], [2]]


# ---- errors ----


def test_unknown_loss_name_lists_valid_ones():
    valid = (
        r"unknown loss 'cfft' \(did you mean 'cft'\?\); valid losses: attention_topk, cft, "
        "cft_weighted"
    )
    with pytest.raises(UserError, match=valid):
        LOSSES.get("cfft")
    with pytest.raises(ConfigError, match=r"key 'name'.*unknown loss 'cfft'.*rho1"):
        validate(LossConfig, {"name": "cfft"}, "recipe.yaml")


def test_cft_without_masks_names_the_missing_field():
    batch = make_batch()
    del batch["critical_mask"]
    with pytest.raises(UserError, match=r"loss 'cft' needs the batch field 'critical_mask'"):
        step_normalizer(LossConfig(name="cft"), [batch])
    with pytest.raises(UserError, match=r"'entropy_topk' needs the batch field 'critical_mask'"):
        step_normalizer(LossConfig(name="entropy_topk"), [batch])
    # with a fraction, ranked losses need no masks
    assert step_normalizer(LossConfig(name="entropy_topk", fraction=0.5), [batch]).item() > 0


def test_all_zero_mask_for_a_step_is_an_error():
    batches = [make_batch(seed) for seed in range(2)]
    for batch in batches:
        batch["critical_mask"] = torch.zeros_like(batch["critical_mask"])
    for name in ("cft", "random", "entropy_topk"):
        with pytest.raises(UserError, match=rf"loss '{name}': no token to train on"):
            step_normalizer(LossConfig(name=name), batches)


def test_one_empty_micro_batch_is_fine_when_the_step_has_tokens():
    empty, full = make_batch(0), make_batch(1)
    empty["critical_mask"] = torch.zeros_like(empty["critical_mask"])
    config = LossConfig(name="cft")
    assert step_normalizer(config, [empty, full]).item() == sum(critical_counts(full))
    hidden, weight = make_model_outputs()
    sums = selected_token_loss(config, empty, hidden, weight)
    sums.loss_sum.backward()
    assert sums.loss_sum.item() == 0 and sums.num_tokens.item() == 0
    assert torch.count_nonzero(hidden.grad) == 0


def test_failure_fractions_outside_unit_interval_are_refused():
    batch = make_batch()
    batch["failure_fraction"] = batch["failure_fraction"] * 3
    with pytest.raises(UserError, match="failure_fraction"):
        step_normalizer(LossConfig(name="cft_weighted"), [batch])


def test_fraction_must_be_in_unit_interval():
    with pytest.raises(ConfigError, match="key 'fraction'"):
        validate(LossConfig, {"name": "random", "fraction": 1.5}, "recipe.yaml")
