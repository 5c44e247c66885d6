"""Worked solutions in the texture of a real model's answers: the `toy-prose` world.

The problems are the toy world's (a start count and a few events, cft_rl.data.toy_problems);
only the solution is written differently. Where a terse toy solution is mostly equations, a
prose one reads like a base model answering a GSM8K question: a sentence that says what
happens, one that says why it adds or subtracts, the equation, the running total said
again, now and then a check of the step ("Let me check: 77 + 21 = 98, which matches."),
optional openings and closings, and several phrasings and orders for each part. Most of its
tokens can change without changing the answer; the numbers and operators still cannot.

The spec was chosen by texture alone (numeric share, length, distinct samples: docs/toy.md),
before any fine-tuning ran on this world.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from cft_rl.data.toy_events import Event

# Each table is a set of equivalent phrasings; "" makes the part optional.
OPENINGS = (
    "Let's work through this step by step.",
    "We need to find out how many {item} {name} has at the end.",
    "Let me keep track of the {item} one change at a time.",
    "To solve this, I will follow the number of {item} through each event in the story.",
    "This is a counting problem, so I will update the count after every event.",
    "",
)
START_LINES = (
    "{name} starts with {x} {item}.",
    "At the beginning, {name} has {x} {item}.",
    "First of all, {name} has {x} {item} to begin with.",
    "In the beginning there are {x} {item}.",
)
ADDS_FIRST_NOTES = (
    "The order of the events does not change the total, so I will do the additions first.",
    "It is easier to add everything first and subtract afterwards, since the order does "
    "not matter for the final count.",
)

ADD_INTROS = (
    "Next, {name} gets some more {item}.",
    "After that, {name} gets more {item} by {gerund}.",
    "The next thing that happens is {gerund}.",
    "Then {name} receives more {item}.",
    "",
)
ADD_REASONS = (
    "Getting more {item} makes the count go up, so we add.",
    "This adds to what {name} already has.",
    "More {item} means that the total grows, so this is an addition.",
    "Since {name} gains {item} here, we need to add them to the count.",
)
ADD_EQUATIONS = (
    "{x} + {a} = {y}.",
    "So we have {x} + {a} = {y}.",
    "That gives {x} + {a} = {y} {item}.",
    "Adding them together, {a} + {x} = {y}.",
    "The new count is {x} + {a} = {y}.",
)
ADD_CHECKS = (
    "Let me check: {y} - {a} = {x}, which matches.",
    "Let me check this step: {x} + {a} = {y}. Yes, that is right.",
)

SUB_INTROS = (
    "Next, {name} has fewer {item} after {gerund}.",
    "After that, some of the {item} are gone.",
    "The next thing that happens is {gerund}.",
    "Then {name} ends up with fewer {item}.",
    "",
)
SUB_REASONS = (
    "Losing {item} makes the count go down, so we subtract.",
    "This takes away from what {name} already has.",
    "Fewer {item} means that the total shrinks, so this is a subtraction.",
    "Since these {item} are no longer there, we need to take them away from the count.",
)
SUB_EQUATIONS = (
    "{x} - {a} = {y}.",
    "So we have {x} - {a} = {y}.",
    "That leaves {x} - {a} = {y} {item}.",
    "Taking them away, {x} - {a} = {y}.",
    "The new count is {x} - {a} = {y}.",
)
SUB_CHECKS = (
    "Let me check: {y} + {a} = {x}, which matches.",
    "Let me check this step: {x} - {a} = {y}. Yes, that is right.",
)

BAG_INTROS = (
    "Then {name} gets {k} {container} with {b} {item} in each.",
    "After that there are {k} {container}, and each one holds {b} {item}.",
    "Next come the {container} of {item}.",
    "",
)
BAG_REASONS = (
    "To find how many {item} that is, we multiply the number of {container} by the "
    "number in each one.",
    "Every one of the {container} holds the same number, so we can multiply.",
    "",
)
PRODUCTS = (
    "{k} * {b} = {p}.",
    "That is {k} * {b} = {p} {item}.",
    "So the {container} hold {k} * {b} = {p} {item} in all.",
    "Multiplying, {b} * {k} = {p}.",
)
BAG_ADDITIONS = (
    "Adding these to the count gives {x} + {p} = {y}.",
    "{x} + {p} = {y}.",
    "Now we add them to what {name} had: {x} + {p} = {y}.",
)
BAG_CHECKS = ("Let me check: {p} / {k} = {b}, so the product is right.",)

# Between two steps.
TRANSITIONS = (
    "Now on to the next part of the story.",
    "Let's move on to the next change.",
    "That takes care of this event, so let's look at what happens after it.",
    "",
)
RESTATEMENTS = (
    "Now {name} has {y} {item}.",
    "So far that makes {y} {item}.",
    "The running total is now {y}.",
    "So {name} has {y} {item} at this point.",
    "",
)
CLOSINGS = (
    "After all of these changes, {name} has {y} {item}.",
    "So the final answer is {y}.",
    "Therefore, {name} ends up with {y} {item}.",
    "That means {name} has {y} {item} in the end.",
    "The question asks how many {item} {name} has at the end, and that is {y}.",
    "",
)

# How often a solution moves all additions before all subtractions (and says so), and how
# often a step is followed by a check.
ADDS_FIRST_PROBABILITY = 0.3
CHECK_PROBABILITY = 0.2


def write_prose_solution(
    rng: random.Random, name: str, item: str, start: int, events: Sequence[Event]
) -> str:
    """A worked solution of the problem (start, events) in prose, ending with `#### N`."""
    order = list(events)
    adds_first = rng.random() < ADDS_FIRST_PROBABILITY
    if adds_first:
        order = [e for e in events if e.kind != "sub"] + [e for e in events if e.kind == "sub"]
    sentences = [
        rng.choice(OPENINGS).format(name=name, item=item),
        rng.choice(START_LINES).format(name=name, item=item, x=start),
        rng.choice(ADDS_FIRST_NOTES) if adds_first else "",
    ]
    count = start
    for index, event in enumerate(order):
        if index:
            sentences.append(rng.choice(TRANSITIONS))
        sentences += _step(rng, event, count, {"name": name, "item": item})
        count += event.delta
    sentences.append(rng.choice(CLOSINGS).format(name=name, item=item, y=count))
    body = " ".join(sentence for sentence in sentences if sentence)
    return f"{body}\n#### {count}"


def _step(rng: random.Random, event: Event, x: int, words: dict[str, str]) -> list[str]:
    """The sentences of one event that takes the count from `x` to `x + event.delta`."""
    fields = {**words, "x": x, "y": x + event.delta}
    checks: tuple[str, ...]
    if event.kind == "bags":
        product = {"k": event.count, "b": event.size, "p": event.delta}
        fields.update(product, container=event.container)
        tables = (BAG_INTROS, BAG_REASONS, PRODUCTS, BAG_ADDITIONS)
        checks = BAG_CHECKS
    else:
        fields.update(a=event.amount, gerund=event.gerund.format(a=event.amount))
        adds = event.kind == "add"
        tables = (
            (ADD_INTROS, ADD_REASONS, ADD_EQUATIONS)
            if adds
            else (SUB_INTROS, SUB_REASONS, SUB_EQUATIONS)
        )
        checks = ADD_CHECKS if adds else SUB_CHECKS
    sentences = [rng.choice(table).format(**fields) for table in tables]
    if rng.random() < CHECK_PROBABILITY:
        sentences.append(rng.choice(checks).format(**fields))
    sentences.append(rng.choice(RESTATEMENTS).format(**fields))
    return sentences
