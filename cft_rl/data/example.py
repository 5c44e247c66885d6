"""The unit every stage consumes: one problem with its reference final answer."""

from __future__ import annotations

from dataclasses import dataclass

from cft_rl.errors import UserError
from reward.choice import Choices


class DataError(UserError):
    """A data file or dataset that cannot be read; the message names the file, line or field."""


@dataclass(frozen=True)
class Example:
    """One problem. `answer` is the reference final answer as math-verify can parse it
    (e.g. "18" or "\\frac{1}{2}", no surrounding $); `solution` is the worked solution if any;
    `choices`, (letter, text) pairs, make it a multiple-choice question whose `answer` is the
    right option's letter or text (reward.grading.grade_choice)."""

    id: str
    question: str
    answer: str
    solution: str | None = None
    source: str = ""
    choices: Choices | None = None
