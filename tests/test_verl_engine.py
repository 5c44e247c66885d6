"""The verl engine without GPUs: overrides compose against verl's own config folder and pass its
validation, the parquet loads in verl's RLHFDataset, the reward loads through verl, and the
metrics tail + entropy monitor follow (and stop) a process writing verl's file-logger JSONL."""

from __future__ import annotations

import json
import sys
import textwrap
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from tiny_lm import char_tokenizer, save_tiny_model

from cft_rl.cli import main
from cft_rl.config import ConfigError, load_config
from cft_rl.data import Example, load_benchmark
from cft_rl.data.prompts import encode_prompts
from cft_rl.grpo.config import GrpoConfig
from cft_rl.grpo.verl_engine import (
    REWARD_FILE,
    compose_verl_config,
    follow,
    run_verl,
    verl_overrides,
    write_verl_parquet,
)

ROOT = Path(__file__).resolve().parents[1]
REAL_RECIPE = ROOT / "recipes" / "qwen2.5-math-1.5b" / "grpo.yaml"
EXAMPLES = [
    Example(id="q0", question="1+1?", answer="2", source="gsm8k"),
    Example(id="q1", question="10*10, then minus 1?", answer="99", source="gsm8k"),
    Example(id="q2", question="half of 3?", answer="\\frac{3}{2}", source="math"),
]


@pytest.fixture(scope="module")
def verl_validate():
    """verl's own launch-time checks (importing them pulls in Ray: seconds)."""
    config_module = pytest.importorskip("verl.utils.config")
    from verl.trainer.ppo.utils import need_critic, need_reference_policy

    def validate(cfg):
        config_module.validate_config(
            cfg, use_reference_policy=need_reference_policy(cfg), use_critic=need_critic(cfg)
        )

    return validate


@pytest.fixture(scope="module")
def gsm8k_train(tmp_path_factory) -> Path:
    """Enough GSM8K-format training questions for the real recipe's 128 prompts per step."""
    path = tmp_path_factory.mktemp("gsm8k") / "train.jsonl"
    rows = [
        {"question": f"What is {i} + {i}?", "answer": f"{i}+{i}\n#### {2 * i}"} for i in range(300)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def real_recipe(out: Path, train: Path, *overrides: str, recipe: Path = REAL_RECIPE):
    """A shipped recipe (reading our training file), its parquet and verl's composed config."""
    config = load_config(
        GrpoConfig, recipe, [f"output_dir={out}", f"data.path={train}", *overrides]
    )
    parquet = write_verl_parquet(
        load_benchmark(config.data.benchmark, config.data.path, config.data.limit),
        config.data.template,
        out / "train.parquet",
    )
    return config, parquet, compose_verl_config(verl_overrides(config, parquet, out))


@pytest.mark.filterwarnings("ignore:Disabled critic")  # GRPO has no critic: expected
def test_real_recipe_overrides_compose_and_pass_verl_validation(
    tmp_path, gsm8k_train, verl_validate
):
    config, parquet, cfg = real_recipe(tmp_path, gsm8k_train)
    verl_validate(cfg)  # batch sizes divide over 8 GPUs, micro-batches set, ...
    actor = cfg.actor_rollout_ref.actor
    assert cfg.trainer.n_gpus_per_node * cfg.trainer.nnodes == 8
    assert list(cfg.trainer.logger) == ["console", "file"]
    assert cfg.actor_rollout_ref.rollout.name == "vllm"
    assert cfg.actor_rollout_ref.rollout.n == config.rollout.n
    assert cfg.data.train_batch_size == config.batch.prompts_per_step
    assert actor.ppo_mini_batch_size == config.batch.mini_batch_prompts
    assert actor.clip_ratio_low == config.algorithm.clip_ratio_low
    assert actor.clip_ratio_high == config.algorithm.clip_ratio_high
    assert actor.loss_agg_mode == config.algorithm.loss_agg_mode
    assert actor.use_kl_loss is config.kl.use_reference
    assert actor.kl_loss_coef == config.kl.coef
    assert actor.optim.lr == config.optim.lr
    assert cfg.reward.custom_reward_function.path == str(REWARD_FILE)
    assert cfg.data.train_files == str(parquet)
    assert cfg.algorithm.adv_estimator == "grpo"
    # 300 questions / 128 per step = 2 steps per epoch: enough epochs for all the steps
    assert cfg.trainer.total_epochs * 2 >= cfg.trainer.total_training_steps == config.steps


@pytest.mark.parametrize(
    ("estimator", "verl_name", "norm_by_std"),
    [("grpo", "grpo", True), ("dr_grpo", "grpo", False), ("rloo", "rloo", True)],
)
def test_every_estimator_maps_to_verl(tmp_path, gsm8k_train, estimator, verl_name, norm_by_std):
    _, _, cfg = real_recipe(tmp_path, gsm8k_train, f"algorithm.advantage_estimator={estimator}")
    assert cfg.algorithm.adv_estimator == verl_name
    assert cfg.algorithm.norm_adv_by_std_in_grpo is norm_by_std


@pytest.mark.filterwarnings("ignore:Disabled critic")
def test_the_clip_cov_recipe_composes_with_verls_policy_loss(tmp_path, gsm8k_train, verl_validate):
    recipe = ROOT / "recipes" / "qwen2.5-math-1.5b" / "grpo-clip-cov.yaml"
    _, _, cfg = real_recipe(tmp_path, gsm8k_train, recipe=recipe)
    verl_validate(cfg)
    loss = cfg.actor_rollout_ref.actor.policy_loss
    assert (loss.loss_mode, loss.clip_cov_ratio, loss.clip_cov_lb) == ("clip_cov", 0.0002, 1.0)


def test_the_ppo_recipe_composes_with_verls_critic(tmp_path, verl_validate, capsys):
    from verl.trainer.ppo.utils import need_critic

    gsm8k_train = tmp_path / "train.jsonl"  # the recipe takes 512 questions a step
    rows = [{"question": f"What is {i} + 1?", "answer": f"#### {i + 1}"} for i in range(600)]
    gsm8k_train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    recipe = ROOT / "recipes" / "qwen2.5-math-1.5b" / "ppo.yaml"
    # verl's check of the critic reads the model's config and tokenizer: a real folder.
    model = f"model.path={save_tiny_model(tmp_path / 'model')}"
    config, _, cfg = real_recipe(tmp_path, gsm8k_train, model, recipe=recipe)
    verl_validate(cfg)  # with the critic: its batch sizes and micro-batches are checked too
    assert need_critic(cfg) and cfg.algorithm.adv_estimator == "gae"
    assert cfg.critic.model.path == cfg.actor_rollout_ref.model.path
    assert cfg.critic.optim.lr == config.critic.optim.lr == 1e-5
    assert cfg.critic.cliprange_value == config.critic.clip_range_value
    # verl trains the critic alone while critic_warmup > step: steps 1-10, as locally
    assert cfg.trainer.critic_warmup == config.critic.steps_before_actor + 1 == 11
    assert cfg.actor_rollout_ref.rollout.n == 1
    argv = ["grpo", "--recipe", str(recipe), f"output_dir={tmp_path / 'dry'}"]
    assert main([*argv, f"data.path={gsm8k_train}", "dry_run=true"]) == 0
    assert "critic.model.path=" in capsys.readouterr().out


def test_verl_takes_every_name_verl_registers_and_names_the_closest_on_a_typo(
    tmp_path, gsm8k_train
):
    """reinforce_plus_plus and cispo exist in verl only: fine with engine verl, refused
    locally; a misspelt name gets verl's closest."""
    _, _, cfg = real_recipe(
        tmp_path,
        gsm8k_train,
        "algorithm.advantage_estimator=reinforce_plus_plus",
        "algorithm.policy_loss.loss_mode=cispo",
    )
    assert cfg.algorithm.adv_estimator == "reinforce_plus_plus"
    assert cfg.actor_rollout_ref.actor.policy_loss.loss_mode == "cispo"
    with pytest.raises(ConfigError, match="'cispo' is not in the local engine"):
        real_recipe(tmp_path, gsm8k_train, "engine=local", "algorithm.policy_loss.loss_mode=cispo")
    with pytest.raises(ConfigError, match="did you mean 'kl_cov'"):
        real_recipe(tmp_path, gsm8k_train, "algorithm.policy_loss.loss_mode=kl_cv")


def test_local_only_options_are_refused_with_verl(tmp_path, gsm8k_train):
    config = load_config(
        GrpoConfig,
        REAL_RECIPE,
        [f"output_dir={tmp_path}", f"data.path={gsm8k_train}", "dry_run=true"],
    )
    config.algorithm.policy_loss.top_entropy_fraction = 0.2
    with pytest.raises(ConfigError, match="top_entropy_fraction needs engine: local"):
        run_verl(config)


def test_a_typo_in_extra_overrides_is_caught_before_launch(tmp_path, gsm8k_train):
    typo = "verl.extra_overrides=[actor_rollout_ref.actor.clip_ration=0.1]"
    with pytest.raises(ConfigError, match="clip_ration"):
        real_recipe(tmp_path, gsm8k_train, typo)


def test_parquet_loads_in_verls_dataset_with_the_local_engines_prompts(tmp_path):
    rl_dataset = pytest.importorskip("verl.utils.dataset.rl_dataset")
    tokenizer = char_tokenizer()
    path = write_verl_parquet(EXAMPLES, "toy", tmp_path / "train.parquet")
    ours = encode_prompts(tokenizer, EXAMPLES, "toy", max_prompt_tokens=100)
    longest = max(len(ids) for ids in ours)

    def load(max_prompt_length: int):
        settings = {
            "max_prompt_length": max_prompt_length,
            "filter_overlong_prompts": True,
            "filter_overlong_prompts_workers": 1,
            "cache_dir": str(tmp_path / "cache"),
        }
        return rl_dataset.RLHFDataset(str(path), tokenizer, OmegaConf.create(settings))

    dataset = load(longest)
    assert len(dataset) == 3
    for index, example in enumerate(EXAMPLES):
        row = dataset[index]
        assert row["data_source"] == example.source
        assert row["reward_model"]["ground_truth"] == example.answer
        assert row["extra_info"]["id"] == example.id
        # verl templates the chat messages itself: the same token ids the local engine uses
        ids = tokenizer.apply_chat_template(row["raw_prompt"], add_generation_prompt=True)
        assert rl_dataset.normalize_token_ids(ids) == ours[index]
    assert len(load(longest - 1)) == 2  # verl measures the prompts as we do


def test_reward_loads_through_verl_and_scores(tmp_path, gsm8k_train):
    reward = pytest.importorskip("verl.trainer.ppo.reward")
    _, _, cfg = real_recipe(tmp_path, gsm8k_train)
    score = reward.get_custom_reward_fn(cfg)
    right = score(
        data_source="gsm8k", solution_str="So it is \\boxed{99}.", ground_truth="99", extra_info={}
    )
    wrong = score(data_source="gsm8k", solution_str="#### 98", ground_truth="99", extra_info={})
    assert right["score"] == 1.0 and wrong["score"] == 0.0


def test_dry_run_prints_the_command_and_launches_nothing(tmp_path, gsm8k_train, capsys):
    args = ["grpo", "--recipe", str(REAL_RECIPE), "dry_run=true", f"output_dir={tmp_path}"]
    assert main([*args, f"data.path={gsm8k_train}"]) == 0
    printed = capsys.readouterr().out
    assert "-m verl.trainer.main_ppo" in printed and "trainer.n_gpus_per_node=8" in printed
    assert f"VERL_FILE_LOGGER_PATH={tmp_path.resolve()}/verl_metrics.jsonl" in printed
    assert (tmp_path / "verl_command.sh").is_file() and (tmp_path / "verl_train.parquet").is_file()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_relaunch_keeps_the_first_launchs_settings_and_data(
    tmp_path, gsm8k_train, monkeypatch, capsys
):
    """verl resumes from its checkpoints whatever it is given: we check before launching."""
    from cft_rl.grpo import verl_engine

    monkeypatch.setattr(verl_engine, "follow", lambda *args: 0)  # verl itself needs GPUs
    data, out = tmp_path / "train.jsonl", tmp_path / "run"
    data.write_text(gsm8k_train.read_text())
    args = ["grpo", "--recipe", str(REAL_RECIPE), f"output_dir={out}", f"data.path={data}"]
    assert main(args) == 0 and (out / "verl_run.json").is_file()
    assert main(args) == 0  # the same run again: verl resumes
    assert main([*args, "optim.lr=2e-6"]) == 2
    assert "optim.lr" in capsys.readouterr().err
    data.write_text(gsm8k_train.read_text().replace("What is 7 + 7?", "What is 7 + 8?"))
    assert main(args) == 2
    assert "training_questions" in capsys.readouterr().err
    assert main([*args, "dry_run=true"]) == 2  # a dry run is checked too


def _fake_verl(script: str) -> list[str]:
    """A process that writes verl file-logger records to $VERL_FILE_LOGGER_PATH."""
    prelude = "import json, os, sys, time\npath = os.environ['VERL_FILE_LOGGER_PATH']\n"
    return [sys.executable, "-c", prelude + textwrap.dedent(script)]


def _record(step: int, entropy: float) -> str:
    return json.dumps({"step": step, "data": {"actor/entropy": entropy, "critic/score/mean": 0.5}})


def test_monitor_follows_verls_log_and_stops_it(tmp_path):
    config = GrpoConfig.model_validate(
        {
            "engine": "verl",
            "output_dir": str(tmp_path),
            "monitor": {"floor": 0.5, "max_relative_drop": None, "action": "stop"},
            "verl": {"poll_s": 0.05},
        }
    )
    script = f"""
        with open(path, "wb", buffering=0) as f:
            for line in {[_record(s, h) for s, h in [(1, 1.0), (2, 0.9), (3, 0.2)]]!r}:
                f.write((line + "\\n").encode())
                time.sleep(0.1)
            time.sleep(60)
    """
    env = {"VERL_FILE_LOGGER_PATH": str(tmp_path / "verl_metrics.jsonl"), "PATH": "/usr/bin"}
    started = time.monotonic()
    returncode = follow(config, _fake_verl(script), env, tmp_path)
    assert time.monotonic() - started < 30 and returncode != 0  # killed, not finished
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["entropy"], r["reward_mean"]) for r in records] == [
        (1, 1.0, 0.5),
        (2, 0.9, 0.5),
        (3, 0.2, 0.5),
    ]
    [event] = [
        json.loads(line) for line in (tmp_path / "collapse_events.jsonl").read_text().splitlines()
    ]
    assert event["step"] == 3 and event["action"] == "stop"


def test_a_verl_restart_rewinds_our_log(tmp_path):
    config = GrpoConfig.model_validate(
        {"engine": "verl", "output_dir": str(tmp_path), "verl": {"poll_s": 0.05}}
    )
    first = [_record(s, 1.0) for s in (1, 2, 3)]
    again = [_record(s, 0.7) for s in (2, 3)]
    # verl reopens its log with "wb" when it resumes from a checkpoint (here: step 1)
    script = f"""
        for lines in ({first!r}, {again!r}):
            with open(path, "wb", buffering=0) as f:
                time.sleep(0.5)
                for line in lines:
                    f.write((line + "\\n").encode())
            time.sleep(0.5)
    """
    env = {"VERL_FILE_LOGGER_PATH": str(tmp_path / "verl_metrics.jsonl")}
    assert follow(config, _fake_verl(script), env, tmp_path) == 0
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["entropy"]) for r in records] == [(1, 1.0), (2, 0.7), (3, 0.7)]


def test_multiple_choice_options_and_the_fallback_reach_verls_reward(tmp_path, gsm8k_train):
    """The options travel in each row's extra_info, where reward/score.py reads them; the
    verifier's last-number fallback in the reward function's kwargs."""
    import pyarrow.parquet as pq

    from reward.score import compute_score

    options = (("A", "4"), ("B", "5"))
    mc = Example(id="mc0", question="2+3?", answer="B", source="mine", choices=options)
    path = write_verl_parquet([mc, *EXAMPLES[:1]], "toy", tmp_path / "train.parquet")
    rows = pq.read_table(path).to_pylist()
    assert rows[0]["extra_info"]["choices"] == [["A", "4"], ["B", "5"]]
    assert rows[1]["extra_info"]["choices"] is None
    reward = rows[0]["reward_model"]["ground_truth"], rows[0]["extra_info"]
    assert compute_score("mine", "\\boxed{5}", *reward)["score"] == 1.0
    assert compute_score("mine", "\\boxed{4}", *reward)["score"] == 0.0

    _, _, cfg = real_recipe(tmp_path, gsm8k_train, "verifier.last_number_fallback=true")
    kwargs = cfg.reward.custom_reward_function.reward_kwargs
    assert kwargs.last_number_fallback is True
    assert compute_score("x", "so it is 20", "20", **kwargs)["score"] == 1.0
    assert compute_score("x", "so it is 20", "20")["score"] == 0.0
