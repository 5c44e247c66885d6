"""Prompt templates go through the tokenizer's chat template."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from transformers import PreTrainedTokenizerFast

from cft_rl.data import DataError
from cft_rl.data.prompts import BOXED_INSTRUCTION, format_prompt

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer(chat_template: str | None) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]")),
        unk_token="[UNK]",
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def test_toy_template_is_the_bare_question_in_the_chat_template():
    prompt = format_prompt(make_tokenizer(CHAT_TEMPLATE), "What is 2 + 3?", "toy")
    assert prompt == "<|user|>What is 2 + 3?<|end|><|assistant|>"


def test_boxed_template_appends_the_instruction():
    prompt = format_prompt(make_tokenizer(CHAT_TEMPLATE), "What is 2 + 3?", "boxed")
    assert prompt == f"<|user|>What is 2 + 3?{BOXED_INSTRUCTION}<|end|><|assistant|>"
    assert BOXED_INSTRUCTION.endswith("within \\boxed{}.")


def test_unknown_template_and_missing_chat_template_are_errors():
    with pytest.raises(DataError, match="unknown prompt template 'cot' .*known: toy, boxed"):
        format_prompt(make_tokenizer(CHAT_TEMPLATE), "q", "cot")
    with pytest.raises(DataError, match="no chat template"):
        format_prompt(make_tokenizer(None), "q", "boxed")
