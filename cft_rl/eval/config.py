"""The `cft-rl eval` recipe schema."""

from __future__ import annotations

from pydantic import Field, model_validator

from cft_rl.config import CpuThreads, GenerationSettings, ModelSpec, Section, VerifierSettings
from cft_rl.data.source import DataSource
from cft_rl.scale import ScaleSettings


class BenchmarkSpec(DataSource):
    """One benchmark (see DataSource); evaluation prompts ask for \\boxed{} by default."""

    template: str = "boxed"
    # Draw the recipe's n_samples samples per problem here (pass@k); false: greedy accuracy
    # only, e.g. on a large test set beside a sampled one.
    samples: bool = True


class EvalConfig(Section):
    """Greedy accuracy, and pass@k from `n_samples` samples per problem, on each benchmark."""

    renamed_keys = {"benchmarks.*.name": "benchmarks.*.benchmark"}

    model: ModelSpec = ModelSpec()
    generation: GenerationSettings = GenerationSettings()
    benchmarks: list[BenchmarkSpec] = Field(min_length=1)
    # Samples per problem for pass@k; 0 measures greedy accuracy only.
    n_samples: int = Field(default=8, ge=0)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    # pass@k is reported for these k; empty: 1, 2, 4, ... up to n_samples (and n_samples).
    ks: list[int] = []
    seed: int = 0
    verifier: VerifierSettings = VerifierSettings()
    cpu_threads: CpuThreads = None
    output_dir: str = "runs/eval"
    # Spread the batches over model replicas on a Ray cluster (docs/eval.md).
    scale: ScaleSettings = ScaleSettings()

    @model_validator(mode="after")
    def _check_ks(self) -> EvalConfig:
        bad = [k for k in self.ks if not 1 <= k <= self.n_samples]
        if bad:
            raise ValueError(f"ks: each k must be in 1..n_samples={self.n_samples}, got {bad}")
        names = [b.benchmark for b in self.benchmarks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"benchmarks: each name may appear once, repeated: {repeated}")
        return self

    def pass_ks(self) -> list[int]:
        """The k values to report."""
        if self.ks:
            return sorted(set(self.ks))
        ks, k = [], 1
        while k < self.n_samples:
            ks.append(k)
            k *= 2
        return ks + [self.n_samples] if self.n_samples else []
