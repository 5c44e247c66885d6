"""One prepared check for a GPU machine: the project's GPU paths on a random model of a real
shape, written to one JSON and one markdown table, within a few minutes.

    python bench/gpu_check.py --out DIR                     # on CUDA, Qwen2.5-0.5B shape
    python bench/gpu_check.py --out DIR --size tiny --device cpu   # what the test runs

Parts, each timed and recorded (a part that fails is recorded with its error; the others run):
  identify  the cached decoder (shared KV cache) against the naive model.generate loop on
            the same 2-alternative continuations of a random response, fp32: continuations/s
            and equality (bench/identify_decoder.py's measurement);
  sft       peak memory and step time of `cft`, full-logit `sft` and TRL 1.16's fused-head
            loss on the same batch, 12% of response tokens critical (bench/sft_memory.py's
            steps; peak CUDA memory above the weights, on CPU not measured);
  grpo      three steps of the local GRPO engine (a dense stand-in reward: the share of
            digits, so no verifier is needed);
  deepspeed one ZeRO-2 bf16 SFT step through cft_rl.sft.distributed, when deepspeed imports.

The GPU machine this project may borrow has torch and transformers but not pydantic,
math-verify, trl or deepspeed: `make gpu-wheelhouse` downloads the pure-Python wheels this
script needs into bench/wheelhouse (about 7 MB, git-ignored: name it in the device run's
`carry`), installed into a temporary directory at start (`--wheelhouse`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The GPU machine gets the checkout, not an installed package: import cft_rl from it.
sys.path.insert(1, str(ROOT))

# Qwen2.5-0.5B: hidden 896, 24 layers, 14 heads (2 KV), MLP 4864, vocabulary 151,936.
SIZES = {
    "real": {
        "vocab": 151_936, "hidden": 896, "layers": 24, "heads": 14, "kv_heads": 2,
        "intermediate": 4864,
        "identify": {"prompt": 128, "response": 256, "cap": 64, "rows": 512, "naive": 16},
        "sft": {"batch": 2, "seq": 2048, "prompt": 256},
        "grpo": {"prompts": 4, "n": 8, "max_new_tokens": 128},
    },
    "tiny": {
        "vocab": 1024, "hidden": 64, "layers": 2, "heads": 2, "kv_heads": 1,
        "intermediate": 128,
        "identify": {"prompt": 8, "response": 12, "cap": 6, "rows": 64, "naive": 4},
        "sft": {"batch": 2, "seq": 64, "prompt": 16},
        "grpo": {"prompts": 2, "n": 2, "max_new_tokens": 8},
    },
}  # fmt: skip
CRITICAL_SHARE = 0.12


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", choices=sorted(SIZES), default="real")
    parser.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    parser.add_argument("--parts", nargs="+", default=["identify", "sft", "grpo", "deepspeed"])
    parser.add_argument("--wheelhouse", type=Path, default=ROOT / "bench" / "wheelhouse")
    args = parser.parse_args(argv)
    install_wheelhouse(args.wheelhouse)

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    size = SIZES[args.size]
    report: dict[str, Any] = {"machine": machine(device), "size": args.size, "parts": {}}
    args.out.mkdir(parents=True, exist_ok=True)
    for part in args.parts:
        start = time.perf_counter()
        try:
            result = PARTS[part](size, device)
        except Exception as error:  # record it and go on: one broken part must not hide the rest
            result = {"error": f"{type(error).__name__}: {error}", "trace": traceback.format_exc()}
        result["wall_s"] = round(time.perf_counter() - start, 2)
        report["parts"][part] = result
        write(args.out, report)  # after every part: a run cut short keeps what it measured
        print(f"{part}: {result.get('error') or 'done'} ({result['wall_s']} s)", flush=True)
    return 0 if all("error" not in r for r in report["parts"].values()) else 1


def install_wheelhouse(wheelhouse: Path) -> None:
    """Install the wheels of `wheelhouse` (if it exists) into a temporary directory on
    sys.path, without touching the machine's own environment."""
    if not wheelhouse.is_dir() or not any(wheelhouse.glob("*.whl")):
        return
    target = Path(tempfile.mkdtemp(prefix="gpu-check-site-"))
    wheels = sorted(str(w) for w in wheelhouse.glob("*.whl"))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index"]
    subprocess.run([*command, "--target", str(target), *wheels], check=True)
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])


def machine(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info = {"device": device, "torch": torch.__version__, "transformers": transformers.__version__}
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    info["cpus"] = os.cpu_count()
    info["load_average"] = [round(x, 1) for x in os.getloadavg()]
    return info


def random_qwen2(size: dict, device: str, dtype=None, vocab: int | None = None):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab or size["vocab"],
        hidden_size=size["hidden"],
        intermediate_size=size["intermediate"],
        num_hidden_layers=size["layers"],
        num_attention_heads=size["heads"],
        num_key_value_heads=size["kv_heads"],
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype or torch.float32)


# --- the parts -----------------------------------------------------------------------------


def check_identify(size: dict, device: str) -> dict[str, Any]:
    from identify_decoder import compare_decoders

    s = size["identify"]
    model = random_qwen2(size, device).eval()
    results = compare_decoders(
        model, size["vocab"], s["prompt"], s["response"], s["cap"], s["rows"], s["naive"],
        near_tie=1e-4, batchings=["shared"],
    )  # fmt: skip
    shared, naive = results["shared"], results["naive"]
    return {
        "dtype": "float32",
        "continuations": shared["continuations"],
        "cached_continuations_per_s": round(shared["continuations_per_s"], 2),
        "naive_continuations_per_s": round(naive["continuations_per_s"], 2),
        "speedup": round(shared["speedup"], 2),
        "compared": naive["measured"],
        "differ": shared["differ"],
        "differ_near_tie": shared["differ_near_tie"],
    }


def check_sft(size: dict, device: str) -> dict[str, Any]:
    import torch

    s = size["sft"]
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    batch_args = SimpleNamespace(
        vocab=size["vocab"], batch=s["batch"], seq=s["seq"], prompt=s["prompt"],
        critical=CRITICAL_SHARE,
    )  # fmt: skip
    results = {"dtype": str(dtype).removeprefix("torch."), "tokens": s["batch"] * s["seq"]}
    for mode in ("sft_full", "cft", "trl"):
        try:
            results[mode] = sft_step(mode, size, device, dtype, batch_args)
        except Exception as error:  # e.g. TRL missing: keep the modes that ran
            results[mode] = {"error": f"{type(error).__name__}: {error}"}
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    failed = [mode for mode in ("sft_full", "cft", "trl") if "error" in results[mode]]
    if failed:
        results["error"] = f"modes {failed} failed (each one's error is in its entry)"
    return results


def sft_step(mode: str, size: dict, device: str, dtype, batch_args) -> dict[str, Any]:
    """Step time and peak CUDA memory of one forward + backward of `mode`, after a warm-up."""
    import torch
    from identify_decoder import sync
    from sft_memory import build_batch, make_step

    model = random_qwen2(size, device, dtype).train()
    batch = {k: v.to(device) for k, v in build_batch(batch_args).items()}
    step = make_step(mode, model, batch)
    step()  # warm-up
    model.zero_grad(set_to_none=True)
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    step()
    sync(device)
    seconds = time.perf_counter() - start
    peak = (
        (torch.cuda.max_memory_allocated() - before) / 2**20 if device.startswith("cuda") else None
    )
    return {"step_s": round(seconds, 4), "peak_mib": peak and round(peak)}


def check_grpo(size: dict, device: str) -> dict[str, Any]:
    from cft_rl.grpo.config import GrpoConfig
    from cft_rl.grpo.local_engine import LocalGrpo

    s = size["grpo"]
    with tempfile.TemporaryDirectory() as work:
        model_dir, vocab = saved_random_model(size, Path(work))
        config = GrpoConfig.model_validate(
            {
                "output_dir": f"{work}/out",
                "model": {"path": str(model_dir), "device": device},
                "data": {"benchmark": "toy-train", "limit": 3 * s["prompts"]},
                "rollout": {"n": s["n"], "max_new_tokens": s["max_new_tokens"]},
                "batch": {"prompts_per_step": s["prompts"], "micro_batch_size": s["n"]},
                "steps": 3,
                "monitor": {"enabled": False},
            }
        )
        trainer = LocalGrpo(config, digit_share)
        records = [trainer.train_step(step) for step in (1, 2, 3)]
    keys = ("step_time_s", "time_generate_s", "time_update_s", "entropy_mean", "reward_mean")
    return {"vocab": vocab, "steps": [{k: r.get(k) for k in keys} for r in records]}


def digit_share(texts: list[str], examples: list) -> list[float]:
    """A dense stand-in reward that needs no verifier."""
    return [sum(ch.isdigit() for ch in text) / max(1, len(text)) for text in texts]


def check_deepspeed(size: dict, device: str) -> dict[str, Any]:
    """One optimizer step of `cft-rl sft` (ZeRO-2, bf16, loss sft on toy solutions)."""
    try:
        import deepspeed  # noqa: F401
    except ImportError as error:
        return {"skipped": f"deepspeed does not import here: {error}"}
    from cft_rl.sft.config import SftConfig
    from cft_rl.sft.trainer import run_sft

    with tempfile.TemporaryDirectory() as work:
        model_dir, _ = saved_random_model(size, Path(work))
        config = SftConfig.model_validate(
            {
                "output_dir": f"{work}/out",
                "model": {"path": str(model_dir), "device": device, "dtype": "bfloat16"},
                "data": {"format": "examples", "benchmark": "toy-train", "limit": 4},
                "loss": {"name": "sft"},
                "train": {
                    "max_steps": 1,
                    "micro_batch_size": 4,
                    "deepspeed_config": str(ROOT / "recipes" / "deepspeed" / "zero2.json"),
                },
                "logging": {"progress": False},
            }
        )
        start = time.perf_counter()
        export = run_sft(config)
        seconds = time.perf_counter() - start
        exported = sorted(p.name for p in Path(export).iterdir())
    return {"zero_stage": 2, "dtype": "bfloat16", "run_s": round(seconds, 2), "export": exported}


def saved_random_model(size: dict, work: Path) -> tuple[Path, int]:
    """The real shape saved as an HF directory with the toy model's tokenizer (one that
    travels with the checkout), its vocabulary the tokenizer's."""
    from cft_rl.config import ModelSpec
    from cft_rl.modeling import load_tokenizer

    tokenizer = load_tokenizer(ModelSpec(path="toy"))
    model = random_qwen2(size, "cpu", vocab=len(tokenizer))
    model.save_pretrained(work / "model")
    tokenizer.save_pretrained(work / "model")
    return work / "model", len(tokenizer)


PARTS = {
    "identify": check_identify,
    "sft": check_sft,
    "grpo": check_grpo,
    "deepspeed": check_deepspeed,
}


# --- output --------------------------------------------------------------------------------


def write(out: Path, report: dict[str, Any]) -> None:
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "gpu_check.md").write_text("\n".join(markdown(report)) + "\n")


def markdown(report: dict[str, Any]) -> list[str]:
    m = report["machine"]
    lines = [f"# GPU check ({report['size']} size) on {m.get('gpu', m['device'])}", ""]
    lines += [f"torch {m['torch']}, transformers {m['transformers']}, {m['cpus']} CPUs", ""]
    parts = report["parts"]
    lines += ["| part | result |", "|---|---|"]
    for name, result in parts.items():
        if "error" in result and "trace" in result:  # the part itself failed
            summary = f"**error**: {result['error']}"
        elif "skipped" in result:
            summary = f"skipped: {result['skipped']}"
        elif name == "identify":
            summary = (
                f"cached {result['cached_continuations_per_s']} cont/s vs naive "
                f"{result['naive_continuations_per_s']} cont/s: {result['speedup']}x; "
                f"{result['differ']}/{result['compared']} continuations differ "
                f"({result['differ_near_tie']} at a near tie)"
            )
        elif name == "sft":
            modes = [
                f"{mode} {_step_and_peak(result[mode])}" for mode in ("sft_full", "cft", "trl")
            ]
            summary = "; ".join(modes) + f" ({result['dtype']}, {result['tokens']} tokens)"
        elif name == "grpo":
            steps = ", ".join(f"{s['step_time_s']:.2f} s" for s in result["steps"])
            summary = f"3 steps (vocabulary {result['vocab']}): {steps}"
        else:
            summary = (
                f"ZeRO-{result['zero_stage']} {result['dtype']}: one step and the export "
                f"in {result['run_s']} s"
            )
        lines.append(f"| {name} | {summary} ({result['wall_s']} s wall) |")
    return lines


def _step_and_peak(mode: dict) -> str:
    if "error" in mode:
        return f"**error** {mode['error']}"
    peak = f"{mode['peak_mib']} MiB" if mode["peak_mib"] is not None else "n/a on CPU"
    return f"{mode['step_s']} s, peak {peak}"


if __name__ == "__main__":
    sys.exit(main())
