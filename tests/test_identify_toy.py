"""`cft-rl identify` from the command line on the shipped toy model, and the JSONL store."""

import json
from pathlib import Path

import pytest

from cft_rl.cli import main
from cft_rl.errors import UserError
from cft_rl.identify.dataset import load_identified, read_provenance
from cft_rl.jsonl import read_repaired

RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "toy" / "identify.yaml")


@pytest.mark.slow  # loads the toy model and identifies a few answers (~30 s)
def test_cli_on_the_toy_model(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["identify", "--recipe", RECIPE, f"output_dir={out}"]
    assert main([*argv, "data.limit=3"]) == 0

    summary = json.loads((out / "summary.json").read_text())
    data = load_identified(out)
    assert summary["questions"] == 3
    assert summary["kept"] == len(data) > 0
    row = data[0]
    assert len(row["critical_mask"]) == len(row["response_token_ids"]) == len(row["alternatives"])
    assert 0 < sum(row["critical_mask"]) < len(row["critical_mask"])
    assert summary["greedy_mismatches"] == 0
    provenance = read_provenance(out / "critical_tokens.parquet")
    assert provenance["model"] == "toy" and provenance["model_fingerprint"]
    assert (out / "config.yaml").is_file()

    # A rerun finds everything done: same dataset, nothing recomputed.
    before = (out / "shards" / "results-00000-of-00001.jsonl").read_bytes()
    assert main([*argv, "data.limit=3"]) == 0
    assert (out / "shards" / "results-00000-of-00001.jsonl").read_bytes() == before
    assert main(["report", "tokens", str(out)]) == 0
    assert "response tokens are critical" in (out / "tokens.md").read_text()

    assert main([*argv, "data.limit=4"]) == 2  # other settings into the same directory
    assert "data.limit" in capsys.readouterr().err


def test_store_cuts_a_torn_last_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"index": 0}\n{"index": 1}\n{"ind')
    assert read_repaired(path) == [{"index": 0}, {"index": 1}]
    assert path.read_text() == '{"index": 0}\n{"index": 1}\n'

    path.write_text('{"index": 0}\nnot json\n{"index": 2}\n')
    with pytest.raises(UserError, match=r"results.jsonl:2: not a JSON record"):
        read_repaired(path)
