"""Each stage names which recipe keys a resumed run must share and which it may change;
a key neither list names is a failure here, so a new setting is classified on purpose."""

import pytest
from pydantic import Field

from cft_rl.eval.config import EvalConfig
from cft_rl.eval.runner import EVAL_RESUME
from cft_rl.grpo.config import GRPO_RESUME, GrpoConfig
from cft_rl.identify.config import IDENTIFY_RESUME, IdentifyConfig
from cft_rl.run_settings import ResumeRule
from cft_rl.sft.config import SftConfig
from cft_rl.sft.trainer import SFT_RESUME
from cft_rl.toy.build import TOY_BUILD_RESUME
from cft_rl.toy.config import ToyBuildConfig

RULES = {
    "identify": (IdentifyConfig, IDENTIFY_RESUME),
    "sft": (SftConfig, SFT_RESUME),
    "grpo": (GrpoConfig, GRPO_RESUME),
    "eval": (EvalConfig, EVAL_RESUME),
    "toy build": (ToyBuildConfig, TOY_BUILD_RESUME),
}


@pytest.mark.parametrize("stage", sorted(RULES))
def test_every_recipe_key_is_classified_once(stage):
    schema, rule = RULES[stage]
    assert rule.unclassified(schema) == []


def test_a_new_key_that_neither_list_names_fails_the_check():
    class Grown(ToyBuildConfig):
        new_setting: int = Field(default=0)

    assert TOY_BUILD_RESUME.unclassified(Grown) == ["new_setting"]


def test_a_key_in_both_lists_fails_the_check():
    both = ResumeRule(
        must_match=(*TOY_BUILD_RESUME.must_match, "eval.problems"),
        may_change=TOY_BUILD_RESUME.may_change,
    )
    assert both.unclassified(ToyBuildConfig) == ["eval.problems"]


def test_settings_hold_the_must_match_keys_and_nothing_else():
    config = GrpoConfig(output_dir="x", steps=7)
    settings = GRPO_RESUME.settings(config)
    assert "steps" not in settings and "output_dir" not in settings
    assert settings["rollout"] == {"n": 8, "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 256}
    clip_cov = GrpoConfig(algorithm={"policy_loss": {"loss_mode": "clip_cov"}})
    assert "micro_batch_size" in clip_cov.resume_settings()["batch"]
    assert "micro_batch_size" not in config.resume_settings()["batch"]
    assert "critic" not in config.resume_settings()
    assert "critic" in GrpoConfig(algorithm={"advantage_estimator": "gae"}).resume_settings()


def test_record_checks_settings_another_shard_wrote_since_the_start(tmp_path):
    from cft_rl.run_settings import RunSettingsError, record_settings

    path = tmp_path / "settings.json"
    record_settings(path, {"counterfactual": {"num_alternatives": 2}})
    record_settings(path, {"counterfactual": {"num_alternatives": 2}})  # the same: fine
    with pytest.raises(RunSettingsError, match="num_alternatives: 2 -> 3"):
        record_settings(path, {"counterfactual": {"num_alternatives": 3}})


def test_settings_an_older_version_recorded_are_compared_where_both_have_them(tmp_path):
    from cft_rl.run_settings import RunSettingsError, check_same_settings

    old = {"data": {"benchmark": "toy-train", "limit": 100}, "seed": 0}  # limit: recorded then
    check_same_settings(tmp_path, old, {"data": {"benchmark": "toy-train"}, "seed": 0})
    with pytest.raises(RunSettingsError, match="data.benchmark"):
        check_same_settings(tmp_path, old, {"data": {"benchmark": "toy-long-train"}, "seed": 0})
