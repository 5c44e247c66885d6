"""Recipe schema of `cft-rl identify` (see docs/identify.md for every setting's reasoning)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cft_rl.config import CpuThreads, GenerationSettings, ModelSpec, Section, VerifierSettings
from cft_rl.data.source import DataSource
from cft_rl.generation.kv_cache import KV_CACHE_LAYOUTS
from cft_rl.identify.decoders import DECODERS
from cft_rl.run_settings import ResumeRule
from cft_rl.scale import ScaleSettings


class IdentifyData(DataSource):
    benchmark: str = "toy-train"


class CounterfactualSettings(Section):
    """How each response position is perturbed and judged."""

    # Alternatives per position: the paper's 2nd and 3rd most likely tokens.
    num_alternatives: int = Field(default=2, ge=1)
    # greedy: one greedy continuation per alternative (the paper).
    # sampled: num_rollouts sampled continuations per alternative at `temperature`.
    continuation: Literal["greedy", "sampled"] = "greedy"
    num_rollouts: int = Field(default=4, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    # A position is critical iff the fraction of its continuations that end wrong is at least
    # this; 1.0 is the paper's "every alternative fails".
    failure_threshold: float = Field(default=1.0, gt=0, le=1)
    # Tokens a continuation may generate after the alternative; null: the greedy answer's
    # budget (generation.max_new_tokens) minus the prefix, so every perturbed answer gets the
    # same total length as the original.
    max_continuation_tokens: int | None = Field(default=None, ge=1)
    # Special tokens (EOS, chat markers, pad) cannot be alternatives: an EOS would end the
    # answer before it has a final answer, a trivial failure that says nothing about y_t.
    exclude_special_tokens: bool = True
    exclude_token_ids: list[int] = []
    # When a top-ranked candidate is excluded: "next" takes the next-ranked allowed token
    # (every position is tested with num_alternatives alternatives); "fewer" tests only the
    # allowed ones among the top num_alternatives + 1 (a position may get fewer tests).
    excluded: Literal["next", "fewer"] = "next"
    # Skip a position (non-critical, nothing decoded) when its alternatives' total probability
    # is below this. 0 (off) is the paper's definition.
    min_alternative_prob: float = Field(default=0.0, ge=0, lt=1)
    # full: every alternative of every position is decoded (the failure fraction of each
    # token is known, which cft_weighted and the token report use). lazy: a position's next
    # alternative is decoded only if the ones before it all failed, since one success
    # already makes the position non-critical: the same masks, fewer continuations, and
    # the failure fraction over the alternatives tried. Needs failure_threshold 1.0.
    decide: Literal["full", "lazy"] = "full"

    @model_validator(mode="after")
    def _lazy_needs_all_to_fail(self) -> CounterfactualSettings:
        if self.decide == "lazy" and self.failure_threshold < 1.0:
            raise ValueError(
                "decide: lazy stops at a position's first success, which settles it only when "
                "a critical token is one where every continuation fails (failure_threshold 1.0)"
            )
        return self


class DecoderSettings(Section):
    """How continuations are decoded (none of this changes results, only speed)."""

    # cached: our batched decoder reusing the response's KV cache (hf models only).
    # backend: each continuation is a prompt for the generation backend (vLLM with prefix
    # caching). auto: cached for generation.backend hf, backend for vllm.
    kind: DECODERS.choice("auto") = "auto"  # type: ignore[valid-type]
    # cached decoder: shared: the rows of a batch share the response's KV cache (each keeps
    # only its new tokens'); padded: each row gets a left-padded copy of its prefix's cache;
    # grouped: padded, one position (equal prefixes, no padding) per batch.
    batching: KV_CACHE_LAYOUTS.choice() = "shared"  # type: ignore[valid-type]
    # cached decoder: at most this many continuations decoded at once.
    max_batch_rows: int = Field(default=256, ge=1)
    # A greedy step whose top-2 logit gap is below this is a near tie: batching or padding
    # may flip it. Such continuations are counted in the summary, not hidden.
    near_tie_margin: float = Field(default=1e-4, ge=0)


class IdentifyConfig(Section):
    """`cft-rl identify`: correct set, then critical tokens by counterfactual perturbation."""

    renamed_keys = {
        "verifier_workers": "verifier.num_workers",
        "verifier_timeout_s": "verifier.timeout_s",
        "decoder.engine": "decoder.kind",
    }

    output_dir: str = "runs/toy-identify"
    seed: int = 0
    model: ModelSpec = ModelSpec()
    generation: GenerationSettings = GenerationSettings()
    # Which questions the model answers: training questions, as in the paper ("toy-train",
    # the toy world's training split, or e.g. gsm8k with path=.../gsm8k/train.jsonl);
    # toy-train gives exactly `limit` questions (default 500).
    data: IdentifyData = IdentifyData()
    counterfactual: CounterfactualSettings = CounterfactualSettings()
    decoder: DecoderSettings = DecoderSettings()
    cpu_threads: CpuThreads = None
    verifier: VerifierSettings = VerifierSettings()
    # Split one run into num_shards independent jobs (SLURM array, one per GPU); the last
    # shard to finish merges. merge_only: just merge the finished shards of output_dir.
    shard_index: int = Field(default=0, ge=0)
    num_shards: int = Field(default=1, ge=1)
    merge_only: bool = False
    # Or spread the chunks dynamically over model replicas on a Ray cluster (docs/identify.md).
    scale: ScaleSettings = ScaleSettings()

    @model_validator(mode="after")
    def _shard_in_range(self) -> IdentifyConfig:
        if self.shard_index >= self.num_shards:
            raise ValueError(
                f"shard_index ({self.shard_index}) must be below num_shards ({self.num_shards})"
            )
        if self.scale.backend == "ray" and self.num_shards > 1:
            raise ValueError("scale.backend 'ray' spreads the work itself: set num_shards to 1")
        return self

    def result_settings(self) -> dict:
        """The settings that determine the dataset (not where or how fast it is computed):
        a resumed or sharded run must match them."""
        return IDENTIFY_RESUME.settings(self)


# What a resumed run, another shard or a rerun must share with the recorded work.
IDENTIFY_RESUME = ResumeRule(
    must_match=(
        "seed", "model.path", "model.dtype", "generation.backend", "generation.batch_size",
        "generation.max_new_tokens", "data.benchmark", "data.path", "data.template",
        "data.fields", "counterfactual", "decoder.kind", "decoder.batching",
        "verifier.timeout_s", "verifier.last_number_fallback",
    ),
    may_change=(
        "output_dir", "cpu_threads", "shard_index", "num_shards", "merge_only", "scale",
        "model.device",
        # Earlier questions' results do not depend on later ones: a finished run rerun with
        # a higher data.limit identifies only the new questions, a lower one reads a prefix.
        "data.limit",
        # speed only
        "verifier.num_workers", "generation.gpu_memory_utilization", "decoder.max_batch_rows",
        # counted in the summary, never changes a decoded token
        "decoder.near_tie_margin",
    ),
)  # fmt: skip
