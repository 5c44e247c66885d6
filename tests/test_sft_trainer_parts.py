"""The trainer's parts: data order, learning-rate schedule, DeepSpeed config, data loading,
reference log-probs; and every registered loss through the real trainer for one step."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from sft_trainer_data import tiny_config, tiny_setup

from cft_rl.commands import LAUNCHER_ENV
from cft_rl.config import ConfigError, ModelSpec
from cft_rl.errors import UserError
from cft_rl.modeling import load_tokenizer
from cft_rl.sft.config import SftOptimSettings
from cft_rl.sft.data import TokenizedExample, build_training_set, with_eos
from cft_rl.sft.distributed import LrSchedule, _free_port, deepspeed_config
from cft_rl.sft.fields import collate
from cft_rl.sft.losses import LOSSES
from cft_rl.sft.metrics import SftMetrics
from cft_rl.sft.plan import StepPlan
from cft_rl.sft.reference import reference_logprobs

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("parts"))


def test_each_epoch_is_a_permutation_split_the_same_however_computed():
    plan = StepPlan(
        num_examples=10, micro_batch_size=2, accumulation_steps=2, world_size=1, seed=3, epochs=2
    )
    assert (plan.global_batch, plan.steps_per_epoch, plan.total_steps) == (4, 2, 4)
    first_epoch = plan.global_indices(0) + plan.global_indices(1)
    assert len(set(first_epoch)) == 8
    assert plan.global_indices(2) != plan.global_indices(0)  # a fresh order each epoch
    assert plan.global_indices(2) == plan.global_indices(2)  # a function of the step only
    split = StepPlan(10, 1, 2, 2, seed=3, epochs=2)  # 2 ranks x 2 micro-batches of 1
    pieces = [i for rank in range(2) for batch in split.micro_batches(1, rank) for i in batch]
    assert pieces == plan.global_indices(1)
    assert plan.micro_batches(1, 0) == [pieces[:2], pieces[2:]]


def test_too_few_examples_for_one_global_batch_is_an_error():
    with pytest.raises(UserError, match="fewer than one global batch of 16"):
        StepPlan(10, 8, 1, 2, seed=0, epochs=1)


def test_warmup_then_cosine_to_min_ratio():
    schedule = LrSchedule(
        SftOptimSettings(warmup_steps=4, schedule="cosine", min_lr_ratio=0.1), total_steps=14
    )
    assert [schedule(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert schedule(4) == 1.0
    assert schedule(13) == pytest.approx(0.1)
    middle = 4 + 9 / 2
    assert schedule(middle) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    linear = LrSchedule(SftOptimSettings(warmup_ratio=0.5, schedule="linear"), total_steps=4)
    assert [linear(s) for s in range(4)] == [0.5, 1.0, 1.0, 0.0]


def test_deepspeed_config_fills_recipe_keys_and_refuses_conflicts(setup, tmp_path):
    config = tiny_config(*setup, tmp_path, train__gradient_accumulation_steps=3)
    filled = deepspeed_config(config, world_size=2)
    assert filled["train_batch_size"] == 4 * 3 * 2
    assert filled["zero_optimization"] == {"stage": 0}
    assert filled["optimizer"]["params"]["torch_adam"] is True
    own = tmp_path / "own.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_clipping": 0.5}))
    config = tiny_config(*setup, tmp_path, train__deepspeed_config=str(own))
    with pytest.raises(ConfigError, match="own.json: key 'gradient_clipping' is set by the SFT"):
        deepspeed_config(config, world_size=1)


def test_eos_is_appended_once_and_never_critical():
    example = TokenizedExample("a", [5, 6], [7, 8], critical_mask=[1, 0], failure_fraction=[1, 0])
    closed = with_eos(example, eos_id=1)
    assert closed.response_ids == [7, 8, 1]
    assert closed.critical_mask == [1, 0, 0]
    assert closed.failure_fraction == [1, 0, 0.0]
    assert with_eos(closed, eos_id=1) == closed


def test_templated_examples_and_max_length(setup, tmp_path):
    model, _ = setup
    config = tiny_config(
        model,
        None,
        tmp_path,
        data={"format": "examples", "benchmark": "toy-train", "limit": 6, "max_length": 150},
        loss={"name": "sft"},
    )
    tokenizer = load_tokenizer(ModelSpec(path=str(model)))
    training = build_training_set(config, tokenizer)
    assert len(training.examples) + training.dropped_too_long == 6
    item = training.examples[0]
    response = item["input_ids"][item["response_mask"].bool()].tolist()
    assert response[-1] == tokenizer.eos_token_id
    assert "####" in tokenizer.decode(response)
    prompt = tokenizer.decode(item["input_ids"][~item["response_mask"].bool()].tolist())
    assert prompt.startswith("Q:") and prompt.endswith("A:")


def test_reference_logprobs_equal_log_softmax(setup):
    from transformers import AutoModelForCausalLM

    model_dir, _ = setup
    items = [
        {
            "input_ids": torch.tensor(ids),
            "attention_mask": torch.ones(len(ids), dtype=torch.long),
            "response_mask": torch.tensor([0, 0] + [1] * (len(ids) - 2)),
        }
        for ids in ([4, 5, 6, 7, 8], [9, 10, 11])
    ]
    got = reference_logprobs(ModelSpec(path=str(model_dir)), items, chunk_size=2)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    for item, values in zip(items, got, strict=True):
        ids = item["input_ids"]
        logprobs = model(input_ids=ids[None]).logits[0, :-1].log_softmax(-1)
        want = logprobs.gather(1, ids[1:, None]).squeeze(1) * item["response_mask"][1:]
        torch.testing.assert_close(values, torch.cat([torch.zeros(1), want]).detach())


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_trains_through_the_trainer(setup, tmp_path, name):
    from cft_rl.sft.trainer import run_sft

    model, data = setup
    overrides = {"loss__name": name, "train__max_steps": 1, "train__micro_batch_size": 2}
    if name == "rho1":
        overrides["reference_model"] = {"path": str(model)}
    run_sft(tiny_config(model, data, tmp_path, **overrides))
    (record,) = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert math.isfinite(record["loss"]) and record["loss"] > 0
    assert 0 < record["supervised_tokens"] <= record["tokens"]


def test_collate_pads_right_and_stacks_scalars():
    items = [
        {"input_ids": torch.tensor([3, 4, 5]), "example_seed": torch.tensor(7)},
        {"input_ids": torch.tensor([6]), "example_seed": torch.tensor(8)},
    ]
    batch = collate(items, pad_id=0)
    assert batch["input_ids"].tolist() == [[3, 4, 5], [6, 0, 0]]
    assert batch["example_seed"].tolist() == [7, 8]


def test_resume_settings_record_the_training_data(setup, tmp_path):
    """A resumed run must train on the same data: one changed label changes the record."""
    from cft_rl.sft.trainer import _resume_settings

    model, data = setup
    config = tiny_config(model, data, tmp_path / "out")
    training = build_training_set(config, load_tokenizer(ModelSpec(path=str(model))))
    recorded = _resume_settings(config, 1, training)
    assert _resume_settings(config, 1, training) == recorded
    changed = {key: value.clone() for key, value in training.examples[0].items()}
    key = sorted(changed)[-1]
    changed[key].view(-1)[-1] += 1
    training.examples[0] = changed
    assert _resume_settings(config, 1, training)["training_data"] != recorded["training_data"]


def test_progress_is_a_plain_line_per_step_in_a_log_file(setup, tmp_path, capsys):
    model, data = setup
    config = tiny_config(model, data, tmp_path / "out", logging__progress=True)
    sinks = SftMetrics(config, resumed_step=0, total_steps=4)
    record = {"step": 1, "loss": 0.5, "lr": 1e-3, "tokens_per_s": 100.0}
    sinks.write({**record, "supervised_tokens_per_s": 40.0})
    sinks.close()
    assert capsys.readouterr().err.splitlines() == [
        "sft step 1/4  loss 0.5000  lr 1.00e-03  100 tok/s (40 supervised)"
    ]


PROCESS_GROUP_PROBE = """
import os
import torch.distributed as dist
from cft_rl.sft.distributed import process_group
with process_group() as topology:
    assert dist.is_initialized() and topology.world_size == 1
print(dist.is_initialized(), "RANK" in os.environ)
"""


@pytest.mark.parametrize("launcher", [True, False])
def test_a_launchers_group_is_destroyed_after_the_run_a_local_one_stays(launcher):
    """Under a launcher the group is torn down before the interpreter exits (left to exit,
    gloo can abort a rank); without one it stays for the next in-process run, and the
    launcher variables set for it are taken back either way."""
    env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_ENV}
    if launcher:
        env |= dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1")
        env["MASTER_PORT"] = str(_free_port())
    result = subprocess.run(
        [sys.executable, "-c", PROCESS_GROUP_PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    still_initialized, rank_set = result.stdout.split()[-2:]
    assert still_initialized == str(not launcher)
    assert rank_set == str(launcher)
