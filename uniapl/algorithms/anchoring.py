"""AAPA's anchoring signal (arXiv 2509.25148v2): a fixed discriminator's logit on a policy response, turned into a
reward that enters r~ = r + alpha_anchor * a(x, y) before the group normalization, where v1's r_adv enters.

The discriminator is trained once, offline, with the same loss as v1's (`adversarial.discriminator_loss`), and
judged on a held-out split by its accuracy and ROC AUC.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from uniapl.algorithms.registry import registrar

AnchorTransform = Callable[[torch.Tensor, float], torch.Tensor]
ANCHOR_TRANSFORMS: dict[str, AnchorTransform] = {}
register_transform = registrar(ANCHOR_TRANSFORMS)


@register_transform("clip")
def clipped_logit(logits: torch.Tensor, clip: float) -> torch.Tensor:
    """a = clip(s, -c, c): symmetric, so expert-like responses gain as much as policy-like ones lose."""
    return torch.clamp(logits.detach(), -clip, clip)


@register_transform("log_sigmoid")
def log_probability_expert(logits: torch.Tensor, clip: float) -> torch.Tensor:
    """a = max(log sigmoid(s), -c): the log-probability that the response is expert's, which only penalizes (the
    GAIL-style reward), floored at -c."""
    return torch.clamp(F.logsigmoid(logits.detach()), min=-clip)


def anchoring_reward(logits: torch.Tensor, transform: str, clip: float) -> torch.Tensor:
    return ANCHOR_TRANSFORMS[transform](logits, clip)


def mean_by_owner(values: torch.Tensor, owners: torch.Tensor, n_owners: int) -> torch.Tensor:
    """The mean of `values` per owner (a response's sentences -> one score per response); 0 for an owner without
    values."""
    sums = torch.zeros(n_owners, dtype=values.dtype, device=values.device).index_add_(0, owners, values)
    counts = torch.zeros(n_owners, dtype=values.dtype, device=values.device).index_add_(0, owners, torch.ones_like(values))
    return sums / counts.clamp(min=1)


def roc_auc(positive: torch.Tensor, negative: torch.Tensor) -> float:
    """P(a positive scores above a negative), ties counted half: the Mann-Whitney U statistic over n+ n-. NaN when a
    side is empty."""
    if positive.numel() == 0 or negative.numel() == 0:
        return float("nan")
    scores = torch.cat([positive, negative]).double()
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=scores.dtype)
    for value in scores[order].unique_consecutive():  # ties share their mean rank
        tied = scores == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    n_pos, n_neg = positive.numel(), negative.numel()
    u = ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def labelled_discriminator_loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """v1's discriminator loss (the mean loss of each class, added) on a labelled batch (1 expert, 0 policy); a batch
    with one class only gives that class's term."""
    loss = logits.new_zeros(())
    for label, target in ((1, 1.0 - label_smoothing), (0, label_smoothing)):
        side = logits[labels == label]
        if side.numel():
            loss = loss + F.binary_cross_entropy_with_logits(side, torch.full_like(side, target))
    return loss
