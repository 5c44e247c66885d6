"""Small models for the critical-token tests, and checks that they behave as designed.

- `byte_tokenizer()`: a byte-level tokenizer without merges (one token per character)
  and a chat template, like the toy model's but tiny.
- `random_qwen2()`: a random 2-layer Qwen2 with spread-out logits (greedy steps are
  rarely near ties).
- `RuleLM`: a hand-built deterministic "model" whose next-token scores are a program of
  the text so far, so the critical positions of its answers are known by construction.
  It keeps the token ids themselves in a transformers DynamicCache and reads them back
  (respecting the attention mask), so the decoders' cache slicing, padding and row
  selection are exercised exactly as with a real model: a wrong slice changes its output.

The arithmetic world of RuleLM: the question "Q a+b" is answered "so S\\n#### S\\n<EOS>" with
S = a+b (S = a+b+1 when a+b > 50, a wrong answer). After a perturbation it continues by
position (the body "so S\\n" is written character by character whatever came before), then
writes "####" and copies the last number of the body as the final answer. Alternatives
(2nd, 3rd, 4th most likely) by position:
  letters "s", "o"       : x, y       -> the number survives: non-critical
  space before the number: EOS, 9, x  -> 9 glues onto the number (fails), x is harmless
  digits of the body     : d+1, x     -> the number changes: critical
  newline after the body : 5, " "     -> 5 fails; " " then a coin flip: "#" (score 51,
                                         recovers) or "8" (score 50, fails)
  "#" characters         : x, y       -> the "####" is written anyway: non-critical
  space after "####"     : x, y, both with negligible probability -> critical
  digits of the answer   : d+1, d+2   -> critical
  newline after the answer: 3, 4      -> critical
  EOS                    : newline, x -> the answer is complete already: non-critical
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import DynamicCache, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
EOS = "<|im_end|>"
TOP, ALT_SCORES, NEGLIGIBLE, BASELINE = 100.0, (60.0, 59.0, 58.0), (-20.0, -21.0), -50.0


def byte_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS,
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def random_qwen2(vocab_size: int, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        # Large weights spread the logits, so greedy steps are rarely near ties.
        initializer_range=1.0,
    )
    return Qwen2ForCausalLM(config).eval()


def prompt_ids(tokenizer, question: str) -> list[int]:
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True
    )
    return tokenizer(text, add_special_tokens=False).input_ids


class RuleLM(torch.nn.Module):
    """The hand-built deterministic model described in the module docstring."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device
        self.config = SimpleNamespace(max_position_embeddings=4096, _attn_implementation="sdpa")
        self.generation_config = SimpleNamespace(eos_token_id=tokenizer.eos_token_id)
        self.calls = 0
        self._memo: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(
        self,
        input_ids,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        use_cache=False,
        logits_to_keep=0,
        shared_prefix=None,
        **_,
    ):
        self.calls += 1
        cache = past_key_values if past_key_values is not None else DynamicCache()
        past = cache.get_seq_length()
        own = cache.layers[0].keys[:, 0, :, 0].long() if past else input_ids[:, :0]
        tokens = torch.cat([own, input_ids], dim=1)
        mask = attention_mask if attention_mask is not None else torch.ones_like(tokens)
        as_keys = input_ids.float()[:, None, :, None]
        cache.update(as_keys, as_keys.clone(), 0)
        logits = []
        for b in range(input_ids.shape[0]):
            # Shared-prefix layout: the row's prefix is the first n_b shared cache entries.
            prefix = []
            if shared_prefix is not None:
                keys = shared_prefix.keys_values[0][0]
                prefix = keys[0, : int(shared_prefix.lengths[b]), 0].long().tolist()
            visible = tokens[b][mask[b] > 0].tolist()
            seen = len(visible) - input_ids.shape[1]
            logits.append(
                torch.stack(
                    [
                        self._scores(tuple(prefix + visible[: seen + j + 1]))
                        for j in range(input_ids.shape[1])
                    ]
                )
            )
        logits = torch.stack(logits)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits, past_key_values=cache)

    def _scores(self, history: tuple[int, ...]) -> torch.Tensor:
        if history not in self._memo:
            text = self.tokenizer.decode(list(history))
            scores = torch.full((self.vocab_size,), BASELINE)
            for piece, score in rule(text).items():
                scores[self._id(piece)] = score
            self._memo[history] = scores
        return self._memo[history]

    def _id(self, piece: str) -> int:
        if piece == EOS:
            return self.tokenizer.eos_token_id
        [token_id] = self.tokenizer.encode(piece, add_special_tokens=False)
        return token_id


def rule(text: str) -> dict[str, float]:
    """Scores of the next token given the whole text (prompt and response so far)."""
    question, marker, response = text.rpartition("<|im_start|>assistant\n")
    if not marker:  # inside the prompt: nothing to predict
        return {}
    a, b = map(int, re.search(r"Q (\d+)\+(\d+)", question).groups())
    total = a + b + (a + b > 50)
    body = f"so {total}\n"
    if "####" in response:
        return _answer_line(response)
    i = len(response)
    if i < len(body):
        target = body[i]
        if target in "so":
            return ranked(target, "x", "y")
        if target == " ":
            return ranked(" ", EOS, "9", "x")
        if target.isdigit():
            return ranked(target, str((int(target) + 1) % 10), "x")
        return ranked("\n", "5", " ")
    if i == len(body) and response.endswith(" "):
        return {"#": 51.0, "8": 50.0}
    return ranked("#", "x", "y")


def _answer_line(response: str) -> dict[str, float]:
    head, _, after = response.partition("####")
    if "\n" in after:
        return ranked(EOS, "\n", "x")
    numbers = re.findall(r"\d+", head)
    committed = numbers[-1] if numbers else None
    if after == "":
        return {" ": TOP, "x": NEGLIGIBLE[0], "y": NEGLIGIBLE[1]}
    written = after.lstrip(" ")
    if committed is not None and committed.startswith(written) and written != committed:
        digit = int(committed[len(written)])
        return ranked(str(digit), str((digit + 1) % 10), str((digit + 2) % 10))
    if written == committed:
        return ranked("\n", "3", "4")
    return ranked("\n", "a", "b")


def ranked(top: str, *alternatives: str) -> dict[str, float]:
    return {top: TOP, **dict(zip(alternatives, ALT_SCORES[: len(alternatives)], strict=True))}


def expected_mask(total: int) -> list[int]:
    """The critical positions of the answer "so S\\n#### S\\n<EOS>", by construction."""
    digits = len(str(total))
    return [0, 0, 0] + [1] * digits + [0] + [0] * 4 + [1] + [1] * digits + [1] + [0]


# --- the fixtures behave as designed -----------------------------------------------------


def greedy_text(model: RuleLM, tokenizer, question: str, steps: int = 40) -> str:
    ids = prompt_ids(tokenizer, question)
    out = []
    for _ in range(steps):
        logits = model(torch.tensor([ids + out])).logits[0, -1]
        out.append(int(logits.argmax()))
        if out[-1] == tokenizer.eos_token_id:
            break
    return tokenizer.decode(out)


def test_rule_model_answers_as_designed():
    tokenizer = byte_tokenizer()
    model = RuleLM(tokenizer)
    assert greedy_text(model, tokenizer, "Q 10+7") == f"so 17\n#### 17\n{EOS}"
    assert greedy_text(model, tokenizer, "Q 30+25") == f"so 56\n#### 56\n{EOS}"


def test_rule_model_reads_its_cache_with_the_attention_mask():
    tokenizer = byte_tokenizer()
    model = RuleLM(tokenizer)
    ids = prompt_ids(tokenizer, "Q 3+4")
    whole = model(torch.tensor([ids]), use_cache=True)
    # Step with the cache: same scores as recomputing, and left padding is ignored.
    step = model(torch.tensor([[ids[-1]]]), past_key_values=_cache_of(ids[:-1]))
    assert torch.equal(step.logits[0, -1], whole.logits[0, -1])
    padded = torch.tensor([[0, 0] + ids])
    mask = torch.tensor([[0, 0] + [1] * len(ids)])
    assert torch.equal(model(padded, attention_mask=mask).logits[0, -1], whole.logits[0, -1])


def _cache_of(ids: list[int]) -> DynamicCache:
    keys = torch.tensor([ids]).float()[:, None, :, None]
    return DynamicCache([(keys, keys.clone())])
