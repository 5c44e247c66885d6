"""`cft-rl report tokens RUN_DIR`: what `cft-rl identify` found critical.

Reads RUN_DIR/critical_tokens.parquet and writes, next to it (or into --out):
tokens.md (overall and per-example fractions, a breakdown by token class, the most
frequent critical and non-critical tokens) and tokens.html (every response with its
critical tokens highlighted; hover a token for its failure fraction and what its
alternatives led to). The tables and the first responses are also printed, in colour.
"""

from __future__ import annotations

import html
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from cft_rl.data.token_classes import CLASSES, token_class
from cft_rl.errors import UserError
from cft_rl.outputs import IDENTIFY_DATASET

TABLE_NAME = "tokens.md"
HTML_NAME = "tokens.html"
TOP_TOKENS = 15
SHOWN_IN_TERMINAL = 3


def report_tokens(run_dirs: list[str], out: str | None = None) -> None:
    """Tables and highlighted responses for each identify run in `run_dirs`."""
    for run_dir in run_dirs:
        rows = _load(Path(run_dir))
        out_dir = Path(out) if out is not None else Path(run_dir)
        if len(run_dirs) > 1 and out is not None:
            out_dir = out_dir / Path(run_dir).name
        out_dir.mkdir(parents=True, exist_ok=True)
        stats = token_statistics(rows)
        markdown = tables(stats, title=str(run_dir))
        (out_dir / TABLE_NAME).write_text(markdown)
        (out_dir / HTML_NAME).write_text(html_view(rows, stats, title=str(run_dir)))
        _print(rows, markdown)
        print(f"wrote {out_dir / TABLE_NAME} and {out_dir / HTML_NAME}")


def _load(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / IDENTIFY_DATASET
    if not path.is_file():
        raise UserError(
            f"{path} not found: is {run_dir} the output_dir of a `cft-rl identify` run?"
        )
    columns = [
        "id",
        "question",
        "answer",
        "response_tokens",
        "critical_mask",
        "failure_fraction",
        "alternatives",
    ]
    try:
        return pq.read_table(path, columns=columns).to_pylist()
    except (KeyError, ValueError) as err:
        raise UserError(f"{path}: not an identify dataset ({err})") from None


def token_statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts behind the report."""
    per_class = {name: [0, 0] for name in CLASSES}  # [tokens, critical]
    critical_tokens, other_tokens = Counter(), Counter()
    fractions = []
    for row in rows:
        mask = row["critical_mask"]
        fractions.append(sum(mask) / len(mask) if mask else 0.0)
        for piece, critical in zip(row["response_tokens"], mask, strict=True):
            counts = per_class[token_class(piece)]
            counts[0] += 1
            counts[1] += critical
            (critical_tokens if critical else other_tokens)[piece] += 1
    total = sum(len(row["critical_mask"]) for row in rows)
    critical = sum(sum(row["critical_mask"]) for row in rows)
    return {
        "examples": len(rows),
        "tokens": total,
        "critical": critical,
        "fraction": critical / total if total else 0.0,
        "example_fractions": fractions,
        "per_class": per_class,
        "top_critical": critical_tokens.most_common(TOP_TOKENS),
        "top_other": other_tokens.most_common(TOP_TOKENS),
        "critical_rate": {
            piece: critical_tokens[piece] / (critical_tokens[piece] + other_tokens[piece])
            for piece in set(critical_tokens) | set(other_tokens)
        },
    }


def tables(stats: dict[str, Any], title: str) -> str:
    fractions = stats["example_fractions"]
    lines = [
        f"# Critical tokens: {title}",
        "",
        f"{stats['critical']} of {stats['tokens']} response tokens are critical "
        f"({100 * stats['fraction']:.1f}%) in {stats['examples']} kept answers.",
    ]
    if fractions:
        lines.append(
            f"Per answer: min {100 * min(fractions):.1f}%, median "
            f"{100 * statistics.median(fractions):.1f}%, max {100 * max(fractions):.1f}%."
        )
    lines += ["", "| token class | tokens | critical | critical % |", "|---|---:|---:|---:|"]
    for name, (count, critical) in stats["per_class"].items():
        if count:
            lines.append(f"| {name} | {count} | {critical} | {100 * critical / count:.1f} |")
    for heading, key in (("critical", "top_critical"), ("non-critical", "top_other")):
        lines += [
            "",
            f"Most frequent {heading} tokens:",
            "",
            "| token | count | critical % of its uses |",
            "|---|---:|---:|",
        ]
        for piece, count in stats[key]:
            rate = 100 * stats["critical_rate"][piece]
            lines.append(f"| `{_visible(piece)}` | {count} | {rate:.0f} |")
    return "\n".join(lines) + "\n"


def html_view(rows: list[dict[str, Any]], stats: dict[str, Any], title: str) -> str:
    """Every response, critical tokens on red (darker: more alternatives failed)."""
    blocks = []
    for row in rows:
        spans = []
        for t, piece in enumerate(row["response_tokens"]):
            fraction = row["failure_fraction"][t]
            tried = "; ".join(
                f"{_visible(a['token'])} -> {', '.join(str(x) for x in a['answers'])}"
                for a in row["alternatives"][t]
            )
            tip = html.escape(f"failure {fraction:.2f}; {tried or 'nothing tried'}", quote=True)
            css = "c" if row["critical_mask"][t] else ("p" if fraction > 0 else "n")
            spans.append(f'<span class="{css}" title="{tip}">{html.escape(piece)}</span>')
        share = sum(row["critical_mask"]) / max(1, len(row["critical_mask"]))
        blocks.append(
            f"<h3>{html.escape(row['id'])} ({100 * share:.0f}% critical)</h3>"
            f"<p class='q'>{html.escape(row['question'])}</p>"
            f"<p class='r'>reference answer: {html.escape(row['answer'])}</p>"
            f"<pre>{''.join(spans)}</pre>"
        )
    return (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>critical tokens: {html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:auto}"
        "pre{white-space:pre-wrap;font-size:14px;line-height:1.6}"
        ".c{background:#e53935;color:white}.p{background:#ffe0b2}"
        ".q{white-space:pre-wrap;color:#333}.r{color:#555;font-size:90%}</style>"
        f"<h1>Critical tokens: {html.escape(title)}</h1>"
        f"<p>{stats['critical']} of {stats['tokens']} tokens critical "
        f"({100 * stats['fraction']:.1f}%). Red: critical (every alternative failed). "
        "Orange: some alternatives failed. Hover a token for details.</p>" + "".join(blocks)
    )


def _print(rows: list[dict[str, Any]], markdown: str) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console()
    console.print(markdown)
    for row in rows[:SHOWN_IN_TERMINAL]:
        text = Text()
        for t, piece in enumerate(row["response_tokens"]):
            if row["critical_mask"][t]:
                style = "bold white on red"
            elif row["failure_fraction"][t] > 0:
                style = "yellow"
            else:
                style = ""
            text.append(piece, style=style)
        console.print(Text(f"{row['id']}:", style="bold"))
        console.print(text)


def _visible(piece: str) -> str:
    return piece.replace("\n", "\\n").replace("|", "\\|").replace("`", "'") or "''"
