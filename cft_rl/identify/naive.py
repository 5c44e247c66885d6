"""The naive reference: one continuation at a time, the whole prefix recomputed by
`model.generate`, decoded to EOS or the length cap (no early stop at the answer).

It exists to check the fast decoders (identical masks) and to measure their speed-up
(bench/identify.py); the answer it is judged on is cut the same way as theirs.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from cft_rl.identify.alternatives import rank_candidates
from cft_rl.identify.decoders import DecoderStats, Ranked
from cft_rl.identify.perturbations import AnswerStops, Continuation, Perturbation


class NaiveDecoder:
    """Greedy continuations with `model.generate`, one per call."""

    def __init__(self, model: torch.nn.Module, pad_id: int) -> None:
        self.model = model
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.stats = DecoderStats()

    @torch.inference_mode()
    def rank(self, prompt_ids: Sequence[int], response_ids: Sequence[int], depth: int) -> Ranked:
        """The ranking from one forward over prompt + response, as the cached decoder does
        (ranking is not what the naive loop is slow at)."""
        start = time.perf_counter()
        prompt, response = list(prompt_ids), list(response_ids)
        ids = torch.tensor([prompt + response[:-1]], device=self.device)
        logits = self.model(input_ids=ids).logits[0, len(prompt) - 1 :]
        candidate_ids, candidate_logprobs = rank_candidates(logits, depth)
        self.stats.prefill_s += time.perf_counter() - start
        return Ranked(prompt, response, candidate_ids, candidate_logprobs)

    @torch.inference_mode()
    def decode(
        self,
        ranked: Ranked,
        perturbations: Sequence[Perturbation],
        caps: Sequence[int],
        stops: AnswerStops,
    ) -> list[Continuation]:
        start = time.perf_counter()
        results = []
        for perturbation, cap in zip(perturbations, caps, strict=True):
            if cap == 0:
                results.append(Continuation())
                continue
            prefix = (
                ranked.prompt_ids
                + ranked.response_ids[: perturbation.position]
                + [perturbation.token_id]
            )
            ids = torch.tensor([prefix], device=self.device)
            output = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=cap,
                do_sample=False,
                eos_token_id=sorted(stops.eos_ids),
                pad_token_id=self.pad_id,
            )
            generated = output[0, ids.shape[1] :].tolist()
            self.stats.generated_tokens += len(generated)
            self.stats.decoded_continuations += 1
            results.append(Continuation(stops.cut(perturbation, generated)))
        self.stats.decode_s += time.perf_counter() - start
        return results
