"""Synthetic multi-step arithmetic word problems in GSM8K format.

A problem is a start count and a few events that change it (gets some, loses some, gets
k bags of b items). Its question and its worked solution are written from a structured
form with randomly chosen phrasing, and the solution may do the additions before the
subtractions: many tokens of a solution can change without changing the answer, the
numbers and operators cannot. Solutions end with the GSM8K line `#### N`.

Held-out problems are disjoint from training ones by construction: each problem's
arithmetic (start and events, not the wording) hashes into a held-out or a training
split, and each side draws only from its own.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from cft_rl.data.toy_events import Event
from cft_rl.data.toy_prose import write_prose_solution

Split = Literal["train", "heldout"]

# One problem in HELDOUT_MODULUS has held-out arithmetic (see `split_of`).
HELDOUT_MODULUS = 20


@dataclass(frozen=True)
class Problem:
    """A word problem with its structured form and its worked solution."""

    name: str
    item: str
    start: int
    events: tuple[Event, ...]
    question: str
    solution: str

    @property
    def answer(self) -> int:
        return self.start + sum(event.delta for event in self.events)

    def arithmetic(self) -> tuple:
        """The numbers and operations, without wording: what the train/held-out split hashes."""
        return (self.start, tuple((e.kind, e.amount, e.count, e.size) for e in self.events))


@dataclass(frozen=True)
class Difficulty:
    """Ranges the generator draws from (inclusive)."""

    steps: tuple[int, int]
    start: tuple[int, int]
    amount: tuple[int, int]
    bag_count: tuple[int, int]
    bag_size: tuple[int, int]
    # Probability of each event kind; `sub` falls back to `add` when the count is too low.
    kind_weights: tuple[float, float, float] = (0.45, 0.35, 0.2)
    # How solutions are written: "terse" (mostly equations, below) or "prose" (the texture
    # of a real model's answers, cft_rl.data.toy_prose).
    style: Literal["terse", "prose"] = "terse"


# The in-distribution amounts are kept below 50 so that the tiny model learns its carries
# within a 15-minute CPU build. `toy-hard` has one more step than the longest `toy` problem
# and larger start counts and amounts; it was chosen among a few such variants as the one
# that leaves the shipped model around 20% (see docs/toy.md).
DIFFICULTIES: dict[str, Difficulty] = {
    "toy": Difficulty(
        steps=(2, 3), start=(1, 99), amount=(1, 49), bag_count=(2, 9), bag_size=(2, 9)
    ),
    "toy-hard": Difficulty(
        steps=(4, 4), start=(1, 149), amount=(1, 59), bag_count=(2, 9), bag_size=(2, 9)
    ),
    # `toy`'s numbers with one or two more steps: the shipped model answers about half of
    # them greedily, like real base models on GSM8K, so self-training has room (docs/toy.md).
    "toy-long": Difficulty(
        steps=(3, 4), start=(1, 99), amount=(1, 49), bag_count=(2, 9), bag_size=(2, 9)
    ),
    # The second world: the same arithmetic as the three above, written as prose solutions.
    "toy-prose": Difficulty(
        steps=(2, 3), start=(1, 99), amount=(1, 49), bag_count=(2, 9), bag_size=(2, 9),
        style="prose",
    ),
    "toy-prose-hard": Difficulty(
        steps=(4, 4), start=(1, 149), amount=(1, 59), bag_count=(2, 9), bag_size=(2, 9),
        style="prose",
    ),
    "toy-prose-long": Difficulty(
        steps=(3, 4), start=(1, 99), amount=(1, 49), bag_count=(2, 9), bag_size=(2, 9),
        style="prose",
    ),
}  # fmt: skip

# Seeds of the evaluation sets; training seeds are free to be anything (the split keeps
# the two apart), these only make each set reproducible.
EVAL_SEEDS = {
    "toy": 1_000_001, "toy-hard": 1_000_002, "toy-long": 1_000_003,
    "toy-prose": 2_000_001, "toy-prose-hard": 2_000_002, "toy-prose-long": 2_000_003,
}  # fmt: skip

# Every difficulty D is three benchmarks: "D" (held-out test problems), "D-val" (held-out
# validation problems, for choosing learning rates and checkpoints) and "D-train" (training
# split, for identify, SFT and GRPO). Validation problems share no arithmetic with the first
# VALIDATION_DISJOINT_FROM test problems, more than any recipe evaluates.
VALIDATION_SUFFIX = "-val"
TRAIN_SUFFIX = "-train"
VALIDATION_DISJOINT_FROM = 1000

NAMES = (
    "Ava", "Ben", "Cora", "Dan", "Eli", "Fay", "Gus", "Ivy",
    "Jack", "Lena", "Max", "Nora", "Omar", "Pia", "Rosa", "Sam",
)  # fmt: skip
ITEMS = (
    "apples", "marbles", "stickers", "coins", "books", "pencils",
    "cards", "shells", "stamps", "candies", "eggs", "toys",
)  # fmt: skip
CONTAINERS = ("boxes", "bags", "packs", "jars")

# (question phrase, gerund used in the solution)
ADD_VERBS = (
    ("buys {a} {item}", "buying {a}"),
    ("finds {a} {item}", "finding {a}"),
    ("gets {a} more {item}", "getting {a} more"),
    ("is given {a} {item}", "being given {a}"),
    ("wins {a} {item}", "winning {a}"),
)
SUB_VERBS = (
    ("gives away {a} {item}", "giving away {a}"),
    ("sells {a} {item}", "selling {a}"),
    ("loses {a} {item}", "losing {a}"),
    ("gives {a} {item} to {friend}", "giving {a} away"),
    ("trades away {a} {item}", "trading away {a}"),
)
BAG_VERBS = (
    ("buys {k} {container} of {item} with {b} in each", "buying"),
    ("gets {k} {container} with {b} {item} each", "getting"),
)

QUESTION_OPENINGS = ("{name} has {x} {item}.", "{name} starts with {x} {item}.")
CONNECTIVES = ("Then", "Next,", "Later", "After that,")
QUESTION_ENDINGS = (
    "How many {item} does {name} have now?",
    "How many {item} does {name} have at the end?",
    "How many {item} does {name} have in the end?",
)

SOLUTION_OPENINGS = ("{name} starts with {x} {item}.", "At first {name} has {x} {item}.", "")
ADD_LINES = (
    "After {gerund}, {name} has {x} + {a} = {y} {item}.",
    "{name} gets {a} more, so {x} + {a} = {y}.",
    "Adding {a} gives {x} + {a} = {y} {item}.",
    "{x} + {a} = {y}.",
)
SUB_LINES = (
    "After {gerund}, {name} has {x} - {a} = {y} {item}.",
    "{name} has {a} fewer, so {x} - {a} = {y}.",
    "Taking away {a} leaves {x} - {a} = {y} {item}.",
    "{x} - {a} = {y}.",
)
PRODUCT_LINES = (
    "The {k} {container} hold {k} * {b} = {p} {item}.",
    "{k} {container} of {b} is {k} * {b} = {p}.",
    "That is {k} * {b} = {p} more {item}.",
)
CLOSINGS = ("So {name} has {y} {item}.", "The answer is {y}.", "")

# How often a solution moves all additions before all subtractions (same answer; the
# count never goes below zero because it only rises before it falls).
ADDS_FIRST_PROBABILITY = 0.3


def split_of(problem: Problem) -> Split:
    digest = hashlib.blake2b(repr(problem.arithmetic()).encode(), digest_size=8).digest()
    return "heldout" if int.from_bytes(digest, "big") % HELDOUT_MODULUS == 0 else "train"


def sample_problem(rng: random.Random, difficulty: Difficulty) -> Problem:
    """One problem drawn from `difficulty`, worded with `rng`."""
    name = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    start = rng.randint(*difficulty.start)
    events = []
    count = start
    for _ in range(rng.randint(*difficulty.steps)):
        event = _sample_event(rng, difficulty, count)
        events.append(event)
        count += event.delta
    question = _write_question(rng, name, item, start, events)
    write = write_prose_solution if difficulty.style == "prose" else _write_solution
    solution = write(rng, name, item, start, events)
    return Problem(name, item, start, tuple(events), question, solution)


def generate_problems(
    seed: int | str, n: int, difficulty: Difficulty, split: Split, unique: bool = True
) -> list[Problem]:
    """`n` problems of `split`; with `unique`, no two share a question."""
    return list(_take(iter_problems(random.Random(seed), difficulty, split), n, unique))


def iter_problems(rng: random.Random, difficulty: Difficulty, split: Split) -> Iterator[Problem]:
    """An endless stream of problems whose arithmetic falls in `split`."""
    while True:
        problem = sample_problem(rng, difficulty)
        if split_of(problem) == split:
            yield problem


def training_problems(seed: int, chunk: int, n: int, difficulty: Difficulty) -> list[Problem]:
    """The `chunk`-th chunk of `n` training problems: reproducible without generating earlier
    chunks, so a resumed training run sees the same data."""
    rng = random.Random(f"train:{seed}:{chunk}")
    return list(_take(iter_problems(rng, difficulty, "train"), n, unique=False))


def eval_problems(name: str, n: int) -> list[Problem]:
    """The first `n` held-out test problems of difficulty `name` (e.g. "toy", "toy-hard")."""
    return generate_problems(EVAL_SEEDS[_difficulty_name(name)], n, DIFFICULTIES[name], "heldout")


def validation_problems(name: str, n: int) -> list[Problem]:
    """`n` held-out problems of difficulty `name` that are not among its test problems."""
    test = {p.arithmetic() for p in eval_problems(name, VALIDATION_DISJOINT_FROM)}
    rng = random.Random(f"{name}{VALIDATION_SUFFIX}")
    stream = (
        p for p in iter_problems(rng, DIFFICULTIES[name], "heldout") if p.arithmetic() not in test
    )
    return list(_take(stream, n, unique=True))


def training_questions(name: str, n: int) -> list[Problem]:
    """The first `n` training-split problems of difficulty `name`, always the same ones."""
    return generate_problems(
        _TRAIN_SEEDS.get(name, name + TRAIN_SUFFIX), n, DIFFICULTIES[name], "train"
    )


# The seed of `toy-train`'s questions predates the naming scheme; changing it would change
# every stage's toy questions. Other difficulties use their benchmark name as the seed.
_TRAIN_SEEDS = {"toy": "identify"}


def toy_benchmark_names() -> list[str]:
    """Every toy benchmark: each difficulty's test, validation and training sets."""
    return [
        f"{name}{suffix}"
        for name in DIFFICULTIES
        for suffix in ("", VALIDATION_SUFFIX, TRAIN_SUFFIX)
    ]


def toy_problems(name: str, n: int) -> list[Problem]:
    """The first `n` problems of toy benchmark `name` (see `toy_benchmark_names`)."""
    if name.endswith(TRAIN_SUFFIX):
        return training_questions(_difficulty_name(name.removesuffix(TRAIN_SUFFIX)), n)
    if name.endswith(VALIDATION_SUFFIX):
        return validation_problems(_difficulty_name(name.removesuffix(VALIDATION_SUFFIX)), n)
    return eval_problems(name, n)


def toy_difficulty(name: str) -> str:
    """`name` if it is a toy difficulty, else a ValueError listing them."""
    if name not in DIFFICULTIES:
        raise ValueError(f"unknown toy difficulty {name!r}; known: {', '.join(DIFFICULTIES)}")
    return name


def _difficulty_name(name: str) -> str:
    if name not in DIFFICULTIES:
        raise ValueError(f"unknown toy benchmark {name!r}; known: {toy_benchmark_names()}")
    return name


def _take(problems: Iterator[Problem], n: int, unique: bool) -> Iterator[Problem]:
    seen: set[str] = set()
    taken = 0
    for problem in problems:
        if taken == n:
            return
        if unique:
            if problem.question in seen:
                continue
            seen.add(problem.question)
        taken += 1
        yield problem


def _sample_event(rng: random.Random, difficulty: Difficulty, count: int) -> Event:
    kind = rng.choices(("add", "sub", "bags"), weights=difficulty.kind_weights)[0]
    if kind == "sub" and count < difficulty.amount[0] + 1:
        kind = "add"
    if kind == "bags":
        return Event(
            "bags",
            count=rng.randint(*difficulty.bag_count),
            size=rng.randint(*difficulty.bag_size),
            verb=rng.choice(BAG_VERBS)[0],
            container=rng.choice(CONTAINERS),
        )
    if kind == "sub":
        high = min(difficulty.amount[1], count - 1)
        verb, gerund = rng.choice(SUB_VERBS)
        return Event("sub", rng.randint(difficulty.amount[0], high), verb=verb, gerund=gerund)
    verb, gerund = rng.choice(ADD_VERBS)
    return Event("add", rng.randint(*difficulty.amount), verb=verb, gerund=gerund)


def _write_question(
    rng: random.Random, name: str, item: str, start: int, events: list[Event]
) -> str:
    friend = rng.choice([other for other in NAMES if other != name])
    sentences = [rng.choice(QUESTION_OPENINGS).format(name=name, x=start, item=item)]
    for index, event in enumerate(events):
        phrase = event.verb.format(
            a=event.amount, k=event.count, b=event.size, item=item,
            container=event.container, friend=friend,
        )  # fmt: skip
        subject = name if index == 0 else f"{rng.choice(CONNECTIVES)} {name}"
        sentences.append(f"{subject} {phrase}.")
    sentences.append(rng.choice(QUESTION_ENDINGS).format(name=name, item=item))
    return " ".join(sentences)


def _write_solution(
    rng: random.Random, name: str, item: str, start: int, events: list[Event]
) -> str:
    order = list(events)
    if rng.random() < ADDS_FIRST_PROBABILITY:
        order = [e for e in events if e.kind != "sub"] + [e for e in events if e.kind == "sub"]
    lines = [rng.choice(SOLUTION_OPENINGS).format(name=name, x=start, item=item)]
    count = start
    for event in order:
        fields = {"name": name, "item": item, "x": count, "y": count + event.delta}
        if event.kind == "bags":
            product = event.count * event.size
            lines.append(
                rng.choice(PRODUCT_LINES).format(
                    k=event.count, b=event.size, p=product, container=event.container, item=item
                )
            )
            line = rng.choice(ADD_LINES[1:])
            lines.append(line.format(a=product, **fields))
        else:
            template = rng.choice(ADD_LINES if event.kind == "add" else SUB_LINES)
            gerund = event.gerund.format(a=event.amount)
            lines.append(template.format(a=event.amount, gerund=gerund, **fields))
        count += event.delta
    lines.append(rng.choice(CLOSINGS).format(name=name, y=count, item=item))
    body = " ".join(line for line in lines if line)
    return f"{body}\n#### {count}"
