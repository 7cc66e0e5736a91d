"""Group-relative advantages (GRPO), registered by name."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from uniapl.algorithms.registry import registrar

ADVANTAGE_EPS = 1e-4
AdvantageFn = Callable[[torch.Tensor, int], torch.Tensor]
ADVANTAGES: dict[str, AdvantageFn] = {}
register_advantage = registrar(ADVANTAGES)


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.view(-1, group_size)


@register_advantage("grpo")
def grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - mean_group) / (std_group + eps): the original GRPO normalization (unbiased std, as TRL)."""
    groups = _grouped(rewards, group_size)
    std = groups.std(dim=1, keepdim=True) if group_size > 1 else torch.zeros_like(groups[:, :1])
    return ((groups - groups.mean(dim=1, keepdim=True)) / (std + ADVANTAGE_EPS)).view(-1)


@register_advantage("dr_grpo")
def centered_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """r - mean_group, without std scaling (Dr. GRPO): easy and hard prompts weigh the same."""
    groups = _grouped(rewards, group_size)
    return (groups - groups.mean(dim=1, keepdim=True)).view(-1)


def combined_advantages(
    terms: Sequence[tuple[torch.Tensor, float]],
    group_size: int,
    method: str = "grpo",
    normalize_separately: bool = False,
) -> torch.Tensor:
    """Advantages of the weighted reward sum r~ = sum_k w_k r_k (the task reward, v1's r_adv, AAPA's anchoring
    reward), or the weighted sum of each term's own advantages.

    Separate normalization keeps a small-variance term from being drowned by another's larger spread (the task
    reward's 0/1 against a discriminator's logits, and the reverse).
    """
    if not terms:
        raise ValueError("the advantages need at least one reward term")
    advantage = ADVANTAGES[method]
    if normalize_separately:
        return sum(weight * advantage(rewards, group_size) for rewards, weight in terms)
    return advantage(sum(weight * rewards for rewards, weight in terms), group_size)
