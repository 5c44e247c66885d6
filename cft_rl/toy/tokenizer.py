"""The toy tokenizer: byte-level BPE trained on toy problems, one digit per token.

Numbers are split into single digits, so the model does arithmetic digit by digit instead
of memorising multi-digit tokens. Saved as a Hugging Face fast tokenizer with a chat
template: `<|user|>question<|end|><|assistant|>solution<|end|>`.

The normaliser and pre-tokeniser are exactly those of Qwen2's tokenizer (which already
splits digits): transformers 5 loads the tokenizer of any `qwen2` model directory with
that pipeline whatever tokenizer.json says, so any other choice would tokenise
differently at inference than in training.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

USER, ASSISTANT, SYSTEM, END, PAD = "<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|pad|>"
# Never produced (byte-level BPE covers every input); named so that Qwen2's tokenizer class
# does not add its default unknown token on loading and grow the vocabulary past the model's.
UNK = "<|endoftext|>"
SPECIAL_TOKENS = [PAD, END, USER, ASSISTANT, SYSTEM, UNK]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    + SYSTEM
    + "{{ message['content'] }}"
    + END
    + "{% endif %}"
    "{% if message['role'] == 'user' %}" + USER + "{{ message['content'] }}" + END + "{% endif %}"
    "{% if message['role'] == 'assistant' %}"
    + ASSISTANT
    + "{{ message['content'] }}"
    + END
    + "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}"
)

# Qwen2's pre-tokenisation: pieces BPE may merge within. `\p{N}` alone: one digit per piece.
PRE_TOKEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train byte-level BPE on `texts` (it may stop below `vocab_size` on templated text)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRE_TOKEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=END,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[USER, ASSISTANT, SYSTEM],
        padding_side="left",
    )
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped
