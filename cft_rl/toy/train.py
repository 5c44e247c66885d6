"""Training the toy model from scratch: batches of fresh problems, loss on solution tokens only.

Kept free of the recipe machinery (plain arguments, torch and transformers only) so the
same loop runs inside `cft-rl toy build` and in stand-alone sweeps.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from cft_rl.data.toy_problems import Difficulty, Problem, training_problems

# Batches are cut from a pool of this many batches' worth of problems sorted by length, so
# that rows of one batch have similar lengths and little compute goes to padding.
BUCKET_POOL = 16


@dataclass(frozen=True)
class ModelShape:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    max_positions: int = 512


def make_model(
    shape: ModelShape, tokenizer: PreTrainedTokenizerBase, seed: int
) -> Qwen2ForCausalLM:
    """A freshly initialised tiny Qwen2 with tied embeddings."""
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config)


def prompt_text(tokenizer: PreTrainedTokenizerBase, question: str) -> str:
    """The chat-formatted prompt the model answers (same as the "toy" prompt template)."""
    messages = [{"role": "user", "content": question}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass
class Batch:
    input_ids: torch.Tensor  # (batch, length), right padded
    attention_mask: torch.Tensor
    # True where the NEXT token is a solution token (or the closing <|end|>): the positions
    # whose predictions are trained.
    predict_mask: torch.Tensor


def tokenize_problems(
    tokenizer: PreTrainedTokenizerBase, problems: Sequence[Problem]
) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, solution ids ending with <|end|>) of each problem."""
    prompts = tokenizer(
        [prompt_text(tokenizer, p.question) for p in problems], add_special_tokens=False
    )["input_ids"]
    solutions = tokenizer([p.solution for p in problems], add_special_tokens=False)["input_ids"]
    return [(p, s + [tokenizer.eos_token_id]) for p, s in zip(prompts, solutions, strict=True)]


def collate(pairs: Sequence[tuple[list[int], list[int]]], pad_id: int) -> Batch:
    length = max(len(prompt) + len(solution) for prompt, solution in pairs)
    input_ids = torch.full((len(pairs), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(pairs), length), dtype=torch.long)
    predict_mask = torch.zeros((len(pairs), length), dtype=torch.bool)
    for row, (prompt, solution) in enumerate(pairs):
        ids = prompt + solution
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        predict_mask[row, len(prompt) - 1 : len(ids) - 1] = True
    return Batch(input_ids, attention_mask, predict_mask)


def training_batches(
    tokenizer: PreTrainedTokenizerBase,
    seed: int,
    batch_size: int,
    difficulty: Difficulty,
    first_step: int = 0,
) -> Iterator[Batch]:
    """Endless batches of fresh training problems; batch k is the same whether or not the run
    was resumed at step `first_step`."""
    pool = first_step // BUCKET_POOL
    skip = first_step % BUCKET_POOL
    while True:
        problems = training_problems(seed, pool, batch_size * BUCKET_POOL, difficulty)
        pairs = sorted(tokenize_problems(tokenizer, problems), key=lambda p: len(p[0]) + len(p[1]))
        chunks = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
        random.Random(f"order:{seed}:{pool}").shuffle(chunks)
        for chunk in chunks[skip:]:
            yield collate(chunk, tokenizer.pad_token_id)
        pool, skip = pool + 1, 0


def solution_loss(model: Qwen2ForCausalLM, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of the solution tokens; logits only where they are needed."""
    hidden = model.model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask
    ).last_hidden_state
    logits = model.lm_head(hidden[batch.predict_mask])
    targets = batch.input_ids[:, 1:][batch.predict_mask[:, :-1]]
    return torch.nn.functional.cross_entropy(logits.float(), targets)


def learning_rate(step: int, total_steps: int, peak: float, warmup_steps: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))
