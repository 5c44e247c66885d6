"""Peak memory of GRPO's per-token statistics on one micro-batch: log-probs and entropies
of the response tokens with their gradients, through the full [tokens, vocab] logits (what
the local engine did before) against the chunked path it uses now (cft_rl.token_logprobs).

    .venv/bin/python bench/grpo_token_stats.py [--responses 16] [--length 256]
        [--vocab 151936] [--hidden 256] [--chunk 1024]

Each variant runs in a fresh process and reports its peak resident memory (ru_maxrss), so
neither sees the other's allocations; the hidden states stand for the backbone's output
(the part of the step that does not change). The defaults are Qwen2.5's vocabulary and a
micro-batch of 16 responses of 256 tokens. Prints

    grpo token_stats peak, chunked / full: X

and checks that both give the same log-probs, entropies and gradients.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch


def run_variant(args: argparse.Namespace) -> dict:
    from cft_rl.grpo.algos import entropy_from_logits
    from cft_rl.token_logprobs import token_entropies, token_logprobs

    torch.manual_seed(0)
    tokens = args.responses * args.length
    rows = torch.randn(tokens, args.hidden, requires_grad=True)
    weight = (torch.randn(args.vocab, args.hidden) * 0.02).requires_grad_(True)
    targets = torch.randint(args.vocab, (tokens,))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.variant == "full":
        logits = (rows @ weight.T).float()
        log_prob = logits.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
        entropy = entropy_from_logits(logits)
    else:
        log_prob = token_logprobs(rows, weight, targets, args.chunk)
        entropy = token_entropies(rows, weight, args.chunk)
    (log_prob.sum() + 0.01 * entropy.sum()).backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_mib": peak / 1024,
        "above_inputs_mib": (peak - before) / 1024,
        "log_prob": log_prob[:64].tolist(),
        "entropy": entropy[:64].tolist(),
        "grad_rows": rows.grad[:8].flatten().tolist(),
        "grad_weight_norm": float(weight.grad.norm()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--responses", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--variant", choices=["full", "chunked"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        torch.set_num_threads(2)
        print(json.dumps(run_variant(args)))
        return
    results = {}
    for variant in ("full", "chunked"):
        command = [sys.executable, __file__, *sys.argv[1:], "--variant", variant]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[variant] = json.loads(output.strip().splitlines()[-1])
        print(f"{variant:8s} peak {results[variant]['peak_mib']:8.0f} MiB "
              f"({results[variant]['above_inputs_mib']:.0f} MiB above the inputs)")  # fmt: skip
    full, chunked = results["full"], results["chunked"]
    same = all(
        torch.allclose(torch.tensor(full[key]), torch.tensor(chunked[key]), rtol=1e-4, atol=1e-5)
        for key in ("log_prob", "entropy", "grad_rows", "grad_weight_norm")
    )
    sizes = f"{args.responses} x {args.length} tokens, vocab {args.vocab}, hidden {args.hidden}"
    print(f"sizes: {sizes}, chunk {args.chunk}; same log-probs, entropies, gradients: {same}")
    print(f"grpo token_stats peak, chunked / full: {chunked['peak_mib'] / full['peak_mib']:.3f}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
