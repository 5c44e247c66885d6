"""verl's custom reward function: `custom_reward_function.path=<this file>`, name `compute_score`.

verl may load this file as a stand-alone module and calls it from a thread pool in each
reward worker process, so it imports the package absolutely and keeps one lazily created
Verifier per process, shut down when the process exits.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from reward.verifier import Verifier

_lock = threading.Lock()
_verifier: Verifier | None = None
_owner_pid: int | None = None


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: Any,
    extra_info: dict | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Score one response: {"score": 1.0 or 0.0, "acc": bool, "pred": str, "reason": str}."""
    verdict = _shared_verifier().verify(solution_str, str(ground_truth))
    return {
        "score": verdict.score,
        "acc": verdict.correct,
        "pred": verdict.predicted or "",
        "reason": verdict.reason,
    }


def _shared_verifier() -> Verifier:
    global _verifier, _owner_pid
    with _lock:
        # A process forked after the pool was made shares its pipes with the parent:
        # it must make its own pool (and leave the parent's alone).
        if _verifier is None or _owner_pid != os.getpid():
            _verifier = Verifier()  # closed at exit by its finalizer
            _owner_pid = os.getpid()
        return _verifier
