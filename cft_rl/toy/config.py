"""Recipe schema of `cft-rl toy build` (see recipes/toy/build.yaml)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from cft_rl.config import CpuThreads, Section
from cft_rl.data.toy_problems import toy_difficulty
from cft_rl.modeling import SHIPPED_MODELS, TOY_MODEL_DIR

# vLLM's CPU build refuses smaller attention heads.
MIN_HEAD_DIM = 32


class TokenizerSettings(Section):
    # Upper bound: BPE stops earlier on templated text (about 520 entries).
    vocab_size: int = Field(1024, ge=300)
    # Training problems the tokenizer is trained on.
    sample_problems: int = Field(5000, ge=100)


class ModelSettings(Section):
    hidden_size: int = Field(128, ge=32)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(384, ge=1)
    max_positions: int = Field(512, ge=64)
    # The default generation length written into generation_config.json.
    max_new_tokens: int = Field(256, ge=1)

    @model_validator(mode="after")
    def _head_dim(self) -> ModelSettings:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}"
            )
        if self.hidden_size // self.num_heads < MIN_HEAD_DIM:
            raise ValueError(
                f"head dimension hidden_size / num_heads = {self.hidden_size // self.num_heads} "
                f"is below {MIN_HEAD_DIM} (vLLM's CPU build refuses it)"
            )
        return self


class TrainSettings(Section):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    # Linear warm-up steps, then cosine decay to 10% of lr.
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    log_every: int = Field(25, ge=1)


class BuildCheckpointSettings(Section):
    # Steps between resumable checkpoints (train_state.pt in output_dir, removed at the end).
    every_steps: int = Field(200, ge=1)


class BuildEvalSettings(Section):
    # Held-out problems of each benchmark solved greedily after training (0: skip).
    problems: int = Field(200, ge=0)
    benchmarks: list[str] = ["toy", "toy-hard"]

    @field_validator("benchmarks")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            toy_difficulty(name)
        return names


class ToyBuildConfig(Section):
    renamed_keys = {
        "train.grad_clip": "train.max_grad_norm",
        "train.threads": "cpu_threads",
        "train.checkpoint_every": "checkpoint.every_steps",
    }

    # Default: the model directory shipped inside the package; "toy" and "toy-prose" name
    # the shipped models' directories.
    output_dir: str = str(TOY_MODEL_DIR)
    seed: int = 0
    # The toy difficulty (cft_rl.data.toy_problems.DIFFICULTIES) the tokenizer and the
    # model are trained on: "toy" for the first world, "toy-prose" for the second.
    difficulty: str = "toy"
    tokenizer: TokenizerSettings = TokenizerSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    checkpoint: BuildCheckpointSettings = BuildCheckpointSettings()
    # CPU threads for torch (the build is meant for 2 cores).
    cpu_threads: CpuThreads = 2
    eval: BuildEvalSettings = BuildEvalSettings()

    @field_validator("difficulty")
    @classmethod
    def _known_difficulty(cls, name: str) -> str:
        return toy_difficulty(name)

    @field_validator("output_dir")
    @classmethod
    def _shipped_name_is_its_directory(cls, path: str) -> str:
        # so that the build and the resolved config.yaml both land in the package
        return str(SHIPPED_MODELS.get(path, path))
