"""The Lagrange multiplier of the expert-NLL constraint, and fixed schedules for the baselines."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uniapl.config import AlgorithmConfig


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


@dataclass(frozen=True)
class TermWeights:
    """The weights of a step's loss terms: L = rl * L_RL + sft * L_SFT."""

    rl: float
    sft: float  # lambda, or CHORD's mu


class Multiplier:
    """The SFT term's weight, in one of three modes: `learned` (lambda by dual ascent on C_batch), `fixed`
    (`lambda_fixed`) or `schedule` (CHORD's mu, which mixes the terms convexly). It owns lambda and C_batch's EMA,
    the state a checkpoint keeps, which lasts across stages."""

    def __init__(self, algorithm: AlgorithmConfig):
        self.algorithm = algorithm
        self.value = algorithm.lambda_init
        self.c_ema: float | None = None

    def weights(self, mode: str, use_sft: bool, stage_step: int, stage_steps: int) -> TermWeights:
        """L_RL + lambda * L_SFT; CHORD's schedule mixes the two instead: (1 - mu) * L_RL + mu * L_SFT."""
        a = self.algorithm
        if not use_sft:
            return TermWeights(rl=1.0, sft=0.0)
        if mode == "learned":
            return TermWeights(rl=1.0, sft=self.value)
        if mode == "schedule":
            mu = warmup_decay(stage_step, a.schedule_peak, a.schedule_final, a.schedule_warmup_steps, stage_steps, a.schedule_shape)
            return TermWeights(rl=1.0 - mu, sft=mu)
        return TermWeights(rl=1.0, sft=a.lambda_fixed)

    def dual_step(self, mode: str, c_batch: float | None) -> None:
        """lambda's dual ascent on the step's detached constraint value; a non-finite one leaves lambda as it is."""
        if mode != "learned" or c_batch is None or not math.isfinite(c_batch):
            return
        a = self.algorithm
        self.c_ema = ema(self.c_ema, c_batch, a.c_batch_ema)
        self.value = dual_ascent(self.value, self.c_ema, a.epsilon, a.eta_lambda, a.lambda_max)

    def state_dict(self) -> dict:
        return {"lambda": self.value, "c_ema": self.c_ema}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.c_ema = state["lambda"], state["c_ema"]
