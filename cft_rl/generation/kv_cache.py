"""KV-cache layouts: how the rows of a batch hold the keys and values that the decode loop
(cft_rl.generation.decode_loop) extends by one token per step. Each layout gives the model's
cache arguments for the next step (`step_inputs`), keeps only some rows (`select`), and may
route the model's attention meanwhile (`attention`).

`PrefillBatch` (the hf backend): the cache of a left-padded prefill of whole prompts, as
transformers builds it.

For a batch of continuations cut from the prefill of one prompt + response (identify's
cached decoder), row i continues from the first n_i tokens of that sequence (its prefix):

- `SharedPrefixBatch` (default): the rows share the prefill's keys and values; each row
  stores only the keys and values of its own new tokens. Attention is computed by
  `shared_prefix_attention`: the scores against the shared part are one matrix product
  for all rows (the prefill's keys are read once per step, not once per row), positions
  at or beyond n_i are masked, and the row's own tokens are added. Memory is O(L + rows x
  steps) instead of O(rows x L).
- `PaddedBatch`: each row gets a copy of its prefix, right-aligned to the widest (left
  padding hidden by the attention mask); works with any attention implementation.

Both keep the new tokens in `ReservedLayer`s, buffers with room for every step the batch
can take, so a step writes in place instead of concatenating (transformers' DynamicLayer
copies the whole cache at every step).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from cft_rl.registry import Registry

SHARED_PREFIX_ATTENTION = "cft_rl_shared_prefix"


class PrefillBatch:
    """The rows' cache as the model's prefill built it, with the left-padding mask."""

    def __init__(self, cache: DynamicCache, attention_mask: torch.Tensor) -> None:
        self.cache = cache
        self.attention_mask = attention_mask

    def step_inputs(self) -> dict[str, Any]:
        """Model arguments for the next step (one new token per row)."""
        ones = self.attention_mask.new_ones(len(self.attention_mask), 1)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        return {"past_key_values": self.cache, "attention_mask": self.attention_mask}

    def select(self, rows: torch.Tensor) -> None:
        self.cache.batch_select_indices(rows)
        self.attention_mask = self.attention_mask[rows]

    def attention(self, model: torch.nn.Module) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class ReservedLayer(DynamicLayer):
    """A DynamicLayer whose keys and values are views into a buffer with room to grow."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, reserve: int) -> None:
        super().__init__()
        batch, heads, width, dim = keys.shape
        self._keys = keys.new_empty(batch, heads, width + reserve, dim)
        self._values = values.new_empty(batch, heads, width + reserve, dim)
        self._keys[:, :, :width] = keys
        self._values[:, :, :width] = values
        self._length = width
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self._expose()

    def update(self, key_states, value_states, *args, **kwargs):
        end = self._length + key_states.shape[-2]
        if end > self._keys.shape[-2]:
            raise RuntimeError("a batch took more decoding steps than its cache reserved")
        self._keys[:, :, self._length : end] = key_states
        self._values[:, :, self._length : end] = value_states
        self._length = end
        self._expose()
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        # Copy the filled positions only, not the reserve.
        self._keys = _rows_of(self._keys, indices, self._length)
        self._values = _rows_of(self._values, indices, self._length)
        self._expose()

    def drop_leading(self, count: int) -> None:
        """Forget the first `count` positions (padding in every remaining row); no copy."""
        self._keys, self._values = self._keys[:, :, count:], self._values[:, :, count:]
        self._length -= count
        self._expose()

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self._length]
        self.values = self._values[:, :, : self._length]


def _rows_of(buffer: torch.Tensor, rows: torch.Tensor, filled: int) -> torch.Tensor:
    selected = buffer.new_empty(len(rows), *buffer.shape[1:])
    selected[:, :, :filled] = buffer[rows, :, :filled]
    return selected


def _reserved_cache(layers: list[tuple[torch.Tensor, torch.Tensor]], reserve: int) -> DynamicCache:
    cache = DynamicCache()
    cache.layers = [ReservedLayer(keys, values, reserve) for keys, values in layers]
    return cache


# decoder.batching name -> the batch class of that KV-cache layout (see register_layout).
KV_CACHE_LAYOUTS: Registry[type] = Registry("KV-cache layout")
register_layout = KV_CACHE_LAYOUTS.register


@register_layout("padded")
class PaddedBatch:
    """Each row holds a copy of its prefix's cache, left padded to the widest prefix."""

    # Batch only continuations from one position (equal prefixes): no padding at all.
    one_position_per_batch = False

    def __init__(
        self,
        keys_values: list[tuple[torch.Tensor, torch.Tensor]],
        prefix_lengths: torch.Tensor,
        reserve: int,
    ) -> None:
        width = int(prefix_lengths.max())
        columns = torch.arange(width, device=prefix_lengths.device)
        # Column j of row i holds prefix position j - (width - n_i); negative: padding.
        source = columns[None, :] - (width - prefix_lengths)[:, None]
        self.attention_mask = (source >= 0).long()
        source = source.clamp(min=0)
        self.cache = _reserved_cache(
            [
                (keys[0][:, source].transpose(0, 1), values[0][:, source].transpose(0, 1))
                for keys, values in keys_values
            ],
            reserve,
        )

    def step_inputs(self) -> dict[str, Any]:
        """Model arguments for the next step (one new token per row)."""
        ones = self.attention_mask.new_ones(len(self.attention_mask), 1)
        self.attention_mask = torch.cat([self.attention_mask, ones], dim=1)
        return {"past_key_values": self.cache, "attention_mask": self.attention_mask}

    def select(self, rows: torch.Tensor) -> None:
        """Keep `rows`; drop leading columns that are padding in all of them."""
        mask = self.attention_mask[rows]
        first = int(mask.any(0).int().argmax())
        self.attention_mask = mask[:, first:]
        for layer in self.cache.layers:
            layer.batch_select_indices(rows)
            if first:
                layer.drop_leading(first)

    @contextlib.contextmanager
    def attention(self, model: torch.nn.Module) -> Iterator[None]:
        yield


@dataclass
class SharedPrefix:
    """The prefill's keys and values per layer ([kv_heads, length, head_dim]) and the
    number of them each row may see."""

    keys_values: list[tuple[torch.Tensor, torch.Tensor]]
    lengths: torch.Tensor


@register_layout("grouped")
class GroupedBatch(PaddedBatch):
    """Padded, with the continuations of one position per batch (nothing to pad)."""

    one_position_per_batch = True


@register_layout("shared")
class SharedPrefixBatch:
    """Rows share the prefill's cache; each stores only its own new tokens."""

    one_position_per_batch = False

    def __init__(
        self,
        keys_values: list[tuple[torch.Tensor, torch.Tensor]],
        prefix_lengths: torch.Tensor,
        reserve: int,
    ) -> None:
        rows = len(prefix_lengths)
        self.shared = SharedPrefix([(k[0], v[0]) for k, v in keys_values], prefix_lengths)
        self.cache = _reserved_cache(
            [
                (k[:, :, :0].expand(rows, -1, -1, -1), v[:, :, :0].expand(rows, -1, -1, -1))
                for k, v in keys_values
            ],
            reserve,
        )

    def step_inputs(self) -> dict[str, Any]:
        return {"past_key_values": self.cache, "shared_prefix": self.shared}

    def select(self, rows: torch.Tensor) -> None:
        self.shared = SharedPrefix(self.shared.keys_values, self.shared.lengths[rows])
        for layer in self.cache.layers:
            layer.batch_select_indices(rows)

    @contextlib.contextmanager
    def attention(self, model: torch.nn.Module) -> Iterator[None]:
        """Route the model's attention through `shared_prefix_attention` meanwhile."""
        config = model.config
        if getattr(config, "attn_logit_softcapping", None):
            raise ValueError("shared-prefix attention does not implement logit soft-capping")
        _register()
        original = config._attn_implementation
        config._attn_implementation = SHARED_PREFIX_ATTENTION
        try:
            yield
        finally:
            config._attn_implementation = original


def shared_prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    shared_prefix: SharedPrefix | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Attention of one new token per row over the shared prefix (masked beyond the row's
    length) and the row's own tokens (`key`, `value`). Returns [rows, 1, heads, head_dim]."""
    if shared_prefix is None or query.shape[2] != 1:
        raise RuntimeError("shared-prefix attention decodes one token per row with its prefix")
    prefix_keys, prefix_values = shared_prefix.keys_values[module.layer_idx]
    rows, heads, _, dim = query.shape
    kv_heads, length = prefix_keys.shape[0], prefix_keys.shape[1]
    group = heads // kv_heads
    scale = scaling if scaling is not None else dim**-0.5
    # [kv_heads, rows * group, dim]: every query head of every row, by the key head it uses.
    grouped = query.reshape(rows, kv_heads, group, dim)
    by_head = grouped.permute(1, 0, 2, 3).reshape(kv_heads, rows * group, dim)
    shared_scores = torch.matmul(by_head, prefix_keys.transpose(1, 2)) * scale
    shared_scores = shared_scores.reshape(kv_heads, rows, group, length).permute(1, 0, 2, 3)
    hidden = torch.arange(length, device=query.device)[None, :] >= shared_prefix.lengths[:, None]
    shared_scores = shared_scores.masked_fill(hidden[:, None, None, :], float("-inf"))
    own_scores = torch.matmul(grouped, key.transpose(-1, -2)) * scale
    weights = torch.cat([shared_scores, own_scores], dim=-1).softmax(dim=-1)
    shared_weights = weights[..., :length].permute(1, 0, 2, 3).reshape(kv_heads, -1, length)
    output = torch.matmul(shared_weights, prefix_values).reshape(kv_heads, rows, group, dim)
    output = output.permute(1, 0, 2, 3) + torch.matmul(weights[..., length:], value)
    return output.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous(), None


def _register() -> None:
    AttentionInterface.register(SHARED_PREFIX_ATTENTION, shared_prefix_attention)
    # The model builds a mask before attention; ours needs none (q_len 1, masked above).
    AttentionMaskInterface.register(SHARED_PREFIX_ATTENTION, sdpa_mask)
