"""Readers that pull the question, the reference answer and the solution out of one raw
record of a benchmark file, and repairs of known defects in published files. Every reader
names the field it failed on."""

from __future__ import annotations

import re
from collections.abc import Callable

from cft_rl.data.answers import after_hashes, number_text, tidy_reference
from cft_rl.data.example import DataError
from cft_rl.data.records import Record
from reward.choice import Choices
from reward.extract import last_boxed

Reader = Callable[[Record], str]
SolutionReader = Callable[[Record], "str | None"]
ChoicesReader = Callable[[Record], "Choices | None"]
Repair = Callable[[Record], Record]


# --- question readers -------------------------------------------------------------------


def joined_fields(*fields: str, optional: tuple[str, ...] = ()) -> Reader:
    """The fields' texts in order, each ended as a sentence (SVAMP's body lacks its full stop);
    `optional` fields are used when present and non-empty."""

    def read(record: Record) -> str:
        parts = []
        for field in fields:
            if field in optional and not record.data.get(field):
                continue
            text = record.text(field)
            if len(fields) > 1 and field != fields[-1] and text[-1] not in ".?!:":
                text += "."
            parts.append(text)
        return " ".join(parts)

    return read


# "{field}" is a field; "{{" and "}}" are literal braces (LaTeX: "\\frac{{1}}{{2}}").
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{(\w+)\}")


# A choice label at the start of an option: "A)", "(A)", "A.", "A:" or MathQA's "a )".
_CHOICE_LABEL = re.compile(r"^\(?([A-Za-z]) ?[).:]\s*")
# Labels inside one string of options: "A) 4 B) 5", "(A) 4 (B) 5", "A. 4 B. 5", "A)4 B)5",
# MathQA's "a ) 4 , b ) 5". Only labels of the first one's case, lettered in order (A, B,
# C, ...), count, so "b." or "x)" inside an option's text starts no option.
_INLINE_LABEL = re.compile(r"(?:^|(?<=[\s,]))\(?([A-Ha-h]) ?[).:]\s*")


def choice_options(value: object, where: str) -> list[tuple[str, str]]:
    """Multiple-choice options as (letter, text) pairs, from a list of strings (labelled
    "A) ..." or not: unlabelled ones are lettered A, B, ... in order), a mapping of letter
    to text, or one string "A) ... B) ...". Fewer than two options is an error."""
    if isinstance(value, dict):
        options = [(str(key).strip().upper(), str(text).strip()) for key, text in value.items()]
    elif isinstance(value, list):
        options = []
        for index, item in enumerate(value):
            text = str(item).strip()
            label = _CHOICE_LABEL.match(text)
            if label:
                options.append((label[1].upper(), text[label.end() :].strip()))
            else:
                options.append((chr(ord("A") + index), text))
    elif isinstance(value, str):
        options = _inline_options(value, where)
    else:
        options = []
    if len(options) < 2:
        raise DataError(f"{where}: options should be two or more choices, got {value!r}")
    empty = [letter for letter, text in options if not text]
    if empty:
        raise DataError(f"{where}: option {empty[0]} has no text, in {value!r}")
    return options


def _inline_options(value: str, where: str) -> list[tuple[str, str]]:
    """The options of one string "A) 4 B) 5 C) 6" (see _INLINE_LABEL)."""
    labels: list[re.Match] = []
    for label in _INLINE_LABEL.finditer(value):
        letter = label[1]
        if labels and letter.isupper() != labels[0][1].isupper():
            continue
        if letter.upper() == chr(ord("A") + len(labels)):
            labels.append(label)
        elif labels and letter.upper() < chr(ord("A") + len(labels)):
            raise DataError(f"{where}: option label {letter} comes again, in {value!r}")
    options = []
    for index, label in enumerate(labels):
        end = labels[index + 1].start() if index + 1 < len(labels) else len(value)
        options.append((label[1].upper(), value[label.end() : end].strip().rstrip(",;").strip()))
    return options


def options_field(field: str, optional: bool = False) -> ChoicesReader:
    """A multiple-choice question's options as (letter, text) pairs (see choice_options);
    `optional`: a record with no options (null or absent) is no multiple-choice question."""

    def read(record: Record) -> Choices | None:
        value = record.data.get(field)
        if optional and not value:
            return None
        return tuple(choice_options(record.get(field), f"{record.where}: field '{field}'"))

    return read


def no_choices(record: Record) -> None:
    return None


def template_question(template: str, options: str | None = None) -> Reader:
    """The question as `template` with each `{field}` replaced by the record's field: text or
    a number as it is, a list one item per line, a mapping as `key) value` lines; `{{` and
    `}}` are literal braces. The
    `options` (multiple choice) is always laid out as "A) text" lines, whatever the
    file's layout (see choice_options). Only plain field names are substituted; nothing
    in a record is evaluated."""
    fields = [match[1] for match in _PLACEHOLDER.finditer(template) if match[1]]
    if not fields:
        raise ValueError(f"question template {template!r} names no {{field}}")
    numbered = [field for field in fields if field.isdigit()]
    if numbered:
        raise ValueError(
            f"question template {template!r}: {{{numbered[0]}}} is no field name; "
            "write literal braces as {{ and }} (\\frac{{1}}{{2}})"
        )

    def value(record: Record, field: str) -> str:
        raw = record.get(field)
        if field == options:
            where = f"{record.where}: field '{field}'"
            return "\n".join(f"{letter}) {text}" for letter, text in choice_options(raw, where))
        if isinstance(raw, list):
            return "\n".join(str(item).strip() for item in raw)
        if isinstance(raw, dict):
            return "\n".join(f"{key}) {str(item).strip()}" for key, item in raw.items())
        return record.text(field)

    def substitute(record: Record, match: re.Match) -> str:
        return value(record, match[1]) if match[1] else match[0][0]

    def read(record: Record) -> str:
        return _PLACEHOLDER.sub(lambda match: substitute(record, match), template).strip()

    return read


def tabmwp_question(record: Record) -> str:
    """TabMWP: the table (with its title) then the question, and the options if any."""
    title = record.data.get("table_title")
    about = f' regarding "{title}"' if title else ""
    question = f"Read the following table{about} and answer a question:\n"
    question += f"{record.text('table')}\n{record.text('question')}"
    if record.data.get("choices"):
        question += f" Please select from the following options: {record.get('choices')}"
    return question


# --- answer readers ---------------------------------------------------------------------


def text_answer(field: str, clean: Callable[[str], str] = str) -> Reader:
    """The field itself, cleaned (e.g. units in parentheses removed), $ delimiters dropped."""

    def read(record: Record) -> str:
        return tidy_reference(clean(record.text(field)))

    return read


def numeric_answer(field: str) -> Reader:
    """A number field (SVAMP's 145.0 -> "145")."""

    def read(record: Record) -> str:
        value = record.get(field)
        written = None if isinstance(value, bool) else number_text(value)
        if written is None:
            raise record.error(f"field '{field}' should be a number, got {value!r}")
        return written

    return read


def hashes_answer(field: str) -> Reader:
    """GSM8K: the final answer follows `####` at the end of the solution."""

    def read(record: Record) -> str:
        answer = after_hashes(record.text(field))
        if answer is None:
            raise record.error(f"field '{field}' has no '#### answer' line")
        return tidy_reference(answer)

    return read


def boxed_answer(field: str) -> Reader:
    """MATH-style solutions: the final answer is the last \\boxed{} of the solution."""

    def read(record: Record) -> str:
        answer = last_boxed(record.text(field))
        if answer is None:
            raise record.error(f"field '{field}' has no \\boxed{{}} answer")
        return tidy_reference(answer)

    return read


def answer_or_boxed(answer_field: str, solution_field: str) -> Reader:
    """The answer field when the file has one, else the last \\boxed{} of the solution."""
    from_answer, from_solution = text_answer(answer_field), boxed_answer(solution_field)

    def read(record: Record) -> str:
        return (from_answer if answer_field in record.data else from_solution)(record)

    return read


def list_answer(field: str) -> Reader:
    """OlympiadBench: a list of final answers, joined as one comma-separated answer."""

    def read(record: Record) -> str:
        value = record.get(field)
        if not isinstance(value, list) or not value:
            raise record.error(f"field '{field}' should be a non-empty list, got {value!r}")
        return ", ".join(tidy_reference(str(item)) for item in value)

    return read


def solution_field(field: str) -> SolutionReader:
    """The worked solution, when the file has one (a list holds alternatives: take the first)."""

    def read(record: Record) -> str | None:
        value = record.data.get(field)
        if isinstance(value, list):
            value = value[0] if value else None
        return str(value) if value else None

    return read


def no_solution(record: Record) -> None:
    return None


# --- repairs of known defects in published files ---------------------------------------

_TRAILING_ANSWER = re.compile(
    r"^(?P<question>.*?)\s*answers?\s*:\s*(?P<answer>[^\n]+)$", re.I | re.S
)


def answer_left_in_question(question_field: str, answer_field: str) -> Repair:
    """Gaokao2023-En has items whose answer field is empty and whose question ends with
    "answers: X": move X to the answer (and out of the question, where it gives it away)."""

    def repair(record: Record) -> Record:
        if str(record.data.get(answer_field, "")).strip():
            return record
        match = _TRAILING_ANSWER.match(str(record.data.get(question_field, "")))
        if match is None:
            return record
        fixed = {**record.data, question_field: match["question"], answer_field: match["answer"]}
        return Record(fixed, record.where)

    return repair


def unchanged(record: Record) -> Record:
    return record
