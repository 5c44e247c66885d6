"""Peak memory and step time of `cft` (12% of response tokens, LM head on gathered rows) against
full-logit `sft` (`model(labels=...)`, logits at every position) and against TRL 1.16's SFT
loss on the same 12% (its fused, chunked LM head with labels -100 outside them, as
SFTTrainer computes it), on a random-init Qwen2 with a 151,936-token vocabulary, on CPU, side
by side in one run.

    .venv/bin/python bench/sft_memory.py            # defaults below; --help for sizes

How memory is measured: each mode runs in its own process (so no mode inherits another's
allocator state). Right before each timed step the process resets the kernel's resident-set
high-water mark (`echo 5 > /proc/self/clear_refs`) and reads its resident set; after the step it
reads the high-water mark (`VmHWM`). "step peak" is high-water minus the resident set before the
step: the memory the forward + backward needed on top of weights and inputs (parameter gradients
included, they are freed between steps). "process peak" is the high-water mark itself. glibc's
mmap threshold is pinned to 64 KiB (MALLOC_MMAP_THRESHOLD_), so freed tensors go back to the
kernel at once and the resident set follows live tensors. (tracemalloc sees only Python's own
allocations, not torch's.) The step is one forward + backward, without an optimizer step, which
costs both modes the same.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODES = {
    "sft_full": "full-logit SFT: model(labels=...), logits at every position",
    "cft": "CFT: critical tokens only, LM head on the gathered rows",
    "sft": "SFT on the gathered response rows (same path as cft, every response token)",
    "trl": "TRL 1.16 SFTTrainer's loss, labels -100 outside the critical tokens",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, default=151_936, help="Qwen2/2.5 vocabulary size")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens per sequence")
    parser.add_argument("--critical", type=float, default=0.12, help="share of response tokens")
    parser.add_argument("--steps", type=int, default=1, help="timed steps per worker process")
    parser.add_argument(
        "--rounds", type=int, default=2, help="worker processes per mode, run in turn (ABCABC)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", choices=sorted(MODES), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args)))
        return
    # modes take turns, so a change in the load of this shared machine hits all of them
    steps: dict[str, list[dict]] = {mode: [] for mode in MODES}
    for _ in range(args.rounds):
        for mode in MODES:
            steps[mode] += run_in_subprocess(mode, argv if argv is not None else sys.argv[1:])
    medians = {
        mode: {key: statistics.median(step[key] for step in runs) for key in runs[0]}
        for mode, runs in steps.items()
    }
    report(args, medians)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"load average at the end (1, 5, 15 min; this machine is shared): {load}")


def run_in_subprocess(mode: str, argv: list[str]) -> list[dict]:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run(
        [sys.executable, __file__, *argv, "--worker", mode],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(f"worker {mode} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(args: argparse.Namespace, results: dict[str, dict]) -> None:
    print(
        f"Qwen2 random init: vocab {args.vocab}, hidden {args.hidden}, {args.layers} layers; "
        f"batch {args.batch} x {args.seq} tokens ({args.prompt} prompt), "
        f"{args.critical:.0%} of response tokens critical; {args.threads} threads; "
        f"median of {args.rounds} processes x {args.steps} steps per mode"
    )
    print(f"{'mode':<10} {'step s':>8} {'step peak MiB':>14} {'process peak MiB':>17}  what")
    for mode, result in results.items():
        print(
            f"{mode:<10} {result['step_s']:>8.3f} {result['step_peak_mib']:>14.0f} "
            f"{result['process_peak_mib']:>17.0f}  {MODES[mode]}"
        )
    base = results["sft_full"]
    for mode in ("cft", "sft"):
        ratios = {key: results[mode][key] / base[key] for key in base}
        print(
            f"{mode} / sft_full: step peak {ratios['step_peak_mib']:.3f}x, "
            f"process peak {ratios['process_peak_mib']:.3f}x, step time {ratios['step_s']:.3f}x"
        )
    trl = results["trl"]
    versus_trl = {key: results["cft"][key] / trl[key] for key in trl}
    print(
        f"cft / trl: step peak {versus_trl['step_peak_mib']:.3f}x, "
        f"process peak {versus_trl['process_peak_mib']:.3f}x, step time {versus_trl['step_s']:.3f}x"
    )
    cft = {key: results["cft"][key] / base[key] for key in base}
    verdict = cft["step_peak_mib"] <= 0.35 and cft["step_s"] <= 1.0
    print(f"target (cft step peak <= 0.35x, step time <= 1x): {'met' if verdict else 'NOT met'}")
    verdict = versus_trl["step_peak_mib"] <= 1.0 and versus_trl["step_s"] <= 1.0
    print(f"target (cft <= trl in step peak and step time): {'met' if verdict else 'NOT met'}")


# ---- worker: one mode in this process ----


def run_worker(args: argparse.Namespace) -> list[dict]:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_model(args)
    batch = build_batch(args)
    step = make_step(args.worker, model, batch)
    step()  # warm-up: first-call allocations and lazy initialisation
    model.zero_grad(set_to_none=True)
    results = []
    for _ in range(args.steps):
        reset_peak_rss()
        before = read_status_kib("VmRSS")
        start = time.perf_counter()
        step()
        elapsed = time.perf_counter() - start
        peak = read_status_kib("VmHWM")
        model.zero_grad(set_to_none=True)
        results.append(
            {
                "step_s": elapsed,
                "step_peak_mib": (peak - before) / 1024,
                "process_peak_mib": peak / 1024,
            }
        )
    return results


def build_model(args: argparse.Namespace):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.hidden // 64,
        num_key_value_heads=max(1, args.hidden // 128),
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    return Qwen2ForCausalLM(config).train()


def build_batch(args: argparse.Namespace) -> dict:
    import torch

    generator = torch.Generator().manual_seed(0)
    shape = (args.batch, args.seq)
    response = (torch.arange(args.seq) >= args.prompt).expand(shape)
    critical = response & (torch.rand(shape, generator=generator) < args.critical)
    return {
        "input_ids": torch.randint(args.vocab, shape, generator=generator),
        "attention_mask": torch.ones(shape, dtype=torch.long),
        "response_mask": response.long(),
        "critical_mask": critical.long(),
    }


def make_step(mode: str, model, batch: dict):
    from cft_rl.sft.losses import LossConfig, selected_token_loss, step_normalizer

    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if mode == "sft_full":
        labels = batch["input_ids"].masked_fill(batch["response_mask"] == 0, -100)
        return lambda: model(**inputs, labels=labels).loss.backward()
    if mode == "trl":
        return trl_step(model, inputs, batch)

    config = LossConfig(name=mode)

    def gathered_step() -> None:
        normaliser = step_normalizer(config, [batch])
        hidden = model.model(**inputs).last_hidden_state
        sums = selected_token_loss(config, batch, hidden, model.lm_head.weight)
        (sums.loss_sum / normaliser).backward()

    return gathered_step


def trl_step(model, inputs: dict, batch: dict):
    """SFTTrainer.compute_loss's default path (loss_type="nll"): the fused LM head with the
    outputs the trainer asks for, the mean over labelled tokens."""
    from trl.trainer.utils import add_fused_lm_head

    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    labels = batch["input_ids"].masked_fill(batch["critical_mask"] == 0, -100)

    def step() -> None:
        out = model(**inputs, labels=labels, fused_lm_head=True)
        (-out.log_probs.sum() / out.label_mask.sum().clamp(min=1)).backward()

    return step


def reset_peak_rss() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError as err:
        sys.exit(f"cannot reset the peak resident set (/proc/self/clear_refs, Linux only): {err}")


def read_status_kib(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{key} missing from /proc/self/status")


if __name__ == "__main__":
    main()
