"""Reward functions with TRL's signature: `f(prompts, completions, **columns) -> list[float | None]`.

Built-ins are found by name; anything else by a dotted import path (`package.module:function` or
`package.module.function`). A `None` score means "this function does not apply to this row".

What a function returns is checked before it is used: a function that raises, returns something other than
one finite number (or None) per completion, is an error that names it, what it returned and the row. A
non-finite reward is not zeroed or skipped: it would silently change every advantage of its group.
"""

from __future__ import annotations

import importlib
import math
import numbers
from dataclasses import dataclass
from typing import Callable

from uniapl.errors import UniaplError

RewardFunction = Callable[..., list]
SIGNATURE = "a reward function is called as f(prompts, completions, **columns) and returns a list with one number (or None) per completion"

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
        raise UniaplError(f"reward '{spec}': could not import module '{module_name}': {type(exc).__name__}: {exc}") from exc
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UniaplError(f"reward '{spec}': module '{module_name}' has no function '{attr}'")
    return fn


@dataclass
class WeightedReward:
    name: str
    fn: RewardFunction
    weight: float


def _shown(value, limit: int = 80) -> str:
    text = repr(value)
    return f"{text[:limit]}... ({type(value).__name__})" if len(text) > limit else f"{text} ({type(value).__name__})"


def call_reward(reward: WeightedReward, prompts: list, completions: list, columns: dict[str, list],
                rows: list[str] | None = None) -> list[float | None]:
    """The function's scores, checked: one finite number or None per completion. `rows` names where each
    completion's prompt comes from (file:line), for the error message."""
    try:
        values = reward.fn(prompts=prompts, completions=completions, **columns)
    except Exception as exc:  # the user's function failed: name it, and keep its traceback for --debug
        raise UniaplError(f"reward '{reward.name}' raised {type(exc).__name__}: {exc}") from exc
    if hasattr(values, "tolist"):  # a numpy array or a tensor
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise UniaplError(f"reward '{reward.name}' returned {_shown(values)}; {SIGNATURE}")
    if len(values) != len(completions):
        raise UniaplError(f"reward '{reward.name}' returned {len(values)} scores for {len(completions)} completions; {SIGNATURE}")
    for i, value in enumerate(values):
        where = f"completion {i}" + (f" (prompt {rows[i]})" if rows else "")
        if value is not None and not isinstance(value, numbers.Real):
            raise UniaplError(f"reward '{reward.name}' returned {_shown(value)} for {where}; {SIGNATURE}")
        if value is not None and not math.isfinite(value):
            raise UniaplError(f"reward '{reward.name}' returned {value} for {where}; a reward must be a finite number, "
                              f"or None where the function does not apply")
    return [None if value is None else float(value) for value in values]


def score(rewards: list[WeightedReward], prompts: list, completions: list, columns: dict[str, list],
          rows: list[str] | None = None) -> tuple[list[float], dict[str, list]]:
    """Weighted sum per row (None counts as 0 in the sum) and each function's raw scores for logging."""
    per_function: dict[str, list] = {}
    totals = [0.0] * len(completions)
    for reward in rewards:
        values = call_reward(reward, prompts, completions, columns, rows)
        per_function[reward.name] = values
        for i, v in enumerate(values):
            if v is not None:
                totals[i] += reward.weight * v
    return totals, per_function
