"""Reward functions with TRL's signature: `f(prompts, completions, **columns) -> list[float | None]`.

Built-ins are found by name; anything else by a dotted import path (`package.module:function` or
`package.module.function`). A `None` score means "this function does not apply to this row".
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from uniapl.errors import UniaplError

RewardFunction = Callable[..., list]

_REGISTRY: dict[str, RewardFunction] = {}
# modules whose import registers built-in rewards
_BUILTIN_MODULES = ["uniapl.rewards.builtin", "uniapl.rewards.ifeval"]


def register_reward(name: str):
    def decorator(fn: RewardFunction) -> RewardFunction:
        _REGISTRY[name] = fn
        return fn

    return decorator


def builtin_rewards() -> dict[str, RewardFunction]:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


def resolve_reward(spec: str) -> RewardFunction:
    """A built-in name, or a dotted path to a callable."""
    builtins = builtin_rewards()
    if spec in builtins:
        return builtins[spec]
    module_name, sep, attr = spec.partition(":") if ":" in spec else spec.rpartition(".")
    if not sep or not module_name:
        raise UniaplError(f"unknown reward '{spec}'; built-ins: {', '.join(sorted(builtins))}, or a dotted path module.function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure is the user's path or module
        raise UniaplError(f"reward '{spec}': could not import module '{module_name}': {exc}") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UniaplError(f"reward '{spec}': module '{module_name}' has no function '{attr}'")
    return fn


@dataclass
class WeightedReward:
    name: str
    fn: RewardFunction
    weight: float


def score(rewards: list[WeightedReward], prompts: list, completions: list, columns: dict[str, list]) -> tuple[list[float], dict[str, list]]:
    """Weighted sum per row (None counts as 0 in the sum) and each function's raw scores for logging."""
    per_function: dict[str, list] = {}
    totals = [0.0] * len(completions)
    for reward in rewards:
        values = reward.fn(prompts=prompts, completions=completions, **columns)
        if len(values) != len(completions):
            raise UniaplError(f"reward '{reward.name}' returned {len(values)} scores for {len(completions)} completions")
        per_function[reward.name] = values
        for i, v in enumerate(values):
            if v is not None:
                totals[i] += reward.weight * float(v)
    return totals, per_function
