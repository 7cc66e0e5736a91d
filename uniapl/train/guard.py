"""An optimizer update whose gradient norm is not finite is skipped, so the weights never become NaN or inf.

A NaN or inf anywhere in a loss reaches the gradients, so the global gradient norm (the same on every
process) tells. One bad batch is skipped with a warning and counted in the metrics; several in a row mean
the run has diverged, and it stops with a message instead of going on without learning.
"""

from __future__ import annotations

import math
import warnings

from uniapl.errors import UniaplError, UniaplWarning


class FiniteUpdateGuard:
    def __init__(self, limit: int):
        self.limit = limit  # training.max_consecutive_skipped_updates
        self.in_a_row = 0

    def allows_update(self, step: int, grad_norm: float, losses: dict[str, float]) -> bool:
        """Whether to apply the update; raises once `limit` updates in a row are skipped."""
        if math.isfinite(grad_norm):
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        values = ", ".join(f"{name}={value}" for name, value in {"grad_norm": grad_norm, **losses}.items())
        if self.in_a_row >= self.limit:
            raise UniaplError(
                f"training stopped at step {step}: {self.in_a_row} updates in a row had a non-finite gradient norm and were "
                f"skipped ({values}); the weights are those of the last finite update, and saved checkpoints are kept. "
                f"Lower training.learning_rate or training.max_grad_norm, or check the data and reward functions")
        warnings.warn(f"step {step}: skipped an update whose gradient norm is not finite ({values}); {self.in_a_row} in a "
                      f"row, training.max_consecutive_skipped_updates={self.limit} stop the run", UniaplWarning, stacklevel=2)
        return False
