"""Token classes (digits, operators, words, ...): how the reports and the toy worlds' texture
measurement break response tokens down."""

from __future__ import annotations

import re

CLASSES = ("digits", "operators", "words", "whitespace/punctuation", "mixed", "special")
OPERATORS = set("+-*/=×÷^<>%")
# Special tokens as they decode: <|im_end|>, </s>, <eos>, ...
_SPECIAL = re.compile(r"^(<\|[^|]*\|>|</?s>|<[a-z_]+>)$")


def token_class(piece: str) -> str:
    """The class of a token's text; surrounding spaces do not count (" 5" is a digit)."""
    if _SPECIAL.match(piece):
        return "special"
    core = piece.strip()
    if not core or all(not ch.isalnum() and ch not in OPERATORS for ch in core):
        return "whitespace/punctuation"
    if all(ch in "0123456789" for ch in core):
        return "digits"
    if all(ch in OPERATORS for ch in core):
        return "operators"
    if core.isalpha():
        return "words"
    return "mixed"
