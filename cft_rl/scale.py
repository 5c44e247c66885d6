"""Scale-out of identify and eval over a Ray cluster: model replicas as Ray actors, chunks of
work dispatched to whichever replica is free.

Ray actors rather than Ray Data: each replica holds a model, a decoder and a verifier pool
for the whole run (stateful), a chunk's result must reach the stage's own restartable
store as soon as it is done, and chunks must be exactly the single-process run's (so the
output is the same whatever the layout). `ActorPool` gives the dynamic dispatch (a chunk
goes to the first free replica) and the back-pressure (one chunk per replica at a time;
the driver holds the chunks, not their results); the actors' `max_restarts` and
`max_task_retries` give the retries: a replica whose process dies is restarted, and the
chunk it was running is run again. The driver writes each result to the store as it
arrives, so a killed driver loses only the chunks in flight. Tasks carry their chunk's
questions (and, on a resume, its stored greedy answers), so replicas read no data files.
"""

from __future__ import annotations

import os
import socket
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field

from cft_rl.config import Section

Task = TypeVar("Task")


class ScaleSettings(Section):
    """How a stage's work is spread: in this process, or over Ray actors."""

    backend: Literal["local", "ray"] = "local"
    # Model replicas (Ray actors): one per GPU; on CPU, one per worker process.
    workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    # GPUs each replica holds: 1, or as many as a vLLM replica's engine uses (tensor parallel).
    gpus_per_worker: float = Field(default=0.0, ge=0)
    # Times a replica is restarted after its process died (and its chunk run again).
    max_retries: int = Field(default=3, ge=0)
    # null: start a local Ray instance; "auto" or "ray://host:10001": join that cluster.
    ray_address: str | None = None


class _Replica:
    """The Ray actor around one ChunkWorker; says who it is with every result."""

    def __init__(self, worker_class: type, *args: Any) -> None:
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.worker = worker_class(*args)

    def run(self, task: Any) -> tuple[str, Any]:
        return self.name, self.worker.run(task)


def portable(config_data: dict[str, Any]) -> dict[str, Any]:
    """A stage's config as a replica reads it the same in its own working directory (Ray
    starts workers elsewhere, on other nodes too): a local model directory made absolute.
    Data needs nothing: the driver sends each chunk's questions with the task."""
    path = Path(config_data["model"]["path"]).expanduser()
    if path.exists():
        config_data["model"]["path"] = str(path.resolve())
    return config_data


def run_on_ray(
    settings: ScaleSettings,
    worker_class: type,
    worker_args: tuple,
    tasks: Iterable[Task],
    on_result: Callable[[Any], None],
) -> Counter:
    """Run every task on a pool of `settings.workers` replicas of `worker_class(*worker_args)`
    (a class with `run(task)`), calling `on_result` in this process as each result arrives
    (in completion order). Returns how many tasks each replica ran."""
    import ray
    from ray.util import ActorPool

    started_here = not ray.is_initialized()
    if started_here:
        init: dict[str, Any] = {"include_dashboard": False}
        if settings.ray_address is None:
            init["num_cpus"] = settings.workers * settings.cpus_per_worker
            if settings.gpus_per_worker:
                init["num_gpus"] = settings.workers * settings.gpus_per_worker
        ray.init(address=settings.ray_address, **init)
    per_replica: Counter = Counter()
    try:
        replica = ray.remote(_Replica).options(
            num_cpus=settings.cpus_per_worker,
            num_gpus=settings.gpus_per_worker,
            max_restarts=settings.max_retries,
            max_task_retries=settings.max_retries,
        )
        pool = ActorPool(
            [replica.remote(worker_class, *worker_args) for _ in range(settings.workers)]
        )
        for task in tasks:
            pool.submit(lambda actor, t: actor.run.remote(t), task)
        while pool.has_next():
            name, result = pool.get_next_unordered()
            per_replica[name] += 1
            on_result(result)
    finally:
        if started_here:
            ray.shutdown()
    return per_replica
