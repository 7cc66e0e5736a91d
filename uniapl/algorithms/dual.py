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
    """CHORD's global SFT weight mu at `step` (0-based) of `total_steps`: a linear warm-up from 0 at step 0 to `peak`
    at step `warmup_steps`, then a decay that reaches `final` at the last step, `total_steps - 1`."""
    if step < warmup_steps:
        return peak * step / warmup_steps
    decay_steps = total_steps - 1 - warmup_steps
    progress = min((step - warmup_steps) / decay_steps, 1.0) if decay_steps > 0 else 0.0
    if shape == "linear":
        return peak + (final - peak) * progress
    return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
