"""Benchmarks and datasets: registry, loaders, reference answers and prompt templates."""

from cft_rl.data.example import DataError, Example
from cft_rl.data.registry import (
    BENCHMARKS,
    PAPER_BENCHMARKS,
    load_benchmark,
    load_file_examples,
    load_jsonl_examples,
)

__all__ = [
    "BENCHMARKS",
    "PAPER_BENCHMARKS",
    "DataError",
    "Example",
    "load_benchmark",
    "load_file_examples",
    "load_jsonl_examples",
]
