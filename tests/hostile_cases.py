"""Model outputs built to hurt a verifier; the tests and bench/verifier.py score them.

Each case names the reasons a sound verifier may give it: "timeout" where math-verify
is known to run for minutes, both "wrong" and "timeout" where it gives up in about a
second (so a slow machine may reach the deadline first).
"""

from __future__ import annotations

from typing import NamedTuple

NESTED_BRACES = "{" * 5000 + "1" + "}" * 5000


class HostileCase(NamedTuple):
    name: str
    response: str
    reference: str
    reasons: frozenset[str]


HOSTILE_CASES = (
    HostileCase(
        "5000 nested braces", "\\boxed{" + NESTED_BRACES + "}", "1", frozenset({"timeout"})
    ),
    HostileCase("9^{9^{9^{9}}}", "\\boxed{9^{9^{9^{9}}}}", "1", frozenset({"timeout"})),
    HostileCase("9^9^9^9", "\\boxed{9^9^9^9}", "1", frozenset({"wrong", "timeout"})),
    HostileCase(
        "200 KB sum in a box",
        "The answer is \\boxed{" + "1+" * 100_000 + "1}",
        "100001",
        frozenset({"timeout"}),
    ),
    HostileCase(
        "210 KB without an answer", "Let me think. " * 15_000, "1", frozenset({"no_answer"})
    ),
    HostileCase(
        "210 KB, then the answer",
        "Let me think. " * 15_000 + "\\boxed{7}",
        "7",
        frozenset({"correct"}),
    ),
    HostileCase(
        "2000 nested boxes and fractions",
        "\\boxed{\\frac{" * 2000 + "}" * 4000,
        "1",
        frozenset({"wrong", "timeout"}),
    ),
    HostileCase(
        "20000 boxes in one run",
        "".join(f"\\boxed{{{i}}}, " for i in range(20_000)),
        "1",
        frozenset({"wrong", "timeout"}),
    ),
    HostileCase(
        "Python call",
        "\\boxed{__import__('os').system('touch /tmp/pwned')}",
        "0",
        frozenset({"wrong"}),
    ),
    HostileCase(
        "eval", "The answer is eval(\"open('/tmp/pwned', 'w')\")", "0", frozenset({"wrong"})
    ),
)
