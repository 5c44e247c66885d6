"""Entropy-collapse detector and the JSONL tail reader for verl's file logger."""

from __future__ import annotations

import json
import random

import pytest

from cft_rl.config import ConfigError, load_config
from cft_rl.errors import UserError
from cft_rl.grpo.entropy_monitor import (
    METRIC_NAMES,
    EntropyMonitor,
    EntropyMonitorSettings,
    VerlMetricsReader,
    normalise_verl_record,
)
from cft_rl.jsonl import JsonlTail


def _feed(monitor: EntropyMonitor, series: list[float], start: int = 1):
    events = []
    for step, entropy in enumerate(series, start=start):
        events += monitor.update(step, {"entropy": entropy, "reward_mean": 0.5})
    return events


def _noisy_flat(steps: int, level: float = 1.2, noise: float = 0.15, seed: int = 0):
    rng = random.Random(seed)
    return [level + rng.uniform(-noise, noise) for _ in range(steps)]


def test_fires_on_falling_entropy():
    settings = EntropyMonitorSettings(window=10, max_relative_drop=0.3)
    # 1.5 at first, losing 6% per step: the 10-step fit falls by ~43% after the first window.
    series = [1.5 * 0.94**i for i in range(30)]
    events = _feed(EntropyMonitor(settings), series)
    assert events, "a steadily falling entropy must be reported"
    first = events[0]
    assert (first.step, first.reason, first.action) == (10, "drop", "warn")
    assert "fell" in first.message and "steps 1-10" in first.message
    # Quiet for a window after each event: at most one per window.
    assert [e.step for e in events] == [10, 20, 30]


def test_quiet_on_flat_and_noisy_flat_entropy():
    settings = EntropyMonitorSettings(window=10, max_relative_drop=0.3, floor=0.2)
    assert _feed(EntropyMonitor(settings), [1.2] * 200) == []
    for seed in range(5):
        assert _feed(EntropyMonitor(settings), _noisy_flat(200, seed=seed)) == []


def test_slow_decline_below_the_rate_is_quiet():
    # 1% per step is 9% over a 10-step window: under the allowed 30%.
    settings = EntropyMonitorSettings(window=10, max_relative_drop=0.3)
    assert _feed(EntropyMonitor(settings), [2.0 * 0.99**i for i in range(60)]) == []


def test_floor_breach_with_patience():
    settings = EntropyMonitorSettings(floor=0.5, floor_patience=3, max_relative_drop=None, window=5)
    monitor = EntropyMonitor(settings)
    # One dip is forgiven; three consecutive steps below the floor are not.
    series = [0.9, 0.4, 0.9, 0.45, 0.4, 0.3, 0.3]
    events = _feed(monitor, series)
    assert [(e.step, e.reason) for e in events] == [(6, "floor")]
    assert events[0].entropy == 0.3
    assert "below the floor 0.5 for 3 step(s)" in events[0].message
    # Still below after the quiet window (5 steps): reported again.
    later = _feed(monitor, [0.3] * 6, start=8)
    assert [e.step for e in later] == [11]


def test_stop_action_sets_should_stop():
    monitor = EntropyMonitor(EntropyMonitorSettings(floor=1.0, action="stop"))
    assert not monitor.should_stop
    events = monitor.update(7, {"entropy": 0.2})
    assert monitor.should_stop and events[0].action == "stop"
    assert "stopping" in events[0].message


def test_raise_entropy_coeff_multiplies_up_to_the_cap():
    settings = EntropyMonitorSettings(
        floor=1.0,
        window=3,
        max_relative_drop=None,
        action="raise_entropy_coeff",
        raise_factor=2.0,
        raise_from=0.001,
        max_entropy_coeff=0.005,
    )
    monitor = EntropyMonitor(settings, entropy_coeff=0.0)
    events = _feed(monitor, [0.1] * 12)
    assert [e.step for e in events] == [1, 4, 7, 10]
    assert [e.entropy_coeff for e in events] == [0.001, 0.002, 0.004, 0.005]
    assert monitor.entropy_coeff == 0.005
    assert "already at its cap" not in events[-1].message
    more = _feed(monitor, [0.1] * 3, start=13)
    assert more[0].entropy_coeff == 0.005 and "already at its cap" in more[0].message


def test_records_without_entropy_and_disabled_monitor_are_ignored():
    monitor = EntropyMonitor(EntropyMonitorSettings(floor=1.0))
    assert monitor.update(1, {"reward_mean": 0.1}) == []
    assert monitor.update(2, {"entropy": float("nan")}) == []
    assert monitor.update(3, {"entropy": None}) == []
    off = EntropyMonitor(EntropyMonitorSettings(enabled=False, floor=1.0))
    assert off.update(1, {"entropy": 0.0}) == []


def test_event_record_is_json_serialisable():
    event = EntropyMonitor(EntropyMonitorSettings(floor=1.0)).update(4, {"entropy": 0.5})[0]
    record = json.loads(json.dumps(event.to_record()))
    assert record["step"] == 4 and record["reason"] == "floor" and record["entropy"] == 0.5


def test_settings_validate_through_a_recipe(tmp_path):
    recipe = tmp_path / "monitor.yaml"
    recipe.write_text("floor: 0.3\naction: raise_entropy_coeff\n")
    settings = load_config(EntropyMonitorSettings, recipe, ["window=8"])
    assert (settings.floor, settings.window, settings.action) == (0.3, 8, "raise_entropy_coeff")
    with pytest.raises(ConfigError, match="unknown key 'windw'.*did you mean 'window'"):
        load_config(EntropyMonitorSettings, recipe, ["windw=8"])
    with pytest.raises(ConfigError, match="action"):
        load_config(EntropyMonitorSettings, recipe, ["action=panic"])
    with pytest.raises(ConfigError, match="floor or max_relative_drop"):
        load_config(EntropyMonitorSettings, None, ["max_relative_drop=null"])


# --- reading verl's JSONL as it grows --------------------------------------------------------


def _verl_line(step: int, **data) -> bytes:
    # verl's FileLogger writes orjson.dumps({"step": step, "data": metrics}) + b"\n".
    return json.dumps({"step": step, "data": data}).encode() + b"\n"


def test_tail_holds_back_a_partially_written_last_line(tmp_path):
    path = tmp_path / "run.jsonl"
    tail = JsonlTail(path)
    assert tail.read_new() == []  # not created yet
    first = _verl_line(1, **{"actor/entropy": 1.1})
    second = _verl_line(2, **{"actor/entropy": 0.9})
    with path.open("wb") as out:
        out.write(first + second[:17])
    assert [r["step"] for _, r in tail.read_new()] == [1]
    assert tail.read_new() == []  # still incomplete
    with path.open("ab") as out:
        out.write(second[17:])
    assert tail.read_new() == [(2, json.loads(second))]


def test_tail_splits_multibyte_characters_safely(tmp_path):
    path = tmp_path / "run.jsonl"
    line = json.dumps({"step": 1, "note": "entropía"}, ensure_ascii=False).encode() + b"\n"
    cut = line.index("í".encode()) + 1  # inside the two-byte character
    tail = JsonlTail(path)
    path.write_bytes(line[:cut])
    assert tail.read_new() == []
    with path.open("ab") as out:
        out.write(line[cut:])
    assert tail.read_new()[0][1]["note"] == "entropía"


def test_tail_restarts_when_the_file_is_rewritten(tmp_path):
    path = tmp_path / "run.jsonl"
    tail = JsonlTail(path)
    path.write_bytes(_verl_line(1) + _verl_line(2) + _verl_line(3))
    assert len(tail.read_new()) == 3
    path.write_bytes(_verl_line(1))  # a restarted run truncates the log
    assert [(n, r["step"]) for n, r in tail.read_new()] == [(1, 1)]


def test_tail_names_file_and_line_of_a_bad_record(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_bytes(_verl_line(1) + b"\n" + b"{not json}\n")
    with pytest.raises(UserError, match=r"run.jsonl:3: not a JSON record"):
        JsonlTail(path).read_new()
    path.write_bytes(b"[1, 2]\n")
    with pytest.raises(UserError, match=r"run.jsonl:1: expected a JSON object"):
        JsonlTail(path).read_new()


def test_verl_records_get_our_names(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_bytes(
        _verl_line(0, **{"val-core/toy/acc/mean@1": 0.4})  # validation before training
        + _verl_line(
            1,
            **{
                "actor/entropy": 0.82,
                "critic/score/mean": 0.375,
                "response_length/mean": 96.5,
                "actor/pg_clipfrac": 0.01,
                "actor/pg_clipfrac_lower": 0.0,
                "actor/ppo_kl": 1e-4,
                "actor/kl_loss": None,  # orjson writes NaN as null
                "critic/rewards/mean": 0.3,
            },
        )
    )
    records = VerlMetricsReader(path).read_new()
    assert records[0] == {"step": 0}
    assert records[1] == {
        "step": 1,
        "entropy": 0.82,
        "reward_mean": 0.375,
        "response_length_mean": 96.5,
        "pg_clipfrac": 0.01,
        "pg_clipfrac_lower": 0.0,
        "ppo_kl": 1e-4,
    }
    assert set(records[1]) <= set(METRIC_NAMES)


def test_verl_reader_rejects_records_of_another_shape(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_bytes(_verl_line(1) + b'{"entropy": 1.0}\n')
    with pytest.raises(UserError, match=r"run.jsonl:2: .*\"step\""):
        VerlMetricsReader(path).read_new()
    with pytest.raises(ValueError):
        normalise_verl_record({"step": "1", "data": {}})


def test_monitor_fed_from_a_growing_verl_log(tmp_path):
    path = tmp_path / "run.jsonl"
    reader = VerlMetricsReader(path)
    monitor = EntropyMonitor(EntropyMonitorSettings(window=5, max_relative_drop=0.25))
    events = []
    for step in range(1, 16):
        with path.open("ab") as out:
            out.write(_verl_line(step, **{"actor/entropy": 1.0 * 0.9**step}))
        for record in reader.read_new():
            events += monitor.update(record["step"], record)
    assert [e.step for e in events] == [5, 10, 15]
