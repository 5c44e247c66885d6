"""Which option letters a multiple-choice answer names: "B", "(B)", "B)", "B. 12",
"\\text{(B)}", "Option B"; "A and C" names two. Pure string work, linear in the answer."""

from __future__ import annotations

import re
from collections.abc import Sequence

Choices = Sequence[tuple[str, str]]  # (letter, option text), in the order shown

# \text{(B)}, \textbf{B}, \mathrm{B}: the letter inside.
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf)\s*\{([^{}]*)\}")
_LEAD_WORD = re.compile(r"^(?:option|choice)\s+", re.IGNORECASE)
# One letter, alone or followed by its option text after a separator: "B", "B)", "(B) 12",
# "B. 12", "B: 12". A capital letter directly followed by text ("Yes") is no letter.
_ONE_LETTER = re.compile(r"\(([A-Za-z])\)(?:\s.*)?|([A-Z])(?:[.:)](?:\s.*)?)?", re.DOTALL)
# Several letters: "A, C", "A and C", "(A)(C)", "A/C", "A or C".
_LETTER_TOKEN = r"(?:\([A-Za-z]\)|[A-Z])"
_SEPARATOR = r"(?:\s*[,;/&]\s*|\s+(?:and|or)\s+|\s+)"
_SEVERAL_LETTERS = re.compile(rf"{_LETTER_TOKEN}(?:{_SEPARATOR}{_LETTER_TOKEN})+")
# Longer answers are prose or an option's text, and the patterns stay cheap.
_MAX_LETTER_ANSWER = 200
_LONE_LETTER = re.compile(r"(?<![A-Za-z])([A-Za-z])(?![A-Za-z])")


def named_letters(answer: str) -> tuple[str, ...] | None:
    """The option letters `answer` names (upper case, in order), or None when it is no
    letter answer (then it may be an option's text)."""
    if len(answer) > _MAX_LETTER_ANSWER:
        return None
    text = _TEXT_COMMAND.sub(r"\1", answer).replace("$", "").strip()
    text = _LEAD_WORD.sub("", text).replace(")(", ") (")
    if _SEVERAL_LETTERS.fullmatch(text):
        return tuple(letter.upper() for letter in _LONE_LETTER.findall(text))
    one = _ONE_LETTER.fullmatch(text)
    return ((one[1] or one[2]).upper(),) if one else None
