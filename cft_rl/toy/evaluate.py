"""A small batched evaluator for the toy model: greedy or sampled solutions, `#### N` answers.

For developing the toy world (and the report at the end of `cft-rl toy build`) without the
project's evaluation stage; `cft-rl eval` is the evaluation users run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cft_rl.toy.problems import Problem
from cft_rl.toy.train import prompt_text

_FINAL_ANSWER = re.compile(r"####\s*(-?\d+)")


def parse_answer(text: str) -> int | None:
    """The number on the last `#### N` line of a solution, if any."""
    found = _FINAL_ANSWER.findall(text)
    return int(found[-1]) if found else None


@torch.no_grad()
def generate_solutions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    *,
    temperature: float = 0.0,
    num_samples: int = 1,
    batch_size: int = 128,
    max_new_tokens: int = 192,
    seed: int = 0,
) -> list[list[str]]:
    """`num_samples` solutions per question; temperature 0 means greedy."""
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if temperature > 0
        else {"do_sample": False}
    )
    solutions: list[list[str]] = []
    for start in range(0, len(questions), batch_size):
        prompts = [prompt_text(tokenizer, q) for q in questions[start : start + batch_size]]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(
            **inputs.to(device),
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_samples,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
        texts = tokenizer.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        solutions.extend(texts[i : i + num_samples] for i in range(0, len(texts), num_samples))
    return solutions


@dataclass
class ToyScore:
    accuracy: float  # fraction of all samples whose answer is right
    any_correct: float  # fraction of problems with at least one right sample
    distinct: float  # mean number of distinct samples per problem

    def as_dict(self) -> dict[str, float]:
        return {
            "accuracy": self.accuracy,
            "any_correct": self.any_correct,
            "distinct": self.distinct,
        }


def score(problems: Sequence[Problem], solutions: Sequence[Sequence[str]]) -> ToyScore:
    right = [
        [parse_answer(s) == p.answer for s in samples]
        for p, samples in zip(problems, solutions, strict=True)
    ]
    total = sum(len(r) for r in right)
    return ToyScore(
        accuracy=sum(map(sum, right)) / total,
        any_correct=sum(any(r) for r in right) / len(right),
        distinct=sum(len(set(samples)) for samples in solutions) / len(solutions),
    )
