"""reward.grading.grade: the same answer written differently is equal, a different one is not."""

from __future__ import annotations

import pytest

from reward.grading import grade

SAME = [
    ("3", "x = 3"),
    ("x=3", "3"),
    ("1,000", "1000"),
    ("50\\%", "50"),
    ("0.5", "50\\%"),
    ("12.5%", "0.125"),
    ("36^\\circ", "36"),
    ("36 degrees", "36^{\\circ}"),
    ("\\$18", "18"),
    ("18 dollars", "18"),
    ("\\text{18 dollars}", "18"),
    ("20", "20 cm^{2}"),
    ("5\\mathrm{~cm}", "5"),
    ("2", "2 (apples)"),
    ("12 star-shaped stones", "12"),
    ("\\text{Evelyn}", "Evelyn"),
    ("yes", "Yes."),
    ("(C)", "C"),
    ("No solution", "No solution."),
    ("3:30 p.m", "3:30 p.m."),
    ("[2,\\infty)", "[2, \\infty)"),
    ("(-\\infty,-5)", "x<-5"),
    ("\\{1,2\\}", "1, 2"),
    ("\\frac{1}{3},-2,5", "-2,\\frac{1}{3},5"),
    ("\\dfrac{1}{2}", "0.5"),
    ("b^2-9a^2", "b ^ { 2 } - 9 a ^ { 2 }"),
    ("y = \\frac{6}{x}", "y=6/x"),
    ("4.5 \\times 10^{33}", "4.5e33"),
    ("-1/3", "-1./3"),
    ("$\\left( 3, \\frac{\\pi}{2} \\right)$", "\\left( 3, \\frac{\\pi}{2} \\right)"),
]

DIFFERENT = [
    ("4", "5"),
    ("x=4", "5"),
    ("12", "1,2"),
    ("(1,2)", "(2,1)"),
    ("C", "B"),
    ("Evelyn", "Ann"),
    ("2 and 3", "2"),
    ("2 x", "2"),
    ("2 pi", "2"),
    ("20 cm", "2"),
    ("51\\%", "0.5"),
    ("4.5e32", "4.5e33"),
    ("", "3"),
]


@pytest.mark.parametrize(("predicted", "reference"), SAME)
def test_same_answer_written_differently(predicted, reference):
    assert grade(predicted, reference)


@pytest.mark.parametrize(("predicted", "reference"), DIFFERENT)
def test_different_answers(predicted, reference):
    assert not grade(predicted, reference)
