"""The losses on a tiny Qwen2: gathered LM head equals full logits, accumulation invariance,
the step normaliser summed over ranks, and the batch-field helpers."""

import subprocess
import sys
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from cft_rl.config import ModelSpec
from cft_rl.sft.attention import attention_received, received_from_later_queries
from cft_rl.sft.fields import digit_token_table, example_seed
from cft_rl.sft.losses import LossConfig, selected_token_loss, step_normalizer

VOCAB = 40


def tiny_model() -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        attn_implementation="eager",
    )
    return Qwen2ForCausalLM(config).double()


def examples(count=8, seed=0) -> list[dict[str, torch.Tensor]]:
    """Unpadded examples of different lengths, prompts of different lengths, a few critical."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for index in range(count):
        length, prompt = 6 + (index * 5) % 9, 2 + index % 3
        response = torch.arange(length) >= prompt
        critical = response & (torch.rand(length, generator=generator) < 0.3)
        critical[prompt] = True
        out.append(
            {
                "input_ids": torch.randint(VOCAB, (length,), generator=generator),
                "attention_mask": torch.ones(length, dtype=torch.long),
                "response_mask": response.long(),
                "critical_mask": critical.long(),
            }
        )
    return out


def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Right padding: positions of real tokens stay the same as unpadded."""
    width = max(item["input_ids"].shape[0] for item in items)
    return {
        key: torch.stack(
            [torch.nn.functional.pad(item[key], (0, width - len(item[key]))) for item in items]
        )
        for key in items[0]
    }


def loss_sums(model, config, batch):
    hidden = model.model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
    ).last_hidden_state
    return selected_token_loss(config, batch, hidden, model.lm_head.weight)


def micro_batch_mean(model, config, batch) -> float:
    sums = loss_sums(model, config, batch)
    return (sums.loss_sum / sums.weight_sum).item()


def step_loss_and_grads(model, config, micro_batches):
    """Accumulate sum-losses over micro-batches, each divided by the step's normaliser."""
    model.zero_grad()
    normaliser = step_normalizer(config, micro_batches)
    total = 0.0
    for batch in micro_batches:
        loss = loss_sums(model, config, batch).loss_sum / normaliser
        loss.backward()
        total += loss.item()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return total, grads


def test_gathered_lm_head_equals_full_logit_loss_and_gradients():
    model = tiny_model()
    batch = collate(examples())
    ours, grads = step_loss_and_grads(model, LossConfig(name="sft", chunk_size=7), [batch])

    # the standard way: logits at every position, cross-entropy on the response tokens
    model.zero_grad()
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["input_ids"].masked_fill(batch["response_mask"] == 0, -100)
    full = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    full.backward()

    torch.testing.assert_close(torch.tensor(ours, dtype=torch.float64), full.detach())
    for name, param in model.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, msg=name)


@pytest.mark.parametrize("name", ["sft", "cft"])
def test_one_batch_of_eight_equals_eight_batches_of_one(name):
    model = tiny_model()
    items = examples()
    config = LossConfig(name=name)
    loss_1x8, grads_1x8 = step_loss_and_grads(model, config, [collate(items)])
    loss_8x1, grads_8x1 = step_loss_and_grads(model, config, [collate([item]) for item in items])

    torch.testing.assert_close(loss_8x1, loss_1x8)
    for key, grad in grads_1x8.items():
        torch.testing.assert_close(grads_8x1[key], grad, msg=key)

    # per-micro-batch averaging, which the step normaliser replaces, gives another loss
    with torch.no_grad():
        per_batch_means = [micro_batch_mean(model, config, collate([item])) for item in items]
    assert abs(sum(per_batch_means) / len(items) - loss_1x8) > 1e-3


# Each rank's step has rank + 1 critical tokens; the normaliser must be their sum, 3, on both.
RANK_PROGRAM = """
import sys, torch, torch.distributed as dist
from cft_rl.sft.losses import LossConfig, step_normalizer
rank, init_file = int(sys.argv[1]), sys.argv[2]
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=2)
critical = torch.zeros(1, 6, dtype=torch.long)
critical[0, 1 : rank + 2] = 1
batch = {"input_ids": torch.zeros(1, 6, dtype=torch.long), "response_mask": torch.ones(1, 6),
         "critical_mask": critical}
print(step_normalizer(LossConfig(name="cft"), [batch]).item())
dist.destroy_process_group()
"""


def test_step_normaliser_sums_over_ranks(tmp_path):
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_PROGRAM, str(rank), str(tmp_path / "init")],
            stdout=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in ranks]
    assert [process.returncode for process in ranks] == [0, 0]
    assert [float(out.split()[-1]) for out in outputs] == [3.0, 3.0]


def test_digit_token_table_marks_tokens_with_digits():
    from tokenizers import Tokenizer, models

    vocab = {"a": 0, "12": 1, "x3": 2, " ": 3, "²": 4, "7": 5}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="a"))
    )
    assert digit_token_table(tokenizer).tolist() == [False, True, True, False, False, True]


def test_example_seed_is_stable_and_distinct():
    assert example_seed("gsm8k-17") == example_seed("gsm8k-17")
    assert example_seed("gsm8k-17") != example_seed("gsm8k-18")
    assert example_seed("gsm8k-17") == 3857011890  # crc32: the same in every process and run


@pytest.mark.parametrize(("name", "mask"), [("dft", "response_mask"), ("cft", "critical_mask")])
def test_losses_equal_trls_fused_lm_head_with_labels_masked(name, mask):
    """TRL 1.16's own SFTTrainer.compute_loss (its fused, chunked LM head over the positions
    whose label is not -100): `loss_type="dft"` on response labels is our `dft`, and its
    default `nll` on labels -100 outside the critical tokens is our `cft`, loss and
    gradients."""
    trl_utils = pytest.importorskip("trl.trainer.utils")
    from trl import SFTTrainer

    model = tiny_model()
    batch = collate(examples())
    ours, grads = step_loss_and_grads(model, LossConfig(name=name), [batch])

    trl_utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    model.zero_grad()
    inputs = {
        "input_ids": batch["input_ids"],
        "attention_mask": batch["attention_mask"],
        "labels": batch["input_ids"].masked_fill(batch[mask] == 0, -100),
    }
    loss_type = "dft" if name == "dft" else "nll"
    theirs = SFTTrainer.compute_loss(_one_process_sft_trainer(model, loss_type), model, inputs)
    theirs.backward()

    # TRL's kernel returns float32 log-probabilities of this float64 model: float32 tolerances.
    tolerance = {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(ours, theirs.item(), **tolerance)
    for key, param in model.named_parameters():
        torch.testing.assert_close(grads[key], param.grad.double(), msg=key, **tolerance)


def _one_process_sft_trainer(model, loss_type: str) -> SimpleNamespace:
    """What SFTTrainer.compute_loss reads of its trainer, for one process and no extras
    (building a real SFTTrainer needs a dataset, an accelerator and a tokenizer)."""
    accelerator = SimpleNamespace(
        parallelism_config=None, num_processes=1, gather_for_metrics=lambda value: value
    )
    return SimpleNamespace(
        model=model,
        args=SimpleNamespace(loss_type=loss_type, average_tokens_across_devices=False),
        accelerator=accelerator,
        aux_loss_enabled=False,
        compute_loss_func=None,
        label_smoother=None,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        get_tp_size=lambda: 1,
    )


# ---- attention_topk's scores: the attention each token receives ----


def test_attention_received_sums_later_queries_and_averages_layers_and_heads():
    generator = torch.Generator().manual_seed(5)
    layers = tuple(torch.rand(2, 3, 5, 5, generator=generator) for _ in range(2))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    got = received_from_later_queries(layers, mask)
    for row in range(2):
        for key in range(5):
            expected = sum(
                float(layer[row, head, query, key])
                for layer in layers
                for head in range(3)
                for query in range(key + 1, 5)
                if mask[row, query]
            ) / (2 * 3)
            assert got[row, key].item() == pytest.approx(expected, rel=1e-5)


def test_attention_received_from_a_model_is_zero_off_the_response(tmp_path):
    model = tiny_model().float()
    model.save_pretrained(tmp_path)
    items = examples(count=3)
    scores = attention_received(ModelSpec(path=str(tmp_path), device="cpu"), items)
    for item, score in zip(items, scores, strict=True):
        response = item["response_mask"].bool()
        assert score.shape == item["input_ids"].shape
        assert (score[~response] == 0).all()
        # every response token but the last is attended to by later tokens
        assert (score[response][:-1] > 0).all() and score[-1] == 0
    # padding in a batch changes no example's scores
    alone = attention_received(ModelSpec(path=str(tmp_path), device="cpu"), items[1:2])
    torch.testing.assert_close(alone[0], scores[1], rtol=1e-4, atol=1e-6)
