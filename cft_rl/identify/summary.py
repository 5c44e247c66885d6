"""Counts and time shares of an identify run, from its per-question records."""

from __future__ import annotations

from collections import Counter
from typing import Any

TIME_KEYS = ("greedy_s", "prefill_s", "decode_s", "verify_s")
COUNT_KEYS = (
    "continuations",
    "decoded_continuations",
    "generated_tokens",
    "near_ties",
    "greedy_mismatches",
)


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over `records` (kept and not kept): the correct set, critical tokens, work, time."""
    kept = [r for r in records if r["kept"]]
    positions = sum(len(r["critical_mask"]) for r in kept)
    critical = sum(sum(r["critical_mask"]) for r in kept)
    totals = {key: sum(r["stats"].get(key, 0) for r in records) for key in TIME_KEYS + COUNT_KEYS}
    seconds = sum(totals[key] for key in TIME_KEYS)
    return {
        "questions": len(records),
        "kept": len(kept),
        "kept_fraction": len(kept) / len(records) if records else 0.0,
        "greedy_verdicts": dict(Counter(r["verdict"] for r in records)),
        "response_tokens": positions,
        "critical_tokens": critical,
        "critical_fraction": critical / positions if positions else 0.0,
        "mean_example_critical_fraction": (
            sum(sum(r["critical_mask"]) / len(r["critical_mask"]) for r in kept) / len(kept)
            if kept
            else 0.0
        ),
        **{key: totals[key] for key in COUNT_KEYS},
        "seconds": {key.removesuffix("_s"): round(totals[key], 3) for key in TIME_KEYS},
        "time_share": {
            key.removesuffix("_s"): round(totals[key] / seconds, 4) if seconds else 0.0
            for key in TIME_KEYS
        },
    }


def one_line(summary: dict[str, Any]) -> str:
    return (
        f"kept {summary['kept']}/{summary['questions']} questions (greedy answer verified); "
        f"{summary['critical_tokens']}/{summary['response_tokens']} response tokens critical "
        f"({100 * summary['critical_fraction']:.1f}%); {summary['continuations']} "
        f"continuations, {summary['near_ties']} with a near tie"
    )
