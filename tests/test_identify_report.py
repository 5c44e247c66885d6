"""`cft-rl report tokens`: fractions, token classes, frequent tokens, colour and HTML views."""

from cft_rl.cli import main
from cft_rl.data.token_classes import token_class
from cft_rl.identify.dataset import write_dataset


def test_token_classes():
    assert [token_class(p) for p in ["7", " 42", "+", " =", "apples", " Ava", "\n", ".", " "]] == [
        "digits",
        "digits",
        "operators",
        "operators",
        "words",
        "words",
        "whitespace/punctuation",
        "whitespace/punctuation",
        "whitespace/punctuation",
    ]
    assert token_class("<|im_end|>") == "special"
    assert token_class("5.") == "mixed"


def record(index, tokens, mask):
    return {
        "index": index,
        "id": f"q-{index}",
        "source": "test",
        "question": f"How much is <{index}> + 1?",
        "answer": f"{index + 1}",
        "prompt": "p",
        "prompt_token_ids": [1],
        "response": "".join(tokens),
        "response_token_ids": list(range(len(tokens))),
        "response_tokens": tokens,
        "critical_mask": mask,
        "failure_fraction": [
            float(m) if m else 0.5 * (t == "x") for t, m in zip(tokens, mask, strict=True)
        ],
        "alternatives": [
            [
                {
                    "token_id": 9,
                    "token": "9",
                    "logprob": -1.0,
                    "rank": 1,
                    "answers": ["3"],
                    "correct": [False],
                }
            ]
            for _ in tokens
        ],
    }


def test_report_tables_and_views(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        record(
            0, ["So", " ", "1", "+", "2", "=", "3", "\n", "<|im_end|>"], [0, 0, 1, 1, 0, 0, 1, 0, 0]
        ),
        record(1, ["x", " ", "3", "\n"], [0, 0, 1, 0]),
    ]
    write_dataset(rows, run / "critical_tokens.parquet", {"model": "m"})
    assert main(["report", "tokens", str(run)]) == 0

    markdown = (run / "tokens.md").read_text()
    assert "4 of 13 response tokens are critical (30.8%) in 2 kept answers." in markdown
    assert "| digits | 4 | 3 | 75.0 |" in markdown
    assert "| operators | 2 | 1 | 50.0 |" in markdown
    assert "| whitespace/punctuation | 4 | 0 | 0.0 |" in markdown
    assert "| words | 2 | 0 | 0.0 |" in markdown
    assert "| special | 1 | 0 | 0.0 |" in markdown
    assert "| `3` | 2 | 100 |" in markdown  # the most frequent critical token, always critical
    assert "Per answer: min 25.0%, median 29.2%, max 33.3%." in markdown

    page = (run / "tokens.html").read_text()
    assert page.count('class="c"') == 4
    assert page.count('class="p"') == 1  # "x": some alternatives failed, not all
    # each answer under its question (escaped) and reference
    assert (
        page.index("How much is &lt;0&gt; + 1?")
        < page.index("reference answer: 1")
        < page.index("q-1")
    )
    assert "&lt;|im_end|&gt;" in page
    assert "failure 1.00; 9 -&gt; 3" in page
    assert "wrote" in capsys.readouterr().out


def test_report_names_a_wrong_directory(tmp_path, capsys):
    assert main(["report", "tokens", str(tmp_path)]) == 2
    assert "critical_tokens.parquet not found" in capsys.readouterr().err
