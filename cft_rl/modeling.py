"""Finding and loading models: the shipped toy model, a local directory or a hub name."""

from __future__ import annotations

from pathlib import Path

import torch

from cft_rl.config import ModelSpec
from cft_rl.errors import UserError

TOY_MODEL_DIR = Path(__file__).parent / "toy" / "model"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(path: str) -> str:
    """`toy` names the model shipped in the package; anything else is a directory or hub name."""
    if path == "toy":
        if not (TOY_MODEL_DIR / "config.json").is_file():
            raise UserError(
                f"the toy model is missing from {TOY_MODEL_DIR}: run `cft-rl toy build`"
            )
        return str(TOY_MODEL_DIR)
    return path


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_tokenizer(spec: ModelSpec):
    """The tokenizer of `spec`, with left padding (batched generation needs it)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(spec.path))
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(spec: ModelSpec) -> torch.nn.Module:
    """The model of `spec` in eval mode on its device."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(spec.path), dtype=_DTYPES[spec.dtype]
    )
    return model.to(pick_device(spec.device)).eval()
