"""The benchmark registry: where each benchmark lives and which readers (cft_rl.data.readers)
get its questions and reference answers; `load_benchmark` and the generic loader."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cft_rl.data.answers import auto_reference, number_text, without_parenthesised_unit
from cft_rl.data.example import DataError, Example
from cft_rl.data.readers import (
    ChoicesReader,
    Reader,
    Repair,
    SolutionReader,
    answer_left_in_question,
    answer_or_boxed,
    boxed_answer,
    hashes_answer,
    joined_fields,
    list_answer,
    no_choices,
    no_solution,
    numeric_answer,
    options_field,
    solution_field,
    tabmwp_question,
    template_question,
    text_answer,
    unchanged,
)
from cft_rl.data.records import SUFFIXES, Record, read_records, records_from_rows
from cft_rl.data.toy_problems import toy_benchmark_names, toy_problems
from cft_rl.registry import did_you_mean
from reward.choice import Choices, named_letters

AnswerKind = Literal["number", "expression", "choice"]

ROOT_ENV = "CFT_RL_BENCHMARK_ROOT"
HUB_PREFIX = "hub:"
DEFAULT_TOY_SIZE = 500


def default_root() -> Path:
    """Where local benchmark files live: $CFT_RL_BENCHMARK_ROOT, else ../shared/benchmarks
    next to the repository."""
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV])
    return Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"


# --- benchmarks -------------------------------------------------------------------------


@dataclass(frozen=True)
class HubSource:
    """A dataset on the Hugging Face hub, loaded with `datasets.load_dataset`."""

    name: str
    config: str | None = None
    split: str = "test"


@dataclass(frozen=True)
class FileBenchmark:
    """A benchmark read from <root>/<name>/test.{jsonl,json,parquet} or from the hub."""

    name: str
    question: Reader
    answer: Reader
    solution: SolutionReader = no_solution
    hub: HubSource | None = None
    repair: Repair = unchanged
    choices: ChoicesReader = no_choices

    def load(
        self, path: str | None = None, limit: int | None = None, root: str | Path | None = None
    ) -> list[Example]:
        records = [self.repair(record) for record in self._records(path, root)]
        return examples_from_records(
            records[:limit], self.name, self.question, self.answer, self.solution, self.choices
        )

    def _records(self, path: str | None, root: str | Path | None) -> list[Record]:
        if path is not None:
            return records_at(path, default_split=self.hub.split if self.hub else "test")
        directory = Path(root) if root is not None else default_root()
        local = find_data_file(directory / self.name, must_exist=False)
        if local is not None:
            return read_records(local)
        if self.hub is None:
            raise DataError(
                f"benchmark '{self.name}': no test file in {directory / self.name} "
                f"(looked for test{', test'.join(SUFFIXES)}) and no hub dataset is known; "
                f"pass a path, or set {ROOT_ENV}"
            )
        try:
            return load_hub_records(self.hub)
        except DataError as e:
            raise DataError(
                f"benchmark '{self.name}': no test file in {directory / self.name}, and {e}"
            ) from None


@dataclass(frozen=True)
class ToyBenchmark:
    """Problems of the embedded toy world, generated on demand (seeded): held-out test
    problems ("toy", "toy-hard", "toy-long"), held-out validation problems ("toy-val", ...)
    and training-split problems ("toy-train", ...); see cft_rl.data.toy_problems."""

    name: str

    def load(
        self, path: str | None = None, limit: int | None = None, root: str | Path | None = None
    ) -> list[Example]:
        if path is not None:
            raise DataError(f"benchmark '{self.name}' is generated, it takes no path ({path!r})")
        return toy_examples(self.name, limit or DEFAULT_TOY_SIZE)


def toy_examples(name: str, n: int) -> list[Example]:
    """The first `n` problems of toy benchmark `name` as examples (answer: the `#### N` value)."""
    return [
        Example(
            id=f"{name}-{index}",
            question=problem.question,
            answer=str(problem.answer),
            solution=problem.solution,
            source=name,
        )
        for index, problem in enumerate(toy_problems(name, n))
    ]


def examples_from_records(
    records: list[Record],
    source: str,
    question: Reader,
    answer: Reader,
    solution: SolutionReader = no_solution,
    choices: ChoicesReader = no_choices,
    id_field: str | None = None,
) -> list[Example]:
    """One example per record; its id is `source-N` (N its place), or the record's own
    `id_field`, which must then be unique."""
    ids = [
        record.text(id_field) if id_field else f"{source}-{i}" for i, record in enumerate(records)
    ]
    first: dict[str, Record] = {}
    for record, example_id in zip(records, ids, strict=True):
        if example_id in first:
            raise record.error(
                f"field '{id_field}' is {example_id!r}, as at {first[example_id].where}: "
                "ids must be unique"
            )
        first[example_id] = record
    return [
        Example(
            id=ids[i],
            question=question(record),
            answer=answer(record),
            solution=solution(record),
            source=source,
            choices=choices(record),
        )
        for i, record in enumerate(records)
    ]


def find_data_file(path: Path, must_exist: bool = True) -> Path | None:
    """`path` itself if it is a file, else the test.{jsonl,json,parquet} inside it."""
    if path.is_file():
        return path
    for suffix in SUFFIXES:
        candidate = path / f"test{suffix}"
        if candidate.is_file():
            return candidate
    if must_exist:
        raise DataError(
            f"{path}: no such file (nor a directory with test{', test'.join(SUFFIXES)})"
        )
    return None


def records_at(path: str | Path, default_split: str = "test") -> list[Record]:
    """The records of a file (or a directory holding test.*), or of a hub dataset named
    `hub:NAME[:CONFIG[:SPLIT]]` (its split `default_split` unless given)."""
    if not str(path).startswith(HUB_PREFIX):
        return read_records(find_data_file(Path(path)))
    parts = str(path)[len(HUB_PREFIX) :].split(":")
    if len(parts) > 3 or not parts[0]:
        raise DataError(f"{path}: a hub dataset is hub:NAME[:CONFIG[:SPLIT]]")
    name, config, split = (parts + [None, None])[:3]
    return load_hub_records(HubSource(name, config or None, split or default_split))


def load_hub_records(hub: HubSource) -> list[Record]:
    try:
        import datasets

        rows = datasets.load_dataset(hub.name, hub.config, split=hub.split)
    except Exception as e:  # offline, unknown name, bad split: all are the user's to fix
        raise DataError(
            f"hub dataset '{hub.name}' (split {hub.split}) could not be loaded: {e}"
        ) from None
    return records_from_rows(rows, f"{HUB_PREFIX}{hub.name}")


Benchmark = FileBenchmark | ToyBenchmark

BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in [
        FileBenchmark(
            "gsm8k",
            joined_fields("question"),
            hashes_answer("answer"),
            solution_field("answer"),
            HubSource("openai/gsm8k", "main"),
        ),
        FileBenchmark(
            "math",
            joined_fields("problem"),
            answer_or_boxed("answer", "solution"),
            solution_field("solution"),
            HubSource("DigitalLearningGmbH/MATH-lighteval"),
        ),
        FileBenchmark(
            "math500",
            joined_fields("problem"),
            answer_or_boxed("answer", "solution"),
            solution_field("solution"),
            HubSource("HuggingFaceH4/MATH-500"),
        ),
        FileBenchmark(
            "minerva_math",
            joined_fields("problem"),
            boxed_answer("solution"),
            solution_field("solution"),
        ),
        FileBenchmark(
            "svamp",
            joined_fields("Body", "Question"),
            numeric_answer("Answer"),
            solution_field("Equation"),
            HubSource("ChilleD/SVAMP"),
        ),
        FileBenchmark(
            "asdiv",
            joined_fields("body", "question"),
            text_answer("answer", without_parenthesised_unit),
            solution_field("formula"),
            HubSource("EleutherAI/asdiv", split="validation"),
        ),
        FileBenchmark("mawps", joined_fields("input"), numeric_answer("target")),
        FileBenchmark(
            "carp_en", joined_fields("content"), text_answer("answer"), solution_field("steps")
        ),
        # TabMWP numbers may carry thousands separators ("1,250"): tidy_reference drops them.
        # Its multi_choice questions list their options; the answer is the option's text.
        FileBenchmark(
            "tabmwp",
            tabmwp_question,
            text_answer("answer"),
            solution_field("solution"),
            choices=options_field("choices", optional=True),
        ),
        FileBenchmark(
            "gaokao2023en",
            joined_fields("question"),
            text_answer("answer"),
            repair=answer_left_in_question("question", "answer"),
        ),
        FileBenchmark(
            "olympiadbench",
            joined_fields("context", "question", optional=("context",)),
            list_answer("final_answer"),
            solution_field("solution"),
            HubSource("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", split="train"),
        ),
        FileBenchmark("college_math", joined_fields("question"), text_answer("answer")),
        FileBenchmark(
            "aime24",
            joined_fields("problem"),
            text_answer("answer"),
            solution_field("solution"),
            HubSource("HuggingFaceH4/aime_2024", split="train"),
        ),
        FileBenchmark("amc23", joined_fields("problem"), numeric_answer("answer")),
        *(ToyBenchmark(name) for name in toy_benchmark_names()),
    ]
}

# The eleven benchmarks the paper reports (the English set of the Qwen2.5-Math suite).
PAPER_BENCHMARKS = (
    "gsm8k",
    "math",
    "svamp",
    "asdiv",
    "mawps",
    "carp_en",
    "tabmwp",
    "minerva_math",
    "gaokao2023en",
    "olympiadbench",
    "college_math",
)


def load_benchmark(
    name: str, path: str | None = None, limit: int | None = None, root: str | Path | None = None
) -> list[Example]:
    """The examples of benchmark `name`, from `path` (a file, a directory holding test.*, or
    `hub:NAME[:CONFIG[:SPLIT]]`), else from `root`/<name>/, else from its hub dataset."""
    if name not in BENCHMARKS:
        hint = did_you_mean(name, BENCHMARKS)
        raise DataError(f"unknown benchmark '{name}'{hint} (known: {', '.join(BENCHMARKS)})")
    if limit is not None and limit < 1:
        raise DataError(f"benchmark '{name}': limit must be at least 1, got {limit}")
    return BENCHMARKS[name].load(path, limit, root)


def load_jsonl_examples(
    path: str | Path,
    question_field: str,
    answer_field: str,
    source: str | None = None,
    limit: int | None = None,
    options: str | None = None,
) -> list[Example]:
    """Examples from any JSONL (or JSON, parquet) file whose question is one field. The
    answer field may hold the answer itself, a number, or a solution ending in `#### N` or
    containing \\boxed{}; `options` names a multiple-choice options field, laid out after
    the question. For a question built from several fields, see load_file_examples."""
    name = source or Path(path).stem
    question = f"{{{question_field}}}" + (f"\n{{{options}}}" if options else "")
    return load_file_examples(path, name, question, answer_field, limit=limit, options=options)


def load_file_examples(
    path: str | Path,
    name: str,
    question: str,
    answer_field: str,
    solution_field: str | None = None,
    limit: int | None = None,
    options: str | None = None,
    kind: AnswerKind | None = None,
    id_field: str | None = None,
) -> list[Example]:
    """Examples from a file outside the registry (.jsonl, .json or .parquet, a directory
    with test.*, or a hub dataset `hub:NAME[:CONFIG[:SPLIT]]`, split test unless given):
    `question` is a template over each record's fields (see
    readers.template_question), `answer_field` holds the reference (the answer, a number,
    or a solution ending in `#### N` or containing \\boxed{}), `solution_field` a worked
    solution, `options` the field with multiple-choice options (laid out as "A) text"
    lines). `kind` is what the answers are: "number" (checked), "expression" (anything
    math-verify reads) or "choice" (needs `options`; the answer is an option's letter or
    text, checked); null: "choice" with `options`, else "expression". `id_field` holds each
    record's own id (unique); null: ids are `name-N`. Errors name the file, the record and
    the field."""
    try:
        kind = answer_kind(kind, options)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None
    records = records_at(path)[:limit]
    read_choices = options_field(options) if options else no_choices

    def answer(record: Record) -> str:
        reference = auto_reference(record.get(answer_field))
        if reference is None:
            raise record.error(f"field '{answer_field}' holds no usable answer")
        if kind == "number" and number_text(reference) is None:
            raise record.error(f"field '{answer_field}' should be a number, got {reference!r}")
        if kind == "choice":
            choices = read_choices(record)
            if _names_an_option(reference, choices):
                return reference
            if reference.strip().upper() in {letter for letter, _ in choices}:
                return reference.strip().upper()  # a lower-case letter: "b" is option B
            raise record.error(
                f"field '{answer_field}' is {reference!r}: neither the letter "
                f"({', '.join(letter for letter, _ in choices)}) nor the text of one of "
                f"the options in field '{options}'"
            )
        return reference

    def solution(record: Record) -> str | None:
        return record.text(solution_field) if solution_field else None

    try:
        read_question = template_question(question, options)
    except ValueError as err:
        raise DataError(f"{path}: {err}") from None
    return examples_from_records(
        records, name, read_question, answer, solution, read_choices, id_field
    )


def answer_kind(kind: AnswerKind | None, options: str | None) -> AnswerKind:
    """The kind of a file's answers: as given, or "choice" when it has options."""
    if kind is None:
        return "choice" if options else "expression"
    if (kind == "choice") != (options is not None):
        if kind == "choice":
            raise ValueError("kind 'choice' needs an options field (fields.options)")
        raise ValueError(f"kind '{kind}' takes no options field: only kind 'choice' does")
    return kind


def _names_an_option(reference: str, choices: Choices) -> bool:
    """Is the reference an option's letter ("B", "(B)") or its exact text?"""
    letters = named_letters(reference)
    return any(
        letters == (letter,) or reference.strip().casefold() == text.casefold()
        for letter, text in choices
    )
