"""Fixtures for the SFT trainer tests: a tiny model directory, an identify dataset written
with the identify stage's own writer, and a recipe for them."""

from __future__ import annotations

import random
from pathlib import Path

from tiny_lm import char_tokenizer, save_tiny_model

from cft_rl.identify.dataset import write_dataset
from cft_rl.outputs import IDENTIFY_DATASET
from cft_rl.sft.config import SftConfig

REPO = Path(__file__).resolve().parents[1]


def arithmetic_records(count: int, seed: int = 0) -> list[dict]:
    """Identify-style records: "a+b=?" answered "a+b=c\\n#### c<eos>", the digits of c critical,
    failure fractions 1 there and 0 or 0.5 elsewhere."""
    tokenizer = char_tokenizer()
    rng = random.Random(seed)
    records = []
    for index in range(count):
        a, b = rng.randint(1, 60), rng.randint(1, 39)
        question = f"{a}+{b}=?"
        prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
        )
        response = f"{a}+{b}={a + b}\n#### {a + b}"
        response_ids = tokenizer(response, add_special_tokens=False).input_ids
        response_ids.append(tokenizer.eos_token_id)
        answer_start = response.index("=") + 1
        answer_end = answer_start + len(str(a + b))
        critical = [int(answer_start <= t < answer_end) for t in range(len(response_ids))]
        failure = [1.0 if c else rng.choice([0.0, 0.5]) for c in critical]
        records.append(
            {
                "index": index,
                "id": f"arith-{index}",
                "source": "arith",
                "question": question,
                "answer": str(a + b),
                "prompt": prompt,
                "prompt_token_ids": tokenizer(prompt, add_special_tokens=False).input_ids,
                "response": response,
                "response_token_ids": response_ids,
                "response_tokens": [tokenizer.decode([t]) for t in response_ids],
                "critical_mask": critical,
                "failure_fraction": failure,
                "alternatives": [[] for _ in response_ids],
            }
        )
    return records


def write_identify_dataset(directory: Path, count: int = 16, records=None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rows = arithmetic_records(count) if records is None else records
    return write_dataset(rows, directory / IDENTIFY_DATASET, {"test": True})


def tiny_setup(tmp_path: Path, count: int = 16) -> tuple[Path, Path]:
    """(model dir, identify dir) under tmp_path."""
    model = save_tiny_model(tmp_path / "model")
    data = tmp_path / "identify"
    write_identify_dataset(data, count)
    return model, data


def tiny_config(model_dir: Path, identify_dir: Path | None, out: Path, **overrides) -> SftConfig:
    """A short run: 4 steps of 4 examples, constant lr, no progress bar. Overrides: a section
    replaces the default one, `section__key` sets one key."""
    values = {
        "output_dir": str(out),
        "model": {"path": str(model_dir)},
        "data": {"format": "identify", "path": str(identify_dir)},
        "loss": {"name": "cft"},
        "optim": {"lr": 3e-3, "schedule": "constant", "max_grad_norm": 0.0},
        "train": {
            "max_steps": 4,
            "micro_batch_size": 4,
            "deepspeed_config": str(REPO / "recipes/deepspeed/zero0.json"),
        },
        "logging": {"progress": False},
    }
    for dotted, value in overrides.items():
        node = values
        *parents, last = dotted.split("__")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return SftConfig.model_validate(values)
