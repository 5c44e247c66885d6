"""Which answer a response commits to, answers in several boxes, and multiple choice: both
sides (right and wrong) of every rule in docs/verifier.md."""

from __future__ import annotations

import pytest

from reward import Verifier, compute_score
from reward.choice import named_letters
from reward.extract import MAX_JOIN_GAP, extract_answer_parts
from reward.grading import grade_answer

# --- the last answer wins ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        # A closing "final answer" after a box overrides the box ...
        ("\\boxed{12} ... Final Answer: The final answer is $10,455$. I hope", ("10,455",)),
        # ... and a box after an answer phrase overrides the phrase.
        ("Answer: 12. Checking again, the total is \\boxed{14}.", ("14",)),
        ("The answer is \\boxed{5}.", ("5",)),
        ("The answer is 7.\n#### 8", ("8",)),
        ("#### 8\nThe answer is 7.", ("7",)),
        # A phrase that judges an earlier answer is no answer of its own.
        ("\\boxed{7}. So the answer is correct.", ("7",)),
        ("\\boxed{7}. The answer is wrong, so \\boxed{8}.", ("8",)),
        ("The correct option is B.", ("B",)),
        # An empty commitment yields to the one before it.
        ("\\boxed{3}\nThe answer is:", ("3",)),
    ],
)
def test_the_answer_that_comes_last_wins(text: str, parts: tuple[str, ...]) -> None:
    assert extract_answer_parts(text) == parts


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        # Prose after a box, in an answer phrase's words, leaves the box the answer ...
        ("\\boxed{5}. I'm sure the answer isn't 6.", ("5",)),
        ("So \\boxed{42}. I hope this answer is helpful.", ("42",)),
        ("\\boxed{18}\n\nThe answer is not affected by rounding.", ("18",)),
        # ... as does a phrase inside the box, and a Markdown heading after it.
        ("\\boxed{\\text{Answer: } 12}", ("\\text{Answer: } 12",)),
        ("\\boxed{5}.\n\n#### Verification\nIt checks out.", ("5",)),
        # Filler words before an answer are not part of it.
        ("So \\boxed{7}. The answer is therefore 7.", ("7",)),
        ("The answer is thus $\\frac{1}{2}$.", ("\\frac{1}{2}",)),
    ],
)
def test_prose_after_a_box_does_not_override_it(text: str, parts: tuple[str, ...]) -> None:
    assert extract_answer_parts(text) == parts


# --- several boxes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("\\boxed{1}, \\boxed{2}, \\boxed{3}", ("1", "2", "3")),
        ("\\boxed{k = 45} \\quad \\text{and} \\quad \\boxed{n = 2}", ("k = 45", "n = 2")),
        ("$x_1 = \\boxed{2}$, \\quad $x_2 = \\boxed{-3}$", ("2", "-3")),
        ("- (a) \\boxed{6}\n- (b) \\boxed{8}", ("6", "8")),
        ("Part (a): \\boxed{10}. Part (b): \\boxed{20}.", ("10", "20")),
        ("\\boxed{2} or \\boxed{-2}", ("2", "-2")),
    ],
)
def test_boxes_joined_by_connecting_text_are_one_answer(text, parts) -> None:
    assert extract_answer_parts(text) == parts


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{4}. " + "x" * MAX_JOIN_GAP + " \\boxed{5}",  # too far apart
        "\\boxed{4}, wait, \\boxed{5}",  # a revision
        "\\boxed{4} no no no \\boxed{5}",
        "\\boxed{4}, so \\boxed{5}",  # a new conclusion
        "\\boxed{4} **Final Answer** \\boxed{5}",
        "\\boxed{4}. It is \\boxed{5}",  # a sentence end, no part label
        "\\boxed{\\boxed{4}, 5}, \\boxed{5}",  # a box inside another is no part
        "Step 1: \\boxed{4}\nStep 2: \\boxed{5}",  # a line break, no part label
        "\\boxed{4}\n\n\\boxed{5}",
    ],
)
def test_boxes_apart_or_revised_are_not_merged(text) -> None:
    assert extract_answer_parts(text) == ("5",)


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        ("#### C", ("C",)),
        ("#### C)", ("C)",)),
        ("#### (C)", ("(C)",)),
        ("#### **B**", ("B",)),
        ("#### C) 12", ("C) 12",)),
    ],
)
def test_a_hashes_line_may_be_a_choice_letter(text, parts) -> None:
    assert extract_answer_parts(text) == parts


@pytest.mark.parametrize(
    "text", ["#### Verification", "#### A note", "#### B and C", "#### I.", "#### c", "#### C)**"]
)
def test_a_hashes_line_of_words_is_a_heading(text) -> None:
    assert extract_answer_parts(text) == ()
    assert extract_answer_parts(f"\\boxed{{2}}\n\n{text}") == ("2",)  # and overrides no box


def test_the_same_box_twice_is_one_answer() -> None:
    assert extract_answer_parts("So \\boxed{143}\n\n**Final Answer**\n\\boxed{143}") == ("143",)
    assert extract_answer_parts("\\boxed{2} and \\boxed{2}") == ("2",)


@pytest.mark.parametrize(
    ("parts", "reference", "correct"),
    [
        (("1", "2", "3"), "\\{3, 2, 1\\}", True),  # a set: any order
        (("1", "2", "3"), "\\{1, 2, 4\\}", False),
        (("2", "-3"), "x_1 = 2, x_2 = -3", True),
        (("2", "3"), "x_1 = 2, x_2 = -3", False),
        (("3", "5"), "(3, 5)", True),  # a tuple: in order
        (("5", "3"), "(3, 5)", False),
        (("1", "2"), "2", False),  # two answers against one
        (("2",), "1, 2", False),  # one answer against two
        (("1", "2"), "(1, 2) \\cup (3, 4)", False),  # no tuple: a union of intervals
    ],
)
def test_several_parts_are_graded_together(parts, reference, correct) -> None:
    assert grade_answer(parts, reference) is correct


_FAR_APART = "\\boxed{3}. " + "x" * MAX_JOIN_GAP + " \\boxed{5}"


@pytest.mark.parametrize(
    ("parts", "reference", "correct"),
    [
        (("3", "5"), _FAR_APART, False),  # far-apart boxes are no set of both
        (("5",), _FAR_APART, True),  # the last box is the reference's answer
        (("3",), _FAR_APART, False),
        (("5",), "\\boxed{3}, \\boxed{5}", True),  # near or far: the last box, as loaders read
        (("3", "5"), "\\boxed{3}, \\boxed{5}", False),
        (("5",), "The answer is \\boxed{5}.", True),
        (("5",), "\\boxed{5}\n\nThe answer is 5 because 2 + 3 = 5", True),  # prose: no answer
    ],
)
def test_a_reference_with_boxes_is_its_last_box(parts, reference, correct) -> None:
    assert grade_answer(parts, reference) is correct


# --- the last-number fallback ------------------------------------------------------------------


def test_the_last_number_fallback_is_off_unless_asked() -> None:
    text = "5 * 4 = 20, so there are 20 marbles, 1,250 grams in all"
    assert extract_answer_parts(text) == ()
    assert extract_answer_parts(text, last_number_fallback=True) == ("1,250",)
    # A response that commits to an answer is graded on it, fallback or not.
    assert extract_answer_parts("\\boxed{7}, from 3 + 4", last_number_fallback=True) == ("7",)
    assert extract_answer_parts("no digits here", last_number_fallback=True) == ()


def test_the_verifier_applies_the_fallback_only_when_asked() -> None:
    with Verifier(1) as strict, Verifier(1, last_number_fallback=True) as lenient:
        assert strict.verify("so there are 20 marbles", "20").reason == "no_answer"
        assert lenient.verify("so there are 20 marbles", "20").correct
        assert not lenient.verify("so there are 21 marbles", "20").correct


# --- multiple choice ------------------------------------------------------------------------

OPTIONS = (("A", "12"), ("B", "\\frac{1}{2}"), ("C", "15"), ("D", "none of these"))


@pytest.mark.parametrize(
    "answer", ["B", "(B)", "B)", "B.", "(b)", "\\text{(B)}", "\\textbf{B}", "Option B", "B) 0.5"]
)
def test_every_way_of_writing_a_letter_names_it(answer) -> None:
    assert named_letters(answer) == ("B",)
    assert grade_answer((answer,), "B", OPTIONS)


@pytest.mark.parametrize("answer", ["A and C", "A, C", "(A)(C)", "A/C", "(A) or (C)"])
def test_an_answer_naming_two_letters_names_both_and_is_wrong(answer) -> None:
    assert named_letters(answer) == ("A", "C")
    assert not grade_answer((answer,), "C", OPTIONS)


@pytest.mark.parametrize("answer", ["Yes", "I think so", "12", "B 12", "NO"])
def test_words_and_numbers_are_no_letters(answer) -> None:
    assert named_letters(answer) is None


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [
        ("C", "B", False),  # the wrong letter
        ("E", "B", False),  # beyond the options
        ("0.5", "B", True),  # the option's value
        ("\\frac{1}{2}", "B", True),  # the option's text
        ("15", "B", False),  # another option's text
        ("7", "B", False),  # no option at all
        ("B", "\\frac{1}{2}", True),  # the reference written as the option's text
        ("D", "none of these", True),
        ("none of these", "D", True),
    ],
)
def test_choices_are_graded_by_letter_or_option(answer, reference, correct) -> None:
    assert grade_answer((answer,), reference, OPTIONS) is correct


def test_several_boxed_letters_are_wrong() -> None:
    assert not grade_answer(("A", "B"), "B", OPTIONS)


def test_the_verifier_and_verls_reward_take_the_options() -> None:
    with Verifier(1) as verifier:
        assert verifier.verify("The answer is (B).", "B", OPTIONS).correct
        assert verifier.verify("\\boxed{0.5}", "B", OPTIONS).correct
        assert not verifier.verify("\\boxed{0.5}", "B").correct  # no options: "0.5" is no "B"
        batch = verifier.verify_batch(["\\boxed{B}", "\\boxed{C}"], ["B", "B"], [OPTIONS, OPTIONS])
        assert [v.correct for v in batch] == [True, False]
    extra_info = {"choices": [list(option) for option in OPTIONS]}
    assert compute_score("mc", "\\boxed{0.5}", "B", extra_info)["score"] == 1.0
    assert compute_score("mc", "\\boxed{C}", "B", extra_info)["score"] == 0.0


# --- inequalities and intervals -------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "reference", "correct"),
    [
        ("x > 3", "(3, \\infty)", True),
        ("x \\ge 3", "(3, \\infty)", False),
        ("x \\le 5", "(-\\infty, 5]", True),
        ("x < 5", "(-\\infty, 5]", False),
        ("-2 < x \\le 4", "(-2, 4]", True),
        ("-2 < x \\le 4", "[-2, 4]", False),
        ("[1, 5]", "1 \\le x \\le 5", True),
    ],
)
def test_an_inequality_in_one_variable_is_its_interval(answer, reference, correct) -> None:
    assert grade_answer((answer,), reference) is correct


def test_an_option_whose_text_is_a_capital_letter_is_named_by_it() -> None:
    points = (("A", "X"), ("B", "Y"))
    assert grade_answer(("Y",), "B", points)
    assert grade_answer(("B",), "B", points)
    assert not grade_answer(("X",), "B", points)


def test_a_reference_that_names_no_option_is_graded_as_an_answer() -> None:
    assert grade_answer(("17",), "17", OPTIONS)
    assert not grade_answer(("B",), "17", OPTIONS)


def test_an_answer_longer_than_an_inequality_is_not_read_as_one() -> None:
    from reward.grading import _inequality_as_interval

    # Without the length bound, the interval patterns take seconds on the long one.
    assert _inequality_as_interval("x" + " " * 2000 + "< 3") is None
    assert _inequality_as_interval("x < 3") == "(-\\infty, 3)"
