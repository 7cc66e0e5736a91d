"""Position ids of left-padded rows."""

from __future__ import annotations

import torch


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Each token's index among its row's real tokens (padding at 0): positions follow the mask, so left padding
    does not shift them, and a sequence gets the same positions at generation as in the training passes."""
    return torch.clamp(attention_mask.cumsum(-1) - 1, min=0)
