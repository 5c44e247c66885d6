"""GRPO training prompts: which of them each step samples."""

from __future__ import annotations

import random

from cft_rl.data import DataError


class PromptSchedule:
    """Which questions step s (1-based) trains on: a fresh shuffle of all questions per epoch,
    consumed `per_step` at a time. A function of (seed, step) only, so a resumed run samples
    exactly what an uninterrupted one would."""

    def __init__(self, num_examples: int, per_step: int, seed: int) -> None:
        if num_examples < 1:
            raise DataError("no training questions")
        self.num_examples = num_examples
        self.per_step = per_step
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def indices(self, step: int) -> list[int]:
        start = (step - 1) * self.per_step
        return [self._at(position) for position in range(start, start + self.per_step)]

    def _at(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_examples)
        if epoch not in self._orders:
            order = list(range(self.num_examples))
            random.Random(f"grpo-prompts:{self.seed}:{epoch}").shuffle(order)
            self._orders = {epoch: order}  # only the current epoch is ever needed again
        return self._orders[epoch][offset]
