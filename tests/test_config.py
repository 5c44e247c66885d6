"""Recipe loading: overrides, validation errors that name the key, resolved config on disk."""

from pathlib import Path

import pytest
import yaml

from cft_rl.commands import STAGES, resolve
from cft_rl.config import (
    ConfigError,
    GenerationSettings,
    ModelSpec,
    Section,
    apply_overrides,
    load_config,
    save_resolved,
    validate,
)
from cft_rl.toy.config import ToyBuildConfig


class Stage(Section):
    output_dir: str = "runs/x"
    seed: int = 0
    model: ModelSpec = ModelSpec()
    generation: GenerationSettings = GenerationSettings()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_overrides_set_nested_keys_and_parse_yaml_scalars():
    merged = apply_overrides({"a": {"b": 1}}, ["a.b=2", "a.c=true", "d.e=0.5", "f=[1, 2]", "g=hi"])
    assert merged == {"a": {"b": 2, "c": True}, "d": {"e": 0.5}, "f": [1, 2], "g": "hi"}


def test_overrides_do_not_mutate_the_input():
    data = {"a": {"b": 1}}
    apply_overrides(data, ["a.b=2"])
    assert data == {"a": {"b": 1}}


@pytest.mark.parametrize("bad", ["novalue", "=3"])
def test_malformed_override_is_an_error(bad):
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, [bad])


def test_override_with_invalid_yaml_names_the_override():
    bad = "benchmarks=[{benchmark: toy, limit: 5}] n_samples=4"  # two overrides quoted as one
    with pytest.raises(ConfigError, match=r"override 'benchmarks=.*not valid YAML"):
        apply_overrides({}, [bad])


def test_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="seed is a value"):
        apply_overrides({"seed": 1}, ["seed.x=2"])


def test_recipe_then_overrides(tmp_path):
    recipe = write(tmp_path, "seed: 3\ngeneration:\n  batch_size: 8\n")
    config = load_config(Stage, recipe, ["generation.max_new_tokens=17"])
    assert config.seed == 3
    assert config.generation.batch_size == 8
    assert config.generation.max_new_tokens == 17


def test_unknown_key_names_it_and_the_closest_valid_key(tmp_path):
    recipe = write(tmp_path, "generation:\n  max_new_token: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(Stage, recipe, [])
    message = str(err.value)
    assert "generation.max_new_token" in message
    assert "did you mean 'generation.max_new_tokens'" in message
    assert str(recipe) in message


@pytest.mark.parametrize(
    ("entry", "hint"),
    [
        ({"benchmark": "toy", "limt": 3}, "benchmarks.0.limit"),  # in a list entry
        (
            {"benchmark": "x", "path": "p", "fields": {"optoins": "o"}},
            "benchmarks.0.fields.options",
        ),
    ],
)
def test_the_closest_key_is_found_in_lists_and_optional_sections(entry, hint):
    eval_config = resolve(STAGES["eval"][0])
    with pytest.raises(ConfigError, match=f"did you mean '{hint}'"):
        validate(eval_config, {"benchmarks": [entry]}, "recipe.yaml")


def test_unknown_top_level_key_from_an_override():
    with pytest.raises(ConfigError, match="unknown key 'sead'.*did you mean 'seed'"):
        load_config(Stage, None, ["sead=1"])


def test_wrong_type_names_the_key(tmp_path):
    recipe = write(tmp_path, "generation:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match="key 'generation.batch_size'"):
        load_config(Stage, recipe, [])


def test_bad_literal_names_the_key():
    with pytest.raises(ConfigError, match="key 'generation.backend'"):
        load_config(Stage, None, ["generation.backend=tgi"])


def test_missing_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="recipe not found"):
        load_config(Stage, tmp_path / "nope.yaml", [])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(Stage, write(tmp_path, "a: [1, 2\n"), [])
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Stage, write(tmp_path, "- 1\n- 2\n"), [])


def test_save_resolved_writes_defaults_and_round_trips(tmp_path):
    config = load_config(Stage, None, ["seed=7"])
    path = save_resolved(config, tmp_path / "out")
    saved = yaml.safe_load(path.read_text())
    assert saved["seed"] == 7
    assert saved["generation"]["backend"] == "hf"
    assert Stage.model_validate(saved) == config


def _old_recipe(old_key: str) -> dict:
    """A recipe mapping that sets `old_key` (dotted, `*` for the first list item)."""
    data: dict = {}
    node: dict = data
    parts = old_key.split(".")
    for part, after in zip(parts, parts[1:], strict=False):
        if after == "*":
            item: dict = {}
            node[part] = [item]
            node = item
        elif part != "*":
            node = node.setdefault(part, {})
    node[parts[-1]] = 1
    return data


@pytest.mark.parametrize(
    ("schema", "old_key", "new_key"),
    [
        (schema, old, new)
        for schema in (resolve(STAGES[name][0]) for name in ("identify", "sft", "grpo", "eval"))
        for old, new in schema.renamed_keys.items()
    ]
    + [(ToyBuildConfig, old, new) for old, new in ToyBuildConfig.renamed_keys.items()],
)
def test_a_renamed_key_names_its_new_spelling(schema, old_key, new_key):
    with pytest.raises(ConfigError) as err:
        validate(schema, _old_recipe(old_key), "old.yaml")
    shown_old, shown_new = old_key.replace("*", "0"), new_key.replace("*", "0")
    assert f"key '{shown_old}' was renamed: it is now '{shown_new}'" in str(err.value)


def test_every_renamed_key_is_valid_under_its_new_name():
    """The table points at keys that exist (a typo in it would send users nowhere)."""
    schemas = [resolve(STAGES[name][0]) for name in ("identify", "sft", "grpo", "eval")]
    for schema in [*schemas, ToyBuildConfig]:
        for new_key in schema.renamed_keys.values():
            model = schema
            for part in new_key.split("."):
                if part == "*":
                    continue
                field = model.model_fields[part]
                annotation = field.annotation
                model = getattr(annotation, "__args__", [annotation])[0]


def test_a_partial_data_section_keeps_the_stage_defaults():
    """`data: {limit: 10}` in identify still reads the toy world's training split."""
    identify = resolve(STAGES["identify"][0])
    assert validate(identify, {"data": {"limit": 10}}, "recipe").data.benchmark == "toy-train"
    grpo = resolve(STAGES["grpo"][0])
    assert validate(grpo, {"data": {"limit": 10}}, "recipe").data.benchmark == "toy-train"


def test_an_unknown_prompt_template_is_refused_before_any_work():
    eval_config = resolve(STAGES["eval"][0])
    with pytest.raises(ConfigError, match="benchmarks.0.template': unknown prompt template 'toyy'"):
        validate(eval_config, {"benchmarks": [{"benchmark": "toy", "template": "toyy"}]}, "r")
    validation = resolve(STAGES["sft"][0]).model_fields["validation"].annotation
    assert validation.model_validate({"benchmark": "toy-val"}).template is None  # the data's


def test_an_error_says_whether_overrides_took_part(tmp_path):
    recipe = write(tmp_path, "seed: x\n")
    with pytest.raises(ConfigError, match=r"recipe.yaml: invalid config"):
        load_config(Stage, recipe, [])
    with pytest.raises(ConfigError, match=r"recipe.yaml and the command line's overrides: inv"):
        load_config(Stage, recipe, ["generation.batch_size=2"])


def test_an_unquoted_template_gets_a_hint(tmp_path):
    recipe = write(
        tmp_path,
        "benchmarks:\n  - benchmark: x\n    path: p\n    fields:\n      question: {problem}\n",
    )
    with pytest.raises(
        ConfigError, match=r'fields.question.*in YAML, quote a template: "\{problem\}"'
    ):
        load_config(resolve(STAGES["eval"][0]), recipe, [])


# ---- overrides as a shell user writes them; names other tools use ----


def test_list_entries_take_dotted_overrides():
    data = {"benchmarks": [{"benchmark": "toy", "limit": 2}, {"benchmark": "toy-hard"}]}
    merged = apply_overrides(data, ["benchmarks.1.path=/data/x.jsonl", "benchmarks.0.limit=5"])
    assert merged["benchmarks"] == [
        {"benchmark": "toy", "limit": 5},
        {"benchmark": "toy-hard", "path": "/data/x.jsonl"},
    ]
    assert data["benchmarks"][0]["limit"] == 2  # the recipe itself is not changed
    with pytest.raises(
        ConfigError, match=r"benchmarks is a list whose entries are numbered 0 to 1"
    ):
        apply_overrides(data, ["benchmarks.2.limit=3"])


def test_a_template_whose_quotes_the_shell_dropped_is_a_string():
    merged = apply_overrides({}, ["data.fields.question={problem}", "q={a} and {b}", "m={a: 1}"])
    assert merged["data"]["fields"]["question"] == "{problem}"
    assert merged["q"] == "{a} and {b}"
    assert merged["m"] == {"a": 1}  # with a colon it is YAML's mapping, as before


@pytest.mark.parametrize(
    ("override", "ours"),
    [
        ("optim.learning_rate=1e-4", "optim.lr"),
        ("train.num_train_epochs=2", "train.epochs"),
        ("per_device_train_batch_size=4", "train.micro_batch_size"),
        ("max_steps=3", "train.max_steps"),
    ],
)
def test_names_from_other_tools_are_answered_with_the_recipes_own(override, ours):
    from cft_rl.sft.config import SftConfig

    data = apply_overrides({"data": {"path": "runs/x"}}, [override])
    with pytest.raises(
        ConfigError, match=rf"'{override.split('=')[0]}': this recipe calls it '{ours}'"
    ):
        validate(SftConfig, data, "recipe")


def test_grpo_names_from_trl():
    from cft_rl.grpo.config import GrpoConfig

    data = apply_overrides({}, ["num_generations=4", "kl.beta=0.1", "max_steps=2"])
    with pytest.raises(ConfigError) as err:
        validate(GrpoConfig, data, "recipe")
    for theirs, ours in [
        ("num_generations", "rollout.n"),
        ("kl.beta", "kl.coef"),
        ("max_steps", "steps"),
    ]:
        assert f"'{theirs}': this recipe calls it '{ours}'" in str(err.value)


def test_a_template_with_a_colon_and_an_empty_list_from_the_command_line():
    merged = apply_overrides({}, ["data.fields.question=Question: {problem}", "x={}"])
    assert merged["data"]["fields"]["question"] == "Question: {problem}"
    assert merged["x"] == {}
    with pytest.raises(ConfigError, match="benchmarks is an empty list; set the whole list"):
        apply_overrides({"benchmarks": []}, ["benchmarks.0.path=x"])
