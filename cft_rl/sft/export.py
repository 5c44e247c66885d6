"""Hugging Face export of the trained model: safetensors, config, tokenizer (with its chat
template) and generation config, loadable by transformers, vLLM, verl and `cft-rl grpo`.

Every rank takes part in gathering the weights (ZeRO-3 partitions them); rank 0 writes.
LoRA adapters are merged into the exported weights.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from cft_rl.sft.model import causal_lm


def gathered_state_dict(model: torch.nn.Module, rank: int) -> dict[str, torch.Tensor]:
    """Full weights on CPU, on rank 0 (empty elsewhere), one parameter gathered at a time.

    Tied weights appear under each of their names, as in `model.state_dict()`.
    """
    import deepspeed

    state: dict[str, torch.Tensor] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        # a no-op for parameters that ZeRO-3 does not partition
        with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
            if rank == 0:
                state[name] = param.detach().to("cpu", copy=True)
    if rank == 0:
        buffers = {name for name, _ in model.named_buffers()}
        persistent = set(model.state_dict()) & buffers
        state.update({name: model.get_buffer(name).detach().cpu() for name in persistent})
    return state


def export_hf(model: torch.nn.Module, tokenizer, directory: Path, rank: int) -> None:
    """Write the HF checkpoint of `model` (a transformers model, or a peft model around one)
    into `directory`, which must not exist yet."""
    state = gathered_state_dict(model, rank)
    if rank != 0:
        return
    standalone = _standalone_model(model, state)
    standalone.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def _standalone_model(model: torch.nn.Module, state: dict[str, torch.Tensor]):
    """A CPU copy of `model` holding `state`, LoRA merged, made without initialising weights."""
    from peft import PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    source = causal_lm(model)
    config = copy.deepcopy(source.config)
    config.use_cache = True  # training turned it off
    with torch.device("meta"):
        standalone = AutoModelForCausalLM.from_config(config)
    if isinstance(model, PeftModel):
        standalone = get_peft_model(standalone, model.peft_config["default"])
    standalone.load_state_dict(state, strict=True, assign=True)
    # assign=True gave tied weights a tensor each: tie them again (before a LoRA merge, which
    # would otherwise record them as untied)
    causal_lm(standalone).tie_weights()
    if isinstance(standalone, PeftModel):
        standalone = standalone.merge_and_unload()
    standalone.generation_config = copy.deepcopy(source.generation_config)
    return standalone.eval()
