"""Group-relative advantages (GRPO), registered by name."""

from __future__ import annotations

from typing import Callable

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
    task_rewards: torch.Tensor,
    adversarial_rewards: torch.Tensor,
    alpha_adv: float,
    group_size: int,
    method: str = "grpo",
    normalize_separately: bool = False,
) -> torch.Tensor:
    """Advantages of r~ = r + alpha_adv * r_adv, or the sum of the two separately normalized parts.

    Separate normalization keeps a small-variance task reward from being drowned by the
    discriminator's logits (and the reverse).
    """
    advantage = ADVANTAGES[method]
    if normalize_separately:
        return advantage(task_rewards, group_size) + alpha_adv * advantage(adversarial_rewards, group_size)
    return advantage(task_rewards + alpha_adv * adversarial_rewards, group_size)
