"""Entropy-collapse detection for GRPO runs, the same for the local engine and for verl.

Each training step yields one record of metrics under our names (METRIC_NAMES). The local
engine writes them directly; for verl, `VerlMetricsReader` tails the JSONL that verl's `file`
logger appends to (one `{"step": N, "data": {"actor/entropy": ...}}` per line) and renames.
`EntropyMonitor` is fed one record per step and returns the collapse events it detects.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from cft_rl.config import Section
from cft_rl.errors import UserError
from cft_rl.jsonl import JsonlTail

__all__ = [
    "METRIC_NAMES",
    "VERL_METRIC_NAMES",
    "CollapseEvent",
    "EntropyMonitor",
    "EntropyMonitorSettings",
    "VerlMetricsReader",
    "normalise_verl_record",
]

# verl's metric keys (trainer/ppo/ray_trainer.py, metric_utils.py, core_algos.py, the actor's
# update metrics prefixed "actor/") -> our names, used by both engines' metrics JSONL.
VERL_METRIC_NAMES: dict[str, str] = {
    "actor/entropy": "entropy",  # mean token entropy of the policy on its rollouts
    "critic/score/mean": "reward_mean",  # verifier score before any KL-in-reward
    "response_length/mean": "response_length_mean",
    "response_length/clip_ratio": "response_clip_ratio",  # share cut at max length
    "actor/pg_clipfrac": "pg_clipfrac",
    "actor/pg_clipfrac_lower": "pg_clipfrac_lower",
    "actor/ppo_kl": "ppo_kl",
    "actor/kl_loss": "kl_loss",
    "actor/pg_loss": "pg_loss",
    "actor/grad_norm": "grad_norm",
    "actor/lr": "lr",
    "timing_s/step": "step_time_s",
}
METRIC_NAMES: tuple[str, ...] = ("step", *VERL_METRIC_NAMES.values())


class EntropyMonitorSettings(Section):
    """When to call the policy's entropy collapsed, and what to do about it."""

    enabled: bool = True
    # Mean token entropy (nats) below which the policy counts as collapsed; null: no floor.
    floor: float | None = Field(default=None, ge=0)
    # Consecutive steps below the floor before it fires (smooths single noisy steps).
    floor_patience: int = Field(default=1, ge=1)
    # Steps over which the fall is measured, by a least-squares line through them.
    window: int = Field(default=20, ge=3)
    # Fire when the fitted line falls by more than this fraction of its value at the window's
    # start; null: only the floor.
    max_relative_drop: float | None = Field(default=0.5, gt=0, le=1)
    # warn: report only. stop: ask the run to stop. raise_entropy_coeff: multiply the entropy
    # bonus coefficient. switch_loss_mode: train with the policy loss `switch_to` from the
    # next step on (e.g. clip_cov or kl_cov, which hold the entropy). The last two: local
    # engine only (verl reads its settings once, at launch).
    action: Literal["warn", "stop", "raise_entropy_coeff", "switch_loss_mode"] = "warn"
    raise_factor: float = Field(default=2.0, gt=1)
    # The coefficient to start from when it is 0 (multiplying 0 would never raise it).
    raise_from: float = Field(default=1e-3, gt=0)
    max_entropy_coeff: float = Field(default=0.01, gt=0)
    # switch_loss_mode: the policy loss (algorithm.policy_loss.loss_mode name) to switch to.
    switch_to: str | None = None

    @model_validator(mode="after")
    def _something_to_watch(self) -> EntropyMonitorSettings:
        if self.enabled and self.floor is None and self.max_relative_drop is None:
            raise ValueError("set floor or max_relative_drop (or enabled: false)")
        if (self.action == "switch_loss_mode") != (self.switch_to is not None):
            raise ValueError("switch_to names the policy loss of action switch_loss_mode (only)")
        return self


@dataclass(frozen=True)
class CollapseEvent:
    """One detection: the step, why, what was done, and the entropy that triggered it."""

    step: int
    reason: Literal["floor", "drop"]
    action: str
    entropy: float
    message: str
    # The entropy coefficient after the action (changed only by raise_entropy_coeff).
    entropy_coeff: float
    # The policy loss after the action (changed only by switch_loss_mode).
    loss_mode: str

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


class EntropyMonitor:
    """Feed it one step's metrics at a time; it returns the collapse events of that step.

    After an event it stays quiet for `window` steps and forgets the entropy history, so one
    collapse is reported (and acted on) once per window, not on every step.
    """

    def __init__(
        self,
        settings: EntropyMonitorSettings,
        entropy_coeff: float = 0.0,
        loss_mode: str = "vanilla",
    ) -> None:
        self.settings = settings
        self.entropy_coeff = entropy_coeff
        self.loss_mode = loss_mode
        self.should_stop = False
        self._history: deque[tuple[int, float]] = deque(maxlen=settings.window)
        self._steps_below_floor = 0
        self._quiet_until: int | None = None

    def update(self, step: int, metrics: Mapping[str, Any]) -> list[CollapseEvent]:
        """Take step `step`'s metrics (our names); records without a finite entropy are skipped."""
        entropy = metrics.get("entropy")
        if not self.settings.enabled or not _is_finite_number(entropy):
            return []
        entropy = float(entropy)
        self._history.append((step, entropy))
        floor = self.settings.floor
        self._steps_below_floor = (
            self._steps_below_floor + 1 if floor is not None and entropy < floor else 0
        )
        if self._quiet_until is not None and step < self._quiet_until:
            return []
        found = self._detect(entropy)
        if found is None:
            return []
        reason, text = found
        event = self._act(step, reason, entropy, text)
        self._history.clear()
        self._steps_below_floor = 0
        self._quiet_until = step + self.settings.window
        return [event]

    def _detect(self, entropy: float) -> tuple[Literal["floor", "drop"], str] | None:
        s = self.settings
        if s.floor is not None and self._steps_below_floor >= s.floor_patience:
            steps = self._steps_below_floor
            return "floor", f"entropy {entropy:.4g} below the floor {s.floor:g} for {steps} step(s)"
        if s.max_relative_drop is not None and len(self._history) == s.window:
            start, end = _fitted_ends(self._history)
            if start > 0 and (start - end) / start > s.max_relative_drop:
                first, last = self._history[0][0], self._history[-1][0]
                return "drop", (
                    f"entropy fell {100 * (start - end) / start:.0f}% (fit {start:.4g} -> "
                    f"{end:.4g}) over steps {first}-{last}, more than the allowed "
                    f"{100 * s.max_relative_drop:.0f}%"
                )
        return None

    def _act(
        self, step: int, reason: Literal["floor", "drop"], entropy: float, text: str
    ) -> CollapseEvent:
        action = self.settings.action
        if action == "stop":
            self.should_stop = True
            text += "; stopping the run"
        elif action == "raise_entropy_coeff":
            old = self.entropy_coeff
            raised = old * self.settings.raise_factor if old > 0 else self.settings.raise_from
            # Never lowers a coefficient that started above the cap.
            self.entropy_coeff = max(old, min(raised, self.settings.max_entropy_coeff))
            if self.entropy_coeff > old:
                text += f"; entropy_coeff {old:g} -> {self.entropy_coeff:g}"
            else:
                text += f"; entropy_coeff already at its cap {old:g}"
        elif action == "switch_loss_mode":
            old_mode, self.loss_mode = self.loss_mode, self.settings.switch_to
            if self.loss_mode != old_mode:
                text += f"; policy loss {old_mode} -> {self.loss_mode} from the next step"
            else:
                text += f"; policy loss already {old_mode}"
        return CollapseEvent(
            step, reason, action, entropy, text, self.entropy_coeff, self.loss_mode
        )


def _fitted_ends(points: deque[tuple[int, float]]) -> tuple[float, float]:
    """Values at the first and last step of the least-squares line through (step, entropy)."""
    x_mean = sum(x for x, _ in points) / len(points)
    y_mean = sum(y for _, y in points) / len(points)
    spread = sum((x - x_mean) ** 2 for x, _ in points)
    covariance = sum((x - x_mean) * (y - y_mean) for x, y in points)
    slope = covariance / spread if spread else 0.0
    return y_mean + slope * (points[0][0] - x_mean), y_mean + slope * (points[-1][0] - x_mean)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# Reading metrics files as they grow


def normalise_verl_record(record: Mapping[str, Any]) -> dict[str, Any]:
    """One verl file-logger record -> {"step": N, our_name: value, ...} (finite numbers only)."""
    step, data = record.get("step"), record.get("data")
    if not isinstance(step, int) or not isinstance(data, Mapping):
        raise ValueError('a verl file-logger record has an integer "step" and a "data" object')
    out: dict[str, Any] = {"step": step}
    for verl_key, ours in VERL_METRIC_NAMES.items():
        value = data.get(verl_key)
        if _is_finite_number(value):
            out[ours] = float(value)
    return out


class VerlMetricsReader:
    """Tails verl's `file` logger JSONL; returns new records under our metric names."""

    def __init__(self, path: str | Path) -> None:
        self._tail = JsonlTail(path)

    def read_new(self) -> list[dict[str, Any]]:
        records = []
        for line_no, raw in self._tail.read_new():
            try:
                records.append(normalise_verl_record(raw))
            except ValueError as err:
                raise UserError(f"{self._tail.path}:{line_no}: {err}") from None
        return records
