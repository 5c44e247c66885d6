"""Every shipped recipe validates against the schema of the command it is written for.

Convention: the first line of each recipe is the command that runs it, e.g.
`# cft-rl eval --recipe recipes/toy/eval.yaml`; that names the schema to check.
"""

import json
from pathlib import Path

import pytest

from cft_rl.cli import RECIPE_HEADER
from cft_rl.commands import STAGES, TOY_COMMANDS, resolve
from cft_rl.config import load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))


def schema_path(command: str) -> str:
    words = command.split()
    table = TOY_COMMANDS if words[0] == "toy" else STAGES
    return table[words[-1]][0]


def test_there_are_recipes():
    assert RECIPES, "no recipes shipped"


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_header_names_its_command_and_itself(recipe):
    first_line = recipe.read_text().splitlines()[0]
    match = RECIPE_HEADER.match(first_line)
    assert match, f"{recipe}: first line must be '# cft-rl <command> --recipe <path>'"
    assert match.group(2) == str(recipe.relative_to(ROOT))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT)))
def test_recipe_validates(recipe):
    command = RECIPE_HEADER.match(recipe.read_text().splitlines()[0]).group(1)
    load_config(resolve(schema_path(command)), recipe, [])


@pytest.mark.parametrize("config", sorted((ROOT / "recipes").rglob("*.json")), ids=lambda p: p.name)
def test_json_configs_parse(config):
    assert isinstance(json.loads(config.read_text()), dict)
