"""Find the final answer in a model response, in linear time.

Model output is untrusted: this runs in the main process, so it uses one pass
over the text, no recursion and no regular expression that can backtrack
badly, whatever the input (200 KB strings, thousands of nested braces).
"""

from __future__ import annotations

import re
from collections import deque

_BOX_COMMANDS = ("\\boxed", "\\fbox")
# Braces and backslashes are the only characters that matter for box matching.
_BRACE_TOKENS = re.compile(r"[{}\\]")
_NON_SPACE = re.compile(r"\S")  # an empty box commits to nothing
# "The answer is X", "Final answer: X", "**Answer:** X"; the last one wins.
_ANSWER_PHRASE = re.compile(r"answer(?:\*\*)?(?: is|:)", re.IGNORECASE)
_AFTER_PHRASE = " \t\n:*"  # "answer is: X", "**Answer:** X", an answer on the next line
# Where a one-line answer stops: a sentence end (a period before a space, so
# "3.5" survives) or the end of the line.
_ANSWER_END = re.compile(r"\.\s|\n")
_DELIMITERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"))


def extract_final_answer(text: str) -> str | None:
    """The answer a response commits to, or None when it commits to none.

    In order: the content of the last non-empty `\\boxed{...}` (or `\\fbox{...}`)
    that closes; else what follows the last GSM8K `####`; else what follows the
    last "answer is" / "answer:". Surrounding `$...$`, `\\(...\\)`, bold
    markers and trailing periods are stripped.
    """
    answer = _last_box(text)
    if answer is None:
        answer = _after_last_hashes(text)
    if answer is None:
        answer = _after_last_answer_phrase(text)
    if answer is None:
        return None
    answer = _strip_decoration(answer)
    return answer or None


def _last_box(text: str) -> str | None:
    """Content of the non-empty box that opens last among those that close, in one pass."""
    # Braces before the first box command cannot change which "}" closes a box.
    first = min((pos for pos in map(text.find, _BOX_COMMANDS) if pos >= 0), default=-1)
    if first < 0:
        return None
    open_braces: list[tuple[int, bool]] = []  # (position after "{", opens a box)
    best: tuple[int, int] | None = None  # (start, end) of the best box content
    skip_until = -1
    for match in _BRACE_TOKENS.finditer(text, first):
        pos = match.start()
        if pos < skip_until:
            continue
        char = text[pos]
        if char == "\\":
            # "\{", "\}" are literal braces and "\\" a line break: skip the pair.
            if text[pos + 1 : pos + 2] in ("{", "}", "\\"):
                skip_until = pos + 2
        elif char == "{":
            open_braces.append((pos + 1, _opens_box(text, pos)))
        elif open_braces:
            start, is_box = open_braces.pop()
            if is_box and (best is None or start > best[0]) and _NON_SPACE.search(text, start, pos):
                best = (start, pos)
    return None if best is None else text[best[0] : best[1]]


def _opens_box(text: str, brace_pos: int) -> bool:
    """Is the "{" at brace_pos the argument of \\boxed or \\fbox (spaces allowed)?"""
    end = brace_pos
    # Bounded look-back: at most a few spaces between the command and its brace.
    while end > 0 and brace_pos - end < 8 and text[end - 1] == " ":
        end -= 1
    return any(text.startswith(command, end - len(command)) for command in _BOX_COMMANDS)


def _after_last_hashes(text: str) -> str | None:
    pos = text.rfind("####")
    if pos < 0:
        return None
    line_end = text.find("\n", pos)
    return text[pos + 4 : line_end if line_end >= 0 else len(text)]


def _after_last_answer_phrase(text: str) -> str | None:
    last = deque(_ANSWER_PHRASE.finditer(text), maxlen=1)
    if not last:
        return None
    rest = text[last[0].end() :].lstrip(_AFTER_PHRASE)
    end = _ANSWER_END.search(rest)
    return rest[: end.start()] if end else rest


def _strip_decoration(answer: str) -> str:
    answer = _strip_periods(answer)
    stripped = True
    while stripped:  # at most a few rounds: each strips a pair not nested in itself
        stripped = False
        for left, right in _DELIMITERS:
            inner = answer[len(left) : -len(right)]
            if (
                len(answer) >= len(left) + len(right)
                and answer.startswith(left)
                and answer.endswith(right)
                and left not in inner
                and right not in inner
            ):
                answer = _strip_periods(inner)
                stripped = True
    return answer


def _strip_periods(answer: str) -> str:
    return answer.strip().rstrip(".").strip()
