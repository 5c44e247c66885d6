"""The batched KV-cache decode loop, one for every caller: the hf backend and identify's
cached decoder. A layout (cft_rl.generation.kv_cache) holds the rows' keys and values.

Each step feeds one token per row and hands the logits to the caller's `step`, which picks
the next tokens and says which rows finished. Finished rows leave the batch when `compact`
says so; until then they ride along (their `rows` entry is None): selecting rows copies the
cache, so a caller may prefer to do it less often than at every finish.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch


class CacheLayout(Protocol):
    def step_inputs(self) -> dict[str, Any]: ...

    def select(self, rows: torch.Tensor) -> None: ...

    def attention(self, model: torch.nn.Module) -> Any: ...


# (logits [batch, vocab], rows: the caller's row id per batch row, None when finished)
# -> (next token per batch row, whether that row has finished)
Step = Callable[[torch.Tensor, list[int | None]], tuple[list[int], list[bool]]]
# (live rows, rows in the batch) -> drop the finished rows now
Compact = Callable[[int, int], bool]


def compact_at_every_finish(live: int, total: int) -> bool:
    return True


def decode_loop(
    model: torch.nn.Module,
    layout: CacheLayout,
    rows: list[int],
    step: Step,
    compact: Compact,
    positions: torch.Tensor,
    tokens: torch.Tensor | None = None,
    first_logits: torch.Tensor | None = None,
) -> None:
    """Decode until every row has finished. Either `tokens` (one per row, at `positions`)
    are fed first, or `first_logits` (from a prefill whose last tokens sit at `positions`)
    give the first choice."""
    current: list[int | None] = list(rows)
    logits = first_logits
    with layout.attention(model):
        while True:
            if logits is None:
                out = model(
                    input_ids=tokens[:, None],
                    position_ids=positions[:, None],
                    use_cache=True,
                    **layout.step_inputs(),
                )
                logits = out.logits[:, -1, :]
            chosen, finished = step(logits, current)
            logits = None
            current = [None if done else row for row, done in zip(current, finished, strict=True)]
            live = [j for j, row in enumerate(current) if row is not None]
            if not live:
                return
            if len(live) < len(current) and compact(len(live), len(current)):
                index = torch.tensor(live, device=positions.device)
                layout.select(index)
                current = [current[j] for j in live]
                chosen = [chosen[j] for j in live]
                positions = positions[index]
            tokens = torch.tensor(chosen, device=positions.device)
            positions = positions + 1
