"""The model being trained: loading (optionally with LoRA) and the module DeepSpeed wraps,
whose forward returns the loss sums of a micro-batch without forming full logits."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from cft_rl.config import ModelSpec
from cft_rl.modeling import from_pretrained
from cft_rl.sft.config import LoraSettings
from cft_rl.sft.losses import LossConfig, selected_token_loss


def load_trainable_model(spec: ModelSpec, lora: LoraSettings, gradient_checkpointing: bool):
    """The HF causal LM of `spec` in float32 (DeepSpeed casts it for bf16), in train mode,
    wrapped with LoRA adapters when `lora.enabled`."""
    from transformers import AutoModelForCausalLM

    model = from_pretrained(AutoModelForCausalLM, spec.path, dtype=torch.float32)
    model.config.use_cache = False
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora.enabled:
        from peft import LoraConfig, get_peft_model

        if gradient_checkpointing:
            model.enable_input_require_grads()
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=lora.target_modules,
                task_type="CAUSAL_LM",
            ),
        )
    return model.train()


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (or `model` itself)."""
    from peft import PeftModel

    return model.get_base_model() if isinstance(model, PeftModel) else model


def final_hidden_states(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Hidden states after the final norm, before the LM head: [batch, seq, hidden]."""
    decoder = causal_lm(model).get_decoder()
    return decoder(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state


def lm_head_weight(model: torch.nn.Module) -> torch.Tensor:
    return causal_lm(model).get_output_embeddings().weight


class LossModule(torch.nn.Module):
    """Wraps the causal LM for DeepSpeed: forward(batch) -> (loss_sum, weight_sum, num_tokens).

    Returns a tuple of tensors, not a dataclass: ZeRO-3 attaches its backward hooks (which
    gather partitioned weights again for the backward pass) to tensors in the output.
    """

    def __init__(self, model: torch.nn.Module, loss: LossConfig):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, batch: Mapping[str, torch.Tensor]):
        sums = selected_token_loss(
            self.loss, batch, final_hidden_states(self.model, batch), lm_head_weight(self.model)
        )
        return sums.loss_sum, sums.weight_sum, sums.num_tokens

    def register_head_for_zero3(self) -> None:
        """The LM head weight is used here, outside the head module's own forward: ZeRO-3 must
        gather it whenever this module runs."""
        import deepspeed

        deepspeed.zero.register_external_parameter(self, lm_head_weight(self.model))
