"""`python -m cft_rl.data.check` on the fixtures: loads each benchmark, scores its references."""

from __future__ import annotations

from pathlib import Path

from cft_rl.data.check import failure_cause, main

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"


def test_check_scores_every_fixture_reference_correct(tmp_path, capsys):
    report = tmp_path / "report.md"
    assert main(["--root", str(FIXTURES), "--workers", "1", "--markdown", str(report)]) == 0
    out = capsys.readouterr().out
    assert "== asdiv: 3 examples" in out and "-> 3:30 p.m." in out
    table = report.read_text()
    assert "| **all** | 27 | 27 | 100.00 | 0 | 0 | 0 | 0 |" in table
    assert "Failures by cause:\n\n- none" in table


def test_failure_causes():
    assert failure_cause("timeout", "x", "x") == "timeout"
    assert failure_cause("no_answer", None, "x") == "no answer extracted"
    assert failure_cause("wrong", "3", "3.") == "extraction changed the answer"
    assert failure_cause("wrong", "It is not a subspace", "It is not a subspace") == "prose answer"
    assert failure_cause("wrong", "f(x)", "f(x)").startswith("math-verify rejects")
