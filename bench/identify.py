"""Critical-token identification: the optimised decoder vs the naive reference, side by side.

    .venv/bin/python bench/identify.py [--model toy] [--questions 24] [--responses 4]
                                       [--threads 2] [--max-new-tokens 160]

The model answers toy training questions greedily; on the first --responses correct
answers, every position is perturbed (2 alternatives, greedy continuations) by
  naive     one continuation at a time, the whole prefix recomputed by model.generate,
            decoded to EOS or the length cap;
  shared    the cached decoder: one forward over prompt + response, all continuations in
            one batch whose rows share that KV cache (each keeps only its own new tokens),
            each stopped when its answer is done;
  padded    the same, each row with a left-padded copy of its prefix's cache;
  grouped   padded, one batch per position (equal prefixes, no padding).
All share the alternatives' ranking and the answer-deduplicating judge, so the
ratio is the decoding's. The masks must be identical; where they differ the bench says
whether a numerical near tie (top-2 logit gap below --near-tie) explains it.
"""

from __future__ import annotations

import argparse
import time

import torch

from cft_rl.config import ModelSpec
from cft_rl.data import load_benchmark
from cft_rl.data.prompts import format_prompt
from cft_rl.generation import SamplingParams
from cft_rl.generation.hf import HFBackend
from cft_rl.generation.kv_cache import KV_CACHE_LAYOUTS
from cft_rl.identify.config import CounterfactualSettings
from cft_rl.identify.counterfactual import Decoder, ResponseCriticality, identify_response
from cft_rl.identify.decoders import CachedDecoder, ContinuationSampling
from cft_rl.identify.naive import NaiveDecoder
from cft_rl.modeling import load_causal_lm, load_tokenizer
from reward import Verifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy")
    parser.add_argument("--questions", type=int, default=24, help="toy training questions asked")
    parser.add_argument("--responses", type=int, default=4, help="correct answers identified")
    parser.add_argument("--max-new-tokens", type=int, default=160)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--near-tie", type=float, default=1e-4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = ModelSpec(path=args.model, device=args.device)
    model, tokenizer = load_causal_lm(spec), load_tokenizer(spec)
    backend = HFBackend(model, tokenizer, batch_size=args.questions)
    print(
        f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"parameters on {args.device}, {args.threads} threads"
    )

    with Verifier(num_workers=2) as verifier:
        responses = correct_answers(backend, verifier, args)
        settings = CounterfactualSettings()
        decoders: dict[str, Decoder] = {
            "naive": NaiveDecoder(model, pad_id=backend.pad_id),
            "shared": CachedDecoder(
                model, ContinuationSampling(), layout=KV_CACHE_LAYOUTS["shared"]
            ),
            "padded": CachedDecoder(
                model, ContinuationSampling(), layout=KV_CACHE_LAYOUTS["padded"]
            ),
            "grouped": CachedDecoder(
                model, ContinuationSampling(), layout=KV_CACHE_LAYOUTS["grouped"]
            ),
        }
        results: dict[str, list[ResponseCriticality]] = {}
        seconds: dict[str, float] = {}
        for name, decoder in decoders.items():
            start = time.perf_counter()
            results[name] = [
                identify_response(
                    prompt,
                    response,
                    reference,
                    decoder=decoder,
                    verifier=verifier,
                    tokenizer=tokenizer,
                    settings=settings,
                    max_new_tokens=args.max_new_tokens,
                    excluded_ids=set(tokenizer.all_special_ids) | backend.eos_ids,
                    eos_ids=backend.eos_ids,
                    near_tie_margin=args.near_tie,
                )
                for prompt, response, reference in responses
            ]
            seconds[name] = time.perf_counter() - start
    report(decoders, results, seconds, responses)


def correct_answers(backend, verifier, args) -> list[tuple[list[int], list[int], str]]:
    """(prompt ids, response ids, reference) of the first correct greedy answers."""
    tokenizer = backend.tokenizer
    examples = load_benchmark("toy-train", limit=args.questions)
    prompts = [
        tokenizer(format_prompt(tokenizer, e.question, "toy"), add_special_tokens=False).input_ids
        for e in examples
    ]
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    completions = [c[0] for c in backend.generate(prompts, params)]
    verdicts = verifier.verify_batch([c.text for c in completions], [e.answer for e in examples])
    kept = [
        (prompt, completion.token_ids, example.answer)
        for prompt, completion, example, verdict in zip(
            prompts, completions, examples, verdicts, strict=True
        )
        if verdict.correct
    ]
    print(f"greedy answers: {len(kept)}/{len(examples)} correct; identifying {args.responses}")
    return kept[: args.responses]


def report(decoders, results, seconds, responses) -> None:
    tokens = sum(len(response) for _, response, _ in responses)
    print(f"{len(responses)} responses, {tokens} positions\n")
    print(
        f"{'decoder':8} {'seconds':>8} {'s/resp':>7} {'cont/s':>8} {'gen tok/s':>9} "
        f"{'prefill':>7} {'decode':>7} {'verify':>7} {'other':>6}"
    )
    for name, decoder in decoders.items():
        stats, total = decoder.stats, seconds[name]
        continuations = sum(r.stats["continuations"] for r in results[name])
        verify = sum(r.stats["verify_s"] for r in results[name])
        other = total - stats.prefill_s - stats.decode_s - verify
        print(
            f"{name:8} {total:8.2f} {total / len(responses):7.2f} {continuations / total:8.1f} "
            f"{stats.generated_tokens / stats.decode_s:9.0f} "
            + " ".join(
                f"{100 * part / total:6.1f}%"
                for part in (stats.prefill_s, stats.decode_s, verify, other)
            )
        )
    print()
    for name in ("shared", "padded", "grouped"):
        print(f"speed-up {name} vs naive: {seconds['naive'] / seconds[name]:.1f}x")
        compare_masks(results["naive"], results[name], name)


def compare_masks(naive: list[ResponseCriticality], fast: list[ResponseCriticality], name: str):
    differing = [
        (i, t)
        for i, (a, b) in enumerate(zip(naive, fast, strict=True))
        for t, (x, y) in enumerate(zip(a.critical_mask, b.critical_mask, strict=True))
        if x != y
    ]
    near_ties = sum(r.stats["near_ties"] for r in fast)
    if not differing:
        print(f"  masks identical ({near_ties} continuations passed a near tie)")
        return
    print(f"  masks DIFFER at {len(differing)} positions:")
    for i, t in differing:
        tied = any(alt["near_tie"] for alt in fast[i].alternatives[t])
        cause = "near tie in a continuation" if tied else "NOT explained by a near tie"
        print(
            f"    response {i} position {t}: naive {naive[i].critical_mask[t]}, "
            f"{name} {fast[i].critical_mask[t]} ({cause})"
        )


if __name__ == "__main__":
    main()
