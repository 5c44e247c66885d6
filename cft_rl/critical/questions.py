"""The questions identification answers: training questions, as in the paper.

Benchmarks of the registry (cft_rl.data) are test sets, except where a training file is
given (e.g. `data.path: ../shared/benchmarks/gsm8k/train.jsonl`). For the embedded toy
world, `toy-train` draws problems from the toy *training* split (never held-out
arithmetic), so identifying and fine-tuning on them does not leak into `toy` evaluation.
"""

from __future__ import annotations

from cft_rl.critical.config import IdentifyData
from cft_rl.data import Example, load_benchmark

TOY_TRAIN = "toy-train"
TOY_TRAIN_SEED = "identify"
DEFAULT_TOY_TRAIN_SIZE = 200


def load_questions(data: IdentifyData) -> list[Example]:
    if data.benchmark == TOY_TRAIN:
        return toy_training_examples(data.limit or DEFAULT_TOY_TRAIN_SIZE)
    return load_benchmark(data.benchmark, data.path, data.limit)


def toy_training_examples(n: int) -> list[Example]:
    """`n` distinct problems of the toy world's training split, always the same ones."""
    from cft_rl.toy.problems import DIFFICULTIES, generate_problems

    problems = generate_problems(TOY_TRAIN_SEED, n, DIFFICULTIES["toy"], "train")
    return [
        Example(
            id=f"{TOY_TRAIN}-{index}",
            question=problem.question,
            answer=str(problem.answer),
            solution=problem.solution,
            source=TOY_TRAIN,
        )
        for index, problem in enumerate(problems)
    ]
