"""Recipes: YAML files validated against a pydantic schema, with dotted overrides.

Every stage (`identify`, `sft`, `grpo`, `eval`, `toy build`) has a schema class
deriving from `Section`. `load_config` reads the recipe, applies `key=value`
overrides from the command line, and validates the result before any work is
done; `save_resolved` writes the merged config into the stage's output dir.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cft_rl.errors import UserError
from cft_rl.registry import closest_name, suggestion
from reward import Verifier

__all__ = [
    "CheckpointSettings",
    "ConfigError",
    "GenerationSettings",
    "LoggingSettings",
    "ModelSpec",
    "OptimSettings",
    "Section",
    "VerifierSettings",
    "WandbSettings",
    "apply_mapping",
    "apply_overrides",
    "load_config",
    "read_recipe",
    "save_resolved",
]


class ConfigError(UserError):
    """A recipe or override that cannot be used; the message names the key."""


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, types are strict-ish.

    A stage's schema lists the keys it renamed in `renamed_keys` (old dotted key -> new,
    `*` for a list index), so that an old recipe gets an error naming the new key."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    renamed_keys: ClassVar[dict[str, str]] = {}


# torch threads on CPU (null: torch's default). For small models on a small or busy machine
# 1 is often fastest: idle-waiting OpenMP threads cost more than they give.
CpuThreads = Annotated[int | None, Field(ge=1)]


class ModelSpec(Section):
    """Which model to load. `path: toy` is the tiny model shipped with the package."""

    path: str = "toy"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Device for HF models: "auto" picks CUDA when available, else CPU.
    device: str = "auto"


class GenerationSettings(Section):
    """Settings shared by every generation backend (see cft_rl.generation)."""

    backend: Literal["hf", "vllm"] = "hf"
    batch_size: int = 64
    max_new_tokens: int = 256
    # vLLM only: fraction of GPU memory for weights + KV cache.
    gpu_memory_utilization: float = 0.85


class CheckpointSettings(Section):
    """Resumable checkpoints in output_dir: how often, and how many are kept."""

    # Every this many optimizer steps, and always at the end; 0: only at the end.
    every_steps: int = Field(default=0, ge=0)
    # Newest checkpoints kept.
    keep: int = Field(default=2, ge=1)


class OptimSettings(Section):
    """AdamW: the settings every training stage has (sft adds its schedule's)."""

    lr: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    # Steps of linear warm-up from 0.
    warmup_steps: int = Field(default=0, ge=0)
    # Global gradient-norm clipping; 0 turns it off.
    max_grad_norm: float = Field(default=1.0, ge=0)


class WandbSettings(Section):
    enabled: bool = False
    project: str = "cft-rl"
    name: str | None = None
    # offline: written under output_dir/wandb, `wandb sync` uploads it later.
    mode: Literal["online", "offline"] = "offline"


class LoggingSettings(Section):
    """Where a training stage's step records go besides OUT/metrics.jsonl (cft_rl.metric_sinks)."""

    # A progress line (or bar, on a terminal) per step.
    progress: bool = True
    tensorboard: bool = False
    wandb: WandbSettings = WandbSettings()


class VerifierSettings(Section):
    """The one verifier's worker processes and its per-answer time limit (reward.Verifier)."""

    num_workers: int = Field(default=2, ge=1)
    timeout_s: float = Field(default=5.0, gt=0)
    # Grade a response that commits to no answer on its last number (docs/verifier.md).
    last_number_fallback: bool = False

    def make(self) -> Verifier:
        return Verifier(
            self.num_workers, self.timeout_s, last_number_fallback=self.last_number_fallback
        )


SchemaT = TypeVar("SchemaT", bound=BaseModel)


def load_config(schema: type[SchemaT], recipe: str | Path | None, overrides: list[str]) -> SchemaT:
    """Load `recipe` (or start empty), apply `overrides`, validate against `schema`."""
    data = read_recipe(recipe) if recipe is not None else {}
    places = [str(recipe)] if recipe is not None else []
    places += ["the command line's overrides"] if overrides else []
    source = " and ".join(places) or "an empty recipe"
    return validate(schema, apply_overrides(data, overrides), source)


def read_recipe(recipe: str | Path) -> dict[str, Any]:
    """The mapping a YAML recipe holds, or a ConfigError naming the file."""
    path = Path(recipe)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: a recipe must be a mapping of keys, got {type(loaded).__name__}"
        )
    return loaded


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `data` with each `a.b.c=value` set; values are parsed as YAML scalars."""
    merged = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            value = _override_value(raw)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({problem})"
            ) from None
        _set_dotted(merged, key, value, item)
    return merged


def _override_value(raw: str) -> Any:
    """A command-line value as YAML, except a template: the shell drops the quotes of
    `key='{problem}'` or `key='Question: {problem}'`, and YAML would read them as mappings.
    A value with braces and no colon, or one YAML reads as a mapping though it does not
    start with "{" (a flow mapping such as `{benchmark: toy}`), is the string it plainly is."""
    if raw == "":
        return ""
    if "{" in raw and ":" not in raw and raw.strip() != "{}":
        return raw
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        if "{" in raw and not raw.lstrip().startswith(("{", "[")):
            return raw
        raise
    if isinstance(value, dict) and not raw.lstrip().startswith("{"):
        return raw
    return value


def apply_mapping(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of `data` with each dotted key of `overrides` set to its (typed) value.
    A mapping value sets its keys one by one: {"data": {"limit": 7}} is {"data.limit": 7}."""
    merged = _deep_copy(data)
    for key, value in _flatten(overrides):
        _set_dotted(merged, key, value, f"{key}: {value!r}")
    return merged


def _flatten(overrides: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    items = []
    for key, value in overrides.items():
        if isinstance(value, dict) and value:
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value))
    return items


def _set_dotted(data: dict[str, Any], key: str, value: Any, item: str) -> None:
    """Set `a.b.c` to `value`; a number after a list names its entry (`benchmarks.0.limit`)."""
    node: Any = data
    parts = key.split(".")
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not node:
                raise ConfigError(
                    f"override {item!r}: {'.'.join(parts[:depth])} is an empty list; set the "
                    "whole list instead (e.g. benchmarks=[{benchmark: toy}])"
                )
            if not (part.isdigit() and int(part) < len(node)):
                raise ConfigError(
                    f"override {item!r}: {'.'.join(parts[:depth])} is a list whose entries are "
                    f"numbered 0 to {len(node) - 1}; {part!r} is none of them"
                )
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
            continue
        if not isinstance(node, dict):
            raise ConfigError(
                f"override {item!r}: {'.'.join(parts[:depth])} is a value, not a section"
            )
        if last:
            node[part] = value
        else:
            node = node.setdefault(part, {})


def validate(schema: type[SchemaT], data: dict[str, Any], source: str) -> SchemaT:
    """Validate `data`, turning pydantic's errors into one message per bad key."""
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        lines = [f"{source}: invalid config"]
        for problem in err.errors():
            key = ".".join(str(part) for part in problem["loc"])
            renamed = _renamed_key(schema, problem["loc"])
            if problem["type"] == "extra_forbidden" and renamed:
                lines.append(f"  key '{key}' was renamed: it is now '{renamed}'")
            elif problem["type"] == "extra_forbidden" and (
                ours := _foreign_key(schema, problem["loc"])
            ):
                lines.append(f"  unknown key '{key}': this recipe calls it '{ours}'")
            elif problem["type"] == "extra_forbidden":
                hint = _closest_key(schema, problem["loc"])
                lines.append(f"  unknown key '{key}'{suggestion(hint)}")
            elif not key:  # a check of the whole config: its message names the keys
                lines.append(f"  {problem['msg'].removeprefix('Value error, ')}")
            else:
                message = problem["msg"].removeprefix("Value error, ")
                got = problem.get("input")
                lines.append(f"  key '{key}': {message} (got {got!r}){_unquoted_hint(got)}")
        raise ConfigError("\n".join(lines)) from None


def _unquoted_hint(value: Any) -> str:
    """YAML reads an unquoted template `{problem}` as the mapping {'problem': None}."""
    if isinstance(value, dict) and value and all(v is None for v in value.values()):
        field = next(iter(value))
        return f'; in YAML, quote a template: "{{{field}}}"'
    return ""


def save_resolved(config: BaseModel, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the validated config, defaults filled in, next to the stage's outputs."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return path


# Names other tools (Hugging Face's TrainingArguments, TRL's and verl's configs) give
# settings, and the project's name for each; an unknown key with one of them is answered
# with the key the recipe has under that name.
FOREIGN_NAMES: dict[str, tuple[str, ...]] = {
    "learning_rate": ("lr",),
    "num_train_epochs": ("epochs",),
    "num_epochs": ("epochs",),
    "per_device_train_batch_size": ("micro_batch_size",),
    "train_batch_size": ("prompts_per_step", "micro_batch_size"),
    "max_length": ("max_length", "max_new_tokens"),
    "max_completion_length": ("max_new_tokens",),
    "max_prompt_length": ("max_prompt_tokens",),
    "max_new_tokens": ("max_new_tokens",),
    "num_generations": ("rollout.n",),
    "num_samples": ("n_samples", "rollout.n"),
    "warmup_ratio": ("warmup_ratio",),
    "warmup_steps": ("warmup_steps",),
    "max_steps": ("max_steps", "steps"),
    "total_training_steps": ("steps",),
    "gradient_accumulation_steps": ("gradient_accumulation_steps",),
    "max_grad_norm": ("max_grad_norm",),
    "grad_clip": ("max_grad_norm",),
    "beta": ("coef",),
    "kl_coef": ("coef",),
    "epsilon": ("clip_ratio_low",),
    "epsilon_high": ("clip_ratio_high",),
    "save_steps": ("every_steps",),
    "seed": ("seed",),
    "model_name_or_path": ("path",),
    "lora_r": ("r",),
    "lora_alpha": ("alpha",),
    "lora_dropout": ("dropout",),
    "use_peft": ("enabled",),
    "bf16": ("dtype",),
    "rollout_n": ("rollout.n",),
    "temperature": ("temperature",),
}


def _foreign_key(schema: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The recipe's key for a name another tool uses (`optim.learning_rate` -> `optim.lr`):
    a whole key the table names, else the name in the same section, else the one key
    anywhere that has the name."""
    names = FOREIGN_NAMES.get(str(loc[-1]))
    if names is None:
        return None
    section = ".".join(str(p) for p in loc[:-1] if not isinstance(p, int))
    keys = schema_keys(schema)
    for name in names:
        if "." in name:  # a whole key
            if name in keys:
                return name
            continue
        local = f"{section}.{name}" if section else name
        if local in keys:
            return local
        anywhere = [key for key in keys if key.rsplit(".", 1)[-1] == name]
        if len(anywhere) == 1:
            return anywhere[0]
    return None


def schema_keys(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of a schema, through its sections (lists of sections without index)."""
    keys = []
    for name, field in schema.model_fields.items():
        section = _section_in(field.annotation)
        keys += schema_keys(section, f"{prefix}{name}.") if section else [prefix + name]
    return keys


def _renamed_key(schema: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """The new name of the old key at `loc`, with the list indices of `loc` filled in."""
    pattern = ".".join("*" if isinstance(part, int) else str(part) for part in loc)
    renamed = getattr(schema, "renamed_keys", {}).get(pattern)
    if renamed is None:
        return None
    indices = iter(str(part) for part in loc if isinstance(part, int))
    return ".".join(next(indices) if part == "*" else part for part in renamed.split("."))


def _closest_key(schema: type[BaseModel], loc: tuple[Any, ...]) -> str | None:
    """Find the valid key nearest to the unknown last element of `loc`, through sections,
    optional sections and lists of sections (`benchmarks.0.fields.optoins`)."""
    model: type[BaseModel] | None = schema
    for part in loc[:-1]:
        if isinstance(part, int):  # a list entry: the list's own section type was taken
            continue
        field = model.model_fields.get(part)
        model = _section_in(field.annotation) if field is not None else None
        if model is None:
            return None
    match = closest_name(str(loc[-1]), model.model_fields, cutoff=0.5)
    if match is None:
        return None
    return ".".join([*(str(p) for p in loc[:-1]), match])


def _section_in(annotation: Any) -> type[BaseModel] | None:
    """The section type an annotation holds: `Model`, `Model | None`, `list[Model]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    sections = {m for m in map(_section_in, get_args(annotation)) if m is not None}
    return sections.pop() if len(sections) == 1 else None


def _deep_copy(data: Any) -> Any:
    """A copy of nested dicts and lists, so that an override never changes what it was
    applied to (a recipe cached by the caller, the entries of its lists)."""
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data
