"""`cft-rl eval`: greedy accuracy and pass@k on each benchmark of the recipe.

Per benchmark: one greedy answer and `n_samples` sampled answers per problem, each
scored by the one verifier. Generations go to <output_dir>/generations/<name>.jsonl
as each batch is scored (a rerun resumes from there); the summary goes to
summary.json and summary.md. With `scale.backend: ray` the batches go to model replicas
on a Ray cluster (cft_rl.scale), whichever is free, and this process appends their
generations to the same logs as they arrive.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import Progress

from cft_rl.console import progress_bar
from cft_rl.data import DataError, Example
from cft_rl.data.prompts import format_prompt
from cft_rl.errors import UserError
from cft_rl.eval.config import BenchmarkSpec, EvalConfig
from cft_rl.eval.log import GREEDY, GenerationLog
from cft_rl.eval.passk import mean_pass_at_k
from cft_rl.files import write_text_atomic
from cft_rl.generation import GenerationBackend, SamplingParams, make_backend
from cft_rl.modeling import resolve_model_path
from cft_rl.outputs import EVAL_SUMMARY_JSON, EVAL_SUMMARY_MD
from cft_rl.run_settings import ResumeRule, value_at
from cft_rl.scale import portable, run_on_ray
from reward import Verifier


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """Evaluate every benchmark of `config`; returns the summary that is also written."""
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    # Every benchmark is read first: a bad name or file fails before the model loads.
    benchmarks = [(spec, spec.load(f"benchmarks.{i}")) for i, spec in enumerate(config.benchmarks)]
    for spec, examples in benchmarks:
        _check_unique_ids(spec, examples)
    if config.scale.backend == "ray":
        results, replicas = _eval_on_ray(config, benchmarks, out, console)
    else:
        results, replicas = _eval_here(config, benchmarks, out, console), None
    summary = {
        "model": config.model.path,
        "n_samples": config.n_samples,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "ks": config.pass_ks(),
        "benchmarks": results,
    }
    if replicas is not None:
        summary["scale"] = {"backend": "ray", "chunks_per_replica": replicas}
    write_text_atomic(out / EVAL_SUMMARY_JSON, json.dumps(summary, indent=2) + "\n")
    table = markdown_table(summary)
    (out / EVAL_SUMMARY_MD).write_text(table)
    console.print(table)
    console.print(
        f"wrote {out / EVAL_SUMMARY_JSON}, {out / EVAL_SUMMARY_MD} and {out / 'generations'}/"
    )
    return summary


def _eval_here(config: EvalConfig, benchmarks, out: Path, console: Console) -> list[dict]:
    backend = make_backend(config.model, config.generation)
    results = []
    with config.verifier.make() as verifier, _progress(console) as progress:
        for spec, examples in benchmarks:
            evaluator = _BenchmarkEval(config, spec, backend, verifier)
            log = evaluator.open_log(out / "generations")
            task = progress.add_task(
                spec.benchmark,
                total=len(examples),
                completed=evaluator.problems_done(examples, log),
            )
            started = time.perf_counter()
            for chunk, params, samples in evaluator.missing(examples, log):
                missing = sum(not log.has(e.id, s) for e in chunk for s in samples)
                log.append(evaluator.generate(chunk, params, samples))
                progress.advance(task, missing / (evaluator.n + 1))
            results.append(evaluator.summarise(examples, log, time.perf_counter() - started))
    return results


class ChunkWorker:
    """What each Ray replica runs (cft_rl.scale): the model's backend and a verifier, built
    once; the generations of one batch of one benchmark's problems (sent with the task)."""

    def __init__(self, config_data: dict[str, Any]) -> None:
        self.config = EvalConfig.model_validate(config_data)
        if self.config.cpu_threads is not None:
            torch.set_num_threads(self.config.cpu_threads)
        self.backend = make_backend(self.config.model, self.config.generation)
        self.verifier = self.config.verifier.make()
        self.specs = {spec.benchmark: spec for spec in self.config.benchmarks}

    def run(
        self, task: tuple[str, list[Example], SamplingParams, list]
    ) -> tuple[str, list[dict[str, Any]]]:
        """(benchmark, problems, sampling, sample labels) -> (benchmark, log records)."""
        name, examples, params, samples = task
        evaluator = _BenchmarkEval(self.config, self.specs[name], self.backend, self.verifier)
        return name, evaluator.generate(examples, params, samples)


def _eval_on_ray(config: EvalConfig, benchmarks, out: Path, console: Console):
    """_eval_here's batches on the first free Ray replica; generations appended to each
    benchmark's log in the order they arrive (records are matched by id and sample)."""
    evaluators, logs, tasks = {}, {}, []
    for spec, examples in benchmarks:
        evaluator = _BenchmarkEval(config, spec, None, None)
        log = evaluator.open_log(out / "generations")
        tasks += [(spec.benchmark, *batch) for batch in evaluator.missing(examples, log)]
        evaluators[spec.benchmark], logs[spec.benchmark] = evaluator, log
    started = time.perf_counter()
    replicas = {}
    if tasks:  # a rerun of a finished run starts no replicas
        with _progress(console) as progress:
            bar = progress.add_task("chunks (ray)", total=len(tasks))

            def store(result) -> None:
                name, records = result
                logs[name].append(records)
                progress.advance(bar, 1)

            data = portable(config.model_dump())
            replicas = run_on_ray(config.scale, ChunkWorker, (data,), tasks, store)
    # Batches of all benchmarks interleave on the replicas: each gets the whole run's time.
    seconds = time.perf_counter() - started
    results = [
        evaluators[spec.benchmark].summarise(examples, logs[spec.benchmark], seconds)
        for spec, examples in benchmarks
    ]
    return results, dict(replicas)


class _BenchmarkEval:
    """Generates and scores what the log of one benchmark still lacks, then summarises it."""

    def __init__(self, config: EvalConfig, spec: BenchmarkSpec, backend, verifier) -> None:
        self.config = config
        self.spec = spec
        self.backend: GenerationBackend = backend
        self.verifier: Verifier = verifier
        # samples per problem on this benchmark
        self.n = config.n_samples if spec.samples else 0
        max_new = config.generation.max_new_tokens
        self.greedy = SamplingParams(max_new_tokens=max_new)
        self.sampling = (
            SamplingParams(
                max_new_tokens=max_new,
                temperature=config.temperature,
                top_p=config.top_p,
                n=self.n,
                seed=config.seed,
            )
            if self.n
            else None
        )

    def open_log(self, folder: Path) -> GenerationLog:
        return GenerationLog(folder / f"{self.spec.benchmark}.jsonl", self._log_settings()).open()

    def problems_done(self, examples: list[Example], log: GenerationLog) -> float:
        """Problems' worth of generations already in the log (a sample is 1/(n+1) of one)."""
        n = self.n
        present = sum(log.has(e.id, s) for e in examples for s in [GREEDY, *range(n)])
        return present / (n + 1)

    def missing(self, examples: list[Example], log: GenerationLog):
        """The batches of generations `log` lacks: (problems, sampling, sample labels), the
        greedy answers in batches of generation.batch_size, then the samples in batches of
        batch_size // n_samples problems."""
        n = self.n
        batch = self.config.generation.batch_size
        _check_same_references(examples, log, [GREEDY, *range(n)])
        todo = [e for e in examples if not log.has(e.id, GREEDY)]
        for start in range(0, len(todo), batch):
            yield todo[start : start + batch], self.greedy, [GREEDY]
        if n:
            todo = [e for e in examples if not all(log.has(e.id, s) for s in range(n))]
            per_chunk = max(1, batch // n)
            for start in range(0, len(todo), per_chunk):
                yield todo[start : start + per_chunk], self.sampling, list(range(n))

    def generate(self, examples: list[Example], params, samples: list) -> list[dict[str, Any]]:
        tokenizer = self.backend.tokenizer
        prompts = [
            tokenizer.encode(
                format_prompt(tokenizer, e.question, self.spec.template), add_special_tokens=False
            )
            for e in examples
        ]
        completions = self.backend.generate(prompts, params)
        flat = [
            (e, s, c)
            for e, cs in zip(examples, completions, strict=True)
            for s, c in zip(samples, cs, strict=True)
        ]
        verdicts = self.verifier.verify_batch(
            [c.text for _, _, c in flat],
            [e.answer for e, _, _ in flat],
            [e.choices for e, _, _ in flat],
        )
        return [
            {
                "id": example.id,
                "sample": sample,
                "reference": example.answer,
                "predicted": verdict.predicted,
                "correct": verdict.correct,
                "reason": verdict.reason,
                "finish_reason": completion.finish_reason,
                "num_tokens": len(completion.token_ids),
                "text": completion.text,
            }
            for (example, sample, completion), verdict in zip(flat, verdicts, strict=True)
        ]

    def _log_settings(self) -> dict[str, Any]:
        """What the generations depend on (EVAL_RESUME), under the names the log records."""
        recipe = {
            **self.config.model_dump(mode="json"),
            "benchmarks": self.spec.model_dump(mode="json"),
        }
        values = EVAL_RESUME.project(recipe)
        settings = {name: value_at(values, key) for key, name in EVAL_LOG_NAMES.items()}
        settings["model"] = resolve_model_path(self.config.model.path)  # "toy" is its directory
        return settings

    def summarise(self, examples: list[Example], log: GenerationLog, seconds: float):
        n = self.n
        greedy = [log.records[(e.id, GREEDY)] for e in examples]
        samples = [log.records[(e.id, s)] for e in examples for s in range(n)]
        correct_counts = [
            sum(log.records[(e.id, s)]["correct"] for s in range(n)) for e in examples
        ]
        return {
            "benchmark": self.spec.benchmark,
            "problems": len(examples),
            "n_samples": n,
            "greedy_accuracy": sum(r["correct"] for r in greedy) / len(greedy),
            "pass_at_k": {
                str(k): mean_pass_at_k(correct_counts, n, k)
                for k in (self.config.pass_ks() if n else [])
            },
            "greedy_mean_tokens": sum(r["num_tokens"] for r in greedy) / len(greedy),
            "greedy_finish_reasons": dict(Counter(r["finish_reason"] for r in greedy)),
            "verdicts": dict(Counter(r["reason"] for r in greedy + samples)),
            "seconds_this_run": round(seconds, 2),
        }


def markdown_table(summary: dict[str, Any]) -> str:
    ks = summary["ks"]
    header = ["benchmark", "problems", "greedy", *(f"pass@{k}" for k in ks)]
    sampling = (
        f"pass@k from {summary['n_samples']} samples per problem at temperature "
        f"{summary['temperature']}, top_p {summary['top_p']}"
        if summary["n_samples"]
        else "greedy accuracy only (n_samples 0: no samples drawn, no pass@k)"
    )
    lines = [
        f"Model `{summary['model']}`; {sampling}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    for result in summary["benchmarks"]:
        cells = [
            result["benchmark"],
            str(result["problems"]),
            _percent(result["greedy_accuracy"]),
            *(
                _percent(result["pass_at_k"][str(k)]) if str(k) in result["pass_at_k"] else "-"
                for k in ks
            ),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _check_unique_ids(spec: BenchmarkSpec, examples: list[Example]) -> None:
    counts = Counter(e.id for e in examples)
    repeated = [problem_id for problem_id, count in counts.items() if count > 1]
    if repeated:
        raise DataError(f"benchmark '{spec.benchmark}': problem ids repeat: {repeated[:5]}")


def _check_same_references(examples: list[Example], log: GenerationLog, samples: list) -> None:
    """Generations are matched to problems by id: refuse a log written for other problems."""
    stale = sorted(
        {
            e.id
            for e in examples
            for s in samples
            if log.has(e.id, s) and log.records[(e.id, s)]["reference"] != e.answer
        }
    )
    if stale:
        raise UserError(
            f"{log.path}: problems {stale[:3]} have other reference answers than the benchmark "
            "gives now (the data changed since these generations were written); "
            "use another output_dir"
        )


# The settings a benchmark's generations depend on, and their names in its .meta.json.
# Not n_samples or limit: sample i of problem p is the same for any n and any limit.
EVAL_LOG_NAMES = {
    "model.path": "model", "model.dtype": "dtype", "benchmarks.benchmark": "benchmark",
    "benchmarks.path": "path", "benchmarks.template": "template", "benchmarks.fields": "fields",
    "generation.max_new_tokens": "max_new_tokens", "temperature": "temperature",
    "top_p": "top_p", "seed": "seed",
}  # fmt: skip
EVAL_RESUME = ResumeRule(
    must_match=tuple(EVAL_LOG_NAMES),
    may_change=(
        "output_dir", "model.device", "benchmarks.limit", "benchmarks.samples", "n_samples", "ks",
        "cpu_threads", "scale",
        # how generations are produced and graded, not which (verdicts are stored with them)
        "generation.backend", "generation.batch_size", "generation.gpu_memory_utilization",
        "verifier",
    ),
)  # fmt: skip


def _progress(console: Console) -> Progress:
    return progress_bar(console=console)
