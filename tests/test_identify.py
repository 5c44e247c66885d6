"""`cft-rl identify` end to end on the hand-built RuleLM, whose critical positions are known
by construction (see test_identify_fixtures), with the real hf backend and verifier."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from test_identify_fixtures import EOS, RuleLM, byte_tokenizer, expected_mask, prompt_ids

from cft_rl.config import load_config
from cft_rl.errors import UserError
from cft_rl.generation import SamplingParams
from cft_rl.generation.hf import HFBackend
from cft_rl.identify.config import IdentifyConfig
from cft_rl.identify.dataset import load_identified, read_provenance
from cft_rl.identify.decoders import CachedDecoder, ContinuationSampling
from cft_rl.identify.runner import Workbench, run_identify
from cft_rl.run_settings import RunSettingsError
from reward import Verifier, extract_final_answer

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]

# (question, reference, the model's answer): the last two are answered wrong (sum > 50).
QUESTIONS = [("Q 10+7", "17", 17), ("Q 3+4", "7", 7), ("Q 30+25", "55", 56), ("Q 2+64", "66", 67)]
SPACE_BEFORE_NUMBER, NEWLINE_AFTER_BODY = 2, 5


@pytest.fixture(scope="module")
def tokenizer():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def verifier():
    with Verifier(num_workers=1) as pool:
        yield pool


@pytest.fixture
def questions_file(tmp_path):
    path = tmp_path / "questions.jsonl"
    lines = [json.dumps({"question": q, "answer": f"...\n#### {a}"}) for q, a, _ in QUESTIONS]
    path.write_text("\n".join(lines) + "\n")
    return path


def common(questions_file) -> list[str]:
    return [
        "model.path=rule-model",
        "data.benchmark=gsm8k",
        f"data.path={questions_file}",
        "generation.max_new_tokens=30",
        "generation.batch_size=2",
    ]


def make_config(tmp_path, questions_file, *overrides, out="run"):
    base = [f"output_dir={tmp_path / out}", *common(questions_file)]
    return load_config(IdentifyConfig, None, base + list(overrides))


def run(config, tokenizer, verifier, model=None):
    model = model or RuleLM(tokenizer)
    settings = config.counterfactual
    sampling = ContinuationSampling(
        temperature=settings.temperature if settings.continuation == "sampled" else 0.0,
        seed=config.seed,
    )
    workbench = Workbench(
        config,
        backend=HFBackend(model, tokenizer, batch_size=config.generation.batch_size),
        decoder=CachedDecoder(model, sampling, max_batch_rows=config.decoder.max_batch_rows),
        verifier=verifier,
    )
    path = run_identify(config, workbench)
    return load_identified(path) if path.suffix == ".parquet" else None


def test_greedy_mask_is_the_constructed_one(tmp_path, questions_file, tokenizer, verifier):
    config = make_config(tmp_path, questions_file)
    data = run(config, tokenizer, verifier)

    assert data["question"] == ["Q 10+7", "Q 3+4"]  # the wrong answers are not kept
    assert [data[i]["critical_mask"] for i in range(2)] == [expected_mask(17), expected_mask(7)]
    row = data[0]
    assert row["response"] == "so 17\n#### 17\n"
    assert row["response_tokens"][-1] == EOS
    assert row["prompt_token_ids"] == prompt_ids(tokenizer, "Q 10+7")
    assert row["response_token_ids"][-1] == tokenizer.eos_token_id
    half = {SPACE_BEFORE_NUMBER, NEWLINE_AFTER_BODY}
    assert row["failure_fraction"] == [
        0.5 if t in half else float(m) for t, m in enumerate(expected_mask(17))
    ]
    # Audit: what was tried and where it led. EOS is skipped at the space ("next" policy).
    space = row["alternatives"][SPACE_BEFORE_NUMBER]
    assert [a["token"] for a in space] == ["9", "x"]
    assert [a["answers"] for a in space] == [["917"], ["17"]]
    assert [a["rank"] for a in space] == [2, 3]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["questions"], summary["kept"]) == (4, 2)
    assert summary["critical_tokens"] == sum(expected_mask(17)) + sum(expected_mask(7))
    assert summary["near_ties"] == 0
    assert read_provenance(tmp_path / "run" / "critical_tokens.parquet")["settings"] == (
        config.result_settings()
    )


@pytest.mark.parametrize(
    ("overrides", "space_critical", "tried"),
    [
        (["counterfactual.excluded=fewer"], 1, ["9"]),
        (["counterfactual.exclude_special_tokens=false"], 1, [EOS, "9"]),
    ],
)
def test_excluded_alternatives_policy(
    tmp_path, questions_file, tokenizer, verifier, overrides, space_critical, tried
):
    data = run(make_config(tmp_path, questions_file, *overrides), tokenizer, verifier)
    mask = data[0]["critical_mask"]
    assert mask[SPACE_BEFORE_NUMBER] == space_critical
    assert [a["token"] for a in data[0]["alternatives"][SPACE_BEFORE_NUMBER]] == tried
    others = [m for t, m in enumerate(mask) if t != SPACE_BEFORE_NUMBER]
    assert others == [m for t, m in enumerate(expected_mask(17)) if t != SPACE_BEFORE_NUMBER]


def test_negligible_alternatives_are_skipped_when_asked(
    tmp_path, questions_file, tokenizer, verifier
):
    config = make_config(tmp_path, questions_file, "counterfactual.min_alternative_prob=0.001")
    data = run(config, tokenizer, verifier)
    space_after_hashes = 10
    assert expected_mask(17)[space_after_hashes] == 1
    assert data[0]["critical_mask"][space_after_hashes] == 0
    assert data[0]["alternatives"][space_after_hashes] == []


def test_sampled_failure_fraction_counts_rollouts(tmp_path, questions_file, tokenizer, verifier):
    rollouts, seed = 8, 1
    config = make_config(tmp_path, questions_file, *sampled(rollouts, seed))
    model = RuleLM(tokenizer)
    data = run(config, tokenizer, verifier, model)

    # Independently: the hf backend samples the continuations of "so 17 " (the " "
    # alternative at the newline) with the same seeds; count the wrong final answers.
    response = tokenizer.encode("so 17", add_special_tokens=False)
    space = tokenizer.encode(" ", add_special_tokens=False)
    prompt = prompt_ids(tokenizer, "Q 10+7") + response + space
    samples = HFBackend(model, tokenizer).generate(
        [prompt], SamplingParams(max_new_tokens=20, temperature=1.0, n=rollouts, seed=seed)
    )[0]
    wrong = sum(extract_final_answer("so 17 " + s.text) != "17" for s in samples)
    assert 0 < wrong < rollouts  # the coin flip went both ways: the check below means something

    fractions = data[0]["failure_fraction"]
    # The "5" alternative fails in every rollout, the " " alternative in `wrong` of them.
    assert fractions[NEWLINE_AFTER_BODY] == (rollouts + wrong) / (2 * rollouts)
    assert data[0]["critical_mask"] == expected_mask(17)  # threshold 1.0: all must fail
    for t, m in enumerate(expected_mask(17)):
        if t != NEWLINE_AFTER_BODY:
            assert fractions[t] == (0.5 if t == SPACE_BEFORE_NUMBER else float(m))
    assert [len(a["answers"]) for a in data[0]["alternatives"][0]] == [rollouts, rollouts]

    lower = make_config(
        tmp_path,
        questions_file,
        *sampled(rollouts, seed),
        "counterfactual.failure_threshold=0.5",
        out="lower",
    )
    assert run(lower, tokenizer, verifier)[0]["critical_mask"][NEWLINE_AFTER_BODY] == 1


def sampled(rollouts, seed):
    return [
        "counterfactual.continuation=sampled",
        f"counterfactual.num_rollouts={rollouts}",
        f"seed={seed}",
    ]


def test_shards_merge_to_the_single_run(tmp_path, questions_file, tokenizer, verifier):
    single = make_config(tmp_path, questions_file, "generation.batch_size=1", out="single")
    run(single, tokenizer, verifier)
    sharded = [
        make_config(
            tmp_path,
            questions_file,
            "generation.batch_size=1",
            "num_shards=3",
            f"shard_index={index}",
            out="sharded",
        )
        for index in (2, 0, 1)
    ]
    for config in sharded[:2]:
        run(config, tokenizer, verifier)
        assert not (tmp_path / "sharded" / "critical_tokens.parquet").exists()
    with pytest.raises(UserError, match=r"shards \[1\] of 3 are not done"):
        run_identify(sharded[0].model_copy(update={"merge_only": True}))
    run(sharded[2], tokenizer, verifier)  # the last shard merges
    assert _table(tmp_path / "single") == _table(tmp_path / "sharded")


def test_rerun_with_other_settings_is_refused(tmp_path, questions_file, tokenizer, verifier):
    run(make_config(tmp_path, questions_file), tokenizer, verifier)
    changed = make_config(tmp_path, questions_file, "counterfactual.num_alternatives=3")
    with pytest.raises(RunSettingsError, match="counterfactual.num_alternatives"):
        run(changed, tokenizer, verifier)


def test_lazy_decides_with_fewer_continuations_and_the_same_masks(
    tmp_path, questions_file, tokenizer, verifier
):
    full = run(make_config(tmp_path, questions_file, out="full"), tokenizer, verifier)
    lazy_config = make_config(tmp_path, questions_file, "counterfactual.decide=lazy", out="lazy")
    lazy = run(lazy_config, tokenizer, verifier)
    assert lazy["critical_mask"] == full["critical_mask"]
    row = lazy[0]
    # the space before the number: its first alternative ("9" -> 917) fails, so the second
    # ("x" -> 17) is decoded too, and it succeeds
    space = row["alternatives"][SPACE_BEFORE_NUMBER]
    assert [a["answers"] for a in space] == [["917"], ["17"]]
    assert row["critical_mask"][SPACE_BEFORE_NUMBER] == 0
    # a position whose first alternative succeeds: the second is never decoded
    settled = [
        t for t, alts in enumerate(row["alternatives"]) if alts and alts[0]["correct"] == [True]
    ]
    assert settled and all(row["alternatives"][t][1]["answers"] == [] for t in settled)
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("full", "lazy")]
    assert summaries[1]["continuations"] < summaries[0]["continuations"]
    assert summaries[1]["critical_tokens"] == summaries[0]["critical_tokens"]
    with pytest.raises(Exception, match="failure_threshold 1.0"):
        make_config(
            tmp_path, questions_file, "counterfactual.decide=lazy",
            "counterfactual.failure_threshold=0.5",
        )  # fmt: skip


@pytest.mark.parametrize("decide", ["full", "lazy"])
def test_resume_after_torn_write_equals_uninterrupted(
    tmp_path, questions_file, tokenizer, verifier, decide
):
    mode = f"counterfactual.decide={decide}"
    whole = make_config(tmp_path, questions_file, mode, out="whole")
    run(whole, tokenizer, verifier)

    # A run killed while writing its second result line: one full line, half of the next.
    crashed = make_config(tmp_path, questions_file, mode, out="crashed")
    (tmp_path / "crashed").mkdir()
    shards = tmp_path / "whole" / "shards"
    target = tmp_path / "crashed" / "shards"
    target.mkdir()
    for name in ("settings.json", "greedy-00000-of-00001.jsonl"):
        (target / name).write_bytes((shards / name).read_bytes())
    lines = (shards / "results-00000-of-00001.jsonl").read_bytes().splitlines(keepends=True)
    (target / "results-00000-of-00001.jsonl").write_bytes(lines[0] + lines[1][:50])

    run(crashed, tokenizer, verifier)
    assert _table(tmp_path / "whole") == _table(tmp_path / "crashed")
    # The greedy answers were not generated again; the torn question was redone once.
    greedy = "greedy-00000-of-00001.jsonl"
    assert (target / greedy).read_bytes() == (shards / greedy).read_bytes()
    results = (target / "results-00000-of-00001.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["index"] for line in results] == [0, 1, 2, 3]


class SlowDecoder(CachedDecoder):
    """Takes its time per answer, so that a kill lands in the middle of a run."""

    def decode(self, *args, **kwargs):
        time.sleep(0.3)
        return super().decode(*args, **kwargs)


def run_slowly(out: str, questions: str) -> None:
    """Entry point of the process the kill -9 test kills."""
    tokenizer = byte_tokenizer()
    config = load_config(IdentifyConfig, None, [f"output_dir={out}", *common(questions)])
    model = RuleLM(tokenizer)
    with Verifier(num_workers=1) as pool:
        workbench = Workbench(
            config,
            backend=HFBackend(model, tokenizer, batch_size=2),
            decoder=SlowDecoder(model, ContinuationSampling()),
            verifier=pool,
        )
        run_identify(config, workbench)


@pytest.mark.slow  # a child process imports torch and transformers
def test_resume_after_kill_9_equals_uninterrupted(tmp_path, questions_file, tokenizer, verifier):
    whole = make_config(tmp_path, questions_file, out="whole")
    run(whole, tokenizer, verifier)

    out = tmp_path / "killed"
    results = out / "shards" / "results-00000-of-00001.jsonl"
    code = f"import test_identify; test_identify.run_slowly({str(out)!r}, {str(questions_file)!r})"
    tests_dir = Path(__file__).parent
    child = subprocess.Popen([sys.executable, "-c", code], cwd=tests_dir)
    try:
        deadline = time.monotonic() + 120
        while not (results.exists() and results.read_bytes().count(b"\n") >= 1):
            assert child.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run wrote no result in 120 s"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert not (out / "critical_tokens.parquet").exists()

    killed = make_config(tmp_path, questions_file, out="killed")
    run(killed, tokenizer, verifier)
    assert _table(tmp_path / "whole") == _table(out)


def _table(run_dir):
    return pq.read_table(run_dir / "critical_tokens.parquet")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_says_what_is_done_and_how_long_is_left(capsys):
    from cft_rl.identify.progress import Progress

    clock = FakeClock()
    Progress(10, 0, clock).starting("10 questions of toy-train")  # a fresh run: no resuming
    progress = Progress(10, 1, clock)
    progress.starting("10 questions of toy-train")
    # 2 questions in 4 s since this run started (1 was done before): 7 left at 0.5/s.
    clock.now += 4.0
    progress.chunk_done(3, ", 120 continuations/s")
    clock.now += 14.0
    progress.chunk_done(10)
    fresh, start, resumed, first, last = capsys.readouterr().err.splitlines()
    assert fresh == start == "identify: 10 questions of toy-train"
    assert resumed == "identify: resuming, 1/10 questions already done"
    assert first == "identify: 3/10 questions done, 4 s, 120 continuations/s, about 14 s left"
    assert last == "identify: 10/10 questions done, 18 s"


def test_progress_within_a_chunk_prints_every_few_seconds(capsys):
    from cft_rl.identify.progress import EVERY_S, Progress

    clock = FakeClock()
    progress = Progress(64, 0, clock)
    progress.within_chunk("chunk 1/1: answering 64 questions greedily", force=True)
    for question in range(1, 41):  # a question every 0.5 s for 20 s
        clock.now += 0.5
        progress.within_chunk(f"chunk 1/1: {question}/40 questions")
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "identify: chunk 1/1: answering 64 questions greedily"
    # one line per EVERY_S seconds, never two within it
    assert len(lines) == 1 + int(20 / EVERY_S)
    assert lines[1] == f"identify: chunk 1/1: {int(EVERY_S / 0.5)}/40 questions"


def test_identify_says_what_starts_before_any_model_work(tmp_path, capsys):
    """The toy recipe's first line comes before the model is loaded; each chunk says when its
    greedy answers start and how many were right before the long part begins."""
    from cft_rl.cli import main

    recipe = str(ROOT / "recipes" / "toy" / "identify.yaml")
    assert main(["identify", "--recipe", recipe, "data.limit=3", f"output_dir={tmp_path}"]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("identify:")]
    assert lines[0] == "identify: 3 questions of toy-train, model toy, 1 chunk of up to 64"
    assert lines[1] == "identify: chunk 1/1: answering 3 questions greedily"
    assert lines[2].startswith("identify: chunk 1/1: ") and "answers right, identifying" in lines[2]
    assert lines[-1].startswith("identify: 3/3 questions done")
