"""The adversarial part: a discriminator that tells expert responses from policy responses.

At its optimum the logit is log(pi_E / pi_theta), so rewarding the policy with it pulls the policy's
own samples toward the expert distribution (the reverse-KL direction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DiscriminatorHead(nn.Module):
    """A small MLP on mean-pooled, detached policy hidden states: one logit per response."""

    def __init__(self, hidden_size: int, width: int = 256, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(hidden_size),
            nn.Linear(hidden_size, width),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(width, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features.float()).squeeze(-1)


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the hidden states over the response tokens ([B, T, H], [B, T] -> [B, H])."""
    mask = mask.to(hidden.dtype)[..., None]
    return (hidden * mask).sum(1) / torch.clamp(mask.sum(1), min=1.0)


def discriminator_loss(expert_logits: torch.Tensor, policy_logits: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """-E_expert[log sigmoid(s)] - E_policy[log(1 - sigmoid(s))], with optional label smoothing."""
    expert_target = torch.full_like(expert_logits, 1.0 - label_smoothing)
    policy_target = torch.full_like(policy_logits, label_smoothing)
    return F.binary_cross_entropy_with_logits(expert_logits, expert_target) + F.binary_cross_entropy_with_logits(
        policy_logits, policy_target
    )


def adversarial_reward(policy_logits: torch.Tensor, clip: float) -> torch.Tensor:
    """r_adv = clip(s, -c, c): high where a policy response looks like an expert one."""
    return torch.clamp(policy_logits.detach(), -clip, clip)


def adversarial_weight(step: int, alpha_adv: float, warmup_steps: int, ramp_steps: int) -> float:
    """alpha_adv at `step`: 0 while the discriminator warms up (an untrained one scores noise), then a linear
    ramp that starts after the warm-up and reaches `alpha_adv` at its `ramp_steps`-th step."""
    if step < warmup_steps:
        return 0.0
    if ramp_steps == 0:
        return alpha_adv
    return alpha_adv * min(1.0, (step - warmup_steps + 1) / ramp_steps)


def accuracy(expert_logits: torch.Tensor, policy_logits: torch.Tensor) -> tuple[float, float]:
    """Fraction of expert responses scored expert (s > 0), and of policy responses scored policy (s < 0)."""
    acc_expert = (expert_logits > 0).float().mean().item() if expert_logits.numel() else float("nan")
    acc_policy = (policy_logits < 0).float().mean().item() if policy_logits.numel() else float("nan")
    return acc_expert, acc_policy
