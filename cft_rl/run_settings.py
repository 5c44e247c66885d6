"""A run against the earlier run whose work it continues: a resumed training, another shard
of identify, a rerun of eval into the same folder. Each records the settings its results
depend on (and a fingerprint of its data); a later run must have the same ones, and an error
names every setting that changed. One check for every stage."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cft_rl.config import schema_keys
from cft_rl.errors import UserError
from cft_rl.files import write_text_atomic


class RunSettingsError(UserError):
    """An output directory holds work done with other settings."""


def changed_settings(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two nested settings dicts, sorted."""
    if isinstance(saved, dict) and isinstance(current, dict):
        keys = set(saved) | set(current)
        return sorted(
            k
            for key in keys
            for k in changed_settings(saved.get(key), current.get(key), f"{prefix}{key}.")
        )
    return [] if saved == current else [prefix.rstrip(".")]


def data_fingerprint(chunks: Iterable[bytes]) -> str:
    """A short hash of what a run trains on. Recorded with its settings, it stops a resumed
    run from continuing on other data (an edited file, or a default number of questions
    that changed), which its step-indexed data order would follow without notice."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(len(chunk).to_bytes(8, "little"))
        digest.update(chunk)
    return digest.hexdigest()[:16]


def check_same_settings(where: str | Path, saved: dict[str, Any], current: dict[str, Any]) -> None:
    """`current` must equal the `saved` settings of the work at `where`. Only the entries
    both record are compared, at every depth: one the code no longer records does not shape
    the run (data.limit for identify), and work from an older version cannot be checked for
    what it lacks."""
    changed = changed_settings(*shared_settings(saved, current))
    if changed:
        details = ", ".join(
            f"{key}: {value_at(saved, key)!r} -> {value_at(current, key)!r}" for key in changed
        )
        raise RunSettingsError(
            f"{where} holds work done with other settings ({details}); use a new output_dir "
            "or the same settings"
        )


def check_recorded(path: Path, settings: dict[str, Any]) -> None:
    """`settings` must equal those recorded at `path`, if any are."""
    if path.exists():
        check_same_settings(path, json.loads(path.read_text()), settings)


def record_settings(path: Path, settings: dict[str, Any]) -> None:
    """Record `settings` at `path`, or check them against those recorded there since the
    start (another shard may have written first). Called just before the first result is
    written, never at the start: a run that fails before any work (a wrong model path, a
    missing data field) leaves nothing that would refuse its corrected rerun."""
    if path.exists():
        check_recorded(path, settings)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")


def shared_settings(saved: Any, current: Any) -> tuple[Any, Any]:
    """Both settings trees cut to the keys both hold, at every depth."""
    if not (isinstance(saved, dict) and isinstance(current, dict)):
        return saved, current
    keys = set(saved) & set(current)
    pairs = {key: shared_settings(saved[key], current[key]) for key in keys}
    return {k: a for k, (a, _) in pairs.items()}, {k: b for k, (_, b) in pairs.items()}


def value_at(settings: dict[str, Any], dotted: str) -> Any:
    """The value at a dotted key of nested settings, None where it is absent."""
    value: Any = settings
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


@dataclass(frozen=True)
class ResumeRule:
    """A stage's split of its recipe keys: those a resumed run (or another shard, or a rerun
    into the same folder) must share with the recorded work, and those it may change
    (where outputs go, logging, speed-only settings, `steps` for extending). A key is named
    by itself or by a section above it. Every key of the stage's schema is named by exactly
    one list, which tests/test_run_settings.py checks, so a new setting is classified on
    purpose, never by whether someone remembered to drop it."""

    must_match: tuple[str, ...]
    may_change: tuple[str, ...]

    def settings(self, config: BaseModel, also: Iterable[str] = ()) -> dict[str, Any]:
        """The values of the must-match keys (and of `also`: keys of `may_change` that must
        match in this run's case), nested as in the recipe."""
        return self.project(config.model_dump(mode="json"), also)

    def project(self, dump: dict[str, Any], also: Iterable[str] = ()) -> dict[str, Any]:
        """The must-match (and `also`) part of a recipe dump (eval projects each benchmark's
        recipe)."""
        chosen: dict[str, Any] = {}
        for key in (*self.must_match, *also):
            _put(chosen, key, value_at(dump, key))
        return chosen

    def unclassified(self, schema: type[BaseModel]) -> list[str]:
        """Keys of `schema` that neither list names, or that both do."""
        problems = []
        for key in schema_keys(schema):
            named = [k for k in (*self.must_match, *self.may_change) if _covers(k, key)]
            if len(named) != 1:
                problems.append(key)
        return problems


def _covers(name: str, key: str) -> bool:
    return key == name or key.startswith(name + ".")


def _put(settings: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, last = dotted.split(".")
    for part in sections:
        settings = settings.setdefault(part, {})
    settings[last] = value
