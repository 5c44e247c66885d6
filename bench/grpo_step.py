"""Time per GRPO step: the local engine vs TRL's GRPOTrainer, side by side on CPU.

Both get the same model, the same questions in the same order, the same group size,
completion budget, sampling temperature and micro-batching (one optimizer step per RL step,
gradients accumulated over micro-batches of the same size), the same reward (the pooled
verifier), float32 without gradient checkpointing (TRL's defaults, bf16 autocast and
checkpointing, are turned off) and no reference model. Each runs `--warmup` untimed steps,
then `--steps` timed ones; the median step time and its parts are printed, and the ratio
TRL / local.

    .venv/bin/python bench/grpo_step.py                       # toy model, 8 x 8, 128 tokens
    .venv/bin/python bench/grpo_step.py --model PATH --prompts 4 --n 8 --max-new-tokens 256
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from cft_rl.config import ModelSpec
from cft_rl.data.prompts import TEMPLATES
from cft_rl.grpo.config import GrpoConfig
from cft_rl.grpo.local_engine import LocalGrpo
from cft_rl.grpo.prompts import PromptSchedule
from cft_rl.grpo.rollouts import VerifierScorer
from cft_rl.modeling import load_causal_lm, load_tokenizer
from reward import Verifier


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="toy", help="model path ('toy': the shipped model)")
    parser.add_argument("--benchmark", default="toy-train", help="training questions (GrpoData)")
    parser.add_argument("--data-path", default=None)
    parser.add_argument("--template", default="toy")
    parser.add_argument("--prompts", type=int, default=8, help="questions per step")
    parser.add_argument("--n", type=int, default=8, help="responses per question")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=16, help="sequences per backward")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    # Alternate local and TRL this many times: on a shared machine the load drifts.
    parser.add_argument("--repeats", type=int, default=1)
    # 1: on a shared 2-core machine a second OpenMP thread slows small models down a lot.
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def grpo_config(args: argparse.Namespace, out_dir: str) -> GrpoConfig:
    return GrpoConfig.model_validate(
        {
            "output_dir": out_dir,
            "seed": args.seed,
            "model": {"path": args.model, "device": "cpu"},
            "data": {
                "benchmark": args.benchmark,
                "path": args.data_path,
                "template": args.template,
                "limit": args.prompts * (args.warmup + args.steps),
            },
            "rollout": {"n": args.n, "max_new_tokens": args.max_new_tokens},
            "batch": {"prompts_per_step": args.prompts, "micro_batch_size": args.micro_batch},
            "optim": {"lr": args.lr},
            "steps": args.warmup + args.steps,
            "monitor": {"enabled": False},
        }
    )


def run_local(args: argparse.Namespace, scorer: VerifierScorer) -> list[dict[str, float]]:
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = LocalGrpo(grpo_config(args, out_dir), scorer)
        records = [trainer.train_step(step) for step in range(1, args.warmup + args.steps + 1)]
    return [
        {
            "step": r["step_time_s"],
            "generation": r["time_generate_s"],
            "reward": r["time_reward_s"],
            "log-probs (old)": r["time_logprob_s"],
            "forward/backward + optimizer": r["time_update_s"],
            "response length": r["response_length_mean"],
        }
        for r in records[args.warmup :]
    ]


def run_trl(args: argparse.Namespace, scorer: VerifierScorer) -> list[dict[str, float]]:
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    config = grpo_config(args, "unused")
    examples = config.data.load()
    # TRL reads its dataset in order (shuffle off): lay it out in the local engine's order.
    schedule = PromptSchedule(len(examples), args.prompts, args.seed)
    ordered = [examples[i] for s in range(1, config.steps + 1) for i in schedule.indices(s)]
    dataset = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": e.question + TEMPLATES[args.template]}],
             "answer": e.answer}
            for e in ordered
        ]
    )  # fmt: skip
    timings: dict[str, float] = {"generation": 0.0, "reward": 0.0}

    def reward(prompts, completions, answer, **kwargs):
        start = time.perf_counter()
        verdicts = scorer.verifier.verify_batch([c[0]["content"] for c in completions], answer)
        scores = [verdict.score for verdict in verdicts]
        timings["reward"] += time.perf_counter() - start
        return scores

    sequences = args.prompts * args.n
    if sequences % args.micro_batch:
        raise SystemExit(f"--micro-batch must divide prompts x n = {sequences}")
    steps: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            if "start" not in timings:
                timings["start"] = time.perf_counter()

        def on_step_end(self, *_, **__):
            now = time.perf_counter()
            total = now - timings.pop("start")
            rest = total - timings["generation"] - timings["reward"]
            step = {"step": total, "generation": timings["generation"], "reward": timings["reward"]}
            # TRL computes log-probs inside its loss: they are part of this bucket.
            step["forward/backward + optimizer"] = rest
            steps.append(step)
            timings.update(generation=0.0, reward=0.0)

    with tempfile.TemporaryDirectory() as out_dir:
        spec = ModelSpec(path=args.model, device="cpu")
        model = load_causal_lm(spec)
        trl_args = GRPOConfig(
            output_dir=out_dir,
            use_cpu=True,
            per_device_train_batch_size=args.micro_batch,
            gradient_accumulation_steps=sequences // args.micro_batch,
            num_generations=args.n,
            max_completion_length=args.max_new_tokens,
            temperature=1.0,
            beta=0.0,
            loss_type="dapo",  # token-mean over the whole batch, as the local engine's default
            # TRL defaults to bf16 autocast and gradient checkpointing; the local engine runs
            # float32 without recomputation. Same arithmetic on both sides:
            bf16=False,
            gradient_checkpointing=False,
            learning_rate=args.lr,
            max_steps=config.steps,
            shuffle_dataset=False,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            seed=args.seed,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=trl_args,
            train_dataset=dataset,
            processing_class=load_tokenizer(spec),
            callbacks=[StepTimer()],
        )
        generate = model.generate

        def timed_generate(*a, **kw):
            start = time.perf_counter()
            try:
                return generate(*a, **kw)
            finally:
                timings["generation"] += time.perf_counter() - start

        model.generate = timed_generate
        trainer.train()
        lengths = [log["completions/mean_length"] for log in trainer.state.log_history
                   if "completions/mean_length" in log]  # fmt: skip
    for step, length in zip(steps, lengths, strict=False):
        step["response length"] = length
    return steps[args.warmup :]


def median(rows: list[dict[str, float]], key: str) -> float | None:
    values = [row[key] for row in rows if key in row]
    return statistics.median(values) if values else None


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    scorer = VerifierScorer(Verifier(num_workers=2, timeout_s=5.0))
    local, trl, ratios = [], [], []
    try:
        for _ in range(args.repeats):
            local_steps, trl_steps = run_local(args, scorer), run_trl(args, scorer)
            ratios.append(median(trl_steps, "step") / median(local_steps, "step"))
            local += local_steps
            trl += trl_steps
    finally:
        scorer.close()
    print(
        f"\nmodel {args.model}: {args.prompts} questions x {args.n} responses, "
        f"<= {args.max_new_tokens} new tokens, micro-batch {args.micro_batch}, "
        f"{args.threads} threads; median of {args.repeats} x {args.steps} steps, each run "
        f"after {args.warmup} warm-up step(s)"
    )
    keys = ["step", "generation", "reward", "log-probs (old)", "forward/backward + optimizer",
            "response length"]  # fmt: skip
    print(f"{'seconds':<32}{'local':>10}{'TRL':>10}")
    for key in keys:
        cells = [median(local, key), median(trl, key)]
        print(f"{key:<32}" + "".join(f"{'-':>10}" if c is None else f"{c:>10.2f}" for c in cells))
    ratio = median(trl, "step") / median(local, "step")
    print(f"TRL time per step / local time per step: {ratio:.2f}x")
    if args.repeats > 1:
        print("per repeat: " + ", ".join(f"{r:.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
