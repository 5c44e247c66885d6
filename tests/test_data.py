"""Benchmark loaders: every registered format, the file formats, and the error messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cft_rl.data import (
    BENCHMARKS,
    PAPER_BENCHMARKS,
    DataError,
    Example,
    load_benchmark,
    load_jsonl_examples,
)
from cft_rl.data.answers import number_text
from reward.extract import last_boxed

FIXTURES = Path(__file__).parent / "fixtures" / "benchmarks"

# benchmark -> the reference answers its fixture must yield, in order
EXPECTED_ANSWERS = {
    "gsm8k": ["48", "1200"],
    "math": ["\\frac{1}{2}", "3"],
    "math500": ["[2, \\infty)", "\\text{Ann}"],
    "minerva_math": ["200", "x"],
    "svamp": ["12", "7.5"],
    "asdiv": ["12", "5:6", "3:30 p.m."],
    "mawps": ["6", "4.5"],
    "carp_en": ["\\frac { 2 } { 5 }", "x = - 2"],
    "tabmwp": ["1250", "no"],
    "gaokao2023en": ["3", "\\frac{1}{4}"],
    "olympiadbench": ["2, -2", "9"],
    "college_math": ["x=-2,6", "diverges"],
    "aime24": ["24"],
    "amc23": ["18"],
}


def test_registry_has_the_paper_benchmarks_and_the_extras():
    worlds = ("toy", "toy-hard", "toy-long", "toy-prose", "toy-prose-hard", "toy-prose-long")
    toy = {f"{d}{s}" for d in worlds for s in ("", "-val", "-train")}
    extras = {"math500", "aime24", "amc23", *toy}
    assert len(PAPER_BENCHMARKS) == 11
    assert set(BENCHMARKS) == set(PAPER_BENCHMARKS) | extras


def test_every_file_benchmark_has_a_fixture():
    file_benchmarks = {name for name in BENCHMARKS if not name.startswith("toy")}
    assert file_benchmarks == set(EXPECTED_ANSWERS)


@pytest.mark.parametrize("name", sorted(EXPECTED_ANSWERS))
def test_fixture_loads_with_reference_answers(name):
    examples = load_benchmark(name, root=FIXTURES)
    assert [e.answer for e in examples] == EXPECTED_ANSWERS[name]
    assert all(e.source == name and e.question for e in examples)
    assert len({e.id for e in examples}) == len(examples)


def test_question_joins_body_and_question_as_sentences():
    (svamp, _) = load_benchmark("svamp", root=FIXTURES)
    assert (
        svamp.question == "Tom has 7 marbles and finds 5 more. How many marbles does he have now?"
    )
    olympiad = load_benchmark("olympiadbench", root=FIXTURES)
    assert olympiad[0].question == "Find all real $x$ with $x^2 = 4$."
    assert olympiad[1].question == "A square has side 3. What is its area?"


def test_tabmwp_question_carries_table_and_choices():
    total, yes_no = load_benchmark("tabmwp", root=FIXTURES)
    assert 'regarding "Stamps"' in total.question and "Li | 1,000" in total.question
    assert "['yes', 'no']" in yes_no.question


def test_answer_left_in_question_is_moved_out():
    example = load_benchmark("gaokao2023en", root=FIXTURES)[1]
    assert example.answer == "\\frac{1}{4}"
    assert "answers:" not in example.question and example.question.endswith("two heads.")


def test_solutions_are_kept_when_present():
    gsm8k = load_benchmark("gsm8k", root=FIXTURES)
    assert gsm8k[0].solution.endswith("#### 48")
    assert load_benchmark("mawps", root=FIXTURES)[0].solution is None


def test_limit_and_explicit_path(tmp_path):
    assert len(load_benchmark("gsm8k", root=FIXTURES, limit=1)) == 1
    path = str(FIXTURES / "asdiv" / "test.jsonl")
    assert [e.answer for e in load_benchmark("asdiv", path=path)][0] == "12"
    assert len(load_benchmark("asdiv", path=str(FIXTURES / "asdiv"))) == 3
    with pytest.raises(DataError, match="limit must be at least 1"):
        load_benchmark("gsm8k", root=FIXTURES, limit=0)


def test_json_and_parquet_files_load_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIXTURES / "svamp" / "test.jsonl").open()]
    (tmp_path / "svamp.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "svamp.parquet")
    for suffix in ("json", "parquet"):
        examples = load_benchmark("svamp", path=str(tmp_path / f"svamp.{suffix}"))
        assert [e.answer for e in examples] == ["12", "7.5"]


def test_hub_dataset_is_used_when_no_local_file(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (example,) = load_benchmark("gsm8k", root=tmp_path)
    assert calls == [("openai/gsm8k", "main", "test")]
    assert example.answer == "4"
    load_benchmark("gsm8k", path="hub:someone/gsm8k-copy:extra")
    assert calls[-1] == ("someone/gsm8k-copy", "extra", "test")


def test_missing_benchmark_without_hub_names_the_directory(tmp_path):
    with pytest.raises(DataError, match=r"no test file in .*mawps.* no hub dataset"):
        load_benchmark("mawps", root=tmp_path)


def test_unknown_benchmark_suggests_the_closest():
    with pytest.raises(DataError, match="did you mean 'gsm8k'"):
        load_benchmark("gsm8kk")


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "q", "answer": "1"}\n\n{"question": "q", "answer": \n')
    with pytest.raises(
        DataError, match=r"bad\.jsonl line 3: malformed JSON \(Expecting value at column 29\)"
    ):
        load_jsonl_examples(path, "question", "answer")


def test_non_object_line_is_an_error(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=r"list\.jsonl line 1: expected a JSON object"):
        load_jsonl_examples(path, "question", "answer")


def test_malformed_json_file_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n{"question": "q",\n "answer": }\n]')
    with pytest.raises(DataError, match=r"bad\.json line 3: malformed JSON"):
        load_benchmark("gsm8k", path=str(path))


def test_missing_field_names_field_and_fields_present(tmp_path):
    path = tmp_path / "svamp.jsonl"
    path.write_text(json.dumps({"Body": "b", "Question": "q", "answer": 3}) + "\n")
    with pytest.raises(
        DataError,
        match=r"svamp\.jsonl line 1: missing field 'Answer' "
        r"\(fields present: Body, Question, answer\)",
    ):
        load_benchmark("svamp", path=str(path))


def test_answer_without_final_answer_marker_is_an_error(tmp_path):
    path = tmp_path / "gsm.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": "no marker here"}) + "\n")
    with pytest.raises(DataError, match=r"gsm\.jsonl line 1: field 'answer' has no '####"):
        load_benchmark("gsm8k", path=str(path))
    path.write_text(json.dumps({"problem": "q", "solution": "no box"}) + "\n")
    with pytest.raises(DataError, match=r"line 1: field 'solution' has no \\boxed"):
        load_benchmark("minerva_math", path=str(path))


def test_non_numeric_target_is_an_error(tmp_path):
    path = tmp_path / "mawps.jsonl"
    path.write_text(json.dumps({"input": "q", "target": "many"}) + "\n")
    with pytest.raises(DataError, match=r"field 'target' should be a number, got 'many'"):
        load_benchmark("mawps", path=str(path))


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_dataset_is_an_error(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    with pytest.raises(DataError, match=r"empty\.jsonl: the dataset is empty"):
        load_jsonl_examples(path, "question", "answer")


def test_empty_answer_field_is_an_error(tmp_path):
    path = tmp_path / "blank.jsonl"
    path.write_text(json.dumps({"question": "q", "answer": " "}) + "\n")
    with pytest.raises(DataError, match=r"blank\.jsonl line 1: field 'answer' is empty"):
        load_benchmark("college_math", path=str(path))


def test_generic_loader_reads_any_answer_style(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [
        {"q": "one", "a": 7.0},
        {"q": "two", "a": "so it is 12.\n#### 12"},
        {"q": "three", "a": "thus $\\boxed{\\frac{1}{3}}$"},
        {"q": "four", "a": "$x+1$"},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    examples = load_jsonl_examples(path, question_field="q", answer_field="a")
    assert [e.answer for e in examples] == ["7", "12", "\\frac{1}{3}", "x+1"]
    assert examples[0] == Example(id="mine-0", question="one", answer="7", source="mine")


def test_toy_benchmarks_come_from_the_toy_world(monkeypatch):
    import cft_rl.data.registry as registry

    asked = []

    def fake(name, n):
        asked.append((name, n))
        return [Example(f"{name}-{i}", "q", "1") for i in range(n)]

    monkeypatch.setattr(registry, "toy_examples", fake)
    assert len(load_benchmark("toy-hard", limit=3)) == 3
    assert len(load_benchmark("toy-long-val", limit=4)) == 4
    assert asked == [("toy-hard", 3), ("toy-long-val", 4)]
    for name in ("toy", "toy-train", "toy-long-val"):
        with pytest.raises(DataError, match=f"'{name}' is generated, it takes no path"):
            load_benchmark(name, path="somewhere.jsonl")


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (145.0, "145"),
        (0.5, "0.5"),
        ("1,000", "1000"),
        ("080", "80"),
        (1e-05, "0.00001"),
        ("-0", "0"),
        ("3/4", None),
        ("1,00", None),
        ("x", None),
        ("", None),
    ],
)
def test_number_text(value, written):
    assert number_text(value) == written


def test_last_boxed_matches_nested_braces():
    assert last_boxed("a \\boxed{1} then \\boxed{\\frac{a}{b^{2}}} end") == "\\frac{a}{b^{2}}"
    assert last_boxed("\\fbox{7} and $\\framebox{204}$") == "204"
    assert last_boxed("\\boxed{unclosed") is None
    assert last_boxed("no box") is None
