"""Is an extracted answer equal to a reference answer? Pure math-verify, no processes.

Runs inside the verifier's worker processes (reward.verifier), which enforce the
timeout; never call it on untrusted text in the main process.
"""

from __future__ import annotations

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

_CONFIGS = [LatexExtractionConfig(), ExprExtractionConfig()]


def grade(predicted: str, reference: str) -> bool:
    """True when `predicted` and `reference` denote the same mathematical answer."""
    gold = parse(f"${reference}$", extraction_config=_CONFIGS, parsing_timeout=None)
    pred = parse(f"${predicted}$", extraction_config=_CONFIGS, parsing_timeout=None)
    if not gold or not pred:
        return predicted.strip() == reference.strip()
    return bool(verify(gold, pred, timeout_seconds=None))
