"""A tiny random Qwen2 with a character tokenizer and a chat template, saved as an HF directory.

For tests of stages that load a model by path (ModelSpec) before the shipped toy model exists
or where its size would make the test slow.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

CHARS = "0123456789abcdefghijklmnopqrstuvwxyz #{}\\\n+-=*.,:?QA"
# "Q:<question>\nA:" then the answer and <eos>; the user turn is the question as given.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}Q:{{ message['content'] }}\n{% endif %}"
    "{% if message['role'] == 'assistant' %}A:{{ message['content'] }}<eos>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}A:{% endif %}"
)


def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of CHARS; others map to <unk>."""
    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2}
    for char in CHARS:
        vocab[char] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_qwen2(
    vocab_size: int, seed: int = 0, hidden_size: int = 32, **config: object
) -> Qwen2ForCausalLM:
    """A random Qwen2 for char_tokenizer's ids; `config` overrides Qwen2Config fields."""
    torch.manual_seed(seed)
    settings = {
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": 1,
        "max_position_embeddings": 256,
        "tie_word_embeddings": True,
        "eos_token_id": 1,
        "pad_token_id": 0,
        "bos_token_id": None,
        **config,
    }
    return Qwen2ForCausalLM(
        Qwen2Config(vocab_size=vocab_size, hidden_size=hidden_size, **settings)
    ).eval()


def save_tiny_model(directory: str | Path, seed: int = 0) -> Path:
    """Write model (safetensors), tokenizer and generation config into `directory`."""
    directory = Path(directory)
    tokenizer = char_tokenizer()
    model = tiny_qwen2(len(tokenizer), seed)
    model.generation_config = GenerationConfig(eos_token_id=1, pad_token_id=0)
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory
