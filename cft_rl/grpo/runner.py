"""`cft-rl grpo`: run the recipe on the engine it names."""

from __future__ import annotations

from cft_rl.grpo.config import GrpoConfig
from cft_rl.grpo.local_engine import run_local
from cft_rl.grpo.verl_engine import run_verl


def run_grpo(config: GrpoConfig) -> None:
    if config.engine == "verl":
        run_verl(config)
        return
    if config.dry_run:
        print("dry_run: only the verl engine has a launch command to print; nothing to do")
        return
    run_local(config)
