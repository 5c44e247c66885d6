"""What every generation backend takes and returns."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# finish_reason values shared by all backends
FINISH_EOS = "stop"  # the model emitted an end-of-sequence token (kept in token_ids)
FINISH_LENGTH = "length"  # max_new_tokens reached
FINISH_ANSWER = "answer"  # stop_when_answered: the final answer was complete


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. temperature 0 means greedy (then top_p and seed do not matter).

    top_logprobs > 0 asks for the k most likely tokens at every generated position,
    from the raw distribution (log-softmax of the logits, before temperature and top-p).
    stop_when_answered ends a sequence once its final answer is complete (see
    cft_rl.generation.stopping); the sequence is cut right after the answer.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    seed: int = 0
    top_logprobs: int = 0
    stop_when_answered: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.top_logprobs < 0:
            raise ValueError(f"top_logprobs must be >= 0, got {self.top_logprobs}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    """One generated continuation of a prompt.

    token_ids: generated tokens only (an end-of-sequence token is included when the
    model emitted one); text: their decoding without special tokens; top_logprobs:
    per generated position, the (token_id, logprob) pairs, most likely first.
    """

    token_ids: list[int]
    text: str
    finish_reason: str
    top_logprobs: list[list[tuple[int, float]]] | None = None

    def copy(self) -> Completion:
        top = None if self.top_logprobs is None else list(self.top_logprobs)
        return Completion(list(self.token_ids), self.text, self.finish_reason, top)


class GenerationBackend(Protocol):
    """A model that continues token-id prompts. `generate` returns params.n completions
    per prompt, in prompt order."""

    tokenizer: Any

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]: ...


def sample_seed(seed: int, prompt_ids: Sequence[int], sample_index: int) -> int:
    """The RNG seed of one sample: a function of the run seed, the prompt's tokens and the
    sample's index only, so a prompt gets the same samples whatever batch or position it
    has (a resumed run repeats an uninterrupted one)."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update(f"{seed}:{sample_index}:".encode())
    digest.update(",".join(map(str, prompt_ids)).encode())
    return int.from_bytes(digest.digest(), "little") & ((1 << 63) - 1)


def repeat_greedy(results: list[list[Completion]], n: int) -> list[list[Completion]]:
    """Greedy decoding is decoded once per prompt; give each prompt its n (equal) copies."""
    return [[first] + [first.copy() for _ in range(n - 1)] for [first] in results]


def eos_token_ids(generation_config: Any, tokenizer: Any) -> set[int]:
    """End-of-sequence ids named by the generation config (int or list) and the tokenizer."""
    ids: set[int] = set()
    for source in (generation_config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value is not None:
            ids.update(value)
    if not ids:
        raise ValueError("the model and tokenizer name no end-of-sequence token")
    return ids
