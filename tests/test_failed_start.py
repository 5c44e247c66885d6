"""A start that fails before any work (a wrong model path, a data field that is not there)
leaves nothing in its output_dir that would refuse the corrected rerun, in every stage."""

from pathlib import Path

import pytest
from test_toy import TINY

from cft_rl.cli import main
from cft_rl.experiment.grid import Cell
from cft_rl.experiment.runner import CELL_LOG, write_cell_recipe

ROOT = Path(__file__).resolve().parents[1]
TOY = ROOT / "recipes" / "toy"

# Each stage on the shipped toy model, as small as it runs.
STAGES = {
    "identify": [f"--recipe={TOY / 'identify.yaml'}", "data.limit=2"],
    "sft": [
        f"--recipe={TOY / 'sft.yaml'}",
        "data.format=examples",
        "data.path=null",
        "data.benchmark=toy-train",
        "data.limit=8",
        "train.max_steps=1",
        "checkpoint.every_steps=0",
        "logging.progress=false",
    ],
    "grpo": [
        f"--recipe={TOY / 'grpo.yaml'}",
        "steps=1",
        "rollout.n=2",
        "batch.prompts_per_step=2",
        "batch.mini_batch_prompts=2",
        "validation.benchmark=null",
    ],
    "eval": [
        f"--recipe={TOY / 'eval.yaml'}",
        "benchmarks=[{benchmark: toy, limit: 2, template: toy}]",
        "n_samples=0",
    ],
}


def files_in(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_failed_start_does_not_block_its_corrected_rerun(stage, tmp_path, capsys):
    out = f"output_dir={tmp_path}"
    assert main([stage, *STAGES[stage], out, "model.path=/nonexistent/model"]) != 0
    assert "model.path /nonexistent/model" in capsys.readouterr().err
    assert set(files_in(tmp_path)) <= {"config.yaml"}
    assert main([stage, *STAGES[stage], out]) == 0, capsys.readouterr().err


def test_identify_with_a_missing_data_field_then_the_right_one(tmp_path, capsys):
    data = tmp_path / "sums.jsonl"
    data.write_text('{"q": "Ava has 2 apples and gets 3 more. How many?", "target": "5"}\n')
    common = [
        "identify",
        f"--recipe={TOY / 'identify.yaml'}",
        "data.benchmark=my-sums",
        f"data.path={data}",
        "data.fields.question={q}",
        f"output_dir={tmp_path / 'run'}",
    ]
    assert main([*common, "data.fields.answer=answer"]) != 0
    assert "answer" in capsys.readouterr().err
    assert main([*common, "data.fields.answer=target"]) == 0, capsys.readouterr().err


def test_an_experiment_cell_whose_start_failed_takes_a_changed_recipe(tmp_path):
    first = Cell("sft/cft/lr1e-04/seed0", "sft", {"model": {"path": "/nonexistent"}})
    path = write_cell_recipe(first, tmp_path)
    # what a failed start leaves: its log and the stage's resolved config
    (path.parent / CELL_LOG).write_text("error: model.path /nonexistent: no such directory\n")
    (path.parent / "config.yaml").write_text("model: {path: /nonexistent}\n")
    fixed = Cell(first.name, "sft", {"model": {"path": "toy"}})
    assert "toy" in write_cell_recipe(fixed, tmp_path).read_text()
    # once the cell has done work, a changed recipe is refused
    (path.parent / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(Exception, match="was run with other settings"):
        write_cell_recipe(first, tmp_path)


def test_a_toy_build_that_failed_before_its_first_checkpoint_takes_a_changed_recipe(
    tmp_path, monkeypatch
):
    from cft_rl.toy import build as build_module

    tiny = [f"--recipe={TOY / 'build.yaml'}", f"output_dir={tmp_path}", *TINY, "train.steps=2"]

    def fails(model, batch):
        raise RuntimeError("out of memory")  # as a first step too large for the machine

    monkeypatch.setattr(build_module, "solution_loss", fails)
    with pytest.raises(RuntimeError):
        main(["toy", "build", *tiny])
    monkeypatch.undo()
    assert not (tmp_path / build_module.STATE_FILE).exists()
    assert main(["toy", "build", *tiny, "train.batch_size=2"]) == 0
    assert (tmp_path / "model.safetensors").is_file()
