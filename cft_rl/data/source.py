"""The data section every stage's recipe shares: which benchmark, its file, how many
questions, and how they are prompted."""

from __future__ import annotations

from pydantic import Field

from cft_rl.config import Section
from cft_rl.data.example import Example
from cft_rl.data.registry import load_benchmark


class DataSource(Section):
    """Questions of a cft_rl.data benchmark: `benchmark` names it ("toy", "toy-train",
    "gsm8k", ...), `path` its file or directory (else the benchmark's default location),
    `limit` the first this many questions, `template` the cft_rl.data.prompts template
    ("toy": the bare question, "boxed": ask for \\boxed{})."""

    benchmark: str
    path: str | None = None
    limit: int | None = Field(default=None, ge=1)
    template: str = "toy"

    def load(self) -> list[Example]:
        return load_benchmark(self.benchmark, self.path, self.limit)
