"""identify and eval with `scale.backend: ray` on a local Ray cluster of 2 CPU workers and the
toy model: the same outputs as a single-process run, also when a replica's process is killed
mid-run (its chunk is redone elsewhere) and when the driver is killed (the rerun does not
redo finished chunks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from cft_rl.config import load_config
from cft_rl.eval.config import EvalConfig
from cft_rl.eval.runner import run_eval
from cft_rl.identify.config import IdentifyConfig
from cft_rl.identify.runner import run_identify

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
IDENTIFY = ROOT / "recipes" / "toy" / "identify.yaml"
EVAL = ROOT / "recipes" / "toy" / "eval.yaml"
RAY = ["scale.backend=ray", "scale.workers=2", "verifier.num_workers=1"]
RESULTS = Path("shards") / "results-00000-of-00001.jsonl"
GREEDY = Path("shards") / "greedy-00000-of-00001.jsonl"


def identify_config(out: Path, *overrides: str, limit: int = 8) -> IdentifyConfig:
    settings = [f"output_dir={out}", f"data.limit={limit}", "generation.batch_size=2"]
    return load_config(IdentifyConfig, IDENTIFY, [*settings, *overrides])


@pytest.fixture(scope="module")
def single_identify(tmp_path_factory) -> dict[int, Path]:
    """Single-process runs on 8 and 12 questions: what every Ray layout must give."""
    out = tmp_path_factory.mktemp("single")
    return {
        limit: run_identify(
            identify_config(out / str(limit), "verifier.num_workers=1", limit=limit)
        )
        for limit in (8, 12)
    }


def replica_processes(since: float) -> list[psutil.Process]:
    """The Ray replica processes started after `since` (Ray titles them after the actor
    class; those of an earlier test's cluster may still be exiting). Their verifier worker
    processes, forked from them, carry the same title: only the raylet's children count."""
    titled = {}
    for process in psutil.process_iter(["cmdline", "create_time", "ppid"]):
        cmdline = process.info["cmdline"] or []
        if cmdline and cmdline[0].startswith("ray::_Replica"):
            titled[process.pid] = process
    return [
        process
        for process in titled.values()
        if process.info["ppid"] not in titled and process.info["create_time"] > since
    ]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_identify_on_ray_equals_the_single_process_run(tmp_path, single_identify):
    path = run_identify(identify_config(tmp_path, *RAY))
    assert pq.read_table(path).equals(pq.read_table(single_identify[8]))
    summary = json.loads((tmp_path / "summary.json").read_text())
    replicas = summary["scale"]["chunks_per_replica"]
    assert sum(replicas.values()) == 4 and len(replicas) <= 2  # 8 questions in chunks of 2
    # A rerun of the finished run starts no replicas and keeps the counts.
    run_identify(identify_config(tmp_path, *RAY))
    assert json.loads((tmp_path / "summary.json").read_text())["scale"] == summary["scale"]


def test_a_killed_replica_has_its_chunk_redone_and_the_result_is_the_same(
    tmp_path, single_identify
):
    config = identify_config(tmp_path, *RAY, "generation.batch_size=1", limit=12)
    run = threading.Thread(target=run_identify, args=(config,))
    started = time.time()
    run.start()
    deadline = time.monotonic() + 300
    while not lines(tmp_path / RESULTS):  # the replicas are up and working
        assert run.is_alive() and time.monotonic() < deadline, "no result came"
        time.sleep(0.05)
    originals = replica_processes(since=started)
    assert len(originals) == 2
    originals[0].send_signal(signal.SIGKILL)
    run.join(timeout=300)
    assert not run.is_alive()

    assert pq.read_table(tmp_path / "critical_tokens.parquet").equals(
        pq.read_table(single_identify[12])
    )
    replicas = json.loads((tmp_path / "summary.json").read_text())["scale"]["chunks_per_replica"]
    assert sum(replicas.values()) == 12
    # Ray restarted the killed replica (another process) and it took chunks.
    pids = {int(name.rsplit(":", 1)[1]) for name in replicas}
    assert pids - {process.pid for process in originals}
    assert sorted(r["index"] for r in lines(tmp_path / RESULTS)) == list(range(12))


def test_a_killed_driver_resumes_without_redoing_finished_chunks(tmp_path, single_identify):
    argv = [sys.executable, "-m", "cft_rl.cli", "identify", "--recipe", str(IDENTIFY)]
    argv += [f"output_dir={tmp_path}", "data.limit=12", "generation.batch_size=1", *RAY]
    driver = subprocess.Popen(argv, start_new_session=True, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(lines(tmp_path / RESULTS)) < 3:
            assert driver.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run wrote too few results in 300 s"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the Ray processes it started, if any are left
    done_before = {r["index"] for r in lines(tmp_path / RESULTS)}
    assert done_before and not (tmp_path / "critical_tokens.parquet").exists()

    run_identify(identify_config(tmp_path, *RAY, "generation.batch_size=1", limit=12))
    results = [r["index"] for r in lines(tmp_path / RESULTS)]
    assert sorted(results) == list(range(12))  # each question once: none redone
    greedy = [r["index"] for r in lines(tmp_path / GREEDY)]
    assert sorted(greedy) == list(range(12))
    assert pq.read_table(tmp_path / "critical_tokens.parquet").equals(
        pq.read_table(single_identify[12])
    )


def test_eval_on_ray_equals_the_single_process_run(tmp_path):
    settings = ["benchmarks=[{benchmark: toy, limit: 12, template: toy}]", "n_samples=4"]
    settings += ["generation.batch_size=8", "verifier.num_workers=1"]
    single = run_eval(load_config(EvalConfig, EVAL, [f"output_dir={tmp_path / 'one'}", *settings]))
    on_ray = run_eval(
        load_config(EvalConfig, EVAL, [f"output_dir={tmp_path / 'ray'}", *settings, *RAY])
    )
    replicas = on_ray.pop("scale")["chunks_per_replica"]
    assert sum(replicas.values()) == 2 + 6  # greedy: 12 in batches of 8; samples: 2 per batch
    for summary in (single, on_ray):
        for benchmark in summary["benchmarks"]:
            benchmark.pop("seconds_this_run")
    assert on_ray == single
