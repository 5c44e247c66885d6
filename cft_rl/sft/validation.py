"""Validation during `cft-rl sft`: greedy accuracy on held-out questions, scored by the one
verifier, and the mean token loss of their reference solutions where they have them.

The questions are read and tokenized before training starts (a bad benchmark fails first, on
every rank). Validation runs on rank 0 with the weights being trained (ZeRO stages 0-2 keep
a full copy on every rank), before the first step and at every checkpoint, so that the
best-validation checkpoint can be exported (`checkpoint.export: best`) and learning rates
compared without looking at test sets. Results go to OUT/validation.jsonl and into each
checkpoint's marker.
"""

from __future__ import annotations

from typing import Any

import torch

from cft_rl.data.prompts import encode_prompts
from cft_rl.errors import UserError
from cft_rl.generation import SamplingParams
from cft_rl.generation.hf import HFBackend
from cft_rl.sft.config import SftConfig
from cft_rl.sft.data import TokenizedExample, example_fields
from cft_rl.sft.fields import collate
from cft_rl.sft.losses import TokenView
from cft_rl.sft.model import final_hidden_states, lm_head_weight
from cft_rl.token_logprobs import token_logprobs
from reward import Verifier

# Validation examples scored for the solution loss at once.
_LOSS_BATCH = 16


class ValidationSet:
    """The validation questions of `config.validation`, tokenized: prompts, reference
    answers and (when every question has one) reference solutions."""

    def __init__(self, config: SftConfig, tokenizer) -> None:
        spec = config.validation
        examples = spec.load("validation")
        if not examples:
            raise UserError(f"validation.benchmark '{spec.benchmark}' has no questions")
        self.spec = spec
        self.pad_id = tokenizer.pad_token_id
        self.prompts = encode_prompts(tokenizer, examples, spec.template or config.data.template)
        self.references = [e.answer for e in examples]
        self.choices = [e.choices for e in examples]
        # The loss needs every solution; a set without them is validated by accuracy alone.
        self.solutions = (
            [tokenizer(e.solution, add_special_tokens=False)["input_ids"] for e in examples]
            if all(e.solution for e in examples)
            else None
        )
        self.tokenizer = tokenizer

    def validate(self, model: torch.nn.Module, verifier: Verifier) -> dict[str, Any]:
        """Greedy accuracy (and solution loss) of `model`; its train/eval mode is restored."""
        was_training = model.training
        try:
            backend = HFBackend(model, self.tokenizer, self.spec.batch_size)  # sets eval mode
            params = SamplingParams(max_new_tokens=self.spec.max_new_tokens)
            texts = [c[0].text for c in backend.generate(self.prompts, params)]
            verdicts = verifier.verify_batch(texts, self.references, self.choices)
            loss = self._solution_loss(model) if self.solutions is not None else None
        finally:
            model.train(was_training)
        return {
            "accuracy": sum(v.correct for v in verdicts) / len(verdicts),
            "loss": loss,
            "problems": len(verdicts),
        }

    @torch.no_grad()
    def _solution_loss(self, model: torch.nn.Module) -> float:
        """Mean cross-entropy per reference-solution token, the same for every method; through
        the trainer's own pieces (no full logits; LoRA-wrapped models too)."""
        device = next(model.parameters()).device
        weight = lm_head_weight(model)
        total, count = 0.0, 0
        pairs = list(zip(self.prompts, self.solutions, strict=True))
        for start in range(0, len(pairs), _LOSS_BATCH):
            items = [
                example_fields(TokenizedExample(f"validation-{start + i}", prompt, solution))
                for i, (prompt, solution) in enumerate(pairs[start : start + _LOSS_BATCH])
            ]
            batch = {k: v.to(device) for k, v in collate(items, self.pad_id).items()}
            view = TokenView(batch, "sft")
            hidden = final_hidden_states(model, batch)[:, :-1][view.candidates]
            logprobs = token_logprobs(hidden, weight, view.targets[view.candidates])
            total -= float(logprobs.sum())
            count += logprobs.numel()
        return total / count


def validation_accuracy(marker: dict[str, Any]) -> float | None:
    """The validation accuracy a checkpoint's marker records, if validation ran there."""
    return (marker.get("validation") or {}).get("accuracy")
