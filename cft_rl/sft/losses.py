"""Token-selection losses for CFT and its baselines, as pure functions in a registry.

Every loss is cross-entropy on response tokens with a per-token weight; the losses differ
only in the weights:

  sft           1 on every response token
  cft           1 on critical tokens (critical_mask from `cft-rl identify`), the paper's loss
  cft_weighted  the failure fraction of each token (1 = every alternative failed)
  dft           1 on every response token, each token's loss scaled by its detached probability
  numbers_only  1 on tokens whose text contains a digit
  entropy_topk  1 on the highest-entropy tokens under the current model
  random        1 on random tokens, the same ones for an example every time it is seen
  rho1          1 on the tokens with the highest excess loss over a reference model (Rho-1)
  attention_topk 1 on the tokens that receive the most attention under the starting model

The last four are *ranked*: they pick a fixed number of tokens per example (its budget), by a
score. The budget is the example's number of critical tokens (the same count as `cft`), or
`fraction` of its response tokens when `fraction` is set.

The normaliser of a loss is the sum of its weights (for `dft` the count of tokens, not the sum
of probabilities). It never depends on the model, so a trainer computes it for the whole
optimizer step before the first forward (`step_normalizer`, summed over micro-batches and
data-parallel ranks) and divides each micro-batch's `TokenLossSums.loss_sum` by it.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import torch
from pydantic import Field

from cft_rl.config import Section
from cft_rl.errors import UserError
from cft_rl.registry import Registry
from cft_rl.sft.fields import FIELDS
from cft_rl.token_logprobs import DEFAULT_CHUNK_SIZE, token_logprobs, token_statistics

__all__ = [
    "LOSSES",
    "LossConfig",
    "TokenLoss",
    "TokenLossSums",
    "TokenView",
    "all_reduce_sum",
    "register_loss",
    "selected_token_loss",
    "step_normalizer",
]


# loss.name -> its TokenLoss; filled by @register_loss below.
LOSSES: Registry[TokenLoss] = Registry("loss", "losses")


class LossConfig(Section):
    """The `loss` section of an SFT recipe."""

    name: LOSSES.choice() = "cft"  # type: ignore[valid-type]
    # Ranked losses (entropy_topk, random, rho1, attention_topk): share of each example's
    # response tokens to train on; null = as many as the example has critical tokens (the
    # same count as cft).
    fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    # `random`: mixed with each example's `example_seed`; change it for another random draw.
    seed: int = 0
    # Rows of logits formed at once: memory ~ chunk_size x vocab x 4 bytes, times 2-3.
    chunk_size: int = Field(default=DEFAULT_CHUNK_SIZE, gt=0)


class TokenView:
    """One micro-batch seen from the predictions: entry (b, t) predicts input_ids[b, t + 1].

    Holds the batch's fields, shifted to that alignment, and (when the model has run) the final
    hidden states, from which `statistics` computes the model's per-token log-probs and entropies.
    """

    def __init__(
        self,
        batch: Mapping[str, torch.Tensor],
        loss_name: str,
        hidden: torch.Tensor | None = None,
        lm_head_weight: torch.Tensor | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ):
        self.batch = batch
        self.loss_name = loss_name
        self.hidden = hidden
        self.lm_head_weight = lm_head_weight
        self.chunk_size = chunk_size

    def raw(self, name: str) -> torch.Tensor:
        """The batch field `name` as given (unshifted), or a UserError naming what is missing."""
        if name not in self.batch:
            raise UserError(
                f"loss '{self.loss_name}' needs the batch field '{name}' ({FIELDS[name]}), "
                f"but the batch has only: {', '.join(sorted(self.batch))}"
            )
        return self.batch[name]

    def field(self, name: str) -> torch.Tensor:
        """The per-token field `name`, shifted to the predictions: [batch, seq - 1]."""
        return self.raw(name)[:, 1:]

    @cached_property
    def targets(self) -> torch.Tensor:
        return self.field("input_ids")

    @cached_property
    def candidates(self) -> torch.Tensor:
        """Bool [batch, seq - 1]: predictions of response tokens, the only ones any loss trains."""
        mask = self.field("response_mask").bool()
        if "attention_mask" in self.batch:
            mask = mask & self.field("attention_mask").bool()
        return mask

    @cached_property
    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-prob, entropy) of each candidate under the model, 0 elsewhere; no gradient."""
        if self.hidden is None or self.lm_head_weight is None:
            raise ValueError(f"loss '{self.loss_name}' ranks tokens by the model: needs hidden")
        rows = self.hidden.detach()[:, :-1][self.candidates]
        logprobs, entropies = token_statistics(
            rows, self.lm_head_weight, self.targets[self.candidates], self.chunk_size
        )
        return self._scatter(logprobs), self._scatter(entropies)

    def _scatter(self, values: torch.Tensor) -> torch.Tensor:
        full = torch.zeros(self.candidates.shape, dtype=values.dtype, device=values.device)
        full[self.candidates] = values
        return full


WeightFn = Callable[[TokenView, LossConfig], torch.Tensor]


@dataclass(frozen=True)
class TokenLoss:
    """A registered loss. `fn` gives weights [batch, seq - 1], or scores when `ranked`."""

    name: str
    fn: WeightFn
    ranked: bool = False
    scale_by_probability: bool = False
    # A batch field the data loader computes for this loss only (cft_rl.sft.data), from the
    # tokenizer or, with needs_reference_model, from the recipe's `reference_model`.
    derived_field: str | None = None
    needs_reference_model: bool = False

    def weights(self, view: TokenView, config: LossConfig) -> torch.Tensor:
        """Float weights [batch, seq - 1], zero where no loss is taken."""
        if not self.ranked:
            return self.fn(view, config).float() * view.candidates
        return _top_k_mask(self.fn(view, config), view.candidates, _budget(view, config)).float()

    def total_weight(self, view: TokenView, config: LossConfig) -> torch.Tensor:
        """Sum of the weights, computed without the model (ranked losses: sum of budgets)."""
        if self.ranked:
            return _budget(view, config).sum().float()
        return self.weights(view, config).sum()


def register_loss(
    name: str,
    *,
    ranked: bool = False,
    scale_by_probability: bool = False,
    derived_field: str | None = None,
    needs_reference_model: bool = False,
) -> Callable[[WeightFn], WeightFn]:
    """Register `fn(view, config)` as the loss `name` (weights; scores if `ranked`), with
    what it needs besides the identify dataset's fields."""

    def decorator(fn: WeightFn) -> WeightFn:
        LOSSES.add(
            name,
            TokenLoss(name, fn, ranked, scale_by_probability, derived_field, needs_reference_model),
        )
        return fn

    return decorator


@register_loss("sft")
@register_loss("dft", scale_by_probability=True)
def all_response_tokens(view: TokenView, config: LossConfig) -> torch.Tensor:
    return view.candidates


@register_loss("cft")
def critical_tokens(view: TokenView, config: LossConfig) -> torch.Tensor:
    return view.field("critical_mask").bool()


@register_loss("cft_weighted")
def failure_fractions(view: TokenView, config: LossConfig) -> torch.Tensor:
    fractions = view.field("failure_fraction").float()
    if bool(((fractions < 0) | (fractions > 1))[view.candidates].any()):
        raise UserError("loss 'cft_weighted': batch field 'failure_fraction' is outside [0, 1]")
    return fractions


@register_loss("numbers_only", derived_field="digit_mask")
def digit_tokens(view: TokenView, config: LossConfig) -> torch.Tensor:
    return view.field("digit_mask").bool()


@register_loss("entropy_topk", ranked=True)
def entropy(view: TokenView, config: LossConfig) -> torch.Tensor:
    return view.statistics[1]


@register_loss("rho1", ranked=True, derived_field="ref_logprobs", needs_reference_model=True)
def excess_loss(view: TokenView, config: LossConfig) -> torch.Tensor:
    # (-log p_model) - (-log p_ref): high where the model lags the reference most
    return view.field("ref_logprobs").float() - view.statistics[0]


@register_loss("attention_topk", ranked=True, derived_field="attention_received")
def attention(view: TokenView, config: LossConfig) -> torch.Tensor:
    return view.field("attention_received").float()


@register_loss("random", ranked=True)
def seeded_uniform(view: TokenView, config: LossConfig) -> torch.Tensor:
    """Uniform scores drawn per example over its response tokens in order, so the pick depends
    only on (config.seed, example_seed) and the number of response tokens, not on padding."""
    seeds = view.raw("example_seed").tolist()
    scores = torch.zeros(view.candidates.shape)
    generator = torch.Generator()
    for row, (seed, candidates) in enumerate(zip(seeds, view.candidates.cpu(), strict=True)):
        # torch's CPU generator keeps only 32 bits of a seed: hash both into 32 bits
        generator.manual_seed(zlib.crc32(f"{config.seed}/{seed}".encode()))
        scores[row, candidates] = torch.rand(int(candidates.sum()), generator=generator)
    return scores.to(view.candidates.device)


def _budget(view: TokenView, config: LossConfig) -> torch.Tensor:
    """Tokens to pick per example [batch]: `fraction` of its response tokens (rounded half up),
    else its number of critical tokens."""
    if config.fraction is not None:
        return torch.floor(view.candidates.sum(dim=1) * config.fraction + 0.5).long()
    return (view.field("critical_mask").bool() & view.candidates).sum(dim=1)


def _top_k_mask(scores: torch.Tensor, candidates: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Bool mask of the k[b] highest-scoring candidates of each row b (ties: earlier first)."""
    keyed = torch.where(candidates, scores.float(), float("-inf"))
    order = keyed.argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    ranks.scatter_(1, order, positions)
    return (ranks < k[:, None]) & candidates


@dataclass(frozen=True)
class TokenLossSums:
    """One micro-batch's sums; the trainer divides loss_sum by the step's normaliser."""

    loss_sum: torch.Tensor  # sum_t w_t * -log p_t (dft: w_t * p_t.detach() * -log p_t)
    weight_sum: torch.Tensor  # sum_t w_t, detached
    num_tokens: torch.Tensor  # positions with w_t > 0


def selected_token_loss(
    config: LossConfig,
    batch: Mapping[str, torch.Tensor],
    hidden: torch.Tensor,
    lm_head_weight: torch.Tensor,
) -> TokenLossSums:
    """Weighted cross-entropy of one micro-batch, with logits only at weighted positions.

    `hidden` are the final hidden states [batch, seq, hidden] (after the final norm, before the
    LM head), e.g. `model.model(input_ids, attention_mask=...).last_hidden_state` for HF models.
    """
    loss = LOSSES.get(config.name)
    view = TokenView(batch, loss.name, hidden, lm_head_weight, config.chunk_size)
    weights = loss.weights(view, config)
    picked = weights > 0
    logprobs = token_logprobs(
        hidden[:, :-1][picked], lm_head_weight, view.targets[picked], config.chunk_size
    )
    token_weights = weights[picked]
    if loss.scale_by_probability:
        token_weights = token_weights * logprobs.detach().exp()
    return TokenLossSums(
        loss_sum=-(token_weights * logprobs).sum(),
        weight_sum=weights.sum().detach(),
        num_tokens=picked.sum(),
    )


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum over the ranks of torch.distributed when it is initialised, else `value` itself."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return value
    # NCCL reduces only CUDA tensors, gloo only CPU ones
    device = f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
    summed = value.to(device, copy=True)
    dist.all_reduce(summed, op=dist.ReduceOp.SUM)
    return summed.to(value.device)


def step_normalizer(
    config: LossConfig,
    micro_batches: Iterable[Mapping[str, torch.Tensor]],
    reduce: Callable[[torch.Tensor], torch.Tensor] = all_reduce_sum,
) -> torch.Tensor:
    """Total weight of one optimizer step: over its micro-batches here, then over ranks.

    Dividing every micro-batch's loss_sum by it gives the step the loss
    sum_t w_t * loss_t / sum_t w_t over all its tokens, however it is split. Engines that average
    gradients over ranks and divide the loss by the accumulation steps (DeepSpeed does both)
    need loss_sum / normaliser * world_size * accumulation_steps to get that gradient.
    """
    loss = LOSSES.get(config.name)
    total = sum(
        (loss.total_weight(TokenView(batch, loss.name), config) for batch in micro_batches),
        start=torch.zeros(()),
    )
    total = reduce(total.float())
    if total.item() <= 0:
        raise UserError(
            f"loss '{loss.name}': no token to train on in this optimizer step (total weight "
            f"{total.item():g} over its micro-batches and ranks); drop examples without "
            "selected tokens (e.g. no critical token) from the training data"
        )
    return total
