"""Is an extracted answer equal to a reference answer? Normalisation, then math-verify.

Runs inside the verifier's worker processes (reward.verifier), which enforce the
timeout; never call it on untrusted text in the main process.

Order of checks, cheapest first:
1. the two answers written the same way, up to spacing, `$` delimiters, a final full
   stop, \\text{} wrappers and (for plain words) letter case;
2. math-verify on the answers as written (it already handles "x = 3" vs "3", degrees,
   "50\\%" vs "50", intervals, sets, thousands separators, \\text{} units);
3. math-verify on other readings of the same answer: a number with its unit dropped
   ("20 cm^{2}", "18 dollars", "9 (apples)"), a percentage as a fraction (50% = 0.5) and
   an inequality in one variable as its interval ("x > 3" = "(3, \\infty)",
   "1 \\le x \\le 5" = "[1, 5]"), which math-verify does not equate.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from decimal import Decimal, InvalidOperation

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from reward.choice import Choices, named_letters
from reward.extract import joined, last_boxed

_CONFIGS = [LatexExtractionConfig(), ExprExtractionConfig()]

_DELIMITERS = (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_FRACTIONS = re.compile(r"\\[dt]frac")
# "-1./3": a decimal point with no decimals, as Python prints floats.
_BARE_POINT = re.compile(r"(?<=\d)\.(?!\d)")
# 4.5e33 as a physicist writes it -> 4.5\times10^{33}, which math-verify reads.
_E_NOTATION = re.compile(r"(?<![\w.\\])(\d+(?:\.\d+)?)[eE]([-+]?\d+)(?![\w.])")
# Commands whose argument is plain text (units, words).
_TEXT_COMMAND = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\(?:[,;:! ]|quad|qquad|left|right)|~|\s+")

_NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?"
# A unit after a number: words (2+ letters), parenthesised words, exponents, "/" and spacing.
_UNIT_TOKEN = r"(?:[A-Za-z]{2,}|\([A-Za-z -]+\)|\^\{?-?\d\}?|/|\\cdot|[ ~])"
_NUMBER_WITH_UNIT = re.compile(rf"(?P<number>{_NUMBER})\s*(?P<unit>{_UNIT_TOKEN}+)")
# Words that join or build mathematics rather than name a unit: "2 and 3" is no "2".
_CONNECTIVES = {"and", "or", "to", "plus", "minus", "times", "over", "divided"}
_FUNCTIONS = {"pi", "sqrt", "sin", "cos", "tan", "cot", "sec", "csc", "log", "ln", "exp", "mod"}
_NOT_UNITS = frozenset(_CONNECTIVES | _FUNCTIONS | {"inf", "infty"})
_PERCENT = re.compile(rf"(?P<number>{_NUMBER})\s*\\?%")

_RELATION = r"\\leqslant|\\geqslant|\\leq|\\geq|\\le|\\ge|\\lt|\\gt|<=|>=|<|>|≤|≥"
_INCLUSIVE = frozenset(
    {"\\leqslant", "\\geqslant", "\\leq", "\\geq", "\\le", "\\ge", "<=", ">=", "≤", "≥"}
)
_GREATER = frozenset({"\\geqslant", "\\geq", "\\ge", "\\gt", ">=", ">", "≥"})
_BOUND = rf"(?:(?!{_RELATION})[^=])+?"  # a bound holds no relation of its own
_MAX_INEQUALITY = 120
# "x > 3", "x \\le -2"; "a < x < b", "a \\le x < b" (the variable a single letter).
_ONE_SIDED = re.compile(rf"\s*[A-Za-z]\s*(?P<rel>{_RELATION})\s*(?P<bound>{_BOUND})\s*")
_TWO_SIDED = re.compile(
    rf"\s*(?P<low>{_BOUND})\s*(?P<rel1>{_RELATION})\s*[A-Za-z]\s*(?P<rel2>{_RELATION})\s*(?P<high>{_BOUND})\s*"
)


def grade_answer(parts: Sequence[str], reference: str, choices: Choices | None = None) -> bool:
    """Is the answer of `parts` (reward.extract.extract_answer_parts) the reference?

    Several parts are one answer: the set of them ("1, 2, 3" against "\\{1,2,3\\}" or
    "x_1=1, x_2=2"), or the ordered tuple where the reference is written as one "(a, b)".
    With `choices` the question is multiple choice: see grade_choice.
    """
    predicted = joined(parts)
    reference = _reference_answer(reference)
    if choices:
        return grade_choice(predicted, reference, choices)
    if len(parts) > 1 and _is_tuple(_tidy(reference)):
        predicted = f"({predicted})"
    return grade(predicted, reference)


def _reference_answer(reference: str) -> str:
    """A reference written with boxes (a solution kept whole) is its last box, as the data
    loaders read a solution field: "\\boxed{3} ... \\boxed{5}" is 5, not the set of both,
    and its prose is no answer."""
    return last_boxed(reference) or reference


def grade_choice(predicted: str, reference: str, choices: Choices) -> bool:
    """A multiple-choice answer: right when it names the reference's option by its letter
    alone ("B", "(B)", "B) 12", "\\text{(B)}"), or, naming no letter, equals that option's
    text or value. A wrong letter, a letter beyond the options and an answer naming two
    letters are wrong. `reference` is the right option's letter or its text (one that
    names no option is graded as a plain answer)."""
    right = _reference_option(reference, choices)
    if right is None:  # a reference that names no option: grade the answer against it
        return grade(predicted, reference)
    letters = named_letters(predicted)
    if letters is not None and set(letters) <= {letter for letter, _ in choices}:
        return letters == (right[0],)
    # No option's letter: the option's text or value ("Y" may be the text of option B).
    return grade(predicted, right[1])


def _reference_option(reference: str, choices: Choices) -> tuple[str, str] | None:
    """The option the reference names: by its letter, else by its text or value."""
    letters = named_letters(reference)
    for letter, text in choices:
        if letters == (letter,):
            return letter, text
    written = _written_key(_tidy(reference))
    for letter, text in choices:
        if _written_key(_tidy(text)) == written:
            return letter, text
    return next(((letter, text) for letter, text in choices if grade(reference, text)), None)


def _is_tuple(answer: str) -> bool:
    """ "(a, b)" with its comma at the top level (not "(1, 2) \\cup (3, 4)")."""
    if not (answer.startswith("(") and answer.endswith(")")):
        return False
    depth = 0
    for index, char in enumerate(answer):
        depth += {"(": 1, "[": 1, "{": 1, ")": -1, "]": -1, "}": -1}.get(char, 0)
        if depth == 0 and index < len(answer) - 1:
            return False
    return "," in answer


def grade(predicted: str, reference: str) -> bool:
    """True when `predicted` and `reference` denote the same mathematical answer."""
    pred, gold = _tidy(predicted), _tidy(reference)
    if not pred or not gold:
        return False
    if _written_key(pred) == _written_key(gold):
        return True
    return any(_math_equal(gold_text, pred_text) for gold_text, pred_text in _readings(gold, pred))


def _tidy(answer: str) -> str:
    """The answer without what never changes its meaning: delimiters, a final full stop,
    \\dfrac/\\tfrac spellings; e-notation rewritten as LaTeX."""
    answer = answer.strip()
    changed = True
    while changed:
        changed = False
        answer = answer.rstrip(". ").strip()
        for left, right in _DELIMITERS:
            wrapped = answer.startswith(left) and answer.endswith(right)
            if wrapped and len(answer) > len(left) + len(right):
                answer = answer[len(left) : -len(right)].strip()
                changed = True
    answer = _BARE_POINT.sub("", _FRACTIONS.sub(r"\\frac", answer))
    return _E_NOTATION.sub(r"\1\\times10^{\2}", answer)


def _written_key(answer: str) -> str:
    """The answer as written, ignoring spacing and text wrappers; words ignore letter case
    (but LaTeX keeps it: \\Omega is not \\omega)."""
    key = _SPACING.sub("", _TEXT_COMMAND.sub(r"\1", answer))
    return key if "\\" in key else key.lower()


def _readings(gold: str, pred: str) -> Iterator[tuple[str, str]]:
    """(gold, pred) pairs to compare, the answers as written first."""
    yield gold, pred
    gold_number, pred_number = _without_unit(gold), _without_unit(pred)
    if gold_number or pred_number:
        yield gold_number or gold, pred_number or pred
    gold_fraction, pred_fraction = _percent_as_fraction(gold), _percent_as_fraction(pred)
    if gold_fraction or pred_fraction:
        yield gold_fraction or gold, pred_fraction or pred
    gold_interval, pred_interval = _inequality_as_interval(gold), _inequality_as_interval(pred)
    if gold_interval or pred_interval:
        yield gold_interval or gold, pred_interval or pred


def _without_unit(answer: str) -> str | None:
    """The number of "number unit" answers ("20 cm^{2}" -> "20"), else None."""
    match = _NUMBER_WITH_UNIT.fullmatch(_TEXT_COMMAND.sub(r" \1", answer).strip())
    if match is None or not any(c.isdigit() for c in match["number"]):
        return None
    words = {word.lower() for word in re.findall(r"[A-Za-z]+", match["unit"])}
    if not words or words & _NOT_UNITS:
        return None
    return match["number"]


def _percent_as_fraction(answer: str) -> str | None:
    """ "50\\%" -> "0.5", else None."""
    match = _PERCENT.fullmatch(answer)
    if match is None:
        return None
    try:
        fraction = Decimal(match["number"].replace(",", "")) / 100
    except InvalidOperation:
        return None
    return format(fraction.normalize(), "f")


def _inequality_as_interval(answer: str) -> str | None:
    """ "x > 3" -> "(3, \\infty)", "1 \\le x < 5" -> "[1, 5)", else None. Answers longer
    than _MAX_INEQUALITY are none (the bound patterns are not linear in the length)."""
    if len(answer) > _MAX_INEQUALITY:
        return None
    one = _ONE_SIDED.fullmatch(answer)
    if one:
        rel, bound = one["rel"], one["bound"].strip()
        if rel in _GREATER:
            return f"{'[' if rel in _INCLUSIVE else '('}{bound}, \\infty)"
        return f"(-\\infty, {bound}" + ("]" if rel in _INCLUSIVE else ")")
    two = _TWO_SIDED.fullmatch(answer)
    if two and two["rel1"] not in _GREATER and two["rel2"] not in _GREATER:
        left = "[" if two["rel1"] in _INCLUSIVE else "("
        right = "]" if two["rel2"] in _INCLUSIVE else ")"
        return f"{left}{two['low'].strip()}, {two['high'].strip()}{right}"
    return None


def _math_equal(gold_text: str, pred_text: str) -> bool:
    gold = parse(f"${gold_text}$", extraction_config=_CONFIGS, parsing_timeout=None)
    pred = parse(f"${pred_text}$", extraction_config=_CONFIGS, parsing_timeout=None)
    if not gold or not pred:
        return False
    return bool(verify(gold, pred, timeout_seconds=None))
