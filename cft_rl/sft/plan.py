"""Which examples each optimizer step, rank and micro-batch trains on.

The order is a pure function of (seed, epoch): every epoch is a fresh permutation of the
examples, cut into global batches (an incomplete last batch is left for the next epoch's
permutation). A resumed run therefore needs only the step number to see the same data, and
the split of a global batch over ranks and micro-batches changes how it is computed, never
which examples it holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cft_rl.errors import UserError


@dataclass(frozen=True)
class StepPlan:
    num_examples: int
    micro_batch_size: int
    accumulation_steps: int
    world_size: int
    seed: int
    epochs: float
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.steps_per_epoch == 0:
            raise UserError(
                f"{self.num_examples} training examples are fewer than one global batch of "
                f"{self.global_batch} (train.micro_batch_size x train.gradient_accumulation_steps "
                f"x {self.world_size} ranks); lower those or add data"
            )

    @property
    def global_batch(self) -> int:
        return self.micro_batch_size * self.accumulation_steps * self.world_size

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.global_batch

    @property
    def total_steps(self) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return max(1, math.ceil(self.epochs * self.steps_per_epoch))

    def epoch_of(self, step: int) -> float:
        """Epochs completed after optimizer step `step` (1-based)."""
        return step / self.steps_per_epoch

    def global_indices(self, step: int) -> list[int]:
        """The examples of optimizer step `step` (0-based), over all ranks."""
        epoch, position = divmod(step, self.steps_per_epoch)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.num_examples, generator=generator)
        start = position * self.global_batch
        return order[start : start + self.global_batch].tolist()

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        """Rank `rank`'s micro-batches of step `step`: accumulation_steps lists of indices."""
        per_rank = self.micro_batch_size * self.accumulation_steps
        mine = self.global_indices(step)[rank * per_rank : (rank + 1) * per_rank]
        size = self.micro_batch_size
        return [mine[start : start + size] for start in range(0, per_rank, size)]
