"""The verl engine: the same recipe run by verl's Ray PPO trainer (GPUs, vLLM rollouts).

`run_verl` writes the training questions as verl's RL parquet, maps the recipe onto hydra
overrides of verl's `ppo_trainer` config, checks that they compose against the installed
verl's own config folder, and launches `python -m verl.trainer.main_ppo`. verl's `file`
logger writes its metrics JSONL into output_dir; while verl runs, it is tailed, renamed into
output_dir/metrics.jsonl (our metric names) and fed to the entropy monitor, which may stop
the run. With `dry_run: true` it prints the command and launches nothing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from cft_rl.config import ConfigError
from cft_rl.data import DataError, Example
from cft_rl.data.prompts import TEMPLATES, check_template
from cft_rl.grpo.algos import ADVANTAGE_ESTIMATORS
from cft_rl.grpo.config import GrpoConfig
from cft_rl.grpo.curves import plot_runs
from cft_rl.grpo.entropy_monitor import EntropyMonitor, VerlMetricsReader
from cft_rl.jsonl import EVENTS, METRICS, StepLog
from cft_rl.modeling import resolve_model_path
from cft_rl.run_settings import check_same_settings, data_fingerprint

TRAIN_PARQUET = "verl_train.parquet"
VERL_METRICS = "verl_metrics.jsonl"
COMMAND_FILE = "verl_command.sh"
# The settings and training questions of the first launch: verl resumes from its own
# checkpoints whatever it is given, so a later launch is checked against this first.
RUN_RECORD = "verl_run.json"
REWARD_FILE = Path(__file__).resolve().parents[2] / "reward" / "score.py"


def run_verl(config: GrpoConfig) -> list[str]:
    """Prepare, print and (unless dry_run) launch and follow verl; returns the command."""
    local_only = {"raise_entropy_coeff", "switch_loss_mode"}
    if config.monitor.enabled and config.monitor.action in local_only:
        raise ConfigError(
            f"monitor.action: {config.monitor.action} needs engine: local (verl reads its "
            "settings once, at launch); use warn or stop"
        )
    if config.algorithm.policy_loss.top_entropy_fraction is not None:
        raise ConfigError(
            "algorithm.policy_loss.top_entropy_fraction needs engine: local (verl has no "
            "top-entropy token selection)"
        )
    out_dir = Path(config.output_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = config.data.load()
    settings = run_settings(config, examples)
    record = out_dir / RUN_RECORD
    if record.is_file():
        check_same_settings(record, json.loads(record.read_text()), settings)
    train_path = write_verl_parquet(examples, config.data.template, out_dir / TRAIN_PARQUET)
    overrides = verl_overrides(config, train_path, out_dir)
    compose_verl_config(overrides)
    command = [sys.executable, "-m", "verl.trainer.main_ppo", *overrides]
    env = {"VERL_FILE_LOGGER_PATH": str(out_dir / VERL_METRICS)}
    script = " \\\n    ".join(
        [" ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + shlex.join(command[:3])]
        + [shlex.quote(o) for o in overrides]
    )
    (out_dir / COMMAND_FILE).write_text("#!/bin/sh\n" + script + "\n")
    print(script)
    if config.dry_run:
        print(f"dry run: nothing launched (command saved in {out_dir / COMMAND_FILE})")
        return command
    if not record.is_file():
        record.write_text(json.dumps(settings, indent=1, sort_keys=True))
    returncode = follow(config, command, {**os.environ, **env}, out_dir)
    if (out_dir / METRICS).is_file():
        plot_runs([out_dir], out_dir / "entropy.png")
    if returncode != 0:
        raise RuntimeError(f"verl exited with status {returncode}")
    return command


def run_settings(config: GrpoConfig, examples: list[Example]) -> dict:
    """What a relaunch into the same output_dir must share with the first launch: the
    recipe's trajectory-shaping settings and a hash of the prompts and answers."""
    questions = data_fingerprint(
        json.dumps([e.id, e.question, config.data.template, e.answer]).encode() for e in examples
    )
    return {**config.resume_settings(), "training_questions": questions}


def write_verl_parquet(examples: list[Example], template: str, path: Path) -> Path:
    """verl's RL data schema: chat `prompt`, `data_source`, `reward_model.ground_truth`, ..."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        check_template(template)
    except DataError as err:
        raise DataError(f"data.template: {err}") from None
    rows = [
        {
            "data_source": example.source,
            "prompt": [{"role": "user", "content": example.question + TEMPLATES[template]}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": example.answer},
            # reward/score.py grades a multiple-choice answer against these options.
            "extra_info": {
                "index": index,
                "id": example.id,
                "split": "train",
                "choices": [list(choice) for choice in example.choices or ()] or None,
            },
        }
        for index, example in enumerate(examples)
    ]
    temporary = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows), temporary)
    temporary.replace(path)
    return path


def verl_overrides(config: GrpoConfig, train_path: Path, out_dir: Path) -> list[str]:
    """The recipe as hydra overrides of verl's ppo_trainer config (extra_overrides last)."""
    algo, rollout, batch, optim, kl = (
        config.algorithm,
        config.rollout,
        config.batch,
        config.optim,
        config.kl,
    )
    loss = algo.policy_loss
    num_examples = _parquet_rows(train_path)
    steps_per_epoch = num_examples // batch.prompts_per_step
    if steps_per_epoch < 1:
        raise ConfigError(
            f"batch.prompts_per_step ({batch.prompts_per_step}) exceeds the {num_examples} "
            "training questions"
        )
    actor = "actor_rollout_ref.actor"
    values: dict[str, object] = {
        **_estimator_overrides(algo.advantage_estimator),
        "algorithm.use_kl_in_reward": False,
        "data.train_files": str(train_path),
        # No validation during training (evaluate with `cft-rl eval`); verl still wants a file.
        "data.val_files": str(train_path),
        "data.train_batch_size": batch.prompts_per_step,
        "data.max_prompt_length": config.data.max_prompt_tokens,
        "data.max_response_length": rollout.max_new_tokens,
        "data.seed": config.seed,
        "actor_rollout_ref.model.path": _model_path(config.model.path),
        f"{actor}.optim.lr": optim.lr,
        f"{actor}.optim.weight_decay": optim.weight_decay,
        f"{actor}.optim.lr_warmup_steps": optim.warmup_steps,
        f"{actor}.grad_clip": optim.max_grad_norm,
        f"{actor}.ppo_mini_batch_size": batch.mini_batch,
        f"{actor}.ppo_micro_batch_size_per_gpu": batch.micro_batch_size,
        f"{actor}.ppo_epochs": algo.ppo_epochs,
        f"{actor}.clip_ratio_low": algo.clip_ratio_low,
        f"{actor}.clip_ratio_high": algo.clip_ratio_high,
        f"{actor}.clip_ratio_c": algo.clip_ratio_c,
        f"{actor}.policy_loss.loss_mode": loss.loss_mode,
        f"{actor}.policy_loss.clip_cov_ratio": loss.clip_cov_ratio,
        f"{actor}.policy_loss.clip_cov_lb": loss.clip_cov_lb,
        f"{actor}.policy_loss.clip_cov_ub": loss.clip_cov_ub,
        f"{actor}.policy_loss.kl_cov_ratio": loss.kl_cov_ratio,
        f"{actor}.policy_loss.ppo_kl_coef": loss.ppo_kl_coef,
        f"{actor}.loss_agg_mode": algo.loss_agg_mode,
        # The Dr. GRPO normaliser of seq-mean-token-sum-norm: the generation budget, as locally.
        f"{actor}.loss_scale_factor": float(rollout.max_new_tokens),
        f"{actor}.entropy_coeff": algo.entropy_coeff,
        f"{actor}.calculate_entropy": True,
        f"{actor}.use_kl_loss": kl.use_reference,
        f"{actor}.kl_loss_coef": kl.coef,
        f"{actor}.kl_loss_type": kl.type,
        f"{actor}.data_loader_seed": config.seed,
        "actor_rollout_ref.rollout.name": "vllm",
        "actor_rollout_ref.rollout.n": rollout.n,
        "actor_rollout_ref.rollout.temperature": rollout.temperature,
        "actor_rollout_ref.rollout.top_p": rollout.top_p,
        "actor_rollout_ref.rollout.seed": config.seed,
        "actor_rollout_ref.rollout.tensor_model_parallel_size": config.verl.tensor_parallel_size,
        "actor_rollout_ref.rollout.gpu_memory_utilization": config.verl.gpu_memory_utilization,
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu": batch.micro_batch_size,
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu": batch.micro_batch_size,
        "reward.custom_reward_function.path": str(REWARD_FILE),
        "reward.custom_reward_function.name": "compute_score",
        # "++": add the key, or set it should verl's config come to have it.
        "++reward.custom_reward_function.reward_kwargs.last_number_fallback": (
            config.verifier.last_number_fallback
        ),
        "trainer.logger": "[console,file]",
        "trainer.project_name": config.verl.project_name,
        "trainer.experiment_name": config.verl.experiment_name,
        "trainer.nnodes": config.verl.nnodes,
        "trainer.n_gpus_per_node": config.verl.n_gpus_per_node,
        "trainer.total_training_steps": config.steps,
        "trainer.total_epochs": math.ceil(config.steps / steps_per_epoch),
        "trainer.save_freq": config.checkpoint.every_steps or config.steps,
        "trainer.max_actor_ckpt_to_keep": config.checkpoint.keep,
        "trainer.default_local_dir": str(out_dir / "verl_checkpoints"),
        "trainer.resume_mode": "auto",
        "trainer.val_before_train": False,
        "trainer.test_freq": -1,
    }
    if algo.advantage_estimator == "gae":
        values |= _critic_overrides(config, out_dir)
    return [f"{key}={_hydra_value(value)}" for key, value in values.items()] + list(
        config.verl.extra_overrides
    )


def verl_config_dir() -> Path:
    """verl's own trainer config folder, found without importing verl (which starts Ray)."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("engine: verl needs verl installed (pip install verl==0.9.1)")
    return Path(next(iter(spec.submodule_search_locations))) / "trainer" / "config"


def compose_verl_config(overrides: list[str]):
    """Compose verl's ppo_trainer config with `overrides` (a typo'd key fails here, not on
    the GPUs); returns the composed OmegaConf config."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(verl_config_dir()), version_base=None):
            return compose(config_name="ppo_trainer", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"verl rejects the generated overrides: {err}") from None
    finally:
        GlobalHydra.instance().clear()


def follow(config: GrpoConfig, command: list[str], env: dict[str, str], out_dir: Path) -> int:
    """Run verl; feed each step's metrics to our log and the entropy monitor as they appear."""
    reader = VerlMetricsReader(out_dir / VERL_METRICS)
    metrics, events = StepLog(out_dir / METRICS), StepLog(out_dir / EVENTS)
    monitor = _replayed_monitor(config, metrics.records())
    process = subprocess.Popen(command, env=env, start_new_session=True)
    try:
        while True:
            finished = process.poll() is not None
            for record in reader.read_new():
                monitor = _log_step(config, record, metrics, events, monitor)
            if monitor.should_stop and not finished:
                print("entropy monitor: stopping verl", flush=True)
                os.killpg(process.pid, signal.SIGTERM)
                return process.wait()
            if finished:
                return process.returncode
            time.sleep(config.verl.poll_s)
    except BaseException:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        raise


def _log_step(config, record, metrics: StepLog, events: StepLog, monitor: EntropyMonitor):
    """Append one verl step; a step we have seen means verl resumed from an earlier checkpoint:
    the log and the monitor go back to just before it."""
    step = record["step"]
    logged = metrics.records()
    if logged and logged[-1]["step"] >= step:
        kept = metrics.rewind(step - 1)
        events.rewind(step - 1)
        monitor = _replayed_monitor(config, kept)
    metrics.append(record)
    for event in monitor.update(step, record):
        events.append(event.to_record())
        print(f"entropy monitor: {event.message}", flush=True)
    return monitor


def _replayed_monitor(config: GrpoConfig, records: list[dict]) -> EntropyMonitor:
    monitor = EntropyMonitor(
        config.monitor, config.algorithm.entropy_coeff, config.algorithm.policy_loss.loss_mode
    )
    for record in records:
        monitor.update(record["step"], record)
    return monitor


def _model_path(path: str) -> str:
    """A local model directory as an absolute path (verl's workers run elsewhere); a hub name
    or a directory that does not exist yet (dry run before `cft-rl sft`) as given."""
    resolved = resolve_model_path(path)
    return str(Path(resolved).resolve()) if Path(resolved).exists() else resolved


def _parquet_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path).num_rows


def _hydra_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.startswith("["):
        return value  # a list, written in hydra syntax already
    if isinstance(value, str):
        # Quote strings hydra would otherwise parse (paths with '=' or ',', 'null', numbers).
        plain = value.replace("/", "").replace(".", "").replace("-", "").replace("_", "")
        keyword = value.lower() in ("null", "true", "false")
        return value if plain.isalnum() and not plain.isdigit() and not keyword else f"'{value}'"
    return repr(value) if isinstance(value, float) else str(value)


def _estimator_overrides(name: str) -> dict[str, object]:
    """verl's spelling of an estimator we register (Dr. GRPO is verl's grpo without the std
    division); a name only verl registers goes through as it is."""
    if name not in ADVANTAGE_ESTIMATORS:
        return {"algorithm.adv_estimator": name}
    estimator = ADVANTAGE_ESTIMATORS.get(name)
    return {
        "algorithm.adv_estimator": estimator.verl_name,
        "algorithm.norm_adv_by_std_in_grpo": estimator.verl_norm_by_std,
    }


def _critic_overrides(config: GrpoConfig, out_dir: Path) -> dict[str, object]:
    """PPO: verl's critic worker, from the same settings as the local engine's critic."""
    critic, batch = config.critic, config.batch
    return {
        "algorithm.gamma": config.algorithm.gamma,
        "algorithm.lam": config.algorithm.lam,
        "critic.model.path": _model_path((critic.model or config.model).path),
        "critic.optim.lr": critic.optim.lr,
        "critic.optim.weight_decay": critic.optim.weight_decay,
        "critic.optim.lr_warmup_steps": critic.optim.warmup_steps,
        "critic.grad_clip": critic.optim.max_grad_norm,
        "critic.cliprange_value": critic.clip_range_value,
        "critic.ppo_micro_batch_size_per_gpu": batch.micro_batch_size,
        # verl trains the critic alone while critic_warmup > step (steps count from 1).
        "trainer.critic_warmup": critic.steps_before_actor + 1 if critic.steps_before_actor else 0,
        "trainer.max_critic_ckpt_to_keep": config.checkpoint.keep,
    }
