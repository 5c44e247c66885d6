"""The hf (cached engine) and vLLM (backend engine, prefix caching) paths give identical
masks on the shipped toy model. Runs where vllm is installed (`make test-vllm`)."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cft_rl.config import load_config
from cft_rl.critical.config import IdentifyConfig
from cft_rl.critical.runner import run_identify

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "identify.yaml"
COLUMNS = ["id", "response_token_ids", "critical_mask", "failure_fraction"]


def identify(tmp_path, backend: str):
    config = load_config(
        IdentifyConfig,
        RECIPE,
        [
            f"output_dir={tmp_path / backend}",
            f"generation.backend={backend}",
            "generation.gpu_memory_utilization=0.3",
            "data.limit=8",
        ],
    )
    return pq.read_table(run_identify(config), columns=COLUMNS).to_pylist()


def test_hf_and_vllm_masks_are_identical(tmp_path):
    hf, vllm = identify(tmp_path, "hf"), identify(tmp_path, "vllm")
    assert hf, "the toy model answered none of the questions correctly"
    assert [r["response_token_ids"] for r in hf] == [r["response_token_ids"] for r in vllm]
    assert [r["critical_mask"] for r in hf] == [r["critical_mask"] for r in vllm]
