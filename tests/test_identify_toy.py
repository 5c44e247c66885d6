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

    assert main([*argv, "data.template=boxed"]) == 2  # other settings into the same directory
    assert "data.template" in capsys.readouterr().err


@pytest.mark.slow  # identifies a few toy answers three times (~30 s)
def test_a_higher_limit_identifies_only_the_new_questions_and_a_lower_one_reads_a_prefix(
    tmp_path,
):
    argv = ["identify", "--recipe", RECIPE, "generation.batch_size=4"]
    fresh, extended = tmp_path / "fresh", tmp_path / "extended"
    assert main([*argv, f"output_dir={fresh}", "data.limit=6"]) == 0
    assert main([*argv, f"output_dir={extended}", "data.limit=3"]) == 0
    results = extended / "shards" / "results-00000-of-00001.jsonl"
    first = results.read_bytes()
    assert main([*argv, f"output_dir={extended}", "data.limit=6"]) == 0
    assert results.read_bytes().startswith(first)  # the first 3 kept, 3 appended
    assert [r["index"] for r in read_repaired(results)] == list(range(6))
    columns = ["id", "response_token_ids", "critical_mask"]
    assert load_identified(extended).select_columns(columns).to_list() == (
        load_identified(fresh).select_columns(columns).to_list()
    )
    assert json.loads((extended / "summary.json").read_text())["questions"] == 6

    assert main([*argv, f"output_dir={extended}", "data.limit=2"]) == 0
    assert json.loads((extended / "summary.json").read_text())["questions"] == 2
    assert [row["id"] for row in load_identified(extended)] == [
        row["id"] for row in load_identified(fresh) if int(row["id"].rsplit("-", 1)[1]) < 2
    ]


def test_store_cuts_a_torn_last_line_and_names_a_bad_one(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"index": 0}\n{"index": 1}\n{"ind')
    assert read_repaired(path) == [{"index": 0}, {"index": 1}]
    assert path.read_text() == '{"index": 0}\n{"index": 1}\n'

    path.write_text('{"index": 0}\nnot json\n{"index": 2}\n')
    with pytest.raises(UserError, match=r"results.jsonl:2: not a JSON record"):
        read_repaired(path)


def test_a_shard_finished_with_more_questions_is_done_for_fewer(tmp_path):
    from cft_rl.identify.dataset import finished_shards
    from cft_rl.identify.store import ShardFiles

    for index, questions in ((0, 64), (1, 36)):
        ShardFiles(tmp_path, index, 2).mark_done({"questions": questions})
    assert finished_shards(tmp_path, [64, 36])[1] == []
    assert finished_shards(tmp_path, [50, 0])[1] == []  # data.limit lowered to 50: a prefix
    assert finished_shards(tmp_path, [64, 46])[1] == [1]  # raised: shard 1 has work left
    assert finished_shards(tmp_path / "elsewhere", [1, 1])[1] == [0, 1]
