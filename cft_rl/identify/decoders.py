"""Decoders that rank alternatives and decode counterfactual continuations.

`CachedDecoder` (transformers models): one forward over prompt + response gives the
alternatives' ranking at every position and the KV cache; a continuation from position
t reuses the first len(prompt) + t entries of that cache (attention is causal, so the
prefix's keys and values do not depend on what follows), and many continuations are
decoded as one batch (cft_rl.generation.kv_cache: rows share the prefill's cache, or each
gets a left-padded copy). A row stops as soon as its answer is complete.

`BackendDecoder` (any generation backend, vLLM in practice): every continuation is a
prompt (prompt + y_<t + a) for the backend, whose prefix caching shares the prefill.

Both decoders sample a rollout with the generation backends' per-sample seed rule
(`sample_seed` of the full prompt and the rollout index), so the cached decoder's sampled
continuations equal the hf backend's for the same prompts.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

from cft_rl.errors import UserError
from cft_rl.generation.decode_loop import decode_loop
from cft_rl.generation.kv_cache import KV_CACHE_LAYOUTS, SharedPrefixBatch
from cft_rl.generation.types import GenerationBackend, SamplingParams, sample_seed
from cft_rl.identify.alternatives import rank_candidates
from cft_rl.identify.perturbations import AnswerStops, Continuation, Perturbation
from cft_rl.registry import Registry


@dataclass(frozen=True)
class ContinuationSampling:
    """How continuations pick tokens: temperature 0 is greedy."""

    temperature: float = 0.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Ranked:
    """The `depth` most likely tokens at each response position, most likely first, plus
    whatever the decoder keeps for decoding (the KV cache of the cached decoder)."""

    prompt_ids: list[int]
    response_ids: list[int]
    candidate_ids: list[list[int]]
    candidate_logprobs: list[list[float]]
    keys_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None


class RunResources(Protocol):
    """What a decoder is built from: the run's generation backend, or a transformers model
    (the hf backend's own, else a copy)."""

    def get_backend(self) -> GenerationBackend: ...

    def hf_model(self) -> torch.nn.Module: ...


# decoder.kind -> the decoder class (each builds itself with `for_run`)
DECODERS: Registry[type] = Registry("decoder")
register_decoder = DECODERS.register


@dataclass
class DecoderStats:
    """Seconds spent and work done, accumulated over calls."""

    prefill_s: float = 0.0
    decode_s: float = 0.0
    generated_tokens: int = 0
    decoded_continuations: int = 0


@register_decoder("cached")
class CachedDecoder:
    """Batched continuations from slices of the response's KV cache (transformers models)."""

    @classmethod
    def for_run(
        cls,
        run: RunResources,
        sampling: ContinuationSampling,
        max_batch_rows: int,
        batching: str,
    ) -> CachedDecoder:
        return cls(run.hf_model(), sampling, max_batch_rows, KV_CACHE_LAYOUTS.get(batching))

    def __init__(
        self,
        model: torch.nn.Module,
        sampling: ContinuationSampling,
        max_batch_rows: int = 256,
        layout: type = SharedPrefixBatch,
    ) -> None:
        self.model = model
        self.sampling = sampling
        self.max_batch_rows = max_batch_rows
        self.layout = layout
        self.device = next(model.parameters()).device
        self.stats = DecoderStats()

    @torch.inference_mode()
    def rank(self, prompt_ids: Sequence[int], response_ids: Sequence[int], depth: int) -> Ranked:
        """One forward over prompt + response (its last token predicts nothing we need)."""
        start = time.perf_counter()
        prompt, response = list(prompt_ids), list(response_ids)
        ids = torch.tensor([prompt + response[:-1]], device=self.device)
        out = self.model(input_ids=ids, use_cache=True)
        # Row j of these logits predicts response token j.
        logits = out.logits[0, len(prompt) - 1 :]
        candidate_ids, candidate_logprobs = rank_candidates(logits, depth)
        keys_values = _full_attention_layers(out.past_key_values)
        self.stats.prefill_s += time.perf_counter() - start
        return Ranked(prompt, response, candidate_ids, candidate_logprobs, keys_values)

    @torch.inference_mode()
    def decode(
        self,
        ranked: Ranked,
        perturbations: Sequence[Perturbation],
        caps: Sequence[int],
        stops: AnswerStops,
    ) -> list[Continuation]:
        start = time.perf_counter()
        results = [Continuation() for _ in perturbations]
        todo = [
            i
            for i, p in enumerate(perturbations)
            if caps[i] > 0 and not stops.done_before_decoding(p)
        ]
        for batch in self._batches(todo, perturbations):
            self._decode_batch(
                ranked,
                [perturbations[i] for i in batch],
                [caps[i] for i in batch],
                stops,
                [results[i] for i in batch],
            )
        self.stats.decode_s += time.perf_counter() - start
        self.stats.decoded_continuations += len(todo)
        return results

    def _batches(self, todo: list[int], perturbations: Sequence[Perturbation]) -> list[list[int]]:
        """Sorted by prefix length (a padded batch pads little); grouped: one position
        (equal prefixes, no padding) per batch."""
        todo = sorted(todo, key=lambda i: perturbations[i].position)
        if self.layout.one_position_per_batch:
            groups: dict[int, list[int]] = defaultdict(list)
            for i in todo:
                groups[perturbations[i].position].append(i)
            chunks = list(groups.values())
        else:
            chunks = [todo]
        size = self.max_batch_rows
        return [chunk[s : s + size] for chunk in chunks for s in range(0, len(chunk), size)]

    def _decode_batch(
        self,
        ranked: Ranked,
        perturbations: list[Perturbation],
        caps: list[int],
        stops: AnswerStops,
        results: list[Continuation],
    ) -> None:
        prefix_lengths = torch.tensor(
            [len(ranked.prompt_ids) + p.position for p in perturbations], device=self.device
        )
        batch = self.layout(ranked.keys_values, prefix_lengths, reserve=max(caps) + 1)
        tokens = torch.tensor([p.token_id for p in perturbations], device=self.device)
        generators = (
            None if self.sampling.greedy else [self._generator(ranked, p) for p in perturbations]
        )

        def step(logits: torch.Tensor, rows: list[int | None]) -> tuple[list[int], list[bool]]:
            chosen, margins = self._choose(logits, generators, rows)
            finished = [
                row is not None
                and self._record(
                    results[row], chosen[j], margins[j], caps[row], stops, perturbations[row]
                )
                for j, row in enumerate(rows)
            ]
            return chosen, finished

        # Finished rows ride along until a quarter of the batch has finished: selecting
        # rows copies the cache, so doing it at every finish would cost more than it saves.
        decode_loop(
            self.model,
            batch,
            list(range(len(perturbations))),
            step,
            lambda live, total: live <= 0.75 * total,
            positions=prefix_lengths,
            tokens=tokens,
        )

    def _record(
        self,
        result: Continuation,
        token: int,
        margin: float,
        cap: int,
        stops: AnswerStops,
        perturbation: Perturbation,
    ) -> bool:
        """Append a decoded token; True when the continuation is finished."""
        result.token_ids.append(token)
        result.min_margin = min(result.min_margin, margin)
        self.stats.generated_tokens += 1
        return (
            token in stops.eos_ids
            or len(result.token_ids) >= cap
            or stops.completes(perturbation, result.token_ids)
        )

    def _choose(
        self,
        logits: torch.Tensor,
        generators: list[torch.Generator] | None,
        rows: list[int | None],
    ) -> tuple[list[int], list[float]]:
        """Next token per batch row and, when greedy, the gap between its top two logits.
        A finished row (None) gets a placeholder and draws nothing from any generator."""
        logits = logits.float()
        if generators is None:
            top = logits.topk(2, dim=-1).values
            return logits.argmax(-1).tolist(), (top[:, 0] - top[:, 1]).tolist()
        probs = (logits / self.sampling.temperature).softmax(-1)
        chosen = [
            0 if row is None else int(torch.multinomial(probs[j], 1, generator=generators[row]))
            for j, row in enumerate(rows)
        ]
        return chosen, [math.inf] * len(chosen)

    def _generator(self, ranked: Ranked, perturbation: Perturbation) -> torch.Generator:
        prompt = (
            ranked.prompt_ids
            + ranked.response_ids[: perturbation.position]
            + [perturbation.token_id]
        )
        seed = sample_seed(self.sampling.seed, prompt, perturbation.rollout)
        return torch.Generator(device=self.device).manual_seed(seed)


@register_decoder("backend")
class BackendDecoder:
    """Continuations as prompts for a generation backend (vLLM: prefix caching shares the
    prefixes). Ranking asks the backend for one token after every prefix y_<t."""

    @classmethod
    def for_run(
        cls,
        run: RunResources,
        sampling: ContinuationSampling,
        max_batch_rows: int,
        batching: str,
    ) -> BackendDecoder:
        """The backend batches and caches by itself: the cached decoder's settings do not apply."""
        return cls(run.get_backend(), sampling)

    def __init__(self, backend: GenerationBackend, sampling: ContinuationSampling) -> None:
        self.backend = backend
        self.sampling = sampling
        self.stats = DecoderStats()

    def rank(self, prompt_ids: Sequence[int], response_ids: Sequence[int], depth: int) -> Ranked:
        start = time.perf_counter()
        prompt, response = list(prompt_ids), list(response_ids)
        prefixes = [prompt + response[:t] for t in range(len(response))]
        params = SamplingParams(max_new_tokens=1, temperature=0.0, top_logprobs=depth)
        completions = self.backend.generate(prefixes, params)
        candidate_ids, candidate_logprobs = [], []
        for [completion] in completions:
            ranked = sorted(completion.top_logprobs[0], key=lambda pair: (-pair[1], pair[0]))
            candidate_ids.append([token_id for token_id, _ in ranked])
            candidate_logprobs.append([logprob for _, logprob in ranked])
        self.stats.prefill_s += time.perf_counter() - start
        return Ranked(prompt, response, candidate_ids, candidate_logprobs)

    def decode(
        self,
        ranked: Ranked,
        perturbations: Sequence[Perturbation],
        caps: Sequence[int],
        stops: AnswerStops,
    ) -> list[Continuation]:
        start = time.perf_counter()
        results = [Continuation() for _ in perturbations]
        # One prompt per (position, alternative); its rollouts are the backend's n samples.
        prompts: dict[tuple[int, int], list[int]] = {}
        for i, perturbation in enumerate(perturbations):
            if caps[i] > 0 and not stops.done_before_decoding(perturbation):
                prompts.setdefault((perturbation.position, perturbation.token_id), []).append(i)
        if prompts:
            keys = list(prompts)
            prompt_ids = [
                ranked.prompt_ids + ranked.response_ids[:position] + [token_id]
                for position, token_id in keys
            ]
            params = SamplingParams(
                max_new_tokens=max(caps[i] for group in prompts.values() for i in group),
                temperature=self.sampling.temperature,
                seed=self.sampling.seed,
                n=max(perturbations[i].rollout for group in prompts.values() for i in group) + 1,
                stop_when_answered=True,
            )
            completions = self.backend.generate(prompt_ids, params)
            for key, samples in zip(keys, completions, strict=True):
                for i in prompts[key]:
                    # A longer budget decodes the same first tokens: cut to this perturbation's cap.
                    generated = samples[perturbations[i].rollout].token_ids[: caps[i]]
                    results[i].token_ids = stops.cut(perturbations[i], generated)
                    self.stats.generated_tokens += len(samples[perturbations[i].rollout].token_ids)
            self.stats.decoded_continuations += sum(len(group) for group in prompts.values())
        self.stats.decode_s += time.perf_counter() - start
        return results


def _full_attention_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The per-layer keys and values of a prefill, [1, heads, length, head_dim] each."""
    layers = getattr(cache, "layers", None)
    if layers is None or any(getattr(layer, "is_sliding", False) for layer in layers):
        raise UserError(
            "decoder.kind=cached needs a model whose KV cache is a plain full-attention "
            "DynamicCache; use decoder.kind=backend for this model"
        )
    return [(layer.keys, layer.values) for layer in layers]
