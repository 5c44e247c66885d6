"""When is a response's final answer complete? Used to stop decoding early.

Two answer formats are recognised, those of our prompts:
- GSM8K style: a line `#### N`; complete when that line ends (a newline follows N).
- `\\boxed{...}`: complete when the braces of the first `\\boxed{` close.
A response is complete from the first token after which its text satisfies one of
them; both rules only turn true on a newline or a closing brace, so a backend need
only check when a generated token contains one of TRIGGER_CHARS.
"""

from __future__ import annotations

import re

TRIGGER_CHARS = ("\n", "}")

_HASH_LINE = re.compile(r"####[ \t]*\S[^\n]*\n")
_BOXED = "\\boxed{"


def answer_complete(text: str) -> bool:
    """True once `text` holds a finished `#### N` line or a closed `\\boxed{...}`."""
    return bool(_HASH_LINE.search(text)) or _boxed_closed(text)


def _boxed_closed(text: str) -> bool:
    start = text.find(_BOXED)
    while start != -1:
        depth = 0
        for char in text[start + len(_BOXED) - 1 :]:
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return True
        start = text.find(_BOXED, start + 1)
    return False


def is_trigger(tokenizer, token_id: int) -> bool:
    """Whether `token_id` can complete an answer (its text has a newline or closing brace)."""
    piece = tokenizer.decode([token_id])
    return any(char in piece for char in TRIGGER_CHARS)


def answer_cut(tokenizer, token_ids: list[int]) -> int | None:
    """Length of the shortest prefix of `token_ids` whose text has a complete answer."""
    for end, token_id in enumerate(token_ids, start=1):
        if is_trigger(tokenizer, token_id) and answer_complete(
            tokenizer.decode(token_ids[:end], skip_special_tokens=True)
        ):
            return end
    return None
