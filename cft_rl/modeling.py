"""Finding and loading models: the shipped toy model, a local directory or a hub name."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cft_rl.config import ModelSpec
from cft_rl.errors import UserError

TOY_MODEL_DIR = Path(__file__).parent / "toy" / "model"
# The models shipped in the package, by the name `model.path` gives them: the first toy
# world's and the second's (docs/toy.md).
SHIPPED_MODELS = {"toy": TOY_MODEL_DIR, "toy-prose": Path(__file__).parent / "toy" / "prose_model"}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(path: str) -> str:
    """`toy` and `toy-prose` name the models shipped in the package; anything else is a
    directory or hub name."""
    if path in SHIPPED_MODELS:
        directory = SHIPPED_MODELS[path]
        if not (directory / "config.json").is_file():
            raise UserError(
                f"the {path} model is missing from {directory}: run `cft-rl toy build` "
                f"(docs/toy.md)"
            )
        return str(directory)
    return os.path.expanduser(path)


def from_pretrained(loader: type, path: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained` on `path` (a `ModelSpec.path`), with a missing directory or a
    failed load as a UserError that names the path instead of a traceback."""
    resolved = resolve_model_path(path)
    local = Path(resolved)
    if local.is_dir() and not (local / "config.json").is_file():
        raise UserError(f"model.path {path}: a directory without config.json, not a model")
    # A hub name is "name" or "org/name"; a path with more parts, or one that starts with
    # "/", "." or "~", can only be a local directory.
    if not local.exists() and (resolved.startswith(("/", ".", "~")) or resolved.count("/") > 1):
        raise UserError(
            f"model.path {path}: no such directory (an export of `cft-rl sft` or "
            "`cft-rl grpo` is OUT/hf_model: has that stage run?)"
        )
    try:
        return loader.from_pretrained(resolved, **kwargs)
    except (OSError, ValueError) as err:  # ValueError: not a valid hub id either
        lines = str(err).strip().splitlines() or [type(err).__name__]
        raise UserError(f"model.path {path}: could not be loaded ({lines[0]})") from None


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_tokenizer(spec: ModelSpec):
    """The tokenizer of `spec`, with left padding (batched generation needs it)."""
    from transformers import AutoTokenizer

    tokenizer = from_pretrained(AutoTokenizer, spec.path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(spec: ModelSpec, **kwargs: Any) -> torch.nn.Module:
    """The model of `spec` in eval mode on its device; `kwargs` go to `from_pretrained`."""
    from transformers import AutoModelForCausalLM

    model = from_pretrained(AutoModelForCausalLM, spec.path, dtype=_DTYPES[spec.dtype], **kwargs)
    return model.to(pick_device(spec.device)).eval()
