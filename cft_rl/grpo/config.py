"""The `cft-rl grpo` recipe schema: one recipe, two engines (local, verl).

Names follow verl's where a setting has a verl counterpart (see cft_rl/grpo/verl_engine.py for
the mapping), so a recipe means the same on both engines. See docs/grpo.md for defaults.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from cft_rl.config import (
    CheckpointSettings,
    CpuThreads,
    LoggingSettings,
    ModelSpec,
    OptimSettings,
    Section,
    VerifierSettings,
)
from cft_rl.data.source import DataSource
from cft_rl.grpo.algos import ADVANTAGE_ESTIMATORS, KL_PENALTIES, LOSS_AGG_MODES, POLICY_LOSSES
from cft_rl.grpo.entropy_monitor import EntropyMonitorSettings
from cft_rl.registry import did_you_mean
from cft_rl.run_settings import ResumeRule

LossAggMode = LOSS_AGG_MODES.choice()


class GrpoData(DataSource):
    """The training questions: "toy-train" draws them from the toy world's *training* split
    (the questions `cft-rl identify` answers; never the held-out eval problems), exactly
    `limit` of them (default 500); any other name is a cft_rl.data benchmark read from
    `path` (point it at the training file)."""

    benchmark: str = "toy-train"
    # Prompts longer than this many tokens are an error (verl: data.max_prompt_length).
    max_prompt_tokens: int = Field(default=512, ge=1)


class RolloutSettings(Section):
    """Sampling of the group of responses per prompt."""

    # Responses per question: a group for the group-relative estimators (at least 2); PPO
    # (gae) needs no group.
    n: int = Field(default=8, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    # verl: data.max_response_length.
    max_new_tokens: int = Field(default=256, ge=1)
    # Local engine: sequences decoded at once by the hf backend.
    batch_size: int = Field(default=64, ge=1)


class PolicyLossSettings(Section):
    """The policy-gradient loss and its parameters, as verl's `actor.policy_loss` names them."""

    # A name of cft_rl.grpo.algos.POLICY_LOSSES: vanilla (PPO's clip, with clip-higher and
    # dual-clip), clip_cov, kl_cov (entropy-preserving, arXiv 2505.22617), gspo (one ratio
    # per sequence, arXiv 2507.18071). With engine: verl, any loss mode verl registers.
    loss_mode: str = "vanilla"
    # clip_cov: the share of tokens whose gradient is cut, among those whose centred
    # advantage x log-prob lies in (clip_cov_lb, clip_cov_ub).
    clip_cov_ratio: float = Field(default=0.0002, gt=0, le=1)
    clip_cov_lb: float = 1.0
    clip_cov_ub: float = 5.0
    # kl_cov: the share of tokens (largest covariance) that get ppo_kl_coef x |log-ratio|.
    kl_cov_ratio: float = Field(default=0.0002, gt=0, le=1)
    ppo_kl_coef: float = Field(default=0.1, ge=0)
    # Train the policy gradient only on this top share of response tokens by entropy under
    # the sampling policy ("Beyond the 80/20 rule", arXiv 2506.01939; TRL's
    # top_entropy_quantile), the threshold taken over each mini-batch's real tokens; the
    # entropy bonus and the KL term still see every token. null: every token. Local engine.
    top_entropy_fraction: float | None = Field(default=None, gt=0, le=1)


class AlgorithmSettings(Section):
    """Advantages and the policy loss (cft_rl.grpo.algos; verl's core_algos)."""

    # grpo: (r - mean) / std per group; dr_grpo: r - mean; rloo: leave-one-out baseline;
    # gae: PPO with a critic (see `critic`). With engine: verl, any estimator verl registers.
    advantage_estimator: str = "grpo"
    policy_loss: PolicyLossSettings = PolicyLossSettings()
    clip_ratio_low: float = Field(default=0.2, ge=0, lt=1)
    # Clip-higher (DAPO) raises this above clip_ratio_low, e.g. 0.28.
    clip_ratio_high: float = Field(default=0.2, ge=0)
    # Dual-clip bound for negative advantages (must be > 1).
    clip_ratio_c: float = Field(default=3.0, gt=1)
    loss_agg_mode: LossAggMode = "token-mean"
    # Entropy bonus: loss -= entropy_coeff * aggregated token entropy.
    entropy_coeff: float = Field(default=0.0, ge=0)
    # Passes over each step's rollouts (the critic's too).
    ppo_epochs: int = Field(default=1, ge=1)
    # gae: the discount and the GAE lambda (verl: algorithm.gamma, algorithm.lam).
    gamma: float = Field(default=1.0, ge=0, le=1)
    lam: float = Field(default=1.0, ge=0, le=1)


class CriticSettings(Section):
    """PPO's value model, for advantage_estimator: gae (verl: the `critic` section)."""

    # null: a copy of the starting checkpoint (`model`), with a new value head.
    model: ModelSpec | None = None
    # verl: critic.optim.lr, weight_decay, lr_warmup_steps, critic.grad_clip.
    optim: OptimSettings = OptimSettings(lr=1e-5, weight_decay=0.01)
    # New values further than this from the values the advantages were computed with are
    # clipped in the loss (verl: critic.cliprange_value).
    clip_range_value: float = Field(default=0.5, gt=0)
    # Steps that train only the critic, before the policy's updates start (verl:
    # trainer.critic_warmup): a fresh value head knows nothing yet.
    steps_before_actor: int = Field(default=0, ge=0)


class KLSettings(Section):
    """KL to a frozen reference policy (the starting checkpoint), as a loss term."""

    # Load the reference model; with coef 0 the KL is only measured and logged.
    use_reference: bool = False
    coef: float = Field(default=0.0, ge=0)
    # cft_rl.grpo.algos.KL_PENALTIES names (k1/k2/k3 = kl/mse/low_var_kl), "+" for k2 gradient.
    type: KL_PENALTIES.choice() = "low_var_kl"  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _check(self) -> KLSettings:
        if self.coef > 0 and not self.use_reference:
            raise ValueError("coef > 0 needs use_reference: true (the KL is to the reference)")
        return self


class BatchSettings(Section):
    """How many prompts a step samples and how the update is cut up."""

    # verl: data.train_batch_size.
    prompts_per_step: int = Field(default=8, ge=1)
    # Prompts per optimizer step; several mini-batches per step make later ones off-policy,
    # which is what the clip is for (verl: actor.ppo_mini_batch_size). null: prompts_per_step.
    mini_batch_prompts: int | None = Field(default=None, ge=1)
    # Sequences per forward/backward; gradients accumulate over a mini-batch
    # (verl: ppo_micro_batch_size_per_gpu and log_prob_micro_batch_size_per_gpu).
    micro_batch_size: int = Field(default=16, ge=1)

    @property
    def mini_batch(self) -> int:
        return self.prompts_per_step if self.mini_batch_prompts is None else self.mini_batch_prompts

    @model_validator(mode="after")
    def _divides(self) -> BatchSettings:
        if self.prompts_per_step % self.mini_batch != 0:
            raise ValueError(
                f"mini_batch_prompts ({self.mini_batch}) must divide prompts_per_step "
                f"({self.prompts_per_step})"
            )
        return self


class ProbeSettings(Section):
    """Entropy of the policy on fixed CFT responses, split at critical tokens (beyond the paper).

    `path`: the dataset of `cft-rl identify` (its parquet, or its output dir). Every `every`
    steps (and before the first) the policy's token entropy is measured on those responses,
    teacher-forced, and reported separately for critical and non-critical positions.
    """

    path: str | None = None
    every: int = Field(default=10, ge=1)
    # Use the first `limit` responses of the dataset.
    limit: int | None = Field(default=64, ge=1)
    micro_batch_size: int = Field(default=16, ge=1)


class GrpoValidationSettings(DataSource):
    """Reward on fixed held-out questions, before the first step and every `every` steps.

    The training reward is measured on each step's fresh questions, so it moves with their
    difficulty as much as with the policy; this curve asks the same questions with the same
    sampling seeds every time. Local engine only. `benchmark`: a cft_rl.data benchmark (e.g.
    "toy" for the toy world's held-out problems); null turns validation off.
    """

    benchmark: str | None = None
    limit: int = Field(default=64, ge=1)
    # Samples per question, at the rollout temperature, top_p and budget.
    n: int = Field(default=4, ge=1)
    every: int = Field(default=10, ge=1)
    # Sampling seed, apart from the run's `seed`: runs of other seeds or starting checkpoints
    # are then measured on the same random draws, which makes their curves comparable.
    seed: int = 0


class VerlSettings(Section):
    """Only for engine: verl (launch settings that have no local counterpart)."""

    nnodes: int = Field(default=1, ge=1)
    n_gpus_per_node: int = Field(default=8, ge=1)
    # vLLM rollout: tensor parallel size and memory share.
    tensor_parallel_size: int = Field(default=1, ge=1)
    gpu_memory_utilization: float = Field(default=0.6, gt=0, le=1)
    project_name: str = "cft-rl"
    experiment_name: str = "grpo"
    # Extra hydra overrides appended last (they win),
    # e.g. "actor_rollout_ref.model.enable_gradient_checkpointing=false".
    extra_overrides: list[str] = []
    # Seconds between reads of verl's metrics file by the entropy monitor.
    poll_s: float = Field(default=10.0, gt=0)


class GrpoConfig(Section):
    """`cft-rl grpo`: GRPO from a (CFT or SFT) checkpoint, with entropy monitoring."""

    renamed_keys = {
        "checkpoint_every": "checkpoint.every_steps",
        "keep_checkpoints": "checkpoint.keep",
        "optim.grad_clip": "optim.max_grad_norm",
    }

    engine: Literal["local", "verl"] = "local"
    # verl engine: print the command and overrides (and write the parquet), launch nothing.
    dry_run: bool = False
    output_dir: str = "runs/toy-grpo"
    seed: int = 0
    # The starting checkpoint, e.g. the HF export of `cft-rl sft`.
    model: ModelSpec = ModelSpec()
    data: GrpoData = GrpoData()
    rollout: RolloutSettings = RolloutSettings()
    algorithm: AlgorithmSettings = AlgorithmSettings()
    kl: KLSettings = KLSettings()
    # AdamW with linear warm-up to a constant learning rate (verl's default schedule).
    optim: OptimSettings = OptimSettings(lr=1e-6, weight_decay=0.01)
    critic: CriticSettings = CriticSettings()
    batch: BatchSettings = BatchSettings()
    steps: int = Field(default=50, ge=1)
    checkpoint: CheckpointSettings = CheckpointSettings(every_steps=10)
    monitor: EntropyMonitorSettings = EntropyMonitorSettings()
    probe: ProbeSettings = ProbeSettings()
    validation: GrpoValidationSettings = GrpoValidationSettings()
    verifier: VerifierSettings = VerifierSettings()
    # Local engine: the per-step line, TensorBoard and W&B (verl logs through its own trainer).
    logging: LoggingSettings = LoggingSettings()
    cpu_threads: CpuThreads = None  # local engine only
    verl: VerlSettings = VerlSettings()

    @model_validator(mode="after")
    def _names_are_known(self) -> GrpoConfig:
        estimator = self.algorithm.advantage_estimator
        loss_mode = self.algorithm.policy_loss.loss_mode
        if self.engine == "verl":
            estimators, losses = verl_registries()
            estimators, losses = estimators | set(ADVANTAGE_ESTIMATORS), losses
            where = "verl's registry"
        else:
            estimators, losses = set(ADVANTAGE_ESTIMATORS), set(POLICY_LOSSES)
            where = "the local engine (engine: verl takes every name verl registers)"
        checks = [
            ("algorithm.advantage_estimator", estimator, estimators),
            ("algorithm.policy_loss.loss_mode", loss_mode, losses),
        ]
        if self.monitor.switch_to is not None:
            checks.append(("monitor.switch_to", self.monitor.switch_to, set(POLICY_LOSSES)))
        ours = ADVANTAGE_ESTIMATORS.get(estimator) if estimator in ADVANTAGE_ESTIMATORS else None
        if ours is not None and not ours.needs_critic and self.rollout.n < 2:
            raise ValueError(f"rollout.n: '{estimator}' compares the responses of a group: n >= 2")
        for key, name, known in checks:
            if name not in known:
                raise ValueError(
                    f"{key}: '{name}' is not in {where}{did_you_mean(name, known)} "
                    f"(known: {', '.join(sorted(known))})"
                )
        return self

    def resume_settings(self) -> dict:
        """The settings a resumed run must share with the run it continues: everything that
        shapes the trajectory (GRPO_RESUME)."""
        also = []
        # clip_cov and kl_cov choose their tokens within each micro-batch (as verl's do), so
        # for them the micro-batch size shapes the trajectory.
        if {self.algorithm.policy_loss.loss_mode, self.monitor.switch_to} & {"clip_cov", "kl_cov"}:
            also.append("batch.micro_batch_size")
        name = self.algorithm.advantage_estimator
        if name in ADVANTAGE_ESTIMATORS and ADVANTAGE_ESTIMATORS.get(name).needs_critic:
            also.append("critic")  # read only by PPO
        return GRPO_RESUME.settings(self, also)


# What a resumed run must share with its checkpoint: what shapes the trajectory. Not where
# it is written, how long it runs (`steps` may grow to extend a run) or how often it saves;
# not the probe and validation, which only measure; not speed-only settings. The critic
# must match for PPO, the micro-batch size for clip_cov and kl_cov (resume_settings).
GRPO_RESUME = ResumeRule(
    must_match=(
        "engine", "seed", "model", "data", "rollout.n", "rollout.temperature", "rollout.top_p",
        "rollout.max_new_tokens", "algorithm", "kl", "optim", "batch.prompts_per_step",
        "batch.mini_batch_prompts", "monitor", "verifier.timeout_s",
        "verifier.last_number_fallback",
    ),
    may_change=(
        "output_dir", "steps", "checkpoint", "dry_run", "cpu_threads", "probe", "validation",
        "logging", "rollout.batch_size", "verifier.num_workers", "verl",
        "batch.micro_batch_size", "critic",
    ),
)  # fmt: skip


def verl_registries() -> tuple[set[str], set[str]]:
    """The advantage estimators and policy losses the installed verl registers."""
    try:
        from verl.trainer.ppo import core_algos
    except ImportError as err:
        raise ValueError(f"engine: verl needs verl installed ({err})") from None
    return set(core_algos.ADV_ESTIMATOR_REGISTRY), set(core_algos.POLICY_LOSS_REGISTRY)
