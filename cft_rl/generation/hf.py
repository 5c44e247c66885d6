"""The transformers backend: batched decoding with the project's decode loop
(cft_rl.generation.decode_loop) over the prefill's KV cache.

Why not `model.generate`: we want (1) per-sample RNG streams, so a sample does not
depend on which batch it landed in, (2) raw log-probabilities of the top-k tokens,
(3) rows that finish to leave the batch at once instead of decoding padding, and
(4) a prompt's n samples to share one prefill.

Rows are sorted by prompt length and cut into batches of `batch_size` sequences;
prompts are left padded, positions count real tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from cft_rl.errors import UserError
from cft_rl.generation.decode_loop import compact_at_every_finish, decode_loop
from cft_rl.generation.kv_cache import PrefillBatch
from cft_rl.generation.stopping import answer_complete, is_trigger
from cft_rl.generation.types import (
    FINISH_ANSWER,
    FINISH_EOS,
    FINISH_LENGTH,
    Completion,
    SamplingParams,
    eos_token_ids,
    repeat_greedy,
    sample_seed,
)


@dataclass
class _Row:
    """One sequence being decoded: a prompt and, when sampling, its sample index."""

    prompt_index: int
    sample_index: int
    tokens: list[int] = field(default_factory=list)
    top_logprobs: list[list[tuple[int, float]]] = field(default_factory=list)
    finish_reason: str = FINISH_LENGTH


class HFBackend:
    """Batched generation with a transformers causal LM (CPU or GPU)."""

    def __init__(self, model: torch.nn.Module, tokenizer, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise UserError(f"generation.batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.eos_ids = eos_token_ids(getattr(model, "generation_config", None), tokenizer)
        self.pad_id = next(
            i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None
        )
        self.max_length = getattr(model.config, "max_position_embeddings", None)
        self._trigger_memo: dict[int, bool] = {}

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        prompts = [list(p) for p in prompt_ids]
        for index, prompt in enumerate(prompts):
            if not prompt:
                raise UserError(f"prompt {index} is empty")
            if self.max_length is not None and len(prompt) >= self.max_length:
                raise UserError(
                    f"prompt {index} has {len(prompt)} tokens; the model takes at most "
                    f"{self.max_length} (max_position_embeddings)"
                )
        # Greedy samples are all the same: decode one and copy it.
        samples_per_prompt = 1 if params.greedy else params.n
        rows = [_Row(p, s) for p in range(len(prompts)) for s in range(samples_per_prompt)]
        rows.sort(key=lambda row: len(prompts[row.prompt_index]))
        for start in range(0, len(rows), self.batch_size):
            self._decode_batch(prompts, rows[start : start + self.batch_size], params)

        results: list[list[Completion]] = [[] for _ in prompts]
        for row in sorted(rows, key=lambda r: (r.prompt_index, r.sample_index)):
            results[row.prompt_index].append(self._completion(row, params))
        if params.greedy and params.n > 1:
            results = repeat_greedy(results, params.n)
        return results

    @torch.inference_mode()
    def _decode_batch(self, prompts: list[list[int]], rows: list[_Row], params: SamplingParams):
        # Prefill each distinct prompt once, then give every row its prompt's cache.
        unique = sorted({row.prompt_index for row in rows})
        slot = {prompt_index: i for i, prompt_index in enumerate(unique)}
        input_ids, attention_mask = self._left_pad([prompts[i] for i in unique])
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        cache = out.past_key_values
        row_slots = torch.tensor([slot[row.prompt_index] for row in rows], device=self.device)
        cache.batch_select_indices(row_slots)
        generators = None if params.greedy else [self._generator(prompts, r, params) for r in rows]
        budget = [self._budget(len(prompts[row.prompt_index]), params) for row in rows]

        def step(logits: torch.Tensor, active: list[int | None]) -> tuple[list[int], list[bool]]:
            """Rows finish at once (compact_at_every_finish), so every `active` entry is live."""
            live = [row_index for row_index in active if row_index is not None]
            chosen = self._choose(logits, params, generators, live)
            if params.top_logprobs:
                top_values, top_ids = logits.float().log_softmax(-1).topk(params.top_logprobs)
            finished = []
            for local, row_index in enumerate(live):
                row = rows[row_index]
                token = chosen[local]
                row.tokens.append(token)
                if params.top_logprobs:
                    row.top_logprobs.append(
                        list(zip(top_ids[local].tolist(), top_values[local].tolist(), strict=True))
                    )
                if token in self.eos_ids:
                    row.finish_reason = FINISH_EOS
                elif params.stop_when_answered and self._answered(row, token):
                    row.finish_reason = FINISH_ANSWER
                # else it stays FINISH_LENGTH, which ends the row once the budget is used up
                finished.append(
                    row.finish_reason != FINISH_LENGTH or len(row.tokens) >= budget[row_index]
                )
            return chosen, finished

        decode_loop(
            self.model,
            PrefillBatch(cache, attention_mask[row_slots]),
            list(range(len(rows))),
            step,
            compact_at_every_finish,
            positions=positions[row_slots, -1],
            first_logits=out.logits[row_slots, -1, :],
        )

    def _choose(self, logits: torch.Tensor, params, generators, active: list[int]) -> list[int]:
        """Next token of each active row: argmax, or a draw from the tempered, top-p
        truncated distribution with that row's own generator."""
        if params.greedy:
            return logits.argmax(-1).tolist()
        probs = (logits.float() / params.temperature).softmax(-1)
        if params.top_p < 1.0:
            probs = _top_p_filter(probs, params.top_p)
        return [
            int(torch.multinomial(probs[local], 1, generator=generators[row_index]))
            for local, row_index in enumerate(active)
        ]

    def _generator(self, prompts, row: _Row, params: SamplingParams) -> torch.Generator:
        seed = sample_seed(params.seed, prompts[row.prompt_index], row.sample_index)
        return torch.Generator(device=self.device).manual_seed(seed)

    def _budget(self, prompt_length: int, params: SamplingParams) -> int:
        if self.max_length is None:
            return params.max_new_tokens
        return min(params.max_new_tokens, self.max_length - prompt_length)

    def _answered(self, row: _Row, token: int) -> bool:
        if token not in self._trigger_memo:
            self._trigger_memo[token] = is_trigger(self.tokenizer, token)
        if not self._trigger_memo[token]:
            return False
        return answer_complete(self.tokenizer.decode(row.tokens, skip_special_tokens=True))

    def _left_pad(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, prompt in enumerate(prompts):
            ids[i, width - len(prompt) :] = torch.tensor(prompt)
            mask[i, width - len(prompt) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _completion(self, row: _Row, params: SamplingParams) -> Completion:
        return Completion(
            token_ids=row.tokens,
            text=self.tokenizer.decode(row.tokens, skip_special_tokens=True),
            finish_reason=row.finish_reason,
            top_logprobs=row.top_logprobs if params.top_logprobs else None,
        )


def _top_p_filter(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the most likely tokens until their mass reaches top_p (at least one), renormalise."""
    sorted_probs, order = probs.sort(-1, descending=True)
    mass_before = sorted_probs.cumsum(-1) - sorted_probs
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
    filtered = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    return filtered / filtered.sum(-1, keepdim=True)
