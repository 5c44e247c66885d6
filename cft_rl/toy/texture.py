"""The texture of a toy model's own answers: how much of them is arithmetic, how long they
are, how many different solutions its samples write.

`python -m cft_rl.toy.texture --model toy-prose --benchmark toy-prose-long-train` prints
the numbers docs/toy.md gives for both worlds, measured on the model's greedy answers to
training questions (and on the verified-correct ones among them, which identification
keeps) and on samples at temperature 1:

- the share of response tokens in each token class (cft_rl.data.token_classes); "numeric"
  is digits and operators (`=` included);
- response length in tokens;
- distinct solution texts among `--samples` samples per question.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from collections.abc import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from cft_rl.config import ModelSpec
from cft_rl.data.token_classes import CLASSES, token_class
from cft_rl.data.toy_problems import toy_problems
from cft_rl.modeling import load_causal_lm, load_tokenizer
from cft_rl.toy.evaluate import generate_solutions
from reward import Verifier

NUMERIC = ("digits", "operators")


def token_shares(tokenizer: PreTrainedTokenizerBase, responses: Sequence[str]) -> dict:
    """Tokens of `responses` by class: {"tokens": N, "numeric": share, class: share, ...}."""
    counts: Counter[str] = Counter()
    for response in responses:
        for token_id in tokenizer(response, add_special_tokens=False)["input_ids"]:
            counts[token_class(tokenizer.decode([token_id]))] += 1
    total = sum(counts.values())
    shares = {name: counts[name] / total for name in CLASSES if counts[name]}
    numeric = sum(counts[n] for n in NUMERIC) / total
    return {
        "tokens": total,
        "numeric": round(numeric, 4),
        **{k: round(v, 4) for k, v in shares.items()},
    }


def lengths(tokenizer: PreTrainedTokenizerBase, responses: Sequence[str]) -> dict:
    sizes = [len(tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]
    return {"mean": statistics.mean(sizes), "min": min(sizes), "max": max(sizes)}


def measure_texture(
    model_path: str, benchmark: str, problems: int, samples: int, threads: int
) -> dict:
    """Texture of the model's greedy answers and of `samples` samples at T=1 per question."""
    torch.set_num_threads(threads)
    spec = ModelSpec(path=model_path, device="cpu")
    model, tokenizer = load_causal_lm(spec), load_tokenizer(spec)
    budget = model.generation_config.max_new_tokens or 256
    tasks = toy_problems(benchmark, problems)
    questions = [p.question for p in tasks]
    references = [str(p.answer) for p in tasks]
    greedy = [s[0] for s in generate_solutions(model, tokenizer, questions, max_new_tokens=budget)]
    with Verifier() as verifier:
        right = [v.correct for v in verifier.verify_batch(greedy, references)]
    kept = [response for response, ok in zip(greedy, right, strict=True) if ok]
    result = {
        "model": model_path,
        "benchmark": benchmark,
        "questions": problems,
        "greedy_accuracy": sum(right) / len(right),
        "greedy": {**token_shares(tokenizer, greedy), "length": lengths(tokenizer, greedy)},
    }
    if kept:
        result["kept"] = {**token_shares(tokenizer, kept), "length": lengths(tokenizer, kept)}
    if samples:
        sampled = generate_solutions(
            model, tokenizer, questions, temperature=1.0, num_samples=samples, max_new_tokens=budget
        )
        result["samples"] = {
            "per_question": samples,
            "distinct_solutions": statistics.mean(len(set(s)) for s in sampled),
            "length": lengths(tokenizer, [text for s in sampled for text in s]),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=measure_texture.__doc__)
    parser.add_argument("--model", default="toy-prose", help="toy, toy-prose or a directory")
    parser.add_argument("--benchmark", default="toy-prose-long-train")
    parser.add_argument("--problems", type=int, default=200)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    texture = measure_texture(args.model, args.benchmark, args.problems, args.samples, args.threads)
    print(json.dumps(texture, indent=2))


if __name__ == "__main__":
    main()
