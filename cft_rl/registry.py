"""Registries filled where things are defined, and the one lookup every recipe name goes
through.

    LOSSES = Registry("loss")

    @LOSSES.register("cft")
    def critical_tokens(...): ...

    LOSSES.get("cfft")   # UserError: unknown loss 'cfft' (did you mean 'cft'?); valid: ...

A schema names a registry's choices with `LOSSES.choice()`: a string field whose validation
is that same lookup, so an unknown name reads the same in a recipe error as in code.
Registering the same object under a name twice is fine (a module imported again); another
object under a taken name is an error, as verl's `register_adv_est` has it.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator

from cft_rl.errors import UserError

T = TypeVar("T")


class UnknownName(UserError, ValueError):
    """A name that is not in a registry (a ValueError too, so that pydantic reports it
    under the recipe key that held it)."""


def closest_name(name: str, names: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The valid name nearest to `name`, if one is near enough to be a typo of it (a
    similarity of at least `cutoff`, difflib's ratio)."""
    matches = difflib.get_close_matches(name, list(names), n=1, cutoff=cutoff)
    return matches[0] if matches else None


def did_you_mean(name: str, names: Iterable[str]) -> str:
    """ " (did you mean 'x'?)" for the nearest valid name, or ""."""
    return suggestion(closest_name(name, names))


def suggestion(close: str | None) -> str:
    """ " (did you mean 'x'?)" for a found near miss, or "" for none."""
    return f" (did you mean '{close}'?)" if close else ""


class Registry(Generic[T]):
    """Named things of one kind ("loss", "decoder", ...), in the order they were added."""

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self._things: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """A decorator that adds what it decorates under `name`."""

        def decorator(thing: T) -> T:
            self.add(name, thing)
            return thing

        return decorator

    def add(self, name: str, thing: T) -> None:
        if name in self._things and self._things[name] is not thing:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._things[name] = thing

    def get(self, name: str) -> T:
        """The thing registered as `name`, or an UnknownName that lists the valid names."""
        if name not in self._things:
            raise UnknownName(self.unknown(name))
        return self._things[name]

    def unknown(self, name: str, extra: Iterable[str] = ()) -> str:
        names = [*extra, *self._things]
        return (
            f"unknown {self.kind} '{name}'{did_you_mean(name, names)}; "
            f"valid {self.plural}: {', '.join(sorted(names))}"
        )

    def choice(self, *extra: str) -> Any:
        """The type of a recipe field that names one of these (or one of `extra`)."""

        def check(name: str) -> str:
            if name not in extra and name not in self._things:
                raise UnknownName(self.unknown(name, extra))
            return name

        return Annotated[str, AfterValidator(check)]

    def names(self) -> list[str]:
        return list(self._things)

    def items(self) -> Iterable[tuple[str, T]]:
        return self._things.items()

    def values(self) -> Iterable[T]:
        return self._things.values()

    def __contains__(self, name: object) -> bool:
        return name in self._things

    def __iter__(self) -> Iterator[str]:
        return iter(self._things)

    def __len__(self) -> int:
        return len(self._things)
