"""The per-sample generation log: append, resume, torn last line, changed settings."""

import json

import pytest

from cft_rl.errors import UserError
from cft_rl.eval.log import GREEDY, GenerationLog

SETTINGS = {"model": "m", "seed": 0}


def record(problem_id, sample, correct=True):
    return {"id": problem_id, "sample": sample, "correct": correct, "text": "x\n#### 1"}


def test_append_then_reload(tmp_path):
    path = tmp_path / "bench.jsonl"
    log = GenerationLog(path, SETTINGS).open()
    log.append([record("a", GREEDY), record("a", 0), record("b", 0)])
    log.append([record("a", 0, correct=False)])  # already there: ignored
    reloaded = GenerationLog(path, SETTINGS).open()
    assert set(reloaded.records) == {("a", GREEDY), ("a", 0), ("b", 0)}
    assert reloaded.records[("a", 0)]["correct"] is True
    assert len(path.read_text().splitlines()) == 3


def test_torn_last_line_is_cut_off_and_appending_continues(tmp_path):
    path = tmp_path / "bench.jsonl"
    GenerationLog(path, SETTINGS).open().append([record("a", GREEDY), record("b", GREEDY)])
    whole = path.read_bytes()
    path.write_bytes(whole[:-7])  # killed in the middle of writing b's line

    log = GenerationLog(path, SETTINGS).open()
    assert set(log.records) == {("a", GREEDY)}
    log.append([record("b", GREEDY)])
    assert path.read_bytes() == whole
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["a", "b"]


def test_corrupt_line_before_the_end_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "bench.jsonl"
    GenerationLog(path, SETTINGS).open()
    lines = [json.dumps(record("a", GREEDY)), "{oops", json.dumps(record("b", GREEDY))]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"bench.jsonl:2"):
        GenerationLog(path, SETTINGS).open()


def test_other_settings_refuse_to_resume(tmp_path):
    path = tmp_path / "bench.jsonl"
    GenerationLog(path, SETTINGS).open().append([record("a", GREEDY)])
    with pytest.raises(UserError, match=r"seed: 0 -> 1"):
        GenerationLog(path, {**SETTINGS, "seed": 1}).open()
