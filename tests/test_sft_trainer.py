"""The DeepSpeed trainer of `cft-rl sft` on a tiny random Qwen2 and an identify dataset written
with the identify stage's own writer: gradient scale against a direct computation, 1x8 == 8x1,
ZeRO stages agree, exact resume after a crash, two processes, LoRA export, error cases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file
from sft_trainer_data import REPO, arithmetic_records, tiny_config, tiny_setup
from tiny_lm import char_tokenizer
from transformers import AutoModelForCausalLM, AutoTokenizer

from cft_rl.commands import LAUNCHER_ENV
from cft_rl.config import ConfigError, load_config
from cft_rl.errors import UserError
from cft_rl.sft import trainer as trainer_module
from cft_rl.sft.config import SftConfig
from cft_rl.sft.data import example_fields, load_examples
from cft_rl.sft.fields import collate
from cft_rl.sft.losses import selected_token_loss, step_normalizer
from cft_rl.sft.plan import StepPlan
from cft_rl.sft.trainer import run_sft

torch.set_num_threads(1)

# Losses of the baseline run's 4 steps (cft, seeded tiny model, fixed data): a change here
# means the trainer computes something else than it did.
GOLDEN_LOSSES = [4.034682750701904, 3.738614559173584, 3.9232230186462402, 3.808258056640625]


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def exported(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "hf_model" / "model.safetensors")


def assert_same_run(out: Path, reference: Path, exact: bool = False) -> None:
    ours, theirs = metrics(out), metrics(reference)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    for key in ("loss", "grad_norm", "loss_weight", "supervised_tokens"):
        got, want = [r[key] for r in ours], [r[key] for r in theirs]
        if exact:
            assert got == want, key
        else:
            torch.testing.assert_close(torch.tensor(got), torch.tensor(want), msg=key)
    weights, reference_weights = exported(out), exported(reference)
    assert weights.keys() == reference_weights.keys()
    for name, value in reference_weights.items():
        if exact:
            assert torch.equal(weights[name], value), name
        else:
            # Other splits sum the gradients in another order; Adam divides by the root of
            # tiny second moments, so a last-bit difference can move a weight by ~1e-5
            # (seen: 1 of 2048 entries 2.2e-5 apart after 4 steps at lr 3e-3, ZeRO-3 x 2).
            # A wrong split (a lost or doubled micro-batch) moves them by ~lr.
            torch.testing.assert_close(weights[name], value, rtol=1e-4, atol=1e-4, msg=name)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return tiny_setup(tmp_path_factory.mktemp("sft"))


@pytest.fixture(scope="module")
def baseline(setup, tmp_path_factory):
    """cft, ZeRO-0, one process, 4 steps of 4 examples, checkpoints every 2 steps. Gradient
    clipping at a norm never reached, so that DeepSpeed reports the gradient norm."""
    model, data = setup
    out = tmp_path_factory.mktemp("baseline")
    run_sft(baseline_config(model, data, out))
    return out


def baseline_config(model_dir, identify_dir, out, **overrides) -> SftConfig:
    settings = {"optim__max_grad_norm": 1e6, "checkpoint__every_steps": 2, **overrides}
    return tiny_config(model_dir, identify_dir, out, **settings)


def test_golden_losses_and_complete_outputs(baseline):
    assert [r["loss"] for r in metrics(baseline)] == pytest.approx(GOLDEN_LOSSES, rel=1e-5)
    checkpoints = sorted(p.name for p in (baseline / "checkpoints").iterdir())
    assert checkpoints == ["step_000002", "step_000004"]
    info = json.loads((baseline / "run_info.json").read_text())
    assert (info["examples"], info["total_steps"], info["global_batch"]) == (16, 4, 4)
    model = AutoModelForCausalLM.from_pretrained(baseline / "hf_model")
    assert model.generation_config.eos_token_id == 1
    tokenizer = AutoTokenizer.from_pretrained(baseline / "hf_model")
    assert tokenizer.chat_template == char_tokenizer().chat_template


def test_first_step_gradient_norm_equals_direct_computation(setup, baseline):
    """The whole scaling chain (normaliser, DeepSpeed's accumulation and rank averaging): the
    gradient of step 1 must be that of sum(w * loss) / sum(w) over the step's examples."""
    model_dir, data = setup
    config = baseline_config(model_dir, data, baseline)
    items = [example_fields(e) for e in load_examples(config.data, _tokenizer(setup))[1]]
    plan = StepPlan(len(items), 4, 1, 1, config.seed, config.train.epochs, 4)
    batch = collate([items[i] for i in plan.global_indices(0)])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    hidden = model.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    sums = selected_token_loss(config.loss, batch, hidden, model.lm_head.weight)
    loss = sums.loss_sum / step_normalizer(config.loss, [batch])
    loss.backward()
    norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
    first = metrics(baseline)[0]
    assert first["loss"] == pytest.approx(loss.item(), rel=1e-6)
    assert first["grad_norm"] == pytest.approx(norm.item(), rel=1e-5)


def _tokenizer(setup):
    from cft_rl.config import ModelSpec
    from cft_rl.modeling import load_tokenizer

    return load_tokenizer(ModelSpec(path=str(setup[0])))


@pytest.mark.parametrize("loss", ["sft", "cft"])
def test_one_batch_of_eight_equals_eight_batches_of_one(setup, tmp_path, loss):
    model, data = setup
    runs = {}
    for micro, accumulation in [(8, 1), (1, 8)]:
        out = tmp_path / f"{micro}x{accumulation}"
        runs[out] = run_sft(
            baseline_config(
                model,
                data,
                out,
                loss__name=loss,
                train__max_steps=2,
                train__micro_batch_size=micro,
                train__gradient_accumulation_steps=accumulation,
                checkpoint__every_steps=0,
            )
        )
    one, eight = runs
    assert_same_run(eight, one)


def test_attention_topk_trains_on_as_many_tokens_as_cft(setup, baseline, tmp_path):
    """The attention scores come from the starting model, once, in the data loader; the loss
    then trains each example's critical count of tokens, like cft, but other ones."""
    model, data = setup
    run_sft(baseline_config(model, data, tmp_path, loss__name="attention_topk"))
    ours, cft = metrics(tmp_path), metrics(baseline)
    assert [r["supervised_tokens"] for r in ours] == [r["supervised_tokens"] for r in cft]
    assert [r["loss"] for r in ours] != pytest.approx([r["loss"] for r in cft])


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_stages_train_and_export_the_same_weights(setup, baseline, tmp_path, stage):
    model, data = setup
    config = baseline_config(
        model,
        data,
        tmp_path,
        train__deepspeed_config=str(REPO / f"recipes/deepspeed/zero{stage}.json"),
    )
    run_sft(config)
    assert_same_run(tmp_path, baseline)


def test_bf16_with_zero2_tracks_fp32_and_exports_bf16(setup, baseline, tmp_path):
    """DeepSpeed's bf16 (bf16 weights, fp32 master copy in the ZeRO optimizer) on the CPU
    accelerator: the same run as the fp32 baseline to within bf16 rounding."""
    model, data = setup
    config = baseline_config(
        model,
        data,
        tmp_path,
        model={"path": str(model), "dtype": "bfloat16"},
        train__deepspeed_config=str(REPO / "recipes/deepspeed/zero2.json"),
    )
    run_sft(config)
    losses = [r["loss"] for r in metrics(tmp_path)]
    assert losses == pytest.approx([r["loss"] for r in metrics(baseline)], rel=2e-3)
    weights = exported(tmp_path)
    assert {value.dtype for value in weights.values()} == {torch.bfloat16}
    reference = exported(baseline)
    for name, value in weights.items():
        torch.testing.assert_close(value.float(), reference[name], atol=2e-2, rtol=2e-2)


def test_crash_then_rerun_resumes_from_last_valid_checkpoint(
    setup, baseline, tmp_path, monkeypatch
):
    model, data = setup
    config = baseline_config(model, data, tmp_path)
    original = trainer_module._Trainer.train_step

    def crash_at_fourth_step(self, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return original(self, step)

    monkeypatch.setattr(trainer_module._Trainer, "train_step", crash_at_fourth_step)
    with pytest.raises(KeyboardInterrupt):
        run_sft(config)
    monkeypatch.undo()
    assert [r["step"] for r in metrics(tmp_path)] == [1, 2, 3]
    # a crash while writing step 3's checkpoint: half-written, no marker; never to be used
    (tmp_path / "checkpoints" / "step_000003" / "deepspeed").mkdir(parents=True)
    (tmp_path / "checkpoints" / ".tmp-step_000004").mkdir()

    run_sft(config)
    assert_same_run(tmp_path, baseline, exact=True)
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert info["resumed_from_step"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "step_000002",
        "step_000004",
    ]


def test_rerun_of_a_finished_run_only_refreshes_the_export(setup, baseline, tmp_path):
    import shutil

    model, data = setup
    shutil.copytree(baseline, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "hf_model")
    run_sft(baseline_config(model, data, tmp_path))
    assert json.loads((tmp_path / "run_info.json").read_text())["resumed_from_step"] == 4
    assert_same_run(tmp_path, baseline, exact=True)


def test_resume_refuses_changed_settings(setup, baseline, tmp_path, monkeypatch):
    """... before the distributed start-up, which can take long (DeepSpeed builds ops)."""
    import shutil

    import cft_rl.sft.trainer as trainer

    def no_start_up():
        raise AssertionError("the process group started before the settings were checked")

    monkeypatch.setattr(trainer, "process_group", no_start_up)
    model, data = setup
    shutil.copytree(baseline / "checkpoints", tmp_path / "checkpoints")
    with pytest.raises(UserError, match="optim.lr"):
        run_sft(baseline_config(model, data, tmp_path, optim__lr=1e-3))


def test_two_processes_equal_one(setup, baseline, tmp_path):
    """torchrun, 2 ranks x 2 examples with ZeRO-3 (weights partitioned over the ranks and
    gathered for the export) against 1 rank x 4 examples with ZeRO-0."""
    model, data = setup
    config = baseline_config(
        model,
        data,
        tmp_path / "out",
        train__micro_batch_size=2,
        train__deepspeed_config=str(REPO / "recipes/deepspeed/zero3.json"),
    )
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = {key: value for key, value in os.environ.items() if key not in LAUNCHER_ENV}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", *TORCHRUN_ARGS.split(), str(recipe)],
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "run_info.json").read_text())["world_size"] == 2
    assert_same_run(tmp_path / "out", baseline)


TORCHRUN_ARGS = "--standalone --nproc_per_node 2 -m cft_rl.cli sft --recipe"


def test_lora_export_merges_adapters(setup, tmp_path):
    model_dir, data = setup
    config = tiny_config(
        model_dir,
        data,
        tmp_path,
        train__max_steps=2,
        lora={"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
    )
    run_sft(config)
    before = load_file(model_dir / "model.safetensors")
    after = exported(tmp_path)
    assert after.keys() == before.keys()  # plain transformers weights, no adapter names
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
    }


def test_warmup_logging_tensorboard_and_offline_wandb(setup, tmp_path):
    model, data = setup
    config = tiny_config(
        model,
        data,
        tmp_path,
        train__max_steps=3,
        optim__warmup_steps=2,
        logging={"progress": True, "tensorboard": True, "wandb": {"enabled": True}},
    )
    run_sft(config)
    assert [r["lr"] for r in metrics(tmp_path)] == pytest.approx([1.5e-3, 3e-3, 3e-3])
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert list((tmp_path / "wandb").glob("offline-run-*"))


# ---- error cases: clear messages before any training ----


def test_unknown_loss_name_is_a_config_error(setup, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("loss:\n  name: cfft\ndata:\n  path: somewhere\n")
    with pytest.raises(ConfigError, match="loss.name.*unknown loss 'cfft'"):
        load_config(SftConfig, recipe, [])


def test_all_zero_critical_masks_are_an_error(setup, tmp_path):
    model, _ = setup
    records = arithmetic_records(8)
    for record in records:
        record["critical_mask"] = [0] * len(record["critical_mask"])
    from sft_trainer_data import write_identify_dataset

    data = tmp_path / "identify"
    write_identify_dataset(data, records=records)
    with pytest.raises(UserError, match="selects no token in any of its 8 examples"):
        run_sft(tiny_config(model, data, tmp_path / "out"))


def test_dataset_without_masks_is_an_error_for_cft(setup, tmp_path):
    model, _ = setup
    rows = [
        {k: r[k] for k in ("id", "prompt_token_ids", "response_token_ids")}
        for r in arithmetic_records(4)
    ]
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(UserError, match=r"plain.parquet: loss 'cft' needs the batch field"):
        run_sft(tiny_config(model, path, tmp_path / "out"))


def test_missing_identify_output_is_an_error(setup, tmp_path):
    model, _ = setup
    with pytest.raises(UserError, match="run `cft-rl identify` first"):
        run_sft(tiny_config(model, tmp_path / "nothing", tmp_path / "out"))
