"""What a user sees when a model path is wrong or a run is interrupted: one line, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from cft_rl import cli
from cft_rl.config import ModelSpec
from cft_rl.errors import UserError
from cft_rl.modeling import load_causal_lm, load_tokenizer

EVAL_RECIPE = str(Path(__file__).resolve().parents[1] / "recipes" / "toy" / "eval.yaml")


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/no/such/model", "no such directory"),
        ("runs/not-run-yet/hf_model", "has that stage run"),
        ("./model", "no such directory"),
    ],
)
def test_a_missing_model_directory_is_named(path, message):
    for load in (load_tokenizer, load_causal_lm):
        with pytest.raises(UserError, match=rf"model.path {path}: .*{message}"):
            load(ModelSpec(path=path))


def test_a_model_under_the_home_directory_loads(tmp_path, monkeypatch):
    from tiny_lm import save_tiny_model

    save_tiny_model(tmp_path / "models" / "tiny")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_tokenizer(ModelSpec(path="~/models/tiny")).eos_token == "<eos>"


def test_a_directory_that_is_no_model_is_named(tmp_path):
    with pytest.raises(UserError, match="without config.json"):
        load_tokenizer(ModelSpec(path=str(tmp_path)))


def test_interrupt_says_how_to_resume(monkeypatch, capsys, tmp_path):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run_stage", interrupted)
    code = cli.main(["eval", "--recipe", EVAL_RECIPE, f"output_dir={tmp_path}"])
    assert code == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err


def test_a_missing_model_through_the_cli_is_one_line(capsys, tmp_path):
    code = cli.main(
        ["eval", "--recipe", EVAL_RECIPE, "model.path=/no/such/model", f"output_dir={tmp_path}"]
    )
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "cft-rl eval: error: model.path /no/such/model: no such directory (an export of "
        "`cft-rl sft` or `cft-rl grpo` is OUT/hf_model: has that stage run?)"
    ]


def test_eval_reads_its_benchmarks_before_the_model(capsys, tmp_path):
    """A typo in a benchmark name is reported even when the model would fail too."""
    args = [
        "benchmarks=[{benchmark: gsm8kk}]",
        "model.path=/no/such/model",
        f"output_dir={tmp_path}",
    ]
    assert cli.main(["eval", "--recipe", EVAL_RECIPE, *args]) == 2
    assert "unknown benchmark 'gsm8kk' (did you mean 'gsm8k'?)" in capsys.readouterr().err


def test_a_recipe_run_with_the_wrong_command_is_refused(capsys):
    assert cli.main(["identify", "--recipe", EVAL_RECIPE]) == 2
    assert "is a recipe for `cft-rl eval`, not `cft-rl identify`" in capsys.readouterr().err


def test_a_stage_without_its_recipe_says_so(capsys):
    assert cli.main(["eval"]) == 2
    err = capsys.readouterr().err
    assert "benchmarks" in err and "no --recipe given" in err


@pytest.mark.parametrize(
    "command", [*([name] for name in cli.STAGES), *(["toy", name] for name in cli.TOY_COMMANDS)]
)
def test_every_commands_help_points_to_docs_that_exist(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([*command, "--help"])
    assert done.value.code == 0
    shown = capsys.readouterr().out
    [doc] = [word.rstrip(";") for word in shown.split() if word.startswith("docs/")]
    assert (Path(__file__).resolve().parents[1] / doc).is_file(), doc
