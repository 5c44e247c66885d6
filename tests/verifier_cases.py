"""Model-style responses with a reference and the verdict a careful human grader gives,
grouped by class: the set bench/verifier_agreement.py scores with reward.Verifier and with
plain math-verify (docs/verifier.md), and tests/test_verifier_agreement.py holds to its bar.

Written for this project, after the kinds of output real models produce (boxed answers,
Minerva's closing line, GSM8K's `####`, answers spread over several boxes, responses that
revise themselves). `expected` is whether the response's final answer is the reference,
judged as a person would, not as any grader does: where the verifier disagrees, the case
stays and docs/verifier.md says why.
"""

# ruff: noqa: E501  (responses are long strings, kept whole so they read as a model wrote them)
from __future__ import annotations

from typing import NamedTuple


class Case(NamedTuple):
    kind: str
    response: str
    reference: str
    expected: bool
    choices: tuple[tuple[str, str], ...] | None = None


def _cases(kind: str, rows: list[tuple], choices=None) -> list[Case]:
    return [Case(kind, response, reference, ok, choices) for response, reference, ok in rows]


NUMBERS = _cases(
    "plain numbers",
    [
        (
            r"She sells 9 eggs at \$2 each, so she makes $9 \times 2 = 18$. The answer is \boxed{18}.",
            "18",
            True,
        ),
        (r"So the total is \boxed{18.0}.", "18", True),
        (r"Adding the two columns gives \boxed{1,250}.", "1250", True),
        (
            r"The temperature fell to $\boxed{-7}$ degrees below... no, to $-7$. Final: $\boxed{-7}$",
            "-7",
            True,
        ),
        ("Janet has 16 - 3 - 4 = 9 eggs left.\n#### 9", "9", True),
        ("The answer is 3.5.", "3.5", True),
        (r"Therefore she has \boxed{17} apples.", "18", False),
        (r"The probability is about \boxed{0.33}.", r"\frac{1}{3}", False),
        ("Final Answer: The final answer is $12$. I hope it is correct.", "12", True),
        (r"There are $2^{10}$ subsets, so \boxed{2^{10}}.", "1024", True),
        (r"Hence \boxed{1024}.", "2^{10}", True),
        (r"The code is \boxed{007}.", "7", True),
        (r"The answer is: 1000000", "10^6", True),
        (r"So the remainder is \boxed{\text{18}}.", "18", True),
        (r"Half of it, \boxed{-0.5}.", r"-\frac{1}{2}", True),
        ("I computed 5 * 4 = 20, so there are 20 marbles in the jar.", "20", True),
        (r"Each box holds 12, and 3 boxes hold \boxed{36}.", "35", False),
        (r"We get $\boxed{100}$.", "1000", False),
    ],
)

FRACTIONS_AND_RADICALS = _cases(
    "fractions and radicals",
    [
        (r"The ratio is \boxed{\frac{1}{2}}.", "0.5", True),
        (r"So $p = \boxed{\dfrac{3}{4}}$.", r"\frac34", True),
        (r"The slope is \boxed{3/4}.", r"\frac{3}{4}", True),
        (r"Simplifying, \boxed{\frac{2}{4}}.", r"\frac{1}{2}", True),
        (r"The side is \boxed{2\sqrt{3}}.", r"\sqrt{12}", True),
        (r"So $\sin 45^\circ = \boxed{\frac{1}{\sqrt{2}}}$.", r"\frac{\sqrt{2}}{2}", True),
        (r"The distance is \boxed{\sqrt{2}/2}.", r"\frac{\sqrt{2}}{2}", True),
        (r"Thus the length is \boxed{\sqrt{3}}.", r"\sqrt{2}", False),
        (r"The height is \boxed{3\sqrt{2}}.", r"2\sqrt{3}", False),
        (
            r"The golden ratio: \boxed{1+\sqrt{5}} over 2, i.e. \boxed{\frac{1+\sqrt5}{2}}",
            r"\frac{1+\sqrt{5}}{2}",
            True,
        ),
        (r"The smaller root is \boxed{\frac{1+\sqrt5}{2}}.", r"\frac{1-\sqrt{5}}{2}", False),
        (r"The value is \boxed{-\frac{2}{3}}.", r"\frac{-2}{3}", True),
        (r"The cube root of 8 is \boxed{\sqrt[3]{8}}.", "2", True),
        (r"The probability is \boxed{\frac{5}{36}}.", r"\frac{5}{36}", True),
        (r"The probability is \boxed{\frac{1}{6}}.", r"\frac{5}{36}", False),
        (r"The angle is \boxed{\frac{\pi}{4}}.", r"\frac{\pi}{4}", True),
        (r"The answer is \boxed{0.75}.", r"\frac{3}{4}", True),
        (r"The expected value is \boxed{\frac{7}{2}}.", r"3.5", True),
    ],
)

INTERVALS = _cases(
    "intervals and inequalities",
    [
        (r"The domain is \boxed{(0, 1]}.", "(0,1]", True),
        (r"The domain is \boxed{[0, 1)}.", "(0,1]", False),
        (r"So \boxed{x > 3}.", r"(3, \infty)", True),
        (
            r"The solution set is \boxed{(-\infty, 2) \cup (3, \infty)}.",
            r"(-\infty,2)\cup(3,\infty)",
            True,
        ),
        (
            r"The solution set is \boxed{(-\infty, 2) \cup (3, \infty)}.",
            r"(-\infty,2]\cup[3,\infty)",
            False,
        ),
        (r"Hence \boxed{x \le 5}.", r"(-\infty, 5]", True),
        (r"The range is \boxed{-2 < x < 4}.", "(-2, 4)", True),
        (r"So $x \in \boxed{[1, 5]}$.", "[1,5]", True),
        (r"Therefore \boxed{1 \le x \le 5}.", "[1,5]", True),
        (r"It increases on \boxed{(2, \infty)}.", r"[2,\infty)", False),
        (r"The values are \boxed{(-1, 1)}.", "[-1,1]", False),
        (r"We need \boxed{k \geq 2}.", r"k \ge 2", True),
        (r"So \boxed{x < 3}.", "x > 3", False),
        (r"The set of $a$ is \boxed{[-1, 3]}.", r"-1 \le a \le 3", True),
        (r"The inequality holds for \boxed{x \geq -2}.", r"[-2, \infty)", True),
        (r"Thus $m \in \boxed{(0, \frac{1}{2})}$.", r"(0, \frac12)", True),
    ],
)

SETS_AND_TUPLES = _cases(
    "sets and tuples",
    [
        (r"The roots are \boxed{\{1, 2, 3\}}.", r"\{3,2,1\}", True),
        (r"The point is \boxed{(1, 2)}.", "(1,2)", True),
        (r"The point is \boxed{(2, 1)}.", "(1,2)", False),
        (r"The solutions are \boxed{1, 2, 3}.", r"\{1,2,3\}", True),
        (r"The solutions are \boxed{\{1, 2\}}.", r"\{1,2,3\}", False),
        (r"The center is \boxed{(3, -1)}.", "(3,-1)", True),
        (r"The roots are \boxed{2, -2}.", r"\pm 2", True),
        (r"So $x = \boxed{\pm 2}$.", "-2, 2", True),
        (r"The pairs are \boxed{(1,2), (3,4)}.", r"\{(3,4),(1,2)\}", True),
        (r"The vertex is \boxed{(1, 2, 3)}.", "(1,2,3)", True),
        (r"So \boxed{x=1 \text{ or } x=2}.", "1, 2", True),
        (r"There is no solution: \boxed{\emptyset}.", r"\emptyset", True),
        (r"The only solution is \boxed{2}.", r"\{2, 3\}", False),
        (r"The solutions are \boxed{\{2, 3\}}.", "2", False),
        (r"The ordered pair is \boxed{(-1, 4)}.", "(-1,4)", True),
        (r"The roots are $x = \boxed{3, 5}$.", "x = 3 \\text{ or } x = 5", True),
    ],
)

SEVERAL_BOXES = _cases(
    "several boxes",
    [
        (r"$$\boxed{2}, \boxed{3}, \boxed{5}, \boxed{7}$$", r"\{2,3,5,7\}", True),
        (r"$$\boxed{2}, \boxed{3}, \boxed{5}, \boxed{7}$$", "7", False),
        (r"$$\boxed{k = 45} \quad \text{and} \quad \boxed{n = 2}$$", "k = 45, n = 2", True),
        (r"The roots are $x_1 = \boxed{2}$, \quad $x_2 = \boxed{-3}$.", "x_1 = 2, x_2 = -3", True),
        (r"The roots are $x_1 = \boxed{2}$, \quad $x_2 = \boxed{-3}$.", "x_1 = 2, x_2 = 3", False),
        (
            r"The solutions are \boxed{(1, 2)}, \boxed{(2, 1)}, \boxed{(-1, -20)}.",
            r"\{(1,2),(2,1),(-1,-20)\}",
            True,
        ),
        (r"\boxed{1},\boxed{2},\boxed{3}", r"\{1,2,3\}", True),
        (r"\boxed{1},\boxed{2},\boxed{3}", r"\{1,2,4\}", False),
        (r"The width is \boxed{3} and the length is \boxed{5}.", "(3, 5)", True),
        (r"The width is \boxed{3} and the length is \boxed{5}.", "(5, 3)", False),
        (r"The two numbers are \boxed{1} and \boxed{2}.", "2", False),
        (
            r"At first I got \boxed{4}. Wait, let me recheck the sum: 2 + 3 = 5, so the answer is \boxed{5}.",
            "5",
            True,
        ),
        (
            r"At first I got \boxed{4}. Wait, let me recheck the sum: 2 + 3 = 5, so the answer is \boxed{5}.",
            r"\{4, 5\}",
            False,
        ),
        (r"My first guess \boxed{3} is wrong; redoing it gives \boxed{4}.", "4", True),
        (
            r"So \boxed{12}. "
            + "Let me verify this by computing the product of the two factors once more, carefully. "
            * 3
            + r"Indeed the count is \boxed{15}.",
            "15",
            True,
        ),
        (
            r"So \boxed{12}. "
            + "Let me verify this by computing the product of the two factors once more, carefully. "
            * 3
            + r"Indeed the count is \boxed{15}.",
            r"\{12, 15\}",
            False,
        ),
        ("So, \\boxed{143}\n\n**Final Answer**\n\\boxed{143}", "143", True),
        ("- (a) \\boxed{6}\n- (b) \\boxed{8}", "6, 8", True),
        (r"$\boxed{x = 1} \text{ or } \boxed{x = -1}$", r"\pm 1", True),
        (r"\boxed{1} papers and \boxed{2} bins", "1, 2", True),
        (r"\boxed{1} no no no no no \boxed{2}", "1, 2", False),
        (
            r"\($y_1 = \boxed{-2(x - 1)^2 + 5} \) and \( y_2 = \boxed{3(x + 2)^2 - 2} \)",
            r"y_{1}=-2 x^{2}+4 x+3, y_{2}=3 x^{2}+12 x+10",
            True,
        ),
        (r"Part (a): \boxed{10}. Part (b): \boxed{20}.", "10, 20", True),
        (
            r"$\boxed{\dfrac{1}{2}} \quad \text{and} \quad \boxed{\dfrac{1}{3}}$",
            r"\frac12, \frac13",
            True,
        ),
    ],
)

MATRICES = _cases(
    "matrices",
    [
        (
            r"So $A = \boxed{\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}}$.",
            r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
            True,
        ),
        (
            r"So $A = \boxed{\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}}$.",
            r"\begin{pmatrix} 1 & 3 \\ 2 & 4 \end{pmatrix}",
            False,
        ),
        (
            r"The product is \boxed{\begin{bmatrix} 1 & 0 \\ 0 & 1 \end{bmatrix}}.",
            r"\begin{pmatrix} 1 & 0 \\ 0 & 1 \end{pmatrix}",
            True,
        ),
        (
            r"The vector is \boxed{\begin{pmatrix} 1 \\ -2 \end{pmatrix}}.",
            r"\begin{pmatrix} 1 \\ -2 \end{pmatrix}",
            True,
        ),
        (
            r"The vector is \boxed{\begin{pmatrix} 2 \\ 1 \end{pmatrix}}.",
            r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}",
            False,
        ),
        (
            r"The inverse is \boxed{\begin{pmatrix} 0.5 & 0 \\ 0 & 1 \end{pmatrix}}.",
            r"\begin{pmatrix} \frac{1}{2} & 0 \\ 0 & 1 \end{pmatrix}",
            True,
        ),
        (
            r"The projection is $\boxed{\begin{pmatrix} 3/5 \\ 4/5 \end{pmatrix}}$.",
            r"\begin{pmatrix} \frac{3}{5} \\ \frac{4}{5} \end{pmatrix}",
            True,
        ),
        (
            r"The determinant of $\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}$ is \boxed{-2}.",
            "-2",
            True,
        ),
        (
            r"The matrix is \boxed{\begin{pmatrix} 1 & 2 \\ 3 & 5 \end{pmatrix}}.",
            r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}",
            False,
        ),
        (
            r"Hence $\mathbf{v} = \boxed{\begin{pmatrix} -1 \\ 0 \\ 2 \end{pmatrix}}$.",
            r"\begin{pmatrix} -1 \\ 0 \\ 2 \end{pmatrix}",
            True,
        ),
    ],
)

TEXT = _cases(
    "text answers",
    [
        (r"The meeting is on \boxed{\text{Tuesday}}.", "Tuesday", True),
        (r"The meeting is on \boxed{Tuesday}.", r"\text{Tuesday}", True),
        (r"The meeting is on \boxed{\text{Monday}}.", "Tuesday", False),
        ("The answer is yes.", "yes", True),
        (r"So the claim fails: \boxed{\text{No}}.", "no", True),
        (r"So the claim fails: \boxed{\text{no}}.", "yes", False),
        (r"The sum is \boxed{\text{even}}.", r"\text{even}", True),
        (r"The sum is \boxed{\text{odd}}.", "even", False),
        (r"The winner is \boxed{\text{Alice}}.", "Alice", True),
        (r"The winner is \boxed{\text{Bob}}.", "Alice", False),
        (r"She walks \boxed{\text{east}}.", "East", True),
        (r"There are \boxed{\text{infinitely many}} solutions.", r"\text{infinitely many}", True),
        (r"The shape is a \boxed{\text{rhombus}}.", r"\text{square}", False),
        (r"**Answer:** Thursday", "Thursday", True),
    ],
)

_OPTIONS = (("A", "12"), ("B", r"\frac{1}{2}"), ("C", "15"), ("D", "none of these"))
MULTIPLE_CHOICE = _cases(
    "multiple choice",
    [
        (r"So the answer is \boxed{B}.", "B", True),
        (r"So the answer is \boxed{(B)}.", "B", True),
        ("The answer is (B).", "B", True),
        (r"The answer is B) $\frac{1}{2}$.", "B", True),
        (r"Hence \boxed{\text{(B)}}.", "B", True),
        ("**Answer:** B", "B", True),
        (r"The value is \boxed{0.5}.", "B", True),
        (r"The value is \boxed{\frac{1}{2}}.", "B", True),
        (r"So the answer is \boxed{C}.", "B", False),
        (r"So the answer is \boxed{E}.", "B", False),
        (r"Both work: \boxed{A \text{ and } B}.", "B", False),
        (r"I pick \boxed{B}. Hmm, actually recomputing the ratio, \boxed{C}.", "B", False),
        (r"The value is \boxed{15}.", "B", False),
        (r"\boxed{A}, \boxed{B}", "B", False),
        (r"None of the numbers works, so \boxed{D}.", r"none of these", True),
        ("The correct option is B.", "B", True),
    ],
    _OPTIONS,
) + _cases(
    "multiple choice",
    [
        (r"The bag weighs 1.5 kg, less than 2 kg, so \boxed{no}.", "no", True),
        (r"So \boxed{\text{yes}}.", "no", False),
        ("The answer is no.", "no", True),
        (r"Option \boxed{B}.", "no", True),
    ],
    (("A", "yes"), ("B", "no")),
)

UNITS = _cases(
    "units",
    [
        (r"She pays \boxed{18 \text{ dollars}}.", "18", True),
        (r"She pays \boxed{\$18}.", "18", True),
        (r"The area is \boxed{20 \text{ cm}^2}.", "20", True),
        (r"The rope is \boxed{5 \text{ m}} long.", "5", True),
        (r"The discount is \boxed{50\%}.", "50", True),
        (r"The angle is \boxed{90^\circ}.", "90", True),
        (r"The angle is \boxed{90^{\circ}}.", r"90^\circ", True),
        (r"It takes \boxed{3 \text{ hours}}.", "3", True),
        (r"It takes \boxed{4 \text{ hours}}.", "3", False),
        (r"He picks \boxed{12 \text{ apples}}.", "12", True),
        (r"The distance is \boxed{2.5 \text{ km}}.", "2.5", True),
        (r"The price is \boxed{\$1,250}.", "1250", True),
        (r"So \boxed{18 dollars}.", "18", True),
        (r"She keeps \boxed{17 \text{ dollars}}.", "18", False),
        (r"The speed is \boxed{7 \text{ m/s}}.", "7", True),
        (r"The tax rate is \boxed{15\%}.", "25", False),
    ],
)

FINAL_ANSWER = _cases(
    "which answer",
    [
        (
            r"The sum of the digits is \boxed{12}. Multiplying out, 5 \cdot 2091 = 10455."
            "\nFinal Answer: The final answer is $10,455$. I hope it is correct.",
            "10455",
            True,
        ),
        (
            r"The sum of the digits is \boxed{12}. Multiplying out, 5 \cdot 2091 = 10455."
            "\nFinal Answer: The final answer is $10,455$. I hope it is correct.",
            "12",
            False,
        ),
        (r"The answer is \boxed{5}.", "5", True),
        ("#### 5\nno, wait\n#### 7\n", "7", True),
        (
            "Answer: 12\n\nLet me double check: 3 + 4 + 7 = 14, so the total is \\boxed{14}.",
            "14",
            True,
        ),
        ("\\boxed{3}\nThe final answer is 4.", "4", True),
        ("\\boxed{3}\nThe final answer is 4.", "3", False),
        (r"The final answer is $\boxed{7}$", "7", True),
        ("The answer is 7.\n#### 8", "8", True),
        (r"\boxed{7}. So the answer is correct.", "7", True),
        (r"First \boxed{1}, then \boxed{\frac{1}{2}}.", r"\frac{1}{2}", True),
        ("The final answer is: $\\boxed{-3}$", "-3", True),
    ],
)

# Written after the rules above were settled (docs/verifier.md): a check that they carry
# over to cases that did not shape them. Reported apart; not part of CASES.
HELD_OUT = _cases(
    "written after the rules",
    [
        (r"Thus the number of handshakes is \boxed{45}.", "45", True),
        (r"The mean is \boxed{\frac{17}{4}}.", "4.25", True),
        (r"The mean is \boxed{4.2}.", "4.25", False),
        (r"So $y \in \boxed{(-\infty, 0]}$.", r"y \le 0", True),
        (r"The solution is \boxed{t < -1}.", r"(-\infty, -1)", True),
        (r"The solution is \boxed{t \le -1}.", r"(-\infty, -1)", False),
        (r"The intersections are \boxed{(0, 0)} and \boxed{(2, 4)}.", r"(0,0), (2,4)", True),
        (r"The intersections are \boxed{(0, 0)} and \boxed{(2, 4)}.", r"(2,4)", False),
        (r"The legs are $a = \boxed{6}$ and $b = \boxed{8}$.", "(6, 8)", True),
        (
            "I first wrote \\boxed{20}, but I double counted the corners; removing them leaves \\boxed{16}.",
            "16",
            True,
        ),
        (r"(a) \boxed{3} (b) \boxed{9}", "3, 9", True),
        (
            r"\boxed{5}"
            + " Let me check this against the second condition in the problem statement." * 2
            + r" It also satisfies it, giving \boxed{5}.",
            "5",
            True,
        ),
        (r"So the correct choice is \boxed{\textbf{(C)}}.", "C", True),
        (r"So the correct choice is \boxed{\textbf{(C)}}.", "A", False),
        (r"Evaluating gives 15, which is option \boxed{C}.", "15", True),
        (r"The answer is (A) or (C).", "C", False),
        (r"The area is \boxed{36 \text{ square units}}.", "36", True),
        (r"It costs \boxed{\$4.50}.", "4.5", True),
        (r"Hence the final answer is $\boxed{\text{Wednesday}}$.", "Wednesday", True),
        (
            "Final Answer: The final answer is $\\frac{3}{8}$. I hope it is correct.",
            r"\frac38",
            True,
        ),
        (r"So $\det A = \boxed{0}$, and the matrix is singular.", "0", True),
        (
            r"Hence $\mathbf{M} = \boxed{\begin{pmatrix} 2 & 0 \\ 0 & 3 \end{pmatrix}}$.",
            r"\begin{pmatrix} 2 & 0 \\ 0 & 3 \end{pmatrix}",
            True,
        ),
    ],
) + _cases(
    "written after the rules",
    [
        (r"The answer is \boxed{B}.", "B", True),
        (r"The answer is \boxed{12}.", "B", False),
        (r"The answer is \boxed{-4}.", "B", True),
    ],
    (("A", "12"), ("B", "-4"), ("C", "4")),
)

CASES: list[Case] = (
    NUMBERS
    + FRACTIONS_AND_RADICALS
    + INTERVALS
    + SETS_AND_TUPLES
    + SEVERAL_BOXES
    + MATRICES
    + TEXT
    + MULTIPLE_CHOICE
    + UNITS
    + FINAL_ANSWER
)
