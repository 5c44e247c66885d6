"""Golden losses of the trainer on the shipped toy model (cft_rl/toy/model).

Toy training problems with their reference solutions as responses, written as an identify
dataset whose critical tokens are the digits; three steps each of `sft` and `cft`. The pinned
values belong to one build of the toy model (keyed by the sha256 of its weights): after a
rebuild, re-pin with `.venv/bin/python tests/test_sft_trainer_toy.py [MODEL_DIR]` and check
the change.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
from sft_trainer_data import REPO, tiny_config, write_identify_dataset

from cft_rl.config import ModelSpec
from cft_rl.data import load_benchmark
from cft_rl.modeling import TOY_MODEL_DIR, load_tokenizer
from cft_rl.sft.trainer import run_sft

torch.set_num_threads(1)

# sha256 of cft_rl/toy/model/model.safetensors -> loss name -> the 3 step losses
GOLDEN: dict[str, dict[str, list[float]]] = {
    # the 1900-step build (greedy 0.89 on toy)
    "ec86785d98f6ea81c7be861f3e5d85bfd3ee84960e2bab9e6c767d114c7fe5be": {
        "sft": [0.19261381030082703, 0.2073410451412201, 0.2296288162469864],
        "cft": [0.02988237887620926, 0.05320898815989494, 0.07780729234218597],
    },
}


def weights_hash(model_dir: Path) -> str:
    return hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest()


def toy_records(model_dir: Path, count: int) -> list[dict]:
    tokenizer = load_tokenizer(ModelSpec(path=str(model_dir)))
    records = []
    for index, example in enumerate(load_benchmark("toy-train", limit=count)):
        messages = [{"role": "user", "content": example.question}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        response_ids = tokenizer(example.solution, add_special_tokens=False).input_ids
        response_ids.append(tokenizer.eos_token_id)
        tokens = [tokenizer.decode([t]) for t in response_ids]
        critical = [int(token.strip().isdigit()) for token in tokens]
        records.append(
            {
                "index": index,
                "id": example.id,
                "source": example.source,
                "question": example.question,
                "answer": example.answer,
                "prompt": prompt,
                "prompt_token_ids": tokenizer(prompt, add_special_tokens=False).input_ids,
                "response": example.solution,
                "response_token_ids": response_ids,
                "response_tokens": tokens,
                "critical_mask": critical,
                "failure_fraction": [float(c) for c in critical],
                "alternatives": [[] for _ in response_ids],
            }
        )
    return records


def toy_losses(tmp_path: Path, loss: str, model_dir: Path = TOY_MODEL_DIR) -> list[float]:
    data = tmp_path / "identify"
    if not data.exists():
        write_identify_dataset(data, records=toy_records(model_dir, 24))
    out = tmp_path / loss
    config = tiny_config(
        model_dir,
        data,
        out,
        loss={"name": loss},
        train={
            "max_steps": 3,
            "micro_batch_size": 8,
            "deepspeed_config": str(REPO / "recipes/deepspeed/zero0.json"),
        },
        optim={"lr": 1e-3, "schedule": "constant"},
    )
    run_sft(config)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


@pytest.mark.parametrize("loss", ["sft", "cft"])
def test_golden_losses_on_the_toy_model(tmp_path, loss):
    weights = weights_hash(TOY_MODEL_DIR)
    assert weights in GOLDEN, (
        f"no golden losses for this toy model build (sha256 {weights}); "
        "re-pin: .venv/bin/python tests/test_sft_trainer_toy.py"
    )
    assert toy_losses(tmp_path, loss) == pytest.approx(GOLDEN[weights][loss], rel=1e-5)


if __name__ == "__main__":
    # optional argument: a toy model directory other than the shipped one (e.g. a new build)
    import tempfile

    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else TOY_MODEL_DIR
    with tempfile.TemporaryDirectory() as directory:
        losses = {name: toy_losses(Path(directory), name, model_dir) for name in ("sft", "cft")}
    print(f'    "{weights_hash(model_dir)}": {json.dumps(losses)},')
