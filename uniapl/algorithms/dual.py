"""The Lagrange multiplier of the expert-NLL constraint, and fixed schedules for the baselines."""

from __future__ import annotations

import math


def dual_ascent(lam: float, constraint_value: float, epsilon: float, eta: float, lambda_max: float) -> float:
    """lambda <- clip(lambda + eta * (C - epsilon), 0, lambda_max): grows while the policy is over budget."""
    return min(max(lam + eta * (constraint_value - epsilon), 0.0), lambda_max)


def ema(previous: float | None, value: float, decay: float) -> float:
    """Exponential moving average; the first value starts it. decay 0 means no smoothing."""
    return value if previous is None else decay * previous + (1.0 - decay) * value


def warmup_decay(step: int, peak: float, final: float, warmup_steps: int, total_steps: int, shape: str = "cosine") -> float:
    """CHORD's global SFT weight: linear warm-up from 0 to `peak`, then decay to `final` by `total_steps`."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if shape == "linear":
        return peak + (final - peak) * progress
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
