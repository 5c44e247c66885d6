"""Score model answers with math-verify in killable worker processes.

math-verify can run for minutes on hostile input (deeply nested braces,
`9^9^9^9`), and its own timeouts rely on SIGALRM, which only works in a main
thread. So every comparison runs in a worker process with a hard deadline: a
worker that misses it is killed and replaced, the item scores 0 with reason
"timeout", and the pool goes on. Model text is only parsed, never executed.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import queue
import signal
import threading
import time
import weakref
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Literal

from reward.choice import Choices
from reward.extract import extract_answer_parts, joined
from reward.grading import grade, grade_answer

Reason = Literal["correct", "wrong", "no_answer", "timeout", "error"]
REASONS: tuple[Reason, ...] = ("correct", "wrong", "no_answer", "timeout", "error")

# A fresh worker gets this long to come up before the pool gives up on it; it does not
# count against any item's timeout.
_STARTUP_TIMEOUT_S = 60.0
_READY = "ready"
# Trusted pairs that take math-verify through its slow first-use paths (lazy imports and
# caches: up to 1.5 s each on a cold process), so forked workers start warm.
_WARM_UP_PAIRS = (
    ("18", "18"),
    ("\\frac{1}{2}", "0.5"),
    ("x = 5", "5"),
    ("\\sqrt{2}", "2^{1/2}"),
    ("[1,2]", "(1,2)"),
    ("f(1)", "1"),
    ("\\text{(A)}", "A"),
)

logger = logging.getLogger(__name__)

# What a worker grades: the answer's parts, the reference and the options if any.
_Item = tuple[tuple[str, ...], str, Choices | None]


@dataclass(frozen=True)
class Verdict:
    correct: bool
    score: float
    reason: Reason
    predicted: str | None


class WorkerStartError(RuntimeError):
    """A verifier worker process did not come up (broken math-verify install?)."""


class Verifier:
    """A pool of worker processes that grade (response, reference) pairs.

    `fast_path`: a prediction with exactly the reference's text is correct without a round
    trip to a worker. `last_number_fallback`: a response that commits to no answer (no box,
    `####` or answer phrase) is graded on its last number; off by default, since a
    response that never concludes then scores whenever its last number happens to be
    right (docs/verifier.md). Thread-safe: concurrent `verify` calls (verl calls rewards
    from a thread pool) each take an idle worker, so up to `num_workers` items are graded at once.
    """

    def __init__(
        self,
        num_workers: int = 2,
        timeout_s: float = 5.0,
        fast_path: bool = True,
        last_number_fallback: bool = False,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"num_workers must be at least 1, got {num_workers}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        _warm_up()
        self.timeout_s = timeout_s
        self.fast_path = fast_path
        self.last_number_fallback = last_number_fallback
        # Fork, not forkserver or spawn: those re-run the caller's main script in every worker
        # (fatal for scripts without a __main__ guard) and start workers cold. Workers only
        # run Python and sympy, never torch or OpenMP, so the parent's threads are no hazard.
        self._context = multiprocessing.get_context("fork")
        self._workers = [_Worker(self._context) for _ in range(num_workers)]
        self._idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
        for worker in self._workers:
            self._idle.put(worker)
        self._threads = ThreadPoolExecutor(num_workers, thread_name_prefix="verifier")
        self._counts = dict.fromkeys(REASONS, 0)
        self._lock = threading.Lock()
        self._owner_pid = os.getpid()
        self._finalizer = weakref.finalize(
            self, _shut_down, self._owner_pid, self._workers, self._threads
        )

    @property
    def counts(self) -> dict[str, int]:
        """How many items got each reason so far."""
        with self._lock:
            return dict(self._counts)

    def verify(self, response: str, reference: str, choices: Choices | None = None) -> Verdict:
        """Grade one response; `choices`, (letter, option text) pairs, make the question
        multiple choice (reward.grading.grade_choice)."""
        verdict = self._judge(response, reference, choices)
        self._count([verdict])
        return verdict

    def verify_batch(
        self,
        responses: Sequence[str],
        references: Sequence[str],
        choices: Sequence[Choices | None] | None = None,
    ) -> list[Verdict]:
        """Verdicts in the order of the inputs; `choices`, if given, one entry per item."""
        choices = [None] * len(responses) if choices is None else choices
        if not len(responses) == len(references) == len(choices):
            raise ValueError(
                f"{len(responses)} responses, {len(references)} references and "
                f"{len(choices)} choices: they must pair up"
            )
        verdicts = list(self._threads.map(self._judge, responses, references, choices))
        self._count(verdicts)
        return verdicts

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> Verifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _judge(self, response: str, reference: str, choices: Choices | None) -> Verdict:
        parts = extract_answer_parts(response, self.last_number_fallback)
        if not parts:
            return Verdict(False, 0.0, "no_answer", None)
        predicted = joined(parts)
        # Fast path: the very text of the reference is the reference answer, whatever
        # math-verify would make of it, and a string comparison is safe in this process.
        if self.fast_path and predicted == reference.strip():
            return Verdict(True, 1.0, "correct", predicted)
        reason = self._grade_in_worker((parts, reference, choices))
        return Verdict(reason == "correct", float(reason == "correct"), reason, predicted)

    def _grade_in_worker(self, item: _Item) -> Reason:
        if os.getpid() != self._owner_pid:
            raise RuntimeError(
                f"this Verifier belongs to process {self._owner_pid}; make one per process"
            )
        if not self._finalizer.alive:
            raise RuntimeError("this Verifier is closed")
        worker = self._idle.get()
        keep = False
        try:
            reason = worker.grade(item, self.timeout_s)
            keep = reason != "timeout"
            return reason
        except (EOFError, OSError) as lost:  # died mid-item, e.g. killed for memory
            logger.warning("verifier worker died grading %.80r: %r", item[0], lost)
            return "error"
        finally:
            if not keep:
                worker = self._replace(worker)
            self._idle.put(worker)

    def _replace(self, worker: _Worker) -> _Worker:
        worker.kill()
        fresh = _Worker(self._context)
        with self._lock:
            self._workers[self._workers.index(worker)] = fresh
        return fresh

    def _count(self, verdicts: list[Verdict]) -> None:
        with self._lock:
            for verdict in verdicts:
                self._counts[verdict.reason] += 1


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, context: multiprocessing.context.BaseContext) -> None:
        self.conn, child_conn = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child_conn,), name="verifier-worker", daemon=True
        )
        self.process.start()
        child_conn.close()
        self._ready = False

    def grade(self, item: _Item, timeout_s: float) -> Reason:
        if not self._ready:
            self._await_ready()
        self.conn.send(item)
        if not self.conn.poll(timeout_s):
            return "timeout"
        reason, detail = self.conn.recv()
        if reason == "error":
            logger.warning("verifier error grading %.80r: %s", item[0], detail)
        return reason

    def _await_ready(self) -> None:
        try:
            ready = self.conn.poll(_STARTUP_TIMEOUT_S) and self.conn.recv() == _READY
        except EOFError:
            ready = False
        if not ready:
            raise WorkerStartError(
                f"verifier worker (pid {self.process.pid}) did not start within "
                f"{_STARTUP_TIMEOUT_S:.0f} s"
            )
        self._ready = True

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()


@functools.cache
def _warm_up() -> None:
    """Import and exercise math-verify once in this process, on trusted input only."""
    # grade() turns math-verify's own (SIGALRM) timeouts off and math-verify warns about it;
    # the worker processes' hard deadline is the guard instead.
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    for predicted, reference in _WARM_UP_PAIRS:
        grade(predicted, reference)


def _shut_down(owner_pid: int, workers: list[_Worker], threads: ThreadPoolExecutor) -> None:
    if os.getpid() != owner_pid:  # a forked copy of the pool: the workers are not ours
        return
    threads.shutdown(wait=True)
    for worker in workers:
        worker.kill()


def _serve(conn: Connection) -> None:
    """Worker main loop: grade each (answer parts, reference, choices) item that arrives."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()

    conn.send(_READY)
    while True:
        try:
            parts, reference, choices = conn.recv()
        except EOFError:  # the parent closed the pool or died
            return
        try:
            conn.send(("correct" if grade_answer(parts, reference, choices) else "wrong", ""))
        except Exception as error:  # math-verify bugs on odd input: score, don't crash
            conn.send(("error", f"{type(error).__name__}: {error}"[:500]))


def _exit_when_orphaned(parent_pid: int) -> None:
    """Stop a worker busy on a hung item once its parent is gone (killed without clean-up)."""
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)
