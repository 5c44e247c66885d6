"""One event of a toy problem: the change to the count, with the wording chosen for it.

Shared by the problem generator (cft_rl.data.toy_problems) and the solution writers
(its own terse one and cft_rl.data.toy_prose).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["add", "sub", "bags"]


@dataclass(frozen=True)
class Event:
    """One change to the count: `add`/`sub` change it by `amount`, `bags` adds count * size."""

    kind: Kind
    amount: int = 0
    count: int = 0
    size: int = 0
    # Wording, chosen with the event; does not change the arithmetic.
    verb: str = ""  # question phrase
    gerund: str = ""  # solution phrase
    container: str = ""

    @property
    def delta(self) -> int:
        if self.kind == "add":
            return self.amount
        if self.kind == "sub":
            return -self.amount
        return self.count * self.size
