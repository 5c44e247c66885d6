"""What `cft-rl identify` prints while it works: what starts, at once; within a chunk, its
greedy answers and how many questions and continuations are done, every few seconds; a
line per finished chunk with the time left. A long chunk then never looks like a hang."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

# Seconds between two lines about the same chunk.
EVERY_S = 5.0


class Progress:
    """stderr lines of one identify run; `clock` is replaceable so tests need not wait."""

    def __init__(
        self, total: int, done_before: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.total, self.done_before, self.done = total, done_before, done_before
        self.clock = clock
        self.start = self.last = clock()

    def starting(self, what: str) -> None:
        _print(f"identify: {what}")
        if self.done_before:
            _print(f"identify: resuming, {self.done_before}/{self.total} questions already done")

    def within_chunk(self, text: str, force: bool = False) -> None:
        """A line about the chunk under way, unless one was printed less than EVERY_S ago."""
        now = self.clock()
        if force or now - self.last >= EVERY_S:
            _print(f"identify: {text}")
            self.last = now

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self.clock() - self.start

    def chunk_done(self, done: int, extra: str = "") -> None:
        """One line per chunk: a long run shows it is moving and when it should end."""
        self.done = done
        seconds = self.elapsed()
        rate = (done - self.done_before) / seconds if seconds > 0 else 0.0
        left = (
            f", about {(self.total - done) / rate:.0f} s left"
            if rate > 0 and done < self.total
            else ""
        )
        _print(f"identify: {done}/{self.total} questions done, {seconds:.0f} s{extra}{left}")
        self.last = self.clock()


def _print(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
