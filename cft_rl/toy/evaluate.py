"""A small batched evaluator for the toy model: greedy or sampled solutions, `#### N` answers.

For developing the toy world, for the report at the end of `cft-rl toy build`, and for the
numbers of docs/toy.md (`python -m cft_rl.toy.evaluate`, which scores with the project's
verifier); `cft-rl eval` is the evaluation users run on any model.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from cft_rl.data.toy_problems import Problem, eval_problems
from cft_rl.modeling import TOY_MODEL_DIR
from cft_rl.toy.train import prompt_text
from reward import Verifier

_FINAL_ANSWER = re.compile(r"####\s*(-?\d+)")


def parse_answer(text: str) -> int | None:
    """The number on the last `#### N` line of a solution, if any."""
    found = _FINAL_ANSWER.findall(text)
    return int(found[-1]) if found else None


@torch.no_grad()
def generate_solutions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    questions: Sequence[str],
    *,
    temperature: float = 0.0,
    num_samples: int = 1,
    batch_size: int = 128,
    max_new_tokens: int = 192,
    seed: int = 0,
) -> list[list[str]]:
    """`num_samples` solutions per question; temperature 0 means greedy."""
    tokenizer.padding_side = "left"
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if temperature > 0
        else {"do_sample": False}
    )
    solutions: list[list[str]] = []
    for start in range(0, len(questions), batch_size):
        prompts = [prompt_text(tokenizer, q) for q in questions[start : start + batch_size]]
        inputs = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        output = model.generate(
            **inputs.to(device),
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_samples,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
        texts = tokenizer.batch_decode(
            output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )
        solutions.extend(texts[i : i + num_samples] for i in range(0, len(texts), num_samples))
    return solutions


@dataclass
class ToyScore:
    accuracy: float  # fraction of all samples whose answer is right
    any_correct: float  # fraction of problems with at least one right sample
    distinct: float  # mean number of distinct samples per problem


# (responses, reference answers) -> one correctness flag per response
Grader = Callable[[list[str], list[str]], list[bool]]


def parse_grader(responses: list[str], references: list[str]) -> list[bool]:
    return [parse_answer(r) == int(ref) for r, ref in zip(responses, references, strict=True)]


def score(
    problems: Sequence[Problem], solutions: Sequence[Sequence[str]], grader: Grader = parse_grader
) -> ToyScore:
    responses = [s for samples in solutions for s in samples]
    references = [
        str(p.answer) for p, samples in zip(problems, solutions, strict=True) for _ in samples
    ]
    flags = iter(grader(responses, references))
    right = [[next(flags) for _ in samples] for samples in solutions]
    return ToyScore(
        accuracy=sum(map(sum, right)) / len(responses),
        any_correct=sum(any(r) for r in right) / len(right),
        distinct=sum(len(set(samples)) for samples in solutions) / len(solutions),
    )


def measure(model_dir: str, problems: int, samples: int, threads: int) -> dict:
    """Greedy accuracy on `toy` and `toy-hard`; accuracy, pass@samples and distinct solutions
    of `samples` samples at temperature 1 on `toy`; graded by the project's verifier."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    results: dict = {"model": model_dir, "problems": problems, "samples": samples}
    with Verifier() as verifier:

        def grade(responses: list[str], references: list[str]) -> list[bool]:
            return [v.correct for v in verifier.verify_batch(responses, references)]

        for name in ("toy", "toy-hard"):
            tasks = eval_problems(name, problems)
            questions = [p.question for p in tasks]
            greedy = score(tasks, generate_solutions(model, tokenizer, questions), grade)
            results[f"{name} greedy"] = greedy.accuracy
            if samples:
                sampled = generate_solutions(
                    model, tokenizer, questions, temperature=1.0, num_samples=samples
                )
                results[f"{name} T=1"] = asdict(score(tasks, sampled, grade))
            print(json.dumps({k: v for k, v in results.items() if k.startswith(name)}), flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=measure.__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(TOY_MODEL_DIR))
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.model, args.problems, args.samples, args.threads), indent=2))


if __name__ == "__main__":
    main()
