"""`cft-rl sft`: train on the tokens the loss selects, with DeepSpeed; resumable.

Each optimizer step: the step's micro-batches for this rank (cft_rl.sft.plan), the step
normaliser (total loss weight over the micro-batches and all ranks) before the first
forward, then forward/backward per micro-batch with loss = loss_sum / normaliser. DeepSpeed
averages gradients over ranks and, by default, divides each backward by the number of
accumulation steps; the trainer asks for no such division (scale_wrt_gas=False) and
multiplies by the number of ranks, so the step's gradient is that of
sum(w * token loss) / sum(w) over all of its tokens, however the step is split.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cft_rl.checkpointing import best_checkpoint, latest_checkpoint, read_marker
from cft_rl.errors import UserError
from cft_rl.files import write_text_atomic
from cft_rl.jsonl import VALIDATION, StepLog
from cft_rl.modeling import load_tokenizer
from cft_rl.outputs import EXPORT_INFO
from cft_rl.run_settings import ResumeRule, check_same_settings, data_fingerprint
from cft_rl.sft.checkpoint import load_checkpoint, publish_export, save_checkpoint
from cft_rl.sft.config import SftConfig
from cft_rl.sft.data import TrainingSet, build_training_set
from cft_rl.sft.distributed import (
    Topology,
    build_engine,
    coming_world_size,
    deepspeed_config,
    process_group,
)
from cft_rl.sft.fields import collate
from cft_rl.sft.losses import LOSSES, all_reduce_sum, step_normalizer
from cft_rl.sft.metrics import SftMetrics
from cft_rl.sft.model import load_trainable_model
from cft_rl.sft.plan import StepPlan
from cft_rl.sft.validation import ValidationSet, validation_accuracy

RUN_INFO = "run_info.json"
# What a resumed run must share with its checkpoint. Validation and its verifier may change,
# except with checkpoint.export: best (scores of different validations do not compare).
SFT_RESUME = ResumeRule(
    must_match=("seed", "model", "reference_model", "data", "loss", "optim", "train", "lora"),
    may_change=("output_dir", "logging", "checkpoint", "validation", "verifier", "cpu_threads"),
)


def run_sft(config: SftConfig) -> Path:
    """Train (or resume, or only re-export a finished run); returns OUT/hf_model."""
    _quiet_libraries()
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    # data errors surface before the (slow, on first use) distributed start-up
    tokenizer = load_tokenizer(config.model)
    training = build_training_set(config, tokenizer)
    validation = _validation_set(config, tokenizer)
    # changed settings, too, are refused before the distributed start-up
    settings = _resume_settings(config, coming_world_size(), training)
    latest = latest_checkpoint(Path(config.output_dir))
    if latest is not None:
        check_same_settings(latest, read_marker(latest), settings)
    with process_group() as topology:
        return _train(config, topology, tokenizer, training, validation, settings, latest)


def _validation_set(config: SftConfig, tokenizer) -> ValidationSet | None:
    if config.validation.benchmark is None:
        return None
    if deepspeed_config(config, world_size=1).get("zero_optimization", {}).get("stage") == 3:
        raise UserError(
            "validation: ZeRO-3 shards the weights over ranks, so they cannot generate on one; "
            "use ZeRO 0-2 (train.deepspeed_config) or turn validation off"
        )
    return ValidationSet(config, tokenizer)


def _train(
    config: SftConfig,
    topology: Topology,
    tokenizer,
    training: TrainingSet,
    validation: ValidationSet | None,
    settings: dict[str, Any],
    latest: Path | None,
) -> Path:
    """The training run; `settings` are what its checkpoints record, and `latest` the
    checkpoint it resumes from (checked against them in run_sft)."""
    plan = StepPlan(
        num_examples=len(training.examples),
        micro_batch_size=config.train.micro_batch_size,
        accumulation_steps=config.train.gradient_accumulation_steps,
        world_size=topology.world_size,
        seed=config.seed,
        epochs=config.train.epochs,
        max_steps=config.train.max_steps,
    )
    out = Path(config.output_dir)

    _seed_everything(config.seed)  # LoRA's initial weights
    model = load_trainable_model(config.model, config.lora, config.train.gradient_checkpointing)
    engine = build_engine(config, model, plan.total_steps, topology.world_size)
    start = 0
    if latest is not None:
        start = load_checkpoint(engine, latest, topology.rank)["step"]
    if topology.rank == 0:
        _write_run_info(out, training, plan, topology, start)
    trainer = _Trainer(config, engine, training, plan, topology, tokenizer.pad_token_id)
    keep_best = validation_accuracy if config.checkpoint.export == "best" else None
    with contextlib.ExitStack() as stack:
        sinks = SftMetrics(config, start, plan.total_steps) if topology.rank == 0 else None
        if sinks is not None:
            stack.callback(sinks.close)
        validate = _validation(config, validation, engine, topology, start, stack)
        if start == 0:
            validate(0)
        for step in range(start, plan.total_steps):
            record = trainer.train_step(step)
            if sinks is not None:
                sinks.write(record)
            done = step + 1
            every = config.checkpoint.every_steps
            if done == plan.total_steps or (every and done % every == 0):
                state = {**settings, "validation": validate(done)}
                latest = save_checkpoint(
                    engine,
                    tokenizer,
                    out,
                    done,
                    state,
                    config.checkpoint.keep,
                    topology.rank,
                    keep_best,
                )
    if topology.rank == 0:
        chosen = best_checkpoint(out, keep_best) if keep_best is not None else None
        _export(out, chosen or latest, config.checkpoint.export)
    torch.distributed.barrier()
    return out / "hf_model"


def _validation(
    config: SftConfig,
    validation: ValidationSet | None,
    engine,
    topology: Topology,
    start: int,
    stack: contextlib.ExitStack,
) -> Callable[[int], dict[str, Any] | None]:
    """validate(step) -> the validation result on rank 0 (None elsewhere or when off), also
    appended to OUT/validation.jsonl; ranks wait for rank 0."""
    if validation is None:
        return lambda step: None
    if topology.rank != 0:

        def wait(step: int) -> None:
            torch.distributed.barrier()

        return wait
    verifier = stack.enter_context(config.verifier.make())
    log = StepLog(Path(config.output_dir) / VALIDATION)
    log.rewind(start)

    def validate(step: int) -> dict[str, Any]:
        result = validation.validate(engine.module.model, verifier)
        log.append({"step": step, **result})
        print(
            f"validation at step {step}: accuracy {result['accuracy']:.3f} "
            f"on {result['problems']} questions",
            flush=True,
        )
        torch.distributed.barrier()
        return result

    return validate


def _export(out: Path, checkpoint: Path, select: str) -> None:
    """Publish `checkpoint` as OUT/hf_model and say which it is in OUT/export.json."""
    export = publish_export(checkpoint, out)
    marker = read_marker(checkpoint)
    info = {"step": marker["step"], "select": select, "validation": marker.get("validation")}
    write_text_atomic(out / EXPORT_INFO, json.dumps(info, indent=1))
    print(f"model after step {marker['step']} ({select}) exported to {export}", flush=True)


class _Trainer:
    def __init__(
        self,
        config: SftConfig,
        engine,
        training: TrainingSet,
        plan: StepPlan,
        topology: Topology,
        pad_id: int,
    ) -> None:
        self.config, self.engine, self.training, self.plan = config, engine, training, plan
        self.topology, self.pad_id = topology, pad_id

    def micro_batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        examples = self.training.examples
        return [
            collate([examples[i] for i in indices], self.pad_id)
            for indices in self.plan.micro_batches(step, self.topology.rank)
        ]

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step (0-based `step`); returns its metrics, summed over ranks."""
        started = time.perf_counter()
        engine = self.engine
        batches = self.micro_batches(step)
        normalizer = step_normalizer(self.config.loss, batches)
        lr = engine.get_lr()[0]
        totals = torch.zeros(4, dtype=torch.float64)  # loss, tokens, response, supervised
        own_norm = None
        for index, batch in enumerate(batches):
            batch = {key: value.to(engine.device) for key, value in batch.items()}
            loss_sum, _, num_tokens = engine(batch)
            loss = loss_sum / normalizer.to(loss_sum.device)
            engine.backward(loss * self.topology.world_size, scale_wrt_gas=False)
            if index == len(batches) - 1 and engine.zero_optimization_stage() == 0:
                # ZeRO-0 (fp32) does not report the norm; its gradients are complete here
                own_norm = _gradient_norm(engine.module)
            engine.step()
            response = (batch["response_mask"] * batch["attention_mask"]).sum().item()
            totals += torch.tensor(
                [loss.item(), batch["attention_mask"].sum().item(), response, num_tokens.item()],
                dtype=torch.float64,
            )
        loss_total, tokens, response_tokens, supervised = all_reduce_sum(totals).tolist()
        seconds = time.perf_counter() - started
        grad_norm = engine.get_global_grad_norm()
        if grad_norm is None:
            grad_norm = own_norm
        return {
            "step": step + 1,
            "epoch": round(self.plan.epoch_of(step + 1), 4),
            "loss": loss_total,
            "lr": lr,
            "grad_norm": None if grad_norm is None else float(grad_norm),
            "loss_weight": float(normalizer),
            "tokens": int(tokens),
            "response_tokens": int(response_tokens),
            "supervised_tokens": int(supervised),
            "step_s": seconds,
            "tokens_per_s": tokens / seconds,
            "supervised_tokens_per_s": supervised / seconds,
        }


def _quiet_libraries() -> None:
    """Our progress bar and metrics replace DeepSpeed's info logs and transformers' bars."""
    import logging

    from deepspeed.utils import logger
    from transformers.utils import logging as transformers_logging

    logger.setLevel(logging.WARNING)
    transformers_logging.disable_progress_bar()


def _gradient_norm(module: torch.nn.Module) -> float:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def _resume_settings(config: SftConfig, world_size: int, training: TrainingSet) -> dict[str, Any]:
    """What a checkpoint records and a resumed run must match."""
    best = config.checkpoint.export == "best"
    settings = SFT_RESUME.settings(config, also=("validation", "verifier") if best else ())
    # Only what was read: derived fields (a reference model's log-probs) are recomputed on
    # resume and may differ in the last bits on other hardware.
    derived = {loss.derived_field for loss in LOSSES.values() if loss.derived_field}
    data = data_fingerprint(
        chunk
        for fields in training.examples
        for key in sorted(set(fields) - derived)
        for chunk in (key.encode(), fields[key].cpu().numpy().tobytes())
    )
    return {"settings": settings, "world_size": world_size, "training_data": data}


def _write_run_info(
    out: Path, training: TrainingSet, plan: StepPlan, topology: Topology, start: int
) -> None:
    info = {
        "data": training.source,
        "examples": len(training.examples),
        "dropped_too_long": training.dropped_too_long,
        "dropped_unsupervised": training.dropped_unsupervised,
        "global_batch": plan.global_batch,
        "steps_per_epoch": plan.steps_per_epoch,
        "total_steps": plan.total_steps,
        "world_size": topology.world_size,
        "resumed_from_step": start,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_INFO).write_text(json.dumps(info, indent=1))
    if start == plan.total_steps:
        print(f"{out}: training already finished at step {start}; refreshing the export")
    elif start > 0:
        print(f"{out}: resumed from the checkpoint of step {start} of {plan.total_steps}")
