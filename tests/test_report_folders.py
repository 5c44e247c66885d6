"""Every report refuses a folder that is not the kind of run it reads, names what it
expected, and writes nothing there."""

import json
from pathlib import Path

import pytest

from cft_rl.commands import REPORTS, resolve
from cft_rl.errors import UserError

# What each kind of run leaves that a report could mistake for its own input.
FOLDERS = {
    "sft": {
        "metrics.jsonl": '{"step": 1, "loss": 0.5, "grad_norm": 1.0}\n',
        "config.yaml": "seed: 0\n",
    },
    "grpo": {"metrics.jsonl": '{"step": 1, "reward_mean": 0.5, "entropy": 0.2}\n'},
    "eval": {"summary.json": json.dumps({"benchmarks": [{"benchmark": "toy", "n": 2}]})},
    "identify": {
        "summary.json": json.dumps({"questions": 2, "kept": 1}),
        "shards/settings.json": "{}",
    },
    "experiment": {"plan.json": json.dumps({"sft": [], "grpo": [], "evals": []})},
    "empty": {},
}
# The folder kind each report reads.
READS = {"entropy": "grpo", "passk": "eval", "tokens": "identify", "compare": "experiment"}


def make_folder(root: Path, kind: str) -> Path:
    folder = root / kind
    folder.mkdir()
    for name, text in FOLDERS[kind].items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# Every report against every other kind of folder (its own kind: its own tests, on real runs).
CASES = [(report, kind) for report in sorted(READS) for kind in FOLDERS if READS[report] != kind]


@pytest.mark.parametrize(("report", "kind"), CASES)
def test_a_report_refuses_a_folder_of_another_kind_and_writes_nothing(report, kind, tmp_path):
    folder = make_folder(tmp_path, kind)
    before = listing(folder)
    function = resolve(REPORTS[report][0])
    with pytest.raises(UserError, match=r"is .* the output_dir of"):
        function([str(folder)], out=None)
    assert listing(folder) == before
