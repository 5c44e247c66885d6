"""`cft-rl report passk`: one PNG with a panel per benchmark and a markdown table."""

import json

import pytest

from cft_rl.cli import main
from cft_rl.errors import UserError
from cft_rl.report.passk import report_passk


def write_summary(run_dir, benchmarks):
    run_dir.mkdir(parents=True)
    summary = {"model": "toy", "n_samples": 4, "ks": [1, 2, 4], "benchmarks": benchmarks}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def result(name, greedy, passk):
    return {"benchmark": name, "problems": 10, "greedy_accuracy": greedy, "pass_at_k": passk}


def test_two_runs_two_benchmarks(tmp_path, capsys):
    write_summary(
        tmp_path / "sft",
        [
            result("toy", 0.5, {"1": 0.4, "2": 0.55, "4": 0.7}),
            result("toy-hard", 0.1, {"1": 0.05, "2": 0.09, "4": 0.15}),
        ],
    )
    write_summary(tmp_path / "cft", [result("toy", 0.6, {"1": 0.5, "2": 0.7, "4": 0.85})])
    out = tmp_path / "report"
    assert (
        main(["report", "passk", str(tmp_path / "sft"), str(tmp_path / "cft"), "--out", str(out)])
        == 0
    )

    assert (out / "passk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "passk.md").read_text().splitlines()
    assert table[0] == "| benchmark | run | problems | greedy | pass@1 | pass@2 | pass@4 |"
    assert "| toy | sft | 10 | 50.0 | 40.0 | 55.0 | 70.0 |" in table
    assert "| toy | cft | 10 | 60.0 | 50.0 | 70.0 | 85.0 |" in table
    assert "| toy-hard | sft | 10 | 10.0 | 5.0 | 9.0 | 15.0 |" in table
    assert len([line for line in table if line.startswith("|")]) == 5
    assert table[-1].startswith("One run per model")  # single runs say they are single
    assert "| toy | cft | 10 | 60.0 |" in capsys.readouterr().out  # and are printed


def test_same_folder_names_are_told_apart_by_path(tmp_path):
    for parent in ("a", "b"):
        write_summary(tmp_path / parent / "eval", [result("toy", 0.5, {"1": 0.5})])
    runs = [str(tmp_path / "a" / "eval"), str(tmp_path / "b" / "eval")]
    report_passk(runs, out=str(tmp_path))
    table = (tmp_path / "passk.md").read_text()
    assert all(run in table for run in runs)


def test_missing_summary_names_the_file(tmp_path):
    with pytest.raises(UserError, match="summary.json not found"):
        report_passk([str(tmp_path)], out=None)


def test_a_greedy_only_run_is_drawn_without_library_warnings(tmp_path, monkeypatch):
    import warnings

    from matplotlib.figure import Figure

    write_summary(tmp_path / "base", [result("toy", 0.0, {})])  # n_samples 0, greedy 0
    write_summary(tmp_path / "cft", [result("toy", 0.6, {"1": 0.5, "2": 0.7, "4": 0.85})])
    drawn = {}
    real_savefig = Figure.savefig

    def savefig(figure, *args, **kwargs):
        axis = figure.axes[0]
        drawn["legend"] = [text.get_text() for text in axis.get_legend().get_texts()]
        drawn["greedy"] = [tuple(c.get_offsets()[0]) for c in axis.collections]
        return real_savefig(figure, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report_passk([str(tmp_path / "base"), str(tmp_path / "cft")], out=str(tmp_path / "r"))
    assert drawn["legend"] == ["base (greedy only)", "cft"]
    assert drawn["greedy"] == [(1.0, 0.0), (1.0, 60.0)]  # both greedy markers, 0 included


def test_eval_table_says_when_no_samples_were_drawn():
    from cft_rl.eval.runner import markdown_table

    summary = {"model": "toy", "n_samples": 0, "ks": [], "temperature": 1.0, "top_p": 1.0}
    summary["benchmarks"] = [result("toy", 0.5, {})]
    assert "no samples drawn" in markdown_table(summary).splitlines()[0]
