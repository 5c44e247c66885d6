"""A file of one's own in any stage's recipe: `fields` with a question template over several
fields (multiple-choice options laid out from a list or a mapping), the answer field, a
solution field; errors name the file, the record and the field."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cft_rl.cli import main
from cft_rl.commands import STAGES, resolve
from cft_rl.config import ConfigError, load_config
from cft_rl.data import DataError, load_benchmark, load_file_examples, load_jsonl_examples
from cft_rl.data.readers import choice_options
from reward import Verifier

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "{problem}\n\nOptions:\n{options}"
ROWS = [
    {"qid": "add-1", "problem": "What is 2 + 3?", "options": ["A) 4", "B) 5", "C) 6"],
     "label": "B", "why": "2 + 3 = 5, option B. #### B"},
    {"qid": "div-1", "problem": "What is 10 / 4?", "options": {"A": "2", "B": "2.5", "C": "3"},
     "label": "B", "why": "10 / 4 = 2.5. #### B"},
    {"qid": "geo-1", "problem": "How many sides has a square?", "options": ["A) 3", "B) 4"],
     "label": "B", "why": "A square has 4 sides. #### B"},
]  # fmt: skip


@pytest.fixture
def choice_file(tmp_path) -> Path:
    path = tmp_path / "my_choices.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return path


def own_data(path: Path, **extra) -> dict:
    return {
        "benchmark": "my-choices",
        "path": str(path),
        "template": "toy",
        "fields": {"question": TEMPLATE, "answer": "label", **extra},
    }


def test_the_template_lays_out_list_and_mapping_options(choice_file):
    first, second, _ = load_file_examples(choice_file, "my-choices", TEMPLATE, "label")
    assert first.question == "What is 2 + 3?\n\nOptions:\nA) 4\nB) 5\nC) 6"
    assert second.question == "What is 10 / 4?\n\nOptions:\nA) 2\nB) 2.5\nC) 3"
    assert (first.answer, first.source, first.id) == ("B", "my-choices", "my-choices-0")


def test_errors_name_the_file_record_and_field(choice_file, tmp_path):
    with pytest.raises(DataError, match=r"my_choices.jsonl line 1: missing field 'choices'"):
        load_file_examples(choice_file, "x", "{problem} {choices}", "label")
    with pytest.raises(DataError, match=r"my_choices.jsonl line 1: missing field 'gold'"):
        load_file_examples(choice_file, "x", TEMPLATE, "gold")
    with pytest.raises(DataError, match="names no {field}"):
        load_file_examples(choice_file, "x", "no placeholder", "label")
    with pytest.raises(DataError, match="no such file"):
        load_file_examples(tmp_path / "absent.jsonl", "x", TEMPLATE, "label")


@pytest.mark.parametrize(
    ("stage", "section"),
    [("identify", "data"), ("grpo", "data"), ("sft", "data"), ("sft", "validation")],
)
def test_every_training_stage_reads_a_file_of_ones_own(choice_file, stage, section):
    data = own_data(choice_file, solution="why")
    recipe = {section: data}
    if stage == "sft":
        recipe["data"] = (
            {**data, "format": "examples"}
            if section == "data"
            else {"format": "examples", "benchmark": "toy-train", "limit": 4}
        )
    config = resolve(STAGES[stage][0]).model_validate(recipe)
    examples = getattr(config, section).load()
    assert [e.question.splitlines()[0] for e in examples] == [r["problem"] for r in ROWS]
    assert examples[0].solution == ROWS[0]["why"]


def test_fields_without_a_path_is_an_error_naming_the_key(choice_file):
    with pytest.raises(ConfigError, match="fields: a file of one's own needs `path`"):
        load_config(resolve(STAGES["grpo"][0]), None, ["data.fields.answer=label"])


def test_eval_runs_on_a_file_of_ones_own(choice_file, tmp_path, capsys):
    recipe = str(ROOT / "recipes" / "toy" / "eval.yaml")
    spec = json.dumps([own_data(choice_file)])
    argv = ["eval", "--recipe", recipe, f"benchmarks={spec}", "n_samples=0"]
    assert main([*argv, f"output_dir={tmp_path / 'out'}", "verifier.num_workers=1"]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    [result] = summary["benchmarks"]
    assert result["benchmark"] == "my-choices" and result["problems"] == 3
    log = (tmp_path / "out" / "generations" / "my-choices.jsonl").read_text().splitlines()
    assert len(log) == 3


def test_identify_cft_and_grpo_run_on_a_file_of_ones_own(tmp_path):
    """From a recipe, end to end on the toy model: a multiple-choice file of toy questions is
    answered, graded by its options (the toy answers "#### N"; N is option B's text),
    identified, and trained on for a step with CFT and with GRPO."""
    path = tmp_path / "toy_choices.jsonl"
    rows = [
        {
            "qid": f"sum-{k:03d}",
            "problem": e.question,
            "options": [str(int(e.answer) + 1), e.answer, "0"],
            "label": "B",
        }
        for k, e in enumerate(load_benchmark("toy-train", limit=4))
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    fields = {"question": "{problem}", "answer": "label", "options": "options", "id": "qid"}
    spec = json.dumps({"benchmark": "mine", "path": str(path), "template": "toy", "fields": fields})

    identify = tmp_path / "identify"
    argv = ["identify", "--recipe", str(ROOT / "recipes" / "toy" / "identify.yaml")]
    assert main([*argv, f"data={spec}", f"output_dir={identify}", "verifier.num_workers=1"]) == 0
    summary = json.loads((identify / "summary.json").read_text())
    assert summary["questions"] == 4 and summary["kept"] >= 2  # the toy gets most right
    assert summary["continuations"] > 0 and summary["critical_tokens"] > 0
    kept_ids = pq.read_table(identify / "critical_tokens.parquet", columns=["id"])["id"]
    assert set(kept_ids.to_pylist()) <= {row["qid"] for row in rows}  # the file's own ids

    cft = tmp_path / "cft"  # CFT on those critical tokens, one step
    argv = ["sft", "--recipe", str(ROOT / "recipes" / "toy" / "cft.yaml"), f"data.path={identify}"]
    argv += ["train.max_steps=1", "train.micro_batch_size=2", f"output_dir={cft}"]
    argv += [f"train.deepspeed_config={ROOT / 'recipes' / 'deepspeed' / 'zero0.json'}"]
    assert main(argv) == 0
    assert json.loads((cft / "run_info.json").read_text())["examples"] == summary["kept"]

    grpo = tmp_path / "grpo"
    argv = ["grpo", "--recipe", str(ROOT / "recipes" / "toy" / "grpo.yaml"), f"data={spec}"]
    argv += ["steps=1", "rollout.n=2", "batch.prompts_per_step=2", "batch.mini_batch_prompts=2"]
    argv += ["validation.benchmark=null", f"output_dir={grpo}"]
    assert main(argv) == 0
    [step] = [json.loads(line) for line in (grpo / "metrics.jsonl").open()]
    assert step["step"] == 1 and step["reward_mean"] > 0  # graded by option text


LAYOUTS = {
    "labelled list": ["A) 4", "B) 5", "C) 6"],
    "unlabelled list": ["4", "5", "6"],
    "other labels": ["(A) 4", "B. 5", "C: 6"],
    "mapping": {"A": 4, "B": 5, "C": 6},
    "one string": "A) 4 B) 5 C) 6",
    "one string, parenthesised": "(A) 4 (B) 5 (C) 6",
    "one string, no spaces": "A)4 B)5 C)6",
    "MathQA's": "a ) 4 , b ) 5 , c ) 6",
    "list, MathQA's labels": ["a ) 4", "b ) 5", "c ) 6"],
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_options_come_out_in_one_layout_whatever_the_files(tmp_path, layout):
    path = tmp_path / "mc.jsonl"
    row = {"q": "What is 2 + 3?", "opts": LAYOUTS[layout], "gold": "B"}
    path.write_text(json.dumps(row) + "\n")
    [example] = load_file_examples(path, "mc", "{q}\n{opts}", "gold", options="opts")
    assert example.question == "What is 2 + 3?\nA) 4\nB) 5\nC) 6"


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ("only one option", "options should be"),
        (["A) 4"], "options should be"),
        (7, "options should be"),
        ("A) 4 B)", "option B has no text"),
        (["4", ""], "option B has no text"),
        ("A) 1 B) 2 A) 3", "option label A comes again"),
    ],
)
def test_options_that_are_not_choices_are_an_error_naming_the_record(tmp_path, bad, error):
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"q": "?", "opts": bad, "gold": "A"}) + "\n")
    with pytest.raises(DataError, match=rf"mc.jsonl line 1: field 'opts': {error}"):
        load_file_examples(path, "mc", "{q}\n{opts}", "gold", options="opts")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ("A) Both a and b. B) Neither", [("A", "Both a and b."), ("B", "Neither")]),
        ("A) a + b: 2 B) 3", [("A", "a + b: 2"), ("B", "3")]),
        ("a) see A. above b) 5", [("A", "see A. above"), ("B", "5")]),
        ("A) 4 C) 5 B) 6", [("A", "4 C) 5"), ("B", "6")]),  # out of order: text
    ],
)
def test_letters_of_the_other_case_or_out_of_order_are_option_text(options, expected):
    assert choice_options(options, "here") == expected


def test_the_options_key_reaches_the_loader_from_a_recipe(choice_file):
    data = own_data(choice_file, options="options")
    config = resolve(STAGES["grpo"][0]).model_validate({"data": data})
    assert config.data.load()[1].question.endswith("A) 2\nB) 2.5\nC) 3")


def test_the_docs_example_is_a_valid_eval_section(choice_file):
    """docs/benchmarks.md's recipe block validates, and loads the fixture it describes."""
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    block = yaml.safe_load(text.split("```yaml")[1].split("```")[0])
    block["benchmarks"][0]["path"] = str(choice_file)
    config = resolve(STAGES["eval"][0]).model_validate(block)
    [first, *_] = config.benchmarks[0].load()
    assert first.question == "What is 2 + 3?\n\nOptions:\nA) 4\nB) 5\nC) 6"
    assert first.id == "add-1"  # the file's own id field


def test_options_make_a_multiple_choice_question_graded_by_letter_or_text(choice_file):
    first, second, _ = load_file_examples(choice_file, "mc", TEMPLATE, "label", options="options")
    assert first.choices == (("A", "4"), ("B", "5"), ("C", "6"))
    assert second.choices == (("A", "2"), ("B", "2.5"), ("C", "3"))
    with Verifier(1) as verifier:
        assert verifier.verify("\\boxed{(B)}", first.answer, first.choices).correct
        assert verifier.verify("\\boxed{2.5}", second.answer, second.choices).correct
        assert not verifier.verify("\\boxed{C}", first.answer, first.choices).correct


@pytest.mark.parametrize(
    ("gold", "kind", "error"),
    [
        (
            "F",
            "choice",
            "field 'gold' is 'F': neither the letter \\(A, B\\) nor the text of one of the",
        ),
        ("7", "choice", "field 'gold' is '7': neither the letter \\(A, B\\) nor the text"),
        ("five", "number", "field 'gold' should be a number, got 'five'"),
    ],
)
def test_answers_that_do_not_fit_their_kind_are_errors_naming_the_record(
    tmp_path, gold, kind, error
):
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"q": "?", "opts": ["4", "5"], "gold": gold}) + "\n")
    options = "opts" if kind == "choice" else None
    with pytest.raises(DataError, match=rf"mc.jsonl line 1: {error}"):
        load_file_examples(path, "mc", "{q}\n{opts}", "gold", options=options, kind=kind)


def test_a_lower_case_answer_letter_names_its_option(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"q": "?", "opts": "a ) 4 , b ) 5", "gold": "b"}) + "\n")
    [example] = load_file_examples(path, "mc", "{q}\n{opts}", "gold", options="opts")
    assert example.answer == "B"
    with Verifier(1) as verifier:
        assert verifier.verify("#### B", example.answer, example.choices).correct
        assert not verifier.verify("#### A", example.answer, example.choices).correct


def test_doubled_braces_in_a_template_are_literal(choice_file):
    template = "Compute \\frac{{1}}{{2}} of: {problem}"
    [first, *_] = load_file_examples(choice_file, "x", template, "label")
    assert first.question == "Compute \\frac{1}{2} of: What is 2 + 3?"
    with pytest.raises(DataError, match=r"\{1\} is no field name; write literal braces as"):
        load_file_examples(choice_file, "x", "Compute \\frac{1}{2} of: {problem}", "label")


def test_a_file_of_ones_own_may_be_a_hub_dataset(monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"q": "What is 2 + 2?", "a": 4}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    [example] = load_file_examples("hub:someone/sums", "sums", "{q}", "a", kind="number")
    assert (example.question, example.answer) == ("What is 2 + 2?", "4")
    load_file_examples("hub:someone/sums:default:train", "sums", "{q}", "a")
    assert calls == [("someone/sums", None, "test"), ("someone/sums", "default", "train")]
    with pytest.raises(DataError, match=r"a hub dataset is hub:NAME\[:CONFIG\[:SPLIT\]\]"):
        load_file_examples("hub:someone/sums:default:train:extra", "sums", "{q}", "a")


def test_an_answer_of_its_kind_loads(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"q": "?", "opts": ["4", "5"], "gold": "5", "n": 5}) + "\n")
    [by_text] = load_file_examples(path, "mc", "{q}\n{opts}", "gold", options="opts")
    assert by_text.answer == "5" and by_text.choices == (("A", "4"), ("B", "5"))
    [number] = load_file_examples(path, "n", "{q}", "n", kind="number")
    assert number.answer == "5" and number.choices is None


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"kind": "choice"}, r"kind 'choice' needs an options field \(fields.options\)"),
        ({"kind": "number", "options": "options"}, "kind 'number' takes no options field"),
        ({"kind": "boolean"}, "fields.kind"),
    ],
)
def test_a_kind_that_does_not_fit_the_options_is_a_recipe_error(choice_file, fields, error):
    recipe = {"data": own_data(choice_file, **fields)}
    with pytest.raises(ValueError, match=error):
        resolve(STAGES["grpo"][0]).model_validate(recipe)


def test_tabmwp_choices_load_and_grade():
    """TabMWP's format: a table, a question, and for multi_choice its options as a list;
    the reference is the option's text."""
    free_text, yes_no = load_benchmark("tabmwp", root=ROOT / "tests" / "fixtures" / "benchmarks")
    assert free_text.choices is None and yes_no.choices == (("A", "yes"), ("B", "no"))
    with Verifier(1) as verifier:
        assert verifier.verify("So \\boxed{1,250} stamps.", free_text.answer).correct
        assert verifier.verify("1.5 < 2, so \\boxed{no}.", yes_no.answer, yes_no.choices).correct
        assert verifier.verify("The answer is no.", yes_no.answer, yes_no.choices).correct
        assert not verifier.verify("\\boxed{yes}", yes_no.answer, yes_no.choices).correct


def test_the_one_field_loader_lays_out_options_too(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text(json.dumps({"q": "What is 2 + 3?", "opts": ["4", "5"], "gold": "B"}) + "\n")
    [example] = load_jsonl_examples(path, "q", "gold", options="opts")
    assert example.question == "What is 2 + 3?\nA) 4\nB) 5"
    assert example.choices == (("A", "4"), ("B", "5"))


def test_a_data_error_names_the_recipe_section(choice_file):
    config = resolve(STAGES["grpo"][0]).model_validate(
        {"validation": own_data(choice_file) | {"fields": {"question": "{q}", "answer": "label"}}}
    )
    with pytest.raises(DataError, match=r"^validation: .*my_choices.jsonl line 1: missing field"):
        config.validation.load("validation")


def test_ids_from_a_field_must_be_unique(tmp_path):
    path = tmp_path / "sums.jsonl"
    rows = [{"id": "a", "q": "1+1?", "a": "2"}, {"id": "b", "q": "2+2?", "a": "4"}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    examples = load_file_examples(path, "sums", "{q}", "a", id_field="id")
    assert [e.id for e in examples] == ["a", "b"]
    assert [e.id for e in load_file_examples(path, "sums", "{q}", "a")] == ["sums-0", "sums-1"]
    path.write_text(path.read_text() + json.dumps({"id": "a", "q": "3+3?", "a": "6"}) + "\n")
    with pytest.raises(DataError, match=r"sums.jsonl.*3.*'a', as at .*1.*unique"):
        load_file_examples(path, "sums", "{q}", "a", id_field="id")
