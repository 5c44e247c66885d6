"""The embedded toy world: problem generator, tokenizer, training loop, shipped model, build."""

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from cft_rl.data.registry import toy_examples
from cft_rl.data.toy_problems import (
    DIFFICULTIES,
    eval_problems,
    generate_problems,
    split_of,
    training_problems,
)
from cft_rl.toy import build as build_module
from cft_rl.toy.tokenizer import END, train_tokenizer
from cft_rl.toy.train import collate, prompt_text, tokenize_problems

ROOT = Path(__file__).resolve().parents[1]
EQUATION = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")


def expected_answer(problem) -> int:
    """The answer from the structured form, computed here rather than by the generator."""
    count = problem.start
    for event in problem.events:
        if event.kind == "add":
            count += event.amount
        elif event.kind == "sub":
            count -= event.amount
        else:
            count += event.count * event.size
    return count


@pytest.fixture(scope="module")
def tokenizer():
    sample = generate_problems(0, 1000, DIFFICULTIES["toy"], "train")
    return train_tokenizer((t for p in sample for t in (p.question, p.solution)), 1024)


# --- problems ---------------------------------------------------------------------------


def test_generator_is_deterministic_and_seeded():
    first = generate_problems(3, 50, DIFFICULTIES["toy"], "train")
    assert first == generate_problems(3, 50, DIFFICULTIES["toy"], "train")
    assert first != generate_problems(4, 50, DIFFICULTIES["toy"], "train")
    assert training_problems(0, 5, 20, DIFFICULTIES["toy"]) == training_problems(
        0, 5, 20, DIFFICULTIES["toy"]
    )


@pytest.mark.parametrize("name", ["toy", "toy-hard"])
def test_every_problem_is_well_formed_and_its_arithmetic_is_right(name):
    difficulty = DIFFICULTIES[name]
    problems = generate_problems(11, 2000, difficulty, "train") + eval_problems(name, 200)
    for problem in problems:
        assert problem.answer == expected_answer(problem) >= 0
        assert difficulty.steps[0] <= len(problem.events) <= difficulty.steps[1]
        body, final = problem.solution.rsplit("\n", 1)
        assert final == f"#### {expected_answer(problem)}"
        assert "####" not in body and problem.question.endswith("?")
        equations = EQUATION.findall(body)
        for left, op, right, result in equations:
            a, b, c = int(left), int(right), int(result)
            assert c == {"+": a + b, "-": a - b, "*": a * b}[op], (problem.solution, left, op)
            assert c >= 0
        # One equation per add/subtract, two per bags event (product, then the addition).
        assert len(equations) == len(problem.events) + sum(e.kind == "bags" for e in problem.events)
        assert int(equations[-1][3]) == problem.answer
        # Every number the solution starts from is in the question.
        assert str(problem.start) in problem.question


def test_toy_hard_has_more_steps_and_larger_numbers():
    toy, hard = eval_problems("toy", 300), eval_problems("toy-hard", 300)
    assert min(len(p.events) for p in hard) > max(len(p.events) for p in toy)
    assert max(p.start for p in hard) > max(p.start for p in toy)
    amounts = {
        name: max(e.amount for p in problems for e in p.events)
        for name, problems in (("toy", toy), ("hard", hard))
    }
    assert amounts["hard"] > amounts["toy"]
    assert sum(p.answer for p in hard) > 1.4 * sum(p.answer for p in toy)


def test_solutions_vary_in_wording_and_order_with_the_same_arithmetic():
    problems = generate_problems(5, 2000, DIFFICULTIES["toy"], "train")
    shapes = Counter(
        re.sub(r"\d+", "N", re.sub(r"\b[A-Z][a-z]+\b", "X", p.solution)) for p in problems
    )
    assert len(shapes) > 500
    # Some solutions do an addition that comes after a subtraction in the question first.
    reordered = 0
    for p in problems:
        kinds = [e.kind for e in p.events]
        if "sub" in kinds and kinds.index("sub") < len(kinds) - 1 and kinds[-1] != "sub":
            first_op = EQUATION.search(p.solution).group(2)
            reordered += first_op == "+" and kinds[0] == "sub"
    assert reordered > 20


def test_heldout_sets_are_disjoint_from_training_and_deduplicated():
    for name in ("toy", "toy-hard"):
        heldout = eval_problems(name, 400)
        assert len({p.question for p in heldout}) == 400
        assert all(split_of(p) == "heldout" for p in heldout)
        training = [
            p for chunk in range(10) for p in training_problems(0, chunk, 500, DIFFICULTIES[name])
        ]
        assert all(split_of(p) == "train" for p in training)
        assert not {p.arithmetic() for p in heldout} & {p.arithmetic() for p in training}
    # The toy set is a prefix-stable stream: asking for fewer gives the first ones.
    assert eval_problems("toy", 10) == eval_problems("toy", 400)[:10]


def test_toy_benchmarks_are_examples():
    from cft_rl.data import Example

    hard = toy_examples("toy-hard", 20)
    assert all(isinstance(e, Example) for e in hard)
    assert [e.answer for e in hard] == [str(p.answer) for p in eval_problems("toy-hard", 20)]
    assert len({e.id for e in hard}) == 20 and {e.source for e in hard} == {"toy-hard"}
    with pytest.raises(ValueError, match="toy-easy"):
        toy_examples("toy-easy", 3)


def test_toy_train_questions_are_training_split_and_never_held_out():
    train = toy_examples("toy-train", 300)
    assert len({e.question for e in train}) == 300
    assert train[:30] == toy_examples("toy-train", 30)  # a smaller limit gives the first ones
    heldout = {e.question for e in toy_examples("toy", 300) + toy_examples("toy-hard", 300)}
    assert not heldout & {e.question for e in train}
    assert all(e.solution for e in train)  # the SFT baseline trains on them


# --- tokenizer and training batches -----------------------------------------------------


def test_tokenizer_gives_each_digit_its_own_token(tokenizer):
    for token in tokenizer.get_vocab():
        assert len(re.findall(r"\d", token)) <= 1, token
    pieces = [
        tokenizer.decode([i])
        for i in tokenizer(" 12 + 3405 = 3417", add_special_tokens=False)["input_ids"]
    ]
    assert [p.strip() for p in pieces if p.strip().isdigit()] == list("1234053417")


def test_chat_template_and_prompt_format(tokenizer):
    from cft_rl.data.prompts import format_prompt

    prompt = format_prompt(tokenizer, "How many?", "toy")
    assert prompt == "<|user|>How many?<|end|><|assistant|>" == prompt_text(tokenizer, "How many?")
    assert tokenizer.eos_token == END
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_training_batch_trains_on_solution_tokens_only(tokenizer):
    problems = generate_problems(2, 4, DIFFICULTIES["toy"], "train")
    batch = collate(tokenize_problems(tokenizer, problems), tokenizer.pad_token_id)
    for row, problem in enumerate(problems):
        targets = batch.input_ids[row, 1:][batch.predict_mask[row, :-1]]
        assert tokenizer.decode(targets) == problem.solution + END
        context = batch.input_ids[row][: batch.predict_mask[row].nonzero()[0] + 1]
        assert tokenizer.decode(context) == prompt_text(tokenizer, problem.question)


def assert_loads_as_trained(model_dir: Path, tokenizer, config) -> None:
    """The tokenizer as transformers loads it (for a qwen2 directory, transformers 5 imposes
    its own pre-tokeniser) splits text exactly as the saved one the model was trained with."""
    from tokenizers import Tokenizer

    saved = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    for problem in generate_problems(9, 20, DIFFICULTIES["toy-hard"], "train"):
        text = prompt_text(tokenizer, problem.question) + problem.solution + END
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == saved.encode(text).ids
    assert len(tokenizer) == config.vocab_size


# --- shipped model ----------------------------------------------------------------------


def test_shipped_model_loads_and_solves_toy_problems():
    from cft_rl.config import ModelSpec
    from cft_rl.modeling import TOY_MODEL_DIR, load_causal_lm, load_tokenizer
    from cft_rl.toy.evaluate import generate_solutions, score

    spec = ModelSpec(path="toy", device="cpu")
    model, tokenizer = load_causal_lm(spec), load_tokenizer(spec)
    config = model.config
    assert config.model_type == "qwen2"
    assert config.hidden_size // config.num_attention_heads >= 32
    assert (
        tokenizer.chat_template and model.generation_config.eos_token_id == tokenizer.eos_token_id
    )
    assert_loads_as_trained(TOY_MODEL_DIR, tokenizer, config)
    problems = eval_problems("toy", 32)
    solutions = generate_solutions(model, tokenizer, [p.question for p in problems])
    # The shipped model is meant to be right on most in-distribution problems (docs/toy.md).
    assert score(problems, solutions).accuracy >= 0.5


# --- `cft-rl toy build` -----------------------------------------------------------------

TINY = [
    "tokenizer.sample_problems=200",
    "model.hidden_size=64",
    "model.num_heads=2",
    "model.num_layers=1",
    "model.intermediate_size=64",
    "train.batch_size=4",
    "train.warmup_steps=1",
    "train.log_every=1",
    "eval.problems=0",
]


def _build(out: Path, *overrides: str) -> int:
    from cft_rl.cli import main

    recipe = str(ROOT / "recipes/toy/build.yaml")
    return main(["toy", "build", "--recipe", recipe, f"output_dir={out}", *TINY, *overrides])


def test_toy_build_end_to_end(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert _build(tmp_path, "train.steps=3", "eval.problems=1") == 0
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / build_module.STATE_FILE).exists()
    model = AutoModelForCausalLM.from_pretrained(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert model.config.hidden_size == 64 and tokenizer.chat_template
    assert_loads_as_trained(tmp_path, tokenizer, model.config)
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3]
    report = json.loads((tmp_path / "build.json").read_text())
    assert {"train_wall_s", "greedy_toy", "greedy_toy-hard"} <= set(report)


def test_interrupted_build_resumes_to_the_same_model(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    assert _build(tmp_path / "straight", "train.steps=4") == 0

    # Killed during step 4, after the checkpoint at step 2.
    monkeypatch.setattr(build_module, "solution_loss", _interrupted_at_step(4))
    # The CLI turns Ctrl-C into exit status 130 with a "rerun to resume" line.
    assert _build(tmp_path / "resumed", "train.steps=4", "checkpoint.every_steps=2") == 130
    monkeypatch.undo()
    assert (tmp_path / "resumed" / build_module.STATE_FILE).is_file()
    assert _build(tmp_path / "resumed", "train.steps=4", "checkpoint.every_steps=2") == 0

    report = json.loads((tmp_path / "resumed" / "build.json").read_text())
    assert report["resumed_at_step"] == 2
    straight = load_file(tmp_path / "straight" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model.safetensors")
    assert straight.keys() == resumed.keys()
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=0, msg=name)
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4]


def test_resume_refuses_a_changed_config(tmp_path, monkeypatch):
    monkeypatch.setattr(build_module, "solution_loss", _interrupted_at_step(2))
    assert _build(tmp_path, "train.steps=4", "checkpoint.every_steps=1") == 130
    monkeypatch.undo()
    assert _build(tmp_path, "train.steps=4", "checkpoint.every_steps=1", "train.lr=0.01") == 2


def _interrupted_at_step(step: int):
    """A loss function that raises (as Ctrl-C would) when computing the loss of `step`."""
    real, calls = build_module.solution_loss, []

    def loss(model, batch):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real(model, batch)

    return loss


def test_head_dim_below_32_is_refused(tmp_path, capsys):
    assert _build(tmp_path, "model.num_heads=4") == 2
    assert "head dimension" in capsys.readouterr().err


def test_every_difficulty_has_test_validation_and_training_sets_apart():
    from cft_rl.data.toy_problems import VALIDATION_DISJOINT_FROM, toy_problems

    for name in DIFFICULTIES:
        test = eval_problems(name, VALIDATION_DISJOINT_FROM)
        validation = toy_problems(f"{name}-val", 200)
        train = toy_problems(f"{name}-train", 500)
        assert all(split_of(p) == "heldout" for p in test + validation)
        assert all(split_of(p) == "train" for p in train)
        assert len({p.question for p in validation}) == 200
        # no arithmetic in common: checked here by set intersection over the generated sets
        arithmetic = {kind: {p.arithmetic() for p in ps} for kind, ps in
                      (("test", test), ("val", validation), ("train", train))}  # fmt: skip
        assert not arithmetic["val"] & arithmetic["test"]
        assert not arithmetic["train"] & (arithmetic["test"] | arithmetic["val"])
        # and validation is its own stream, not the test stream's continuation
        assert [p.question for p in validation[:5]] != [p.question for p in test[:5]]
        assert [e.source for e in toy_examples(f"{name}-val", 3)] == [f"{name}-val"] * 3


def test_toy_long_is_toy_with_more_steps():
    long = eval_problems("toy-long", 300)
    assert {len(p.events) for p in long} == {3, 4}
    assert all(1 <= p.start <= 99 for p in long)
    # toy-train keeps its questions: the seed predates the naming scheme
    assert (
        toy_examples("toy-train", 5)[0].question
        == generate_problems("identify", 1, DIFFICULTIES["toy"], "train")[0].question
    )
