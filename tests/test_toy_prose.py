"""The second toy world, `toy-prose`: the toy problems written in the texture of real model
answers; its generator, its texture, the texture command and its shipped model."""

import re
from collections import Counter

import pytest

from cft_rl.data.toy_problems import DIFFICULTIES, eval_problems, generate_problems, toy_problems
from cft_rl.data.toy_prose import CHECK_PROBABILITY
from cft_rl.toy.texture import lengths, token_shares
from cft_rl.toy.tokenizer import train_tokenizer

EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
PROSE = ("toy-prose", "toy-prose-long", "toy-prose-hard")


@pytest.fixture(scope="module")
def tokenizer():
    sample = generate_problems(0, 1000, DIFFICULTIES["toy-prose"], "train")
    return train_tokenizer((t for p in sample for t in (p.question, p.solution)), 1024)


def running_totals(problem) -> set[int]:
    """Every count the problem passes through, in any order of its events; and products."""
    values = {problem.start, problem.answer}
    count = problem.start
    for event in problem.events:
        count += event.delta
        values.add(count)
    return values


@pytest.mark.parametrize("name", PROSE)
def test_every_equation_of_a_prose_solution_is_right_and_it_ends_with_the_answer(name):
    for problem in eval_problems(name, 300) + toy_problems(f"{name}-train", 300):
        body, final = problem.solution.rsplit("\n", 1)
        assert final == f"#### {problem.answer}" and "####" not in body
        equations = EQUATION.findall(body)
        for left, op, right, result in equations:
            a, b, c = int(left), int(right), int(result)
            assert c == {"+": a + b, "-": a - b, "*": a * b, "/": a // b}[op], problem.solution
            if op == "/":
                assert a % b == 0
        # at least one equation per event (a check adds one, a bags event two)
        assert len(equations) >= len(problem.events)
        assert str(problem.start) in body


def test_prose_keeps_the_first_worlds_arithmetic_and_only_rewrites_the_solution():
    prose, terse = DIFFICULTIES["toy-prose"], DIFFICULTIES["toy"]
    assert (prose.steps, prose.start, prose.amount) == (terse.steps, terse.start, terse.amount)
    assert prose.style == "prose" and terse.style == "terse"


def test_prose_solutions_vary_say_why_restate_and_sometimes_check():
    problems = toy_problems("toy-prose-train", 1000)
    shapes = Counter(
        re.sub(r"\d+", "N", re.sub(r"\b[A-Z][a-z]+\b", "X", p.solution)) for p in problems
    )
    assert len(shapes) > 990  # almost every solution is worded differently
    checks = sum("Let me check" in p.solution for p in problems)
    steps = sum(len(p.events) for p in problems)
    # a check follows a step with CHECK_PROBABILITY: far more than zero, far fewer than all
    assert 0.5 * CHECK_PROBABILITY * steps < checks < 1.5 * CHECK_PROBABILITY * steps
    assert sum("so we add" in p.solution or "we subtract" in p.solution for p in problems) > 100
    openings = Counter(p.solution.split(".")[0] for p in problems)
    assert len(openings) > 20


def test_prose_texture_of_generated_solutions(tokenizer):
    """The spec's texture on the generator's own solutions (docs/toy.md gives the model's)."""
    solutions = [p.solution for p in toy_problems("toy-prose-train", 300)]
    shares = token_shares(tokenizer, solutions)
    assert shares["numeric"] <= 0.25
    assert 120 <= lengths(tokenizer, solutions)["mean"] <= 250
    terse = [p.solution for p in toy_problems("toy-train", 300)]
    assert token_shares(tokenizer, terse)["numeric"] > 2 * shares["numeric"]


def test_token_shares_counts_digits_and_operators_as_numeric(tokenizer):
    shares = token_shares(tokenizer, ["So 12 + 3 = 15."])
    # tokens: So, ' ', 1, 2, ' +', ' ', 3, ' =', ' ', 1, 5, '.'
    pieces = [tokenizer.decode([i]) for i in tokenizer("So 12 + 3 = 15.")["input_ids"]]
    numeric = sum(p.strip().isdigit() or p.strip() in {"+", "="} for p in pieces)
    assert shares["tokens"] == len(pieces)
    assert shares["numeric"] == pytest.approx(numeric / len(pieces), abs=1e-4)
    assert shares["digits"] == pytest.approx(5 / len(pieces), abs=1e-4)


def test_a_shipped_models_name_as_output_dir_is_its_package_directory():
    from cft_rl.config import load_config
    from cft_rl.modeling import SHIPPED_MODELS
    from cft_rl.toy.config import ToyBuildConfig

    config = load_config(ToyBuildConfig, None, ["output_dir=toy-prose"])
    assert config.output_dir == str(SHIPPED_MODELS["toy-prose"])
    assert load_config(ToyBuildConfig, None, ["output_dir=runs/x"]).output_dir == "runs/x"


def test_the_shipped_prose_model_loads_and_solves_its_own_problems():
    from cft_rl.config import ModelSpec
    from cft_rl.modeling import load_causal_lm, load_tokenizer
    from cft_rl.toy.evaluate import generate_solutions, score

    spec = ModelSpec(path="toy-prose", device="cpu")
    model, tokenizer = load_causal_lm(spec), load_tokenizer(spec)
    assert model.config.model_type == "qwen2" and model.config.num_hidden_layers == 6
    assert model.config.hidden_size // model.config.num_attention_heads >= 32
    assert model.generation_config.max_new_tokens == 512
    problems = eval_problems("toy-prose", 16)
    solutions = generate_solutions(
        model, tokenizer, [p.question for p in problems], max_new_tokens=512
    )
    # It was built on toy-prose and answers nearly all of them (docs/toy.md).
    assert score(problems, solutions).accuracy >= 0.75
    assert all("\n#### " in s[0] for s in solutions)
