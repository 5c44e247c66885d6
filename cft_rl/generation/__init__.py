"""Generation backends behind one interface: `hf` (transformers, CPU or GPU) and `vllm`.

    backend = make_backend(ModelSpec(path="toy"), GenerationSettings())
    ids = [backend.tokenizer.encode(text) for text in prompts]
    completions = backend.generate(ids, SamplingParams(temperature=1.0, n=8, seed=0))

Prompts are token ids (so a caller can continue any prefix). Each prompt gets
params.n completions. vllm is imported only when the `vllm` backend is made.
"""

from __future__ import annotations

from cft_rl.config import GenerationSettings, ModelSpec
from cft_rl.generation.hf import HFBackend
from cft_rl.generation.types import (
    FINISH_ANSWER,
    FINISH_EOS,
    FINISH_LENGTH,
    Completion,
    GenerationBackend,
    SamplingParams,
)
from cft_rl.generation.vllm_backend import VLLMBackend
from cft_rl.modeling import load_causal_lm, load_tokenizer

__all__ = [
    "FINISH_ANSWER",
    "FINISH_EOS",
    "FINISH_LENGTH",
    "Completion",
    "GenerationBackend",
    "SamplingParams",
    "make_backend",
]


def make_backend(model: ModelSpec, settings: GenerationSettings) -> GenerationBackend:
    """Load `model` into the backend that `settings.backend` names."""
    if settings.backend == "vllm":
        return VLLMBackend(model, settings)
    return HFBackend(load_causal_lm(model), load_tokenizer(model), settings.batch_size)
