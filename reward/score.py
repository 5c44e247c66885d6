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
    last_number_fallback: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Score one response: {"score": 1.0 or 0.0, "acc": bool, "pred": str, "reason": str}.
    A multiple-choice question carries its options as `extra_info["choices"]`, a list of
    [letter, text] pairs (cft_rl.grpo writes them there). `last_number_fallback` comes from
    verl's `custom_reward_function.reward_kwargs` (the recipe's verifier section)."""
    choices = (extra_info or {}).get("choices")
    options = [(str(letter), str(text)) for letter, text in choices] if choices else None
    verifier = _shared_verifier(last_number_fallback)
    verdict = verifier.verify(solution_str, str(ground_truth), options)
    return {
        "score": verdict.score,
        "acc": verdict.correct,
        "pred": verdict.predicted or "",
        "reason": verdict.reason,
    }


def _shared_verifier(last_number_fallback: bool) -> Verifier:
    global _verifier, _owner_pid
    with _lock:
        # A process forked after the pool was made shares its pipes with the parent:
        # it must make its own pool (and leave the parent's alone).
        if _verifier is None or _owner_pid != os.getpid():
            _verifier = Verifier()  # closed at exit by its finalizer
            _owner_pid = os.getpid()
        # One setting per run: the pool is made once, the flag is read per call.
        _verifier.last_number_fallback = last_number_fallback
        return _verifier
