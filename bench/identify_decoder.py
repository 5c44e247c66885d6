"""The counterfactual decoder alone, on a random Qwen2 of a chosen size (CPU or GPU):
the cached decoder (shared, padded and grouped batches) vs the naive model.generate loop on the
same continuations, continuation by continuation.

    .venv/bin/python bench/identify_decoder.py [--device cuda] [--dtype bfloat16]
        [--hidden 1024] [--layers 16] [--response 256] [--cap 64] [--naive-perturbations 24]

A random model has no answers to stop at, so every continuation runs to --cap: the ratio
here is the batching and cache reuse alone (bench/identify.py measures the whole method
on the toy model, early stops included). The naive loop runs on --naive-perturbations evenly
spread perturbations and its time is scaled to all of them. Continuations that differ are
counted, with how many passed a near tie (top-2 logit gap below --near-tie).
"""

from __future__ import annotations

import argparse
import random
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from cft_rl.generation.kv_cache import KV_CACHE_LAYOUTS
from cft_rl.identify.decoders import CachedDecoder, ContinuationSampling
from cft_rl.identify.naive import NaiveDecoder
from cft_rl.identify.perturbations import AnswerStops, Perturbation


class NoTokenizer:
    """Stop rules need text only for answers; random tokens never complete one."""

    def decode(self, ids, skip_special_tokens=False):
        return ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--response", type=int, default=128)
    parser.add_argument("--cap", type=int, default=32)
    parser.add_argument("--rows", type=int, default=256, help="decoder.max_batch_rows")
    parser.add_argument("--naive-perturbations", type=int, default=24)
    parser.add_argument("--near-tie", type=float, default=1e-4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batchings", nargs="+", default=["shared", "padded", "grouped"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 256),
        max_position_embeddings=4096,
        initializer_range=0.1,
    )
    dtype = getattr(torch, args.dtype)
    model = Qwen2ForCausalLM(config).to(device=args.device, dtype=dtype).eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"random Qwen2 {params:.0f}M parameters, {args.dtype} on {args.device}")

    rng = random.Random(0)
    prompt = [rng.randrange(args.vocab) for _ in range(args.prompt)]
    response = [rng.randrange(args.vocab) for _ in range(args.response)]
    stops = AnswerStops(NoTokenizer(), response, eos_ids=set())

    timings, outputs = {}, {}
    for batching in args.batchings:
        decoder = CachedDecoder(
            model, ContinuationSampling(), args.rows, KV_CACHE_LAYOUTS[batching]
        )
        ranked = decoder.rank(prompt, response, depth=4)
        perturbations = [
            Perturbation(t, k, ranked.candidate_ids[t][k + 1])
            for t in range(len(response))
            for k in range(2)
        ]
        caps = [args.cap] * len(perturbations)
        _sync(args.device)
        start = time.perf_counter()
        outputs[batching] = decoder.decode(ranked, perturbations, caps, stops)
        _sync(args.device)
        timings[batching] = time.perf_counter() - start
        tokens = decoder.stats.generated_tokens
        print(
            f"cached {batching:7}: {len(perturbations)} continuations, {tokens} tokens in "
            f"{timings[batching]:.2f} s ({len(perturbations) / timings[batching]:.1f} cont/s, "
            f"{tokens / timings[batching]:.0f} tok/s)"
        )

    naive = NaiveDecoder(model, pad_id=0)
    step = max(1, len(perturbations) // args.naive_perturbations)
    subset = list(range(0, len(perturbations), step))[: args.naive_perturbations]
    _sync(args.device)
    start = time.perf_counter()
    slow = naive.decode(ranked, [perturbations[i] for i in subset], [args.cap] * len(subset), stops)
    _sync(args.device)
    per_continuation = (time.perf_counter() - start) / len(subset)
    naive_total = per_continuation * len(perturbations)
    print(
        f"naive          : {per_continuation:.3f} s per continuation, "
        f"{naive_total:.1f} s for all {len(perturbations)} (scaled from {len(subset)})"
    )
    for batching in args.batchings:
        fast = [outputs[batching][i] for i in subset]
        differ = [f for f, s in zip(fast, slow, strict=True) if f.token_ids != s.token_ids]
        tied = sum(f.min_margin < args.near_tie for f in differ)
        print(
            f"speed-up {batching} vs naive: {naive_total / timings[batching]:.1f}x; "
            f"{len(differ)}/{len(subset)} continuations differ from naive "
            f"({tied} of them passed a near tie)"
        )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
