"""`cft-rl`: the command line. Subcommands only; the work lives in the stage modules.

Recipe-driven stages take `--recipe PATH` and dotted `key=value` overrides. The commands,
their schemas and runners are listed in cft_rl.commands.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cft_rl.commands import REPORTS, STAGES, TOY_COMMANDS, resolve
from cft_rl.config import ConfigError, load_config, save_resolved
from cft_rl.console import quiet_libraries
from cft_rl.errors import UserError

# The first line of every shipped recipe: "# cft-rl <command> --recipe <its path>".
RECIPE_HEADER = re.compile(r"^# cft-rl (toy \w+|\w+) --recipe (\S+)")


# Where each recipe-driven command's keys are explained.
COMMAND_DOCS = {"experiment": "docs/experiments.md", "build": "docs/toy.md"}


def _add_recipe_args(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--recipe", help="YAML recipe (see recipes/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides")
    parser.epilog = (
        f"The recipe's keys are explained in {COMMAND_DOCS.get(name, f'docs/{name}.md')}; "
        "every run writes its whole config, defaults included, to <output_dir>/config.yaml. "
        "Overrides are key=value, e.g. output_dir=runs/mine; a nested key is dotted, "
        "section.key=value."
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cft-rl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, (_, _, help_text) in STAGES.items():
        _add_recipe_args(commands.add_parser(name, help=help_text, description=help_text), name)

    report = commands.add_parser("report", help="plots and tables from run directories")
    kinds = report.add_subparsers(dest="kind", required=True)
    for kind, (_, help_text) in REPORTS.items():
        sub = kinds.add_parser(kind, help=help_text)
        sub.add_argument("run_dirs", nargs="+", help="output directories of earlier runs")
        sub.add_argument("--out", help="where to write the report (default: first run dir)")

    toy = commands.add_parser("toy", help="the embedded toy world")
    toy_commands = toy.add_subparsers(dest="toy_command", required=True)
    for name, (_, _, help_text) in TOY_COMMANDS.items():
        _add_recipe_args(toy_commands.add_parser(name, help=help_text, description=help_text), name)
    return parser


def _run_stage(schema_path: str, runner_path: str, args: argparse.Namespace) -> None:
    command = f"toy {args.toy_command}" if args.command == "toy" else args.command
    _check_recipe_is_for(command, args.recipe)
    try:
        config = load_config(resolve(schema_path), args.recipe, args.overrides)
    except ConfigError as err:
        if args.recipe is None and "Field required" in str(err):
            raise ConfigError(f"{err}\n(no --recipe given; recipes/ has one per stage)") from None
        raise
    quiet_libraries()
    runner: Callable[[Any], Any] = resolve(runner_path)
    save_resolved(config, config.output_dir)
    runner(config)


def _check_recipe_is_for(command: str, recipe: str | None) -> None:
    """A shipped recipe names its command; running it with another one is a slip."""
    if recipe is None or not Path(recipe).is_file():
        return  # load_config names a missing recipe
    with open(recipe, encoding="utf-8") as handle:
        match = RECIPE_HEADER.match(handle.readline())
    if match and match[1] != command:
        raise UserError(f"{recipe} is a recipe for `cft-rl {match[1]}`, not `cft-rl {command}`")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "report":
            function_path, _ = REPORTS[args.kind]
            resolve(function_path)(args.run_dirs, out=args.out)
        elif args.command == "toy":
            schema_path, runner_path, _ = TOY_COMMANDS[args.toy_command]
            _run_stage(schema_path, runner_path, args)
        else:
            schema_path, runner_path, _ = STAGES[args.command]
            _run_stage(schema_path, runner_path, args)
    except UserError as err:
        print(f"cft-rl {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Every stage writes its results as it goes: nothing finished is lost. Under torchrun
        # every rank is interrupted; one of them says so.
        if os.environ.get("RANK", "0") != "0":
            return 130
        print(
            f"\ncft-rl {args.command}: interrupted; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
