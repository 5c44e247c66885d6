"""The verifier: answer extraction, the killable worker pool, hostile input, verl's contract."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hostile_cases import HOSTILE_CASES, NESTED_BRACES, HostileCase

from reward import Verdict, Verifier, compute_score, extract_final_answer

TIMEOUT_S = 1.5
# Killing a worker, forking its replacement and extracting from 200 KB take well under this.
MARGIN_S = 1.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So she makes 9 * 2 = 18 dollars. The answer is \\boxed{18}.", "18"),
        ("first \\boxed{1}, then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\fbox{3}", "3"),
        ("\\boxed {7}", "7"),
        ("$\\boxed{\\{1, 2\\}}$", "\\{1, 2\\}"),
        ("\\boxed{\\boxed{4}}", "4"),
        ("\\boxed{12} and then a truncated \\boxed{3", "12"),
        ("\\boxed{} #### 5", "5"),
        ("Janet sells 9 eggs.\n#### 18", "18"),
        ("#### 5\nno, wait\n#### 7\n", "7"),
        ("The answer is $42$.", "42"),
        ("Final Answer: The final answer is $3.5$. I hope it is correct.", "3.5"),
        ("**Answer:** 12", "12"),
        ("**Answer**: 12", "12"),
        ("The answer is: 5", "5"),
        ("The final answer is\n\n$\\frac{1}{4}$", "\\frac{1}{4}"),
        ("the answer is \\(\\frac{2}{3}\\)", "\\frac{2}{3}"),
        ("I think it is 5", None),
        ("\\boxed{12", None),
        ("\\boxed{}", None),
        ("", None),
    ],
)
def test_extract_final_answer(text: str, expected: str | None) -> None:
    assert extract_final_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{" + NESTED_BRACES + "}", NESTED_BRACES),
        ("\\boxed{" * 5000 + "1" + "}" * 5000, "1"),
        ("\\boxed{" * 30000, None),
        ("x" * 200_000 + " \\boxed{5}", "5"),
        ("answer: " + " " * 200_000, None),
        ("answer is" * 20_000, None),
        ("\\" * 200_000, None),
        ("#" * 200_000, None),
    ],
)
def test_extraction_is_fast_on_hostile_input(text: str, expected: str | None) -> None:
    start = time.perf_counter()
    assert extract_final_answer(text) == expected
    assert time.perf_counter() - start < 1.0


@pytest.fixture(scope="module")
def verifier():
    with Verifier(num_workers=2, timeout_s=TIMEOUT_S) as pool:
        yield pool


def test_correct_wrong_and_no_answer(verifier: Verifier) -> None:
    assert verifier.verify("The answer is \\boxed{18}.", "18") == Verdict(
        True, 1.0, "correct", "18"
    )
    # Equal in value, not in text: decided by math-verify in a worker.
    assert verifier.verify("\\boxed{3/6}", "\\frac{1}{2}").reason == "correct"
    assert verifier.verify("#### 0.5", "\\frac{1}{2}").correct
    assert verifier.verify("\\boxed{17}", "18") == Verdict(False, 0.0, "wrong", "17")
    assert verifier.verify("I give up.", "18") == Verdict(False, 0.0, "no_answer", None)


def test_fast_path_agrees_with_math_verify(verifier: Verifier) -> None:
    # The fast path scores a prediction identical to the reference correct without a worker;
    # math-verify must agree on such pairs, or the two paths would score differently.
    references = ["18", "2,125", "-3", "\\frac{1}{2}", "\\text{(A)}", "x^2+1", "[0, 1)"]
    responses = [f"\\boxed{{{reference}}}" for reference in references]
    with Verifier(num_workers=2, timeout_s=TIMEOUT_S, fast_path=False) as slow_path:
        assert slow_path.verify_batch(responses, references) == verifier.verify_batch(
            responses, references
        )
        assert slow_path.counts["correct"] == len(references)


@pytest.mark.parametrize("case", HOSTILE_CASES, ids=[case.name for case in HOSTILE_CASES])
def test_hostile_input_is_scored_within_the_timeout(verifier: Verifier, case: HostileCase) -> None:
    start = time.perf_counter()
    verdict = verifier.verify(case.response, case.reference)
    elapsed = time.perf_counter() - start
    assert verdict.reason in case.reasons
    assert verdict.correct == (verdict.reason == "correct")
    assert elapsed < TIMEOUT_S + MARGIN_S
    # The pool goes on: a killed worker was replaced.
    assert verifier.verify("\\boxed{0.25}", "\\frac{1}{4}").reason == "correct"


def test_code_in_answers_is_never_executed(verifier: Verifier, tmp_path) -> None:
    marker = tmp_path / "pwned"
    attacks = [
        f"\\boxed{{__import__('os').system('touch {marker}')}}",
        f"The answer is eval(\"open('{marker}', 'w')\")",
        f"#### exec(\"import pathlib; pathlib.Path('{marker}').touch()\")",
    ]
    verdicts = verifier.verify_batch(attacks, ["0"] * len(attacks))
    # A `####` line that starts with a word is no GSM8K answer line: nothing is graded.
    assert [verdict.reason for verdict in verdicts] == ["wrong", "wrong", "no_answer"]
    assert not marker.exists()


def test_batch_keeps_order_around_timeouts(verifier: Verifier) -> None:
    cases = [
        ("\\boxed{2}", "2", "correct"),
        ("\\boxed{" + NESTED_BRACES + "}", "1", "timeout"),
        ("\\boxed{\\frac{6}{4}}", "1.5", "correct"),
        ("nothing", "1", "no_answer"),
        ("#### 10", "11", "wrong"),
        ("\\boxed{9^{9^{9^{9}}}}", "1", "timeout"),
        ("The answer is 2^{10}.", "1024", "correct"),
    ] * 2
    before = verifier.counts
    start = time.perf_counter()
    verdicts = verifier.verify_batch([c[0] for c in cases], [c[1] for c in cases])
    elapsed = time.perf_counter() - start
    assert [verdict.reason for verdict in verdicts] == [c[2] for c in cases]
    # Four timeouts on two workers run two at a time.
    assert elapsed < 2 * (TIMEOUT_S + MARGIN_S)
    after = verifier.counts
    assert after["timeout"] - before["timeout"] == 4
    assert after["correct"] - before["correct"] == 6
    assert sum(after.values()) - sum(before.values()) == len(cases)


def test_batch_needs_pairs(verifier: Verifier) -> None:
    with pytest.raises(ValueError, match="2 responses, 1 references and 2 choices"):
        verifier.verify_batch(["\\boxed{1}", "\\boxed{2}"], ["1"])
    with pytest.raises(ValueError, match="1 responses, 1 references and 2 choices"):
        verifier.verify_batch(["\\boxed{1}"], ["1"], [None, None])


def test_concurrent_callers_share_the_pool(verifier: Verifier) -> None:
    pairs = [(f"\\boxed{{{n}/2}}", f"{n / 2}", True) for n in range(12)]
    pairs += [(f"\\boxed{{{n}}}", f"{n + 1}", False) for n in range(12)]
    with ThreadPoolExecutor(4) as threads:
        verdicts = list(threads.map(lambda pair: verifier.verify(pair[0], pair[1]), pairs))
    assert [verdict.correct for verdict in verdicts] == [pair[2] for pair in pairs]


def test_a_worker_that_dies_mid_item_scores_error_and_is_replaced() -> None:
    with Verifier(num_workers=1, timeout_s=30.0) as pool:
        (worker,) = pool._workers
        result: list[Verdict] = []
        hang = threading.Thread(
            target=lambda: result.append(pool.verify("\\boxed{" + NESTED_BRACES + "}", "1"))
        )
        hang.start()
        time.sleep(0.5)
        os.kill(worker.process.pid, signal.SIGKILL)
        hang.join(timeout=5.0)
        assert [verdict.reason for verdict in result] == ["error"]
        assert pool.verify("\\boxed{\\sqrt{4}}", "2").reason == "correct"
        assert pool.counts["error"] == 1


def test_workers_forked_from_a_parent_running_torch_threads() -> None:
    torch = pytest.importorskip("torch")
    product = torch.ones(256, 256) @ torch.ones(256, 256)  # starts torch's intra-op threads
    assert product[0, 0].item() == 256
    with Verifier(num_workers=1, timeout_s=TIMEOUT_S) as pool:
        assert pool.verify("\\boxed{\\frac{1}{3}}", "2/6").reason == "correct"
        assert pool.verify("\\boxed{" + NESTED_BRACES + "}", "1").reason == "timeout"
        # The replacement is forked while the threads still exist.
        assert pool.verify("\\boxed{0.5}", "1/2").reason == "correct"


def test_close_stops_the_workers() -> None:
    pool = Verifier(num_workers=2, timeout_s=TIMEOUT_S)
    processes = [worker.process for worker in pool._workers]
    assert all(process.is_alive() for process in processes)
    pool.close()
    assert not any(process.is_alive() for process in processes)
    pool.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        pool.verify("\\boxed{2}", "1+1")


ORPHAN_SCRIPT = """
import threading, time
from reward import Verifier
pool = Verifier(num_workers=2, timeout_s=600)
hang = ("\\\\boxed{" + "{" * 5000 + "}" * 5000 + "}", "1")
threading.Thread(target=pool.verify, args=hang).start()
print(" ".join(str(worker.process.pid) for worker in pool._workers), flush=True)
time.sleep(600)
"""


def test_workers_exit_when_their_parent_is_killed() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT], stdout=subprocess.PIPE, text=True
    )
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(0.5)  # one worker is now busy on the nested braces
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited
        return stat.read().split()[2] != "Z"


def test_compute_score_follows_verls_contract() -> None:
    call = {"data_source": "gsm8k", "extra_info": {"index": 3}}
    right = compute_score(solution_str="so #### 1/2", ground_truth="0.5", **call)
    assert right == {"score": 1.0, "acc": True, "pred": "1/2", "reason": "correct"}
    wrong = compute_score(solution_str="The answer is 8.", ground_truth=7, **call)
    assert wrong == {"score": 0.0, "acc": False, "pred": "8", "reason": "wrong"}
    missing = compute_score("gsm8k", "no idea", "7", None, reward_router_address=None)
    assert missing == {"score": 0.0, "acc": False, "pred": "", "reason": "no_answer"}
    assert isinstance(right["score"], float)
