"""Find the answer a model response commits to, in linear time.

Model output is untrusted: this runs in the main process, so it uses one pass
over the text, no recursion and no regular expression that can backtrack
badly, whatever the input (200 KB strings, thousands of nested braces).

The rules (docs/verifier.md, "Which answer a response commits to"):
- the candidates are the last run of `\\boxed{...}`, the last GSM8K `####` line and the
  last "answer is" / "answer:" phrase; the one that starts last wins, so a closing
  "The final answer is X" overrides an earlier box, and "The answer is \\boxed{X}" is X.
  A `####` line or a phrase overrides a box only from after the box and only when it
  holds an answer (a digit, math or a choice letter: "... I hope this answer is helpful"
  does not), and a `####` line only when it starts like one ("#### 18", not a Markdown
  heading "#### Verification");
- boxes form one answer of several parts when only connecting text lies between them
  (`\\boxed{1}, \\boxed{2}`, `x_1 = \\boxed{2} \\quad x_2 = \\boxed{3}`): at most
  MAX_JOIN_GAP characters, none of JOIN_BREAKING_WORDS ("wait", "actually", "so", ...),
  and no sentence end or line break unless a part label follows ("... \\boxed{10}. Part
  (b): \\boxed{20}", "- (a) \\boxed{6}" then "- (b) \\boxed{8}" on the next line).
  Boxes further apart are a response revising itself: the last one wins;
- an answer phrase that judges rather than answers ("so the answer is correct") is none.
"""

from __future__ import annotations

import re
from collections import deque
from typing import NamedTuple

_BOX_COMMANDS = ("\\boxed", "\\fbox", "\\framebox")
# Braces and backslashes are the only characters that matter for box matching.
_BRACE_TOKENS = re.compile(r"[{}\\]")
_NON_SPACE = re.compile(r"\S")  # an empty box commits to nothing
# "The answer is X", "Final answer: X", "**Answer:** X", "The correct option is B"; the
# last one counts.
_ANSWER_PHRASE = re.compile(
    r"(?:answer|correct option|correct choice)(?:\*\*)?(?: is\b|:)", re.IGNORECASE
)
# "... so the answer is correct": a judgement of an answer given before, not an answer.
_JUDGEMENT = re.compile(
    r"(?:correct|incorrect|right|wrong|valid|consistent|reasonable|confirmed|indeed|not)\b",
    re.IGNORECASE,
)
# "The answer is therefore 7": words before the answer that are not part of it.
_FILLER = re.compile(r"(?:(?:therefore|thus|so|then|hence|clearly|simply|just)\b[\s,]*)*", re.I)
# What an answer that overrides a box holds: a digit, math, or a choice letter.
_ANSWER_LIKE = re.compile(r"[\d$\\^=/]|^\(?[A-Za-z]\)?$")
# A GSM8K answer line starts with a number or math, not a word (a Markdown heading
# "#### Verification")...
_HASHES_START = re.compile(r"[\s*]*[-+\d$\\(.]")
# ... or is a choice letter: "#### C", "#### C)", "#### **C**", "#### C) 12" (a capital; no
# "#### I." or "#### c", which are as likely a heading's numbering).
_HASHES_LETTER = re.compile(r"\s*(?:(\*\*)?[A-Z]\)?(?(1)\*\*)\s*$|[A-Z]\)\s+\S)")
_AFTER_PHRASE = " \t\n:*"  # "answer is: X", "**Answer:** X", an answer on the next line
# Where a one-line answer stops: a sentence end (a period before a space, so
# "3.5" survives) or the end of the line.
_ANSWER_END = re.compile(r"\.\s|\n")
_DELIMITERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"))
# The opt-in fallback: the last number in the text ("1,250", "-3.5").
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")

MAX_JOIN_GAP = 48
# Words between two boxes that mean the second is not a further part of the first:
# the response revises itself, or starts its conclusion anew.
JOIN_BREAKING_WORDS = frozenset({
    "wait", "no", "not", "actually", "but", "however", "instead", "mistake", "wrong",
    "correct", "correction", "recheck", "check", "hmm", "alternatively",
    "answer", "final", "so", "thus", "therefore", "hence", "then",
})  # fmt: skip
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
# "Part (b):", "(b)", "b)", "(ii)": the next part of a multi-part answer.
_PART_LABEL = re.compile(r"\bpart\b|\([a-h]\)|\b[a-h]\)|\([ivx]{1,4}\)", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z]+")


class _Box(NamedTuple):
    command_start: int  # where "\boxed" begins
    start: int  # the content's first character
    end: int  # the closing "}"


class _BoxRun(NamedTuple):
    """The last box and the run of boxes it ends (see the module docstring)."""

    command_start: int  # where the last box's "\boxed" begins
    end: int  # the last box's closing "}"
    parts: list[str]  # the contents of the run's boxes, in order


def extract_answer_parts(text: str, last_number_fallback: bool = False) -> tuple[str, ...]:
    """The parts of the answer `text` commits to: one for most responses, several for a
    run of boxes (see the module docstring); empty when it commits to none. With
    `last_number_fallback`, a response with no box, `####` or answer phrase gives its
    last number. Surrounding `$...$`, `\\(...\\)`, bold markers and trailing periods are
    stripped from each part."""
    box = _last_box_run(text)
    candidates = [] if box is None else [(box.command_start, box.parts)]
    for later in (_after_last_hashes(text), _after_last_answer_phrase(text)):
        if later is None:
            continue
        position, [content] = later
        if box is not None and position > box.command_start and _box_stays(position, box, content):
            continue
        candidates.append(later)
    for _, raw_parts in sorted(candidates, key=lambda candidate: candidate[0], reverse=True):
        parts = tuple(part for part in map(_strip_decoration, raw_parts) if part)
        if parts:  # the same part boxed twice is one answer
            return parts[:1] if len(set(parts)) == 1 else parts
    if last_number_fallback:
        last = deque(_NUMBER.finditer(text), maxlen=1)
        if last:
            return (last[0][0],)
    return ()


def _box_stays(position: int, box: _BoxRun, content: str) -> bool:
    """Does a `####` line or phrase starting at `position`, after the box begins, leave the
    box the answer? Yes when it sits inside the box, or holds prose rather than an answer."""
    return position < box.end or not _ANSWER_LIKE.search(_strip_decoration(content))


def last_boxed(text: str) -> str | None:
    """The content of the last box in `text` (braces matched; nested: the inner one), alone:
    how a reference or a solution written with boxes is read."""
    boxes = _closed_boxes(text)
    if not boxes:
        return None
    return text[boxes[-1].start : boxes[-1].end].strip() or None


def extract_final_answer(text: str, last_number_fallback: bool = False) -> str | None:
    """The answer `text` commits to as one string (see joined), or None."""
    return joined(extract_answer_parts(text, last_number_fallback)) or None


def joined(parts: tuple[str, ...]) -> str:
    """An answer of several parts as one: "1, 2, 3", which math-verify reads as their set."""
    return ", ".join(parts)


def _last_box_run(text: str) -> _BoxRun | None:
    boxes = _closed_boxes(text)
    if not boxes:
        return None
    run: deque[_Box] = deque([boxes[-1]])
    for box in reversed(boxes[:-1]):
        if box.end >= run[0].command_start:  # encloses the run's first box: not a part
            continue
        if not _only_connects(text, box.end + 1, run[0].command_start):
            break
        run.appendleft(box)
    return _BoxRun(run[-1].command_start, run[-1].end, [text[b.start : b.end] for b in run])


def _only_connects(text: str, start: int, end: int) -> bool:
    """Is text[start:end], between two boxes, only connecting text (", ", "and",
    "\\quad x_2 = ") rather than a sentence or a change of mind?"""
    if end - start > MAX_JOIN_GAP:
        return False
    gap = text[start:end]
    if not _balanced(gap):  # the gap leaves or enters another box: not between parts
        return False
    if (_SENTENCE_END.search(gap) or "\n" in gap) and not _PART_LABEL.search(gap):
        return False
    return not any(word.lower() in JOIN_BREAKING_WORDS for word in _WORD.findall(gap))


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _closed_boxes(text: str) -> list[_Box]:
    """Every non-empty box that closes, in the order their contents start, in one pass."""
    # Braces before the first box command cannot change which "}" closes a box.
    first = min((pos for pos in map(text.find, _BOX_COMMANDS) if pos >= 0), default=-1)
    if first < 0:
        return []
    open_braces: list[tuple[int, int | None]] = []  # (after "{", its box command's start)
    boxes: list[_Box] = []
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
            open_braces.append((pos + 1, _box_command_start(text, pos)))
        elif open_braces:
            start, command_start = open_braces.pop()
            if command_start is not None and _NON_SPACE.search(text, start, pos):
                boxes.append(_Box(command_start, start, pos))
    boxes.sort(key=lambda box: box.start)
    return boxes


def _box_command_start(text: str, brace_pos: int) -> int | None:
    """Where the \\boxed or \\fbox whose argument the "{" at brace_pos opens begins
    (spaces allowed before the brace), or None if it opens no box."""
    end = brace_pos
    # Bounded look-back: at most a few spaces between the command and its brace.
    while end > 0 and brace_pos - end < 8 and text[end - 1] == " ":
        end -= 1
    for command in _BOX_COMMANDS:
        if text.startswith(command, end - len(command)):
            return end - len(command)
    return None


def _after_last_hashes(text: str) -> tuple[int, list[str]] | None:
    pos = text.rfind("####")
    if pos < 0:
        return None
    line_end = text.find("\n", pos)
    content = text[pos + 4 : line_end if line_end >= 0 else len(text)]
    answer_like = _HASHES_START.match(content) or _HASHES_LETTER.match(content)
    return (pos, [content]) if answer_like else None


def _after_last_answer_phrase(text: str) -> tuple[int, list[str]] | None:
    last = deque(_ANSWER_PHRASE.finditer(text), maxlen=1)
    if not last:
        return None
    rest = text[last[0].end() :].lstrip(_AFTER_PHRASE)
    rest = rest[_FILLER.match(rest).end() :]  # the pattern also matches nothing
    if _JUDGEMENT.match(rest):
        return None
    end = _ANSWER_END.search(rest)
    return last[0].start(), [rest[: end.start()] if end else rest]


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
