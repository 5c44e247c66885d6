"""`cft-rl identify`: build the correct set, then find its critical tokens.

Work is cut into chunks of `generation.batch_size` questions (by input order); shard S of
N takes chunks S, S+N, S+2N, ... Each chunk's greedy answers are generated as one batch,
so an answer never depends on how the run was sharded or resumed. Then each kept answer
is perturbed position by position (cft_rl.identify.counterfactual) and its result appended
to the shard's JSONL file. A rerun skips what is done; the last shard to finish merges
everything into OUT/critical_tokens.parquet. With `scale.backend: ray` the one shard's
chunks go to model replicas on a Ray cluster (cft_rl.scale), whichever is free, and this
process appends their results to the same files as they arrive.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from cft_rl.data import Example
from cft_rl.data.prompts import format_prompt
from cft_rl.errors import UserError
from cft_rl.generation import GenerationBackend, SamplingParams, make_backend
from cft_rl.identify.config import IdentifyConfig
from cft_rl.identify.counterfactual import Decoder, identify_response
from cft_rl.identify.dataset import finished_shards, merged_records, write_dataset
from cft_rl.identify.decoders import DECODERS, ContinuationSampling
from cft_rl.identify.progress import Progress
from cft_rl.identify.store import ShardFiles, check_settings, write_json
from cft_rl.identify.summary import one_line, summarize
from cft_rl.modeling import load_causal_lm, resolve_model_path
from cft_rl.outputs import IDENTIFY_DATASET, IDENTIFY_SUMMARY
from cft_rl.scale import portable, run_on_ray


@dataclass
class Workbench:
    """The model-side objects of a run. Built on first use, so a finished shard or a merge
    loads no model; tests hand in their own."""

    config: IdentifyConfig
    backend: GenerationBackend | None = None
    decoder: Decoder | None = None
    verifier: Any = None
    _owned: list[Any] = field(default_factory=list)

    def get_backend(self) -> GenerationBackend:
        if self.backend is None:
            self.backend = make_backend(self.config.model, self.config.generation)
            if hasattr(self.backend, "close"):  # vLLM: free the engine when done
                self._owned.append(self.backend)
        return self.backend

    def get_decoder(self) -> Decoder:
        if self.decoder is None:
            settings = self.config.counterfactual
            sampling = ContinuationSampling(
                temperature=0.0 if settings.continuation == "greedy" else settings.temperature,
                seed=self.config.seed,
            )
            decoder = self.config.decoder
            kind = decoder.kind
            if kind == "auto":
                kind = "cached" if self.config.generation.backend == "hf" else "backend"
            self.decoder = DECODERS.get(kind).for_run(
                self, sampling, decoder.max_batch_rows, decoder.batching
            )
        return self.decoder

    def get_verifier(self):
        if self.verifier is None:
            self.verifier = self.config.verifier.make()
            self._owned.append(self.verifier)
        return self.verifier

    def close(self) -> None:
        for owned in self._owned:
            owned.close()

    def hf_model(self) -> torch.nn.Module:
        """The hf backend's model, else (vLLM for the correct set) a transformers copy."""
        model = getattr(self.get_backend(), "model", None)
        if model is None:
            model = load_causal_lm(self.config.model)
        return model


def run_identify(config: IdentifyConfig, workbench: Workbench | None = None) -> Path:
    """Run this shard (unless merge_only), then merge if every shard is done."""
    out_dir = Path(config.output_dir)
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    examples = config.data.load()
    if not config.merge_only:
        settings = config.result_settings()
        check_settings(out_dir, settings)
        files = ShardFiles(out_dir, config.shard_index, config.num_shards, settings)
        if config.scale.backend == "ray":
            identify_on_ray(config, examples, files)
        else:
            workbench = workbench or Workbench(config)
            try:
                identify_shard(config, examples, workbench, files)
            finally:
                workbench.close()
    expected = [
        sum(map(len, shard_chunks(config, len(examples), i))) for i in range(config.num_shards)
    ]
    shards, missing = finished_shards(out_dir, expected)
    if missing:
        if config.merge_only:
            raise UserError(f"{out_dir}: shards {missing} of {config.num_shards} are not done")
        print(f"shard {config.shard_index} done; waiting for shards {missing} to merge")
        return out_dir
    return merge(config, shards, len(examples))


def shard_chunks(
    config: IdentifyConfig, count: int, shard_index: int | None = None
) -> list[list[int]]:
    """The question indices of each chunk of a shard (this run's unless given), in order.
    A chunk's questions are the same whatever `count` is beyond them, so a run extended to
    more questions keeps its earlier chunks' work."""
    size = config.generation.batch_size
    shard = config.shard_index if shard_index is None else shard_index
    return [
        list(range(start, min(start + size, count)))
        for start in range(shard * size, count, config.num_shards * size)
    ]


def identify_shard(
    config: IdentifyConfig, examples: list[Example], workbench: Workbench, files: ShardFiles
) -> None:
    """Answer and identify every question of this shard's chunks that is not done yet."""
    greedy, results = files.greedy(), files.results()
    chunks = shard_chunks(config, len(examples))
    total = sum(len(chunk) for chunk in chunks)
    done = sum(i in results for chunk in chunks for i in chunk)
    progress = Progress(total, done)
    progress.starting(_start_line(config, total, len(chunks)))
    for number, chunk in enumerate(chunks, start=1):
        pending = [index for index in chunk if index not in results]
        if not pending:
            continue
        where = f"chunk {number}/{len(chunks)}"
        unanswered = [index for index in chunk if index not in greedy]
        if unanswered:  # the whole chunk, or the questions a raised data.limit added to it
            progress.within_chunk(f"{where}: answering {len(unanswered)} questions greedily", True)
            records = answer_chunk(config, examples, unanswered, workbench)
            files.append_greedy(records)
            greedy.update((record["index"], record) for record in records)
        kept = sum(greedy[index]["kept"] for index in pending)
        progress.within_chunk(f"{where}: {kept} of {len(pending)} answers right, identifying", True)
        continuations = 0
        for position, index in enumerate(pending, start=1):
            record = identify_record(config, greedy[index], workbench)
            files.append_result(record)
            results[index] = record
            continuations += record["stats"].get("continuations", 0)
            progress.within_chunk(
                f"{where}: {position}/{len(pending)} questions, {continuations} continuations"
            )
        done += len(pending)
        progress.chunk_done(done)
    files.mark_done(summarize([results[i] for chunk in chunks for i in chunk]))


def _start_line(config: IdentifyConfig, questions: int, chunks: int) -> str:
    shard = f" (shard {config.shard_index} of {config.num_shards})" if config.num_shards > 1 else ""
    return (
        f"{questions} questions of {config.data.benchmark}{shard}, model {config.model.path}, "
        f"{chunks} chunk{'s' if chunks != 1 else ''} of up to {config.generation.batch_size}"
    )


class ChunkWorker:
    """What each Ray replica runs (cft_rl.scale): the run's model, decoder and verifier, built
    once; a chunk's greedy answers (unless the store has them) and its pending questions.
    The chunk's questions come with the task, so a replica on another node needs the
    model, not the data files."""

    def __init__(self, config_data: dict[str, Any]) -> None:
        self.config = IdentifyConfig.model_validate(config_data)
        if self.config.cpu_threads is not None:
            torch.set_num_threads(self.config.cpu_threads)
        self.workbench = Workbench(self.config)

    def run(self, task: tuple[dict[int, Example], list[dict], list[int]]):
        """(the chunk's questions by index, the greedy records the store has of them, the
        questions still to identify) -> (the greedy records made here or None, one result
        record per pending question)."""
        questions, stored, pending = task
        greedy = {record["index"]: record for record in stored}
        unanswered = [index for index in questions if index not in greedy]
        made = (
            answer_chunk(self.config, questions, unanswered, self.workbench) if unanswered else None
        )
        greedy.update((record["index"], record) for record in made or [])
        return made, [identify_record(self.config, greedy[i], self.workbench) for i in pending]


def identify_on_ray(config: IdentifyConfig, examples: list[Example], files: ShardFiles) -> None:
    """identify_shard's work, each chunk on the first free Ray replica; results appended to
    the store in the order they arrive (the merge sorts them)."""
    greedy, results = files.greedy(), files.results()
    chunks = shard_chunks(config, len(examples))
    tasks = []
    for chunk in chunks:
        pending = [index for index in chunk if index not in results]
        if pending:
            stored = [greedy[i] for i in chunk if i in greedy]
            tasks.append(({i: examples[i] for i in chunk}, stored, pending))
    total = sum(len(chunk) for chunk in chunks)
    done = total - sum(len(pending) for _, _, pending in tasks)
    progress = Progress(total, done)
    progress.starting(
        _start_line(config, total, len(chunks)) + f", on {config.scale.workers} Ray replicas"
    )
    continuations = 0

    def store(result) -> None:
        nonlocal done, continuations
        made, records = result
        if made is not None:
            files.append_greedy(made)
        for record in records:
            files.append_result(record)
            results[record["index"]] = record
            continuations += record["stats"].get("continuations", 0)
        done += len(records)
        rate = continuations / max(progress.elapsed(), 1e-9)
        progress.chunk_done(done, f", {rate:.0f} continuations/s")

    if tasks:  # a rerun of a finished run starts no replicas
        data = portable(config.model_dump())
        replicas = run_on_ray(config.scale, ChunkWorker, (data,), tasks, store)
        write_json(files.out_dir / "shards" / "replicas.json", {"chunks_per_replica": replicas})
    files.mark_done(summarize([results[i] for chunk in chunks for i in chunk]))


def answer_chunk(
    config: IdentifyConfig,
    examples: Sequence[Example] | Mapping[int, Example],
    chunk: list[int],
    workbench: Workbench,
) -> list[dict[str, Any]]:
    """Greedy answers to one chunk of questions, verified: the correct set's candidates."""
    backend = workbench.get_backend()
    tokenizer = backend.tokenizer
    start = time.perf_counter()
    prompts = [format_prompt(tokenizer, examples[i].question, config.data.template) for i in chunk]
    prompt_ids = [tokenizer(text, add_special_tokens=False).input_ids for text in prompts]
    params = SamplingParams(max_new_tokens=config.generation.max_new_tokens, temperature=0.0)
    completions = [samples[0] for samples in backend.generate(prompt_ids, params)]
    verdicts = workbench.get_verifier().verify_batch(
        [c.text for c in completions],
        [examples[i].answer for i in chunk],
        [examples[i].choices for i in chunk],
    )
    seconds = (time.perf_counter() - start) / len(chunk)
    return [
        {
            "index": index,
            "id": examples[index].id,
            "source": examples[index].source,
            "question": examples[index].question,
            "answer": examples[index].answer,
            "choices": examples[index].choices,
            "prompt": prompt,
            "prompt_token_ids": ids,
            "response": completion.text,
            "response_token_ids": completion.token_ids,
            "finish_reason": completion.finish_reason,
            "predicted": verdict.predicted,
            "verdict": verdict.reason,
            "kept": verdict.correct,
            "greedy_s": seconds,
        }
        for index, prompt, ids, completion, verdict in zip(
            chunk, prompts, prompt_ids, completions, verdicts, strict=True
        )
    ]


def identify_record(
    config: IdentifyConfig, greedy: dict[str, Any], workbench: Workbench
) -> dict[str, Any]:
    """The greedy record, plus its critical tokens when it was kept."""
    record = {key: value for key, value in greedy.items() if key != "greedy_s"}
    record["stats"] = {"greedy_s": greedy["greedy_s"]}
    if not greedy["kept"]:
        return record
    backend = workbench.get_backend()
    tokenizer = backend.tokenizer
    decoder = workbench.get_decoder()
    before = vars(decoder.stats).copy()
    result = identify_response(
        greedy["prompt_token_ids"],
        greedy["response_token_ids"],
        greedy["answer"],
        decoder=decoder,
        verifier=workbench.get_verifier(),
        tokenizer=tokenizer,
        settings=config.counterfactual,
        max_new_tokens=config.generation.max_new_tokens,
        excluded_ids=excluded_token_ids(config, tokenizer, backend.eos_ids),
        eos_ids=backend.eos_ids,
        near_tie_margin=config.decoder.near_tie_margin,
        choices=greedy.get("choices"),
    )
    work = {key: value - before[key] for key, value in vars(decoder.stats).items()}
    record.update(
        response_tokens=[tokenizer.decode([t]) for t in greedy["response_token_ids"]],
        critical_mask=result.critical_mask,
        failure_fraction=result.failure_fraction,
        alternatives=result.alternatives,
    )
    record["stats"].update(work, **result.stats)
    return record


def excluded_token_ids(config: IdentifyConfig, tokenizer, eos_ids: set[int]) -> set[int]:
    """Tokens that may not serve as alternatives."""
    excluded = set(config.counterfactual.exclude_token_ids)
    if config.counterfactual.exclude_special_tokens:
        excluded |= set(tokenizer.all_special_ids) | set(eos_ids)
    return excluded


def merge(config: IdentifyConfig, shards: list[ShardFiles], count: int) -> Path:
    """One dataset and one summary from all shards' results on the first `count` questions
    (a run whose data.limit was lowered reads the prefix of its work)."""
    out_dir = Path(config.output_dir)
    records = [record for record in merged_records(shards) if record["index"] < count]
    provenance = provenance_of(config)
    path = write_dataset([r for r in records if r["kept"]], out_dir / IDENTIFY_DATASET, provenance)
    summary = summarize(records)
    replicas = out_dir / "shards" / "replicas.json"
    if replicas.is_file():  # the last Ray launch's chunks per replica
        summary["scale"] = {"backend": "ray", **json.loads(replicas.read_text())}
    write_json(out_dir / IDENTIFY_SUMMARY, {**summary, "provenance": provenance})
    print(one_line(summary), file=sys.stderr)
    print(f"wrote {path}", file=sys.stderr)
    return path


def provenance_of(config: IdentifyConfig) -> dict[str, Any]:
    """What made the dataset: settings, the model (with a hash of its config and weights'
    names and sizes, cheap even for large models), library versions."""
    model_dir = Path(resolve_model_path(config.model.path))
    fingerprint = hashlib.sha256()
    if model_dir.is_dir():
        for item in sorted(model_dir.iterdir()):
            if item.suffix == ".json":
                fingerprint.update(item.name.encode() + item.read_bytes())
            elif item.is_file():
                fingerprint.update(f"{item.name}:{item.stat().st_size}".encode())
    return {
        "stage": "identify",
        "model": config.model.path,
        "model_dir": str(model_dir),
        "model_fingerprint": fingerprint.hexdigest() if model_dir.is_dir() else None,
        "settings": config.result_settings(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
