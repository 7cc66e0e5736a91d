"""Policy losses: clipped GRPO, the expert SFT NLL, the k3 KL and LUFFY's off-policy shaping.

Per-token functions return [B, T] tensors; aggregations turn them into a scalar. Aggregations and SFT token
weightings are registered by name, the names `algorithm.loss_aggregation` and `algorithm.sft_token_weighting` allow.
Masks are 0/1 float tensors of the same shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from uniapl.algorithms.registry import registrar


@dataclass
class ClippedLoss:
    per_token: torch.Tensor  # [B, T]
    clipped_low: torch.Tensor  # [B, T] bool: ratio below 1 - eps_low where the advantage is negative
    clipped_high: torch.Tensor  # [B, T] bool: ratio above 1 + eps_high where the advantage is positive


def clipped_policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> ClippedLoss:
    """-min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A), with an asymmetric (clip-higher) range."""
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv
    return ClippedLoss(
        per_token=-torch.min(unclipped, clipped),
        clipped_low=(ratio < 1.0 - eps_low) & (adv < 0),
        clipped_high=(ratio > 1.0 + eps_high) & (adv > 0),
    )


def shaped_off_policy_loss(logp: torch.Tensor, advantages: torch.Tensor, gamma: float) -> torch.Tensor:
    """LUFFY's policy shaping for expert tokens in the group: -f(p) * A with f(p) = p / (p + gamma).

    The expert's own probabilities are unknown, so the ratio is pi_theta itself; the shaping lifts the
    gradient of low-probability expert tokens instead of letting them vanish.
    """
    p = torch.exp(logp)
    return -(p / (p + gamma)) * advantages[:, None]


# ---- SFT token weighting: the demonstrations' log-probs -> per-token NLL ------------------------
SftWeightingFn = Callable[[torch.Tensor], torch.Tensor]
SFT_TOKEN_WEIGHTINGS: dict[str, SftWeightingFn] = {}
register_sft_token_weighting = registrar(SFT_TOKEN_WEIGHTINGS)


@register_sft_token_weighting("none")
def plain_nll(logp: torch.Tensor) -> torch.Tensor:
    return -logp


@register_sft_token_weighting("chord_phi")
def chord_phi_nll(logp: torch.Tensor) -> torch.Tensor:
    """CHORD-phi: each token weighted by p(1 - p), detached, which keeps the tokens the policy is unsure of and mutes
    those it already gets right or finds far-fetched."""
    p = torch.exp(logp.detach())
    return -(p * (1.0 - p)) * logp


def sft_token_nll(logp: torch.Tensor, weighting: str = "none") -> torch.Tensor:
    """Per-token NLL of the demonstrations, weighted as `weighting` names (SFT_TOKEN_WEIGHTINGS)."""
    if weighting not in SFT_TOKEN_WEIGHTINGS:
        raise ValueError(f"unknown SFT token weighting '{weighting}'")
    return SFT_TOKEN_WEIGHTINGS[weighting](logp)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Unbiased, non-negative estimator of KL(pi_theta || pi_ref) per token: exp(d) - d - 1, d = ref - logp."""
    delta = ref_logp - logp
    return torch.exp(delta) - delta - 1.0


# ---- aggregation: per-token values -> scalar ----------------------------------------------------
# `num_tokens` and `num_sequences` are the counts over the whole (possibly multi-process) batch,
# so that a shard's loss is its share of the global mean. They default to this shard's counts.
AggregateFn = Callable[..., torch.Tensor]
AGGREGATIONS: dict[str, AggregateFn] = {}
register_aggregation = registrar(AGGREGATIONS)


@register_aggregation("token_mean")
def token_mean(values, mask, *, max_length: int, num_tokens=None, num_sequences=None) -> torch.Tensor:
    """Every token weighs the same (DAPO): long responses are not discounted."""
    total = mask.sum() if num_tokens is None else num_tokens
    return (values * mask).sum() / torch.clamp(torch.as_tensor(total, dtype=values.dtype), min=1.0)


@register_aggregation("seq_mean_token_mean")
def seq_mean_token_mean(values, mask, *, max_length: int, num_tokens=None, num_sequences=None) -> torch.Tensor:
    """Mean per sequence, then mean over sequences (original GRPO)."""
    per_seq = (values * mask).sum(-1) / torch.clamp(mask.sum(-1), min=1.0)
    count = values.shape[0] if num_sequences is None else num_sequences
    return per_seq.sum() / max(count, 1)


@register_aggregation("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(values, mask, *, max_length: int, num_tokens=None, num_sequences=None) -> torch.Tensor:
    """Token sum divided by a constant (sequences x max length): Dr. GRPO's length-unbiased form."""
    count = values.shape[0] if num_sequences is None else num_sequences
    return (values * mask).sum() / (max(count, 1) * max_length)
