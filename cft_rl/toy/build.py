"""`cft-rl toy build`: train the toy tokenizer and model from scratch and save them.

Writes into output_dir: tokenizer files, config.json, model.safetensors,
generation_config.json, metrics.jsonl (one line per logged step) and build.json (wall
time, CPU time, greedy accuracy on held-out `toy` and `toy-hard` problems). A run that
is interrupted resumes from train_state.pt, which is removed once the model is saved.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, GenerationConfig, PreTrainedTokenizerBase

from cft_rl.data.toy_problems import DIFFICULTIES, eval_problems, generate_problems
from cft_rl.errors import UserError
from cft_rl.jsonl import METRICS
from cft_rl.run_settings import ResumeRule, changed_settings, shared_settings
from cft_rl.toy.config import ToyBuildConfig
from cft_rl.toy.evaluate import generate_solutions, score
from cft_rl.toy.tokenizer import train_tokenizer
from cft_rl.toy.train import ModelShape, learning_rate, make_model, solution_loss, training_batches

STATE_FILE = "train_state.pt"
# What resuming an interrupted build must share with it: all but where it is written, the
# evaluation at the end and how often it logs.
TOY_BUILD_RESUME = ResumeRule(
    must_match=("seed", "difficulty", "tokenizer", "model", "train.steps", "train.batch_size",
                "train.lr", "train.warmup_steps", "train.weight_decay", "train.max_grad_norm",
                "checkpoint", "cpu_threads"),
    may_change=("output_dir", "eval", "train.log_every"),
)  # fmt: skip


def build_toy_model(config: ToyBuildConfig) -> dict:
    """Train and save the toy model; returns what build.json records."""
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started, cpu_started = time.time(), time.process_time()

    state = _load_state(out, config)
    tokenizer = AutoTokenizer.from_pretrained(out) if state else _new_tokenizer(config, out)
    model = make_model(_shape(config), tokenizer, config.seed)
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=config.train.lr,
        betas=(0.9, 0.95),
        weight_decay=config.train.weight_decay,
    )
    first_step = 0
    if state:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        first_step = state["step"]
        print(f"toy build: resuming at step {first_step} from {out / STATE_FILE}", flush=True)
    _train(config, model, optimizer, tokenizer, out, first_step)

    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_new_tokens=config.model.max_new_tokens,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / STATE_FILE).unlink(missing_ok=True)

    report = {
        "params": sum(p.numel() for p in model.parameters()),
        "steps": config.train.steps,
        "problems_seen": config.train.steps * config.train.batch_size,
        "threads": config.cpu_threads,
        "train_wall_s": round(time.time() - started, 1),
        "train_cpu_s": round(time.process_time() - cpu_started, 1),
        "resumed_at_step": first_step,
    }
    if config.eval.problems:
        report.update(_evaluate(model.eval(), tokenizer, config))
    report["total_wall_s"] = round(time.time() - started, 1)
    (out / "build.json").write_text(json.dumps(report, indent=2) + "\n")
    print("toy build: " + json.dumps(report), flush=True)
    return report


def _shape(config: ToyBuildConfig) -> ModelShape:
    m = config.model
    return ModelShape(
        m.hidden_size, m.num_layers, m.num_heads, m.intermediate_size, m.max_positions
    )


def _new_tokenizer(config: ToyBuildConfig, out: Path) -> PreTrainedTokenizerBase:
    sample = generate_problems(
        _tokenizer_seed(config),
        config.tokenizer.sample_problems,
        DIFFICULTIES[config.difficulty],
        "train",
    )
    tokenizer = train_tokenizer(
        (text for p in sample for text in (p.question, p.solution)), config.tokenizer.vocab_size
    )
    tokenizer.save_pretrained(out)
    return tokenizer


def _tokenizer_seed(config: ToyBuildConfig) -> str:
    # The first world's seed predates `difficulty`; keeping it keeps its tokenizer.
    prefix = "tokenizer" if config.difficulty == "toy" else f"tokenizer:{config.difficulty}"
    return f"{prefix}:{config.seed}"


def _train(config, model, optimizer, tokenizer, out: Path, first_step: int) -> None:
    settings = config.train
    metrics = _open_metrics(out / METRICS, first_step)
    batches = training_batches(
        tokenizer, config.seed, settings.batch_size, DIFFICULTIES[config.difficulty], first_step
    )
    model.train()
    window_loss, window_start = [], time.time()
    for step in range(first_step, settings.steps):
        lr = learning_rate(step, settings.steps, settings.lr, settings.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = solution_loss(model, next(batches))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window_loss.append(loss.item())

        done = step + 1
        if done % settings.log_every == 0 or done == settings.steps:
            elapsed = time.time() - window_start
            record = {
                "step": done,
                "loss": sum(window_loss) / len(window_loss),
                "lr": lr,
                "steps_per_s": len(window_loss) / elapsed,
            }
            metrics.write(json.dumps(record) + "\n")
            metrics.flush()
            eta = (settings.steps - done) / record["steps_per_s"]
            print(
                f"toy build: step {done}/{settings.steps} loss {record['loss']:.4f} "
                f"lr {lr:.2e} {record['steps_per_s']:.2f} steps/s eta {eta / 60:.1f} min",
                flush=True,
            )
            window_loss, window_start = [], time.time()
        if done % config.checkpoint.every_steps == 0 and done < settings.steps:
            _save_state(out, config, model, optimizer, done)
    metrics.close()


def _open_metrics(path: Path, first_step: int):
    """Open the metrics log for appending, dropping lines past the step we resume from."""
    kept = []
    if first_step and path.is_file():
        kept = [
            line for line in path.read_text().splitlines() if json.loads(line)["step"] <= first_step
        ]
    path.write_text("".join(line + "\n" for line in kept))
    return path.open("a")


def _save_state(out: Path, config: ToyBuildConfig, model, optimizer, step: int) -> None:
    state = {
        "config": TOY_BUILD_RESUME.settings(config),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
    }
    tmp = out / (STATE_FILE + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out / STATE_FILE)


def _load_state(out: Path, config: ToyBuildConfig) -> dict | None:
    path = out / STATE_FILE
    if not path.is_file():
        return None
    state = torch.load(path, weights_only=True)
    # the keys both record: an older build's state holds more (eval, logging) or fewer
    changed = changed_settings(*shared_settings(state["config"], TOY_BUILD_RESUME.settings(config)))
    if changed:
        raise UserError(
            f"{path}: an interrupted build with a different config is there "
            f"(changed: {', '.join(changed)}); remove the file or use another output_dir"
        )
    return state


def _evaluate(model, tokenizer, config: ToyBuildConfig) -> dict:
    results = {}
    n = config.eval.problems
    for name in config.eval.benchmarks:
        problems = eval_problems(name, n)
        questions = [p.question for p in problems]
        solutions = generate_solutions(
            model, tokenizer, questions, max_new_tokens=config.model.max_new_tokens
        )
        results[f"greedy_{name}"] = score(problems, solutions).accuracy
        print(f"toy build: greedy accuracy on {n} {name} problems: {results[f'greedy_{name}']:.3f}")
    return results
