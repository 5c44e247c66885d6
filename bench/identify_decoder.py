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

    results = compare_decoders(
        model, args.vocab, args.prompt, args.response, args.cap, args.rows,
        args.naive_perturbations, args.near_tie, args.batchings,
    )  # fmt: skip
    for batching in args.batchings:
        r = results[batching]
        print(
            f"cached {batching:7}: {r['continuations']} continuations, {r['tokens']} tokens in "
            f"{r['seconds']:.2f} s ({r['continuations_per_s']:.1f} cont/s, "
            f"{r['tokens'] / r['seconds']:.0f} tok/s)"
        )
    naive = results["naive"]
    print(
        f"naive          : {naive['seconds_per_continuation']:.3f} s per continuation, "
        f"{naive['seconds']:.1f} s for all {naive['continuations']} "
        f"(scaled from {naive['measured']})"
    )
    for batching in args.batchings:
        r = results[batching]
        print(
            f"speed-up {batching} vs naive: {r['speedup']:.1f}x; "
            f"{r['differ']}/{naive['measured']} continuations differ from naive "
            f"({r['differ_near_tie']} of them passed a near tie)"
        )


def compare_decoders(
    model: torch.nn.Module,
    vocab: int,
    prompt_tokens: int,
    response_tokens: int,
    cap: int,
    rows: int,
    naive_perturbations: int,
    near_tie: float,
    batchings: list[str],
) -> dict[str, dict]:
    """Every 2-alternative continuation of a random response by each cached layout, and by the
    naive loop on `naive_perturbations` evenly spread ones (its time scaled to all)."""
    device = str(next(model.parameters()).device)
    rng = random.Random(0)
    prompt = [rng.randrange(vocab) for _ in range(prompt_tokens)]
    response = [rng.randrange(vocab) for _ in range(response_tokens)]
    stops = AnswerStops(NoTokenizer(), response, eos_ids=set())

    results, outputs = {}, {}
    for batching in batchings:
        decoder = CachedDecoder(model, ContinuationSampling(), rows, KV_CACHE_LAYOUTS.get(batching))
        ranked = decoder.rank(prompt, response, depth=4)
        perturbations = [
            Perturbation(t, k, ranked.candidate_ids[t][k + 1])
            for t in range(len(response))
            for k in range(2)
        ]
        sync(device)
        start = time.perf_counter()
        outputs[batching] = decoder.decode(ranked, perturbations, [cap] * len(perturbations), stops)
        sync(device)
        seconds = time.perf_counter() - start
        results[batching] = {
            "continuations": len(perturbations),
            "tokens": decoder.stats.generated_tokens,
            "seconds": seconds,
            "continuations_per_s": len(perturbations) / seconds,
        }

    naive = NaiveDecoder(model, pad_id=0)
    step = max(1, len(perturbations) // naive_perturbations)
    subset = list(range(0, len(perturbations), step))[:naive_perturbations]
    sync(device)
    start = time.perf_counter()
    slow = naive.decode(ranked, [perturbations[i] for i in subset], [cap] * len(subset), stops)
    sync(device)
    per_continuation = (time.perf_counter() - start) / len(subset)
    results["naive"] = {
        "continuations": len(perturbations),
        "measured": len(subset),
        "seconds_per_continuation": per_continuation,
        "seconds": per_continuation * len(perturbations),
        "continuations_per_s": 1 / per_continuation,
    }
    for batching in batchings:
        fast = [outputs[batching][i] for i in subset]
        differ = [f for f, s in zip(fast, slow, strict=True) if f.token_ids != s.token_ids]
        results[batching].update(
            speedup=results["naive"]["seconds"] / results[batching]["seconds"],
            differ=len(differ),
            differ_near_tie=sum(f.min_margin < near_tie for f in differ),
        )
    return results


def sync(device: str) -> None:
    """Wait for the device's queued work, so that a timer measures it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
