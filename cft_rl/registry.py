"""Registries filled where things are defined: `register = registrar(TABLE)`, then
`@register("name")` above a function or class puts it in TABLE under the name a recipe uses."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def registrar(table: dict[str, T]) -> Callable[[str], Callable[[T], T]]:
    """A decorator factory that adds to `table`; a name registered twice is an error."""

    def register(name: str) -> Callable[[T], T]:
        def decorator(thing: T) -> T:
            if name in table:
                raise ValueError(f"'{name}' is already registered")
            table[name] = thing
            return thing

        return decorator

    return register
