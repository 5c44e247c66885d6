"""The tensors of an SFT micro-batch, and helpers that build the tokenizer-dependent ones.

Every per-token field is aligned with `input_ids` ([batch, seq]): entry (b, t) describes the
token input_ids[b, t]. The losses shift them to the predictions that produce those tokens.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence

import torch

# A micro-batch (or one example's fields): field name -> tensor.
Fields = dict[str, torch.Tensor]

# field name -> what it holds; the losses name the fields they need in their errors.
FIELDS: dict[str, str] = {
    "input_ids": "token ids [batch, seq], prompt followed by response, padded",
    "attention_mask": "1 on real tokens, 0 on padding [batch, seq]",
    "response_mask": "1 on the response tokens that may be supervised [batch, seq]",
    "critical_mask": "1 on critical tokens, from `cft-rl identify` [batch, seq]",
    "failure_fraction": "share of counterfactual alternatives that failed, in [0, 1], "
    "from `cft-rl identify` [batch, seq]",
    "digit_mask": "1 on tokens whose text contains a digit, see digit_token_table [batch, seq]",
    "attention_received": "attention each token receives from later tokens under the starting "
    "model, see cft_rl.sft.attention [batch, seq]",
    "ref_logprobs": "log-probability of each token under the reference model [batch, seq]",
    "example_seed": "one integer per example, see example_seed [batch]",
}


def digit_token_table(tokenizer) -> torch.Tensor:
    """Bool vector over the vocabulary: True for tokens whose text contains a digit 0-9.

    `digit_mask = digit_token_table(tokenizer)[input_ids]` builds the `numbers_only` field.
    """
    texts = tokenizer.batch_decode([[token_id] for token_id in range(len(tokenizer))])
    return torch.tensor([any(ch in "0123456789" for ch in text) for text in texts])


def example_seed(example_id: str) -> int:
    """A stable per-example integer (same across runs and processes, unlike `hash`)."""
    return zlib.crc32(example_id.encode("utf-8"))


def collate(items: Sequence[Mapping[str, torch.Tensor]], pad_id: int = 0) -> Fields:
    """Right-pad the examples' fields into [batch, width] tensors (real tokens keep their
    positions); per-example scalars become [batch]."""
    width = max(item["input_ids"].shape[0] for item in items)
    batch = {}
    for key in items[0]:
        if items[0][key].dim() == 0:
            batch[key] = torch.stack([item[key] for item in items])
            continue
        fill = pad_id if key == "input_ids" else 0
        batch[key] = torch.stack(
            [
                torch.nn.functional.pad(item[key], (0, width - item[key].shape[0]), value=fill)
                for item in items
            ]
        )
    return batch
