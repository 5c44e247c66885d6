"""When a response's final answer is complete (used to stop decoding early)."""

import pytest

from cft_rl.generation.stopping import answer_complete, answer_cut


@pytest.mark.parametrize(
    ("text", "complete"),
    [
        ("so 3 + 4 = 7\n#### 7\n", True),
        ("#### 7", False),  # the number may go on: 7, 72, ...
        ("####\n", False),
        ("#### -1,250.5\nmore", True),
        ("the answer is \\boxed{12}", True),
        ("the answer is \\boxed{\\frac{1}{2}", False),
        ("the answer is \\boxed{\\frac{1}{2}}", True),
        ("\\boxed{", False),
        ("no answer here }\n", False),
    ],
)
def test_answer_complete(text, complete):
    assert answer_complete(text) is complete


class CharTokenizer:
    """One token per character."""

    alphabet = "a #0123456789\n"

    def encode(self, text):
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.alphabet[i] for i in ids)


def test_answer_cut_is_the_shortest_complete_prefix():
    tokenizer = CharTokenizer()
    tokens = tokenizer.encode("a\n#### 42\n\n#### 5\n")
    assert answer_cut(tokenizer, tokens) == len("a\n#### 42\n")
    assert answer_cut(tokenizer, tokens[: len("a\n#### 42")]) is None
