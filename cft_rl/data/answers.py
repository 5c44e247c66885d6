"""Turning the answer fields of benchmark files into reference answers math-verify can parse."""

from __future__ import annotations

import re
from decimal import Decimal

from reward.extract import last_boxed

_NUMBER = re.compile(r"[-+]?(\d{1,3}(,\d{3})+|\d+)?(\.\d+)?")
_DOLLAR = re.compile(r"(?<!\\)\$")
_PARENTHESISED_UNIT = re.compile(r"^(?P<value>.+?)\s*\((?P<unit>[^()]*[A-Za-z][^()]*)\)$")
_SENTENCE_END_AFTER_MATH = re.compile(r"(?<=[\d})\]])\s*\.$")


def number_text(value: float | int | str) -> str | None:
    """A number written plainly: 145.0 -> "145", "1,000" -> "1000", "080" -> "80";
    None when `value` is not a plain decimal number."""
    if isinstance(value, float):
        number = Decimal(repr(value))  # repr: the shortest text that round-trips (0.1, 1e-05)
    else:
        text = str(value).strip()
        if not _NUMBER.fullmatch(text) or not any(c.isdigit() for c in text):
            return None
        number = Decimal(text.replace(",", ""))
    if not number.is_finite():
        return None
    written = format(number.normalize(), "f")
    return "0" if written in ("-0", "+0") else written.lstrip("+")


def after_hashes(solution: str) -> str | None:
    """The final answer of a GSM8K-style solution: what follows the last `####`."""
    if "####" not in solution:
        return None
    answer = solution.rsplit("####", 1)[1].strip()
    return answer or None


def without_math_delimiters(text: str) -> str:
    """`$...$` answers without their dollar signs (an escaped \\$ is kept: it is currency)."""
    return _DOLLAR.sub("", text).strip()


def without_parenthesised_unit(text: str) -> str:
    """ "9 (apples)" -> "9": ASDiv writes the unit in parentheses after the value."""
    match = _PARENTHESISED_UNIT.match(text.strip())
    return match["value"] if match else text.strip()


def tidy_reference(text: str) -> str:
    """Final clean-up shared by every benchmark: no $ delimiters, no full stop after a
    formula ("$x=3$." but not "3:30 p.m."), plain numbers written canonically."""
    text = _SENTENCE_END_AFTER_MATH.sub("", without_math_delimiters(text).strip())
    return number_text(text) or text


def auto_reference(value: object) -> str | None:
    """A reference answer from a field of unknown style: a number, a GSM8K solution with
    `####`, a solution with \\boxed{}, or the answer itself."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return number_text(value)
    if not isinstance(value, str):
        return None
    answer = after_hashes(value) or last_boxed(value) or value
    return tidy_reference(answer) or None
