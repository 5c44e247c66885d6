"""The data section every stage's recipe shares: which benchmark, its file, how many
questions, and how they are prompted; or a file of one's own, with its fields."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from cft_rl.config import Section
from cft_rl.data.example import DataError, Example
from cft_rl.data.prompts import check_template
from cft_rl.data.registry import AnswerKind, answer_kind, load_benchmark, load_file_examples


class FileFields(Section):
    """How the records of a file outside the registry make examples."""

    # A template over each record's fields, e.g. "{question}\n\nOptions:\n{options}": a list
    # field is written one item per line, a mapping as "key) value" lines; "{{" and "}}" are
    # literal braces.
    question: str = "{question}"
    # The field with the reference answer: the answer itself, a number, or a solution ending
    # in "#### N" or holding \boxed{}.
    answer: str = "answer"
    # A field with a worked solution (needed by sft's `examples` format); null: none.
    solution: str | None = None
    # Multiple choice: the field with the options (a list, a mapping or one "A) ... B) ..."
    # string); in the question they are laid out as "A) text" lines.
    options: str | None = None
    # What the answers are: "number" (each is checked to be one), "expression" (anything
    # math-verify reads) or "choice" (an option's letter or text); null: "choice" when
    # `options` is given, else "expression".
    kind: AnswerKind | None = None
    # The field with each record's own id (unique), which every stage's outputs then carry;
    # null: ids are "<benchmark>-N", N the record's place in the file.
    id: str | None = None

    @model_validator(mode="after")
    def _choice_goes_with_options(self) -> FileFields:
        answer_kind(self.kind, self.options)
        return self


class DataSource(Section):
    """Questions of a cft_rl.data benchmark: `benchmark` names it ("toy", "toy-train",
    "gsm8k", ...), `path` its file or directory (else the benchmark's default location),
    `limit` the first this many questions, `template` the cft_rl.data.prompts template
    ("toy": the bare question, "boxed": ask for \\boxed{}). With `fields`, `path` is a file
    of one's own (.jsonl, .json, .parquet) and `benchmark` only names it in the outputs."""

    benchmark: str
    path: str | None = None
    limit: int | None = Field(default=None, ge=1)
    template: str = "toy"
    fields: FileFields | None = None

    @field_validator("template")
    @classmethod
    def _known_template(cls, template: str | None) -> str | None:
        if template is not None:
            try:
                check_template(template)
            except DataError as err:  # pydantic reports a ValueError under the key
                raise ValueError(str(err)) from None
        return template

    @model_validator(mode="after")
    def _own_file_has_a_path(self) -> DataSource:
        if self.fields is not None and self.path is None:
            raise ValueError("fields: a file of one's own needs `path`")
        return self

    def load(self, key: str = "data") -> list[Example]:
        """The examples; an error says which recipe section (`key`) named the data."""
        try:
            if self.fields is None:
                return load_benchmark(self.benchmark, self.path, self.limit)
            f = self.fields
            return load_file_examples(
                self.path,
                self.benchmark,
                f.question,
                f.answer,
                f.solution,
                self.limit,
                f.options,
                f.kind,
                f.id,
            )
        except DataError as err:
            raise DataError(f"{key}: {err}") from None
