"""Training examples as token-level fields (cft_rl.sft.fields), checked against the loss.

Two sources: the dataset of `cft-rl identify` (prompt and response token ids with critical
masks and failure fractions) and plain questions with worked solutions, templated with
cft_rl.data.prompts (no masks). Every example becomes a dict of 1-D tensors aligned with its
input_ids (prompt then response), plus `example_seed`; `collate` right-pads them into a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cft_rl.data.prompts import format_prompt
from cft_rl.errors import UserError
from cft_rl.outputs import IDENTIFY_DATASET
from cft_rl.sft.attention import attention_received
from cft_rl.sft.config import SftConfig, SftData
from cft_rl.sft.fields import Fields, collate, digit_token_table, example_seed
from cft_rl.sft.losses import LOSSES, LossConfig, TokenView
from cft_rl.sft.reference import reference_logprobs


@dataclass(frozen=True)
class TokenizedExample:
    """One prompt/response pair; masks are per response token (None: the data has none)."""

    id: str
    prompt_ids: list[int]
    response_ids: list[int]
    critical_mask: list[int] | None = None
    failure_fraction: list[float] | None = None


@dataclass
class TrainingSet:
    """The examples to train on, and what was left out of the source and why."""

    source: str
    examples: list[Fields]
    dropped_too_long: int = 0
    dropped_unsupervised: int = 0


def load_examples(data: SftData, tokenizer) -> tuple[str, list[TokenizedExample]]:
    """(a name of the source for messages, its examples), EOS appended where asked."""
    if data.format == "identify":
        source, examples = read_identify_dataset(data.path)
    else:
        source, examples = templated_examples(data, tokenizer)
    examples = examples[: data.limit]
    if data.append_eos:
        examples = [with_eos(example, tokenizer.eos_token_id) for example in examples]
    return source, examples


def read_identify_dataset(path: str) -> tuple[str, list[TokenizedExample]]:
    """The kept answers of an identify run (`path`: its output_dir or its parquet file)."""
    import pyarrow.parquet as pq

    file = Path(path)
    if file.is_dir():
        file = file / IDENTIFY_DATASET
    if not file.is_file():
        raise UserError(
            f"data.path: no identify dataset at {file}; run `cft-rl identify` first "
            "(its output_dir holds critical_tokens.parquet)"
        )
    columns = set(pq.read_schema(file).names)
    missing = {"id", "prompt_token_ids", "response_token_ids"} - columns
    if missing:
        raise UserError(f"{file}: not an identify dataset, missing columns {sorted(missing)}")
    wanted = ["id", "prompt_token_ids", "response_token_ids"]
    wanted += [name for name in ("critical_mask", "failure_fraction") if name in columns]
    rows = pq.read_table(file, columns=wanted).to_pylist()
    examples = []
    for number, row in enumerate(rows):
        for mask in ("critical_mask", "failure_fraction"):
            values = row.get(mask)
            if values is not None and len(values) != len(row["response_token_ids"]):
                raise UserError(
                    f"{file}: row {number} (id {row['id']}): {mask} has {len(values)} entries "
                    f"for {len(row['response_token_ids'])} response tokens"
                )
        examples.append(
            TokenizedExample(
                id=row["id"],
                prompt_ids=row["prompt_token_ids"],
                response_ids=row["response_token_ids"],
                critical_mask=row.get("critical_mask"),
                failure_fraction=row.get("failure_fraction"),
            )
        )
    return str(file), examples


def templated_examples(data: SftData, tokenizer) -> tuple[str, list[TokenizedExample]]:
    """Questions through the prompt template, their worked solutions as responses."""
    examples = data.load()
    source = data.path or data.benchmark
    tokenized = []
    for example in examples:
        if not example.solution:
            raise UserError(
                f"{source}: example {example.id} has no worked solution to train on; the SFT "
                "baseline needs solutions (e.g. gsm8k's train.jsonl) or an identify dataset"
            )
        prompt = format_prompt(tokenizer, example.question, data.template)
        tokenized.append(
            TokenizedExample(
                id=example.id,
                prompt_ids=tokenizer(prompt, add_special_tokens=False).input_ids,
                response_ids=tokenizer(example.solution, add_special_tokens=False).input_ids,
            )
        )
    return source, tokenized


def with_eos(example: TokenizedExample, eos_id: int) -> TokenizedExample:
    """`example` with eos_id closing its response (masks: not critical, nothing failed)."""
    if example.response_ids and example.response_ids[-1] == eos_id:
        return example
    return TokenizedExample(
        id=example.id,
        prompt_ids=example.prompt_ids,
        response_ids=[*example.response_ids, eos_id],
        critical_mask=None if example.critical_mask is None else [*example.critical_mask, 0],
        failure_fraction=(
            None if example.failure_fraction is None else [*example.failure_fraction, 0.0]
        ),
    )


def example_fields(example: TokenizedExample) -> Fields:
    """The per-token fields of one example (see cft_rl.sft.fields.FIELDS)."""
    num_prompt, num_response = len(example.prompt_ids), len(example.response_ids)
    fields = {
        "input_ids": torch.tensor(example.prompt_ids + example.response_ids, dtype=torch.long),
        "attention_mask": torch.ones(num_prompt + num_response, dtype=torch.long),
        "response_mask": torch.tensor([0] * num_prompt + [1] * num_response, dtype=torch.long),
        "example_seed": torch.tensor(example_seed(example.id), dtype=torch.long),
    }
    if example.critical_mask is not None:
        fields["critical_mask"] = torch.tensor(
            [0] * num_prompt + list(example.critical_mask), dtype=torch.long
        )
    if example.failure_fraction is not None:
        fields["failure_fraction"] = torch.tensor(
            [0.0] * num_prompt + list(example.failure_fraction), dtype=torch.float32
        )
    return fields


def build_training_set(config: SftConfig, tokenizer) -> TrainingSet:
    """Load, tokenize, add the fields the loss needs, leave out what cannot be trained on."""
    source, examples = load_examples(config.data, tokenizer)
    if not examples:
        raise UserError(f"{source}: no examples to train on")
    items = [example_fields(example) for example in examples]
    max_length = config.data.max_length
    kept = [item for item in items if max_length is None or len(item["input_ids"]) <= max_length]
    training = TrainingSet(source, kept, dropped_too_long=len(items) - len(kept))
    if not kept:
        raise UserError(f"{source}: every example is longer than data.max_length={max_length}")
    add_derived_fields(config, tokenizer, kept)
    weights = [example_weight(config.loss, item, source) for item in kept]
    if all(weight <= 0 for weight in weights):
        raise UserError(
            f"{source}: loss '{config.loss.name}' selects no token in any of its "
            f"{len(kept)} examples (e.g. every critical_mask is all zero); nothing to train on"
        )
    if config.data.drop_unsupervised:
        training.examples = [item for item, weight in zip(kept, weights, strict=True) if weight > 0]
        training.dropped_unsupervised = len(kept) - len(training.examples)
    return training


def add_derived_fields(config: SftConfig, tokenizer, items: list[Fields]) -> None:
    """Fields computed from the tokenizer or a model, built only for the loss that needs them."""
    needed = LOSSES.get(config.loss.name).derived_field
    if needed == "digit_mask":
        table = digit_token_table(tokenizer)
        for item in items:
            item["digit_mask"] = table[item["input_ids"]].long()
    elif needed == "attention_received":
        for item, scores in zip(items, attention_received(config.model, items), strict=True):
            item["attention_received"] = scores
    elif needed == "ref_logprobs":
        for item, logprobs in zip(
            items,
            reference_logprobs(config.reference_model, items, config.loss.chunk_size),
            strict=True,
        ):
            item["ref_logprobs"] = logprobs


def example_weight(loss_config: LossConfig, item: Fields, source: str) -> float:
    """The loss's total weight on one example, without the model; errors name the data."""
    loss = LOSSES.get(loss_config.name)
    batch = collate([item])
    try:
        return float(loss.total_weight(TokenView(batch, loss.name), loss_config))
    except UserError as err:
        raise UserError(
            f"{source}: {err}. Critical masks come from `cft-rl identify` (data.format: identify)"
        ) from None
