"""Recipe schema of `cft-rl sft` (every key and its reasoning: docs/sft.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cft_rl.config import (
    CheckpointSettings,
    CpuThreads,
    LoggingSettings,
    ModelSpec,
    OptimSettings,
    Section,
    VerifierSettings,
)
from cft_rl.data.source import DataSource
from cft_rl.sft.losses import LOSSES, LossConfig


class SftData(DataSource):
    """What is trained on."""

    # identify: the dataset of `cft-rl identify` (self-generated, verified answers with
    #   critical masks); `path` is its output_dir or its parquet file.
    # examples: questions with worked solutions (`benchmark`: "toy-train" or a registry name
    #   whose files carry solutions, e.g. gsm8k with path=.../gsm8k/train.jsonl), templated
    #   with `template`; no masks, so only losses that need none (sft, dft, numbers_only).
    format: Literal["identify", "examples"] = "identify"
    benchmark: str | None = None
    # Responses that do not end with an end-of-sequence token get one (supervised, never
    # critical), so that a model trained on them learns to stop.
    append_eos: bool = True
    # Longer examples (prompt + response tokens) are left out and counted; null: no limit.
    max_length: int | None = Field(default=None, ge=2)
    # Examples on which the loss selects no token (e.g. no critical token) only cost compute.
    drop_unsupervised: bool = True


class SftOptimSettings(OptimSettings):
    """AdamW with linear warm-up, then a constant, linear or cosine schedule."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    # Steps of linear warm-up from 0; `warmup_ratio` (of all steps) is used when this is null.
    warmup_steps: int | None = Field(default=None, ge=0)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    schedule: Literal["constant", "linear", "cosine"] = "cosine"
    # The decaying schedules end at lr * min_lr_ratio.
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)
    # DeepSpeed "torch_adam": torch's AdamW instead of DeepSpeed's fused or CPU Adam, which
    # compile C++/CUDA extensions on first use.
    torch_adam: bool = True


class TrainSettings(Section):
    """Batching and length of the run. Global batch = micro_batch_size x
    gradient_accumulation_steps x data-parallel ranks (examples per optimizer step)."""

    epochs: float = Field(default=3.0, gt=0)
    # Stop after this many optimizer steps (the schedule is laid out over them); null: epochs.
    max_steps: int | None = Field(default=None, ge=1)
    micro_batch_size: int = Field(default=8, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    gradient_checkpointing: bool = False
    # DeepSpeed JSON config (ZeRO stage and engine settings): recipes/deepspeed/zero{0,1,2,3}.json.
    # Batch sizes, optimizer, scheduler, clipping and precision come from this recipe.
    deepspeed_config: str = "recipes/deepspeed/zero0.json"


class LoraSettings(Section):
    """LoRA adapters through peft; the export merges them into the weights."""

    enabled: bool = False
    r: int = Field(default=16, ge=1)
    alpha: float = Field(default=32.0, gt=0)
    dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


class SftCheckpointSettings(CheckpointSettings):
    """Resumable DeepSpeed checkpoints and Hugging Face exports in output_dir. Each kept
    checkpoint holds both; with export: best, the best-validation one is kept as well."""

    # What OUT/hf_model holds at the end: the last checkpoint, or the one with the highest
    # validation greedy accuracy (earliest on ties; needs `validation`).
    export: Literal["last", "best"] = "last"


class SftValidationSettings(DataSource):
    """Greedy accuracy (and the loss of reference solutions, where the questions have them)
    on held-out questions, before training and at every checkpoint (checkpoint.every_steps
    and the end). For choosing a learning rate or a checkpoint without looking at test sets.
    `benchmark`: a cft_rl.data benchmark, e.g. "toy-val"; null turns validation off."""

    benchmark: str | None = None
    limit: int | None = Field(default=200, ge=1)
    # Prompt template; null: the training data's (data.template).
    template: str | None = None
    max_new_tokens: int = Field(default=256, ge=1)
    batch_size: int = Field(default=64, ge=1)


class SftConfig(Section):
    """`cft-rl sft`: CFT (or a baseline loss) with DeepSpeed."""

    renamed_keys = {"validation.verifier": "verifier"}

    output_dir: str = "runs/toy-cft"
    seed: int = 0
    model: ModelSpec = ModelSpec()
    # For the losses that need one (rho1): the reference model whose per-token loss the
    # excess loss subtracts.
    reference_model: ModelSpec | None = None
    data: SftData = SftData()
    loss: LossConfig = LossConfig()
    optim: SftOptimSettings = SftOptimSettings()
    train: TrainSettings = TrainSettings()
    lora: LoraSettings = LoraSettings()
    checkpoint: SftCheckpointSettings = SftCheckpointSettings()
    validation: SftValidationSettings = SftValidationSettings()
    # The verifier of the validation answers.
    verifier: VerifierSettings = VerifierSettings()
    logging: LoggingSettings = LoggingSettings()
    cpu_threads: CpuThreads = None

    @model_validator(mode="after")
    def _data_source_given(self) -> SftConfig:
        if self.data.format == "identify" and self.data.path is None:
            raise ValueError("data.path: the output_dir or parquet file of `cft-rl identify`")
        if self.data.format == "examples" and self.data.benchmark is None:
            raise ValueError("data.benchmark: 'toy-train' or a benchmark name (with data.path)")
        loss = LOSSES.get(self.loss.name)  # known: LossConfig's field checked it first
        if loss.needs_reference_model and self.reference_model is None:
            raise ValueError(f"reference_model: loss '{loss.name}' needs a reference model")
        if self.checkpoint.export == "best" and self.validation.benchmark is None:
            raise ValueError("checkpoint.export: 'best' needs validation.benchmark")
        return self
