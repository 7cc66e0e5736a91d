"""Functions registered by name, so that a config field's value picks one and its allowed values are the names."""

from __future__ import annotations

from typing import Callable, TypeVar

Fn = TypeVar("Fn", bound=Callable)


def registrar(registry: dict[str, Fn]) -> Callable[[str], Callable[[Fn], Fn]]:
    """A `@register(name)` decorator that adds the function it decorates to `registry` under `name`."""

    def register(name: str) -> Callable[[Fn], Fn]:
        def decorator(fn: Fn) -> Fn:
            registry[name] = fn
            return fn

        return decorator

    return register
