"""Pure statistics over samples: summaries, distances between two distributions, shared-bin histograms.

Nothing here reads files or models, so every number in an analysis can be checked against a
hand computation. An empty sample gives `None` where a number would be meaningless, never 0.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def summarize(values: Sequence[float]) -> dict:
    """Mean, median, p90, spread and range of one sample; `None` fields when the sample is empty."""
    n = len(values)
    if n == 0:
        return {"n": 0, "mean": None, "median": None, "p90": None, "std": None, "min": None, "max": None}
    x = np.asarray(values, dtype=float)
    return {
        "n": n,
        "mean": float(x.mean()),
        "median": float(np.median(x)),
        "p90": float(np.percentile(x, 90)),
        "std": float(x.std()),
        "min": float(x.min()),
        "max": float(x.max()),
    }


def distribution_distance(policy: Sequence[float], expert: Sequence[float]) -> dict:
    """Wasserstein-1 (in the values' own unit) and the two-sample KS statistic (0 = same, 1 = disjoint).

    W1 says how far the mass must move; KS says how much the two CDFs disagree at worst. Together
    they separate a shifted distribution from one with a different shape.
    """
    from scipy import stats

    if len(policy) == 0 or len(expert) == 0:
        return {"wasserstein_1": None, "ks_statistic": None, "ks_pvalue": None}
    ks = stats.ks_2samp(policy, expert)
    return {
        "wasserstein_1": float(stats.wasserstein_distance(policy, expert)),
        "ks_statistic": float(ks.statistic),
        "ks_pvalue": float(ks.pvalue),
    }


def shared_histogram(policy: Sequence[float], expert: Sequence[float], bins: int = 20) -> dict:
    """Counts of both samples over the same bin edges, so the two histograms can be overlaid."""
    pooled = np.concatenate([np.asarray(policy, dtype=float), np.asarray(expert, dtype=float)])
    if pooled.size == 0:
        return {"bin_edges": [], "policy_counts": [], "expert_counts": []}
    edges = np.histogram_bin_edges(pooled, bins=bins)
    return {
        "bin_edges": edges.tolist(),
        "policy_counts": np.histogram(policy, bins=edges)[0].tolist(),
        "expert_counts": np.histogram(expert, bins=edges)[0].tolist(),
    }


def compare_samples(policy: Sequence[float], expert: Sequence[float], bins: int = 20) -> dict:
    """Everything an analysis reports about one quantity: both summaries, their distance, the histogram."""
    return {
        "policy": summarize(policy),
        "expert": summarize(expert),
        "distance": distribution_distance(policy, expert),
        "histogram": shared_histogram(policy, expert, bins),
    }


def mean_and_standard_error(values: Sequence[float | None]) -> dict:
    """Mean over the present values and its standard error (sample std / sqrt(n)); missing values are left out.

    The standard error needs two values; with one it is `None`, and with none both are `None`.
    """
    present = [float(v) for v in values if v is not None]
    n = len(present)
    if n == 0:
        return {"mean": None, "stderr": None, "n": 0}
    mean = sum(present) / n
    if n == 1:
        return {"mean": mean, "stderr": None, "n": 1}
    variance = sum((v - mean) ** 2 for v in present) / (n - 1)
    return {"mean": mean, "stderr": math.sqrt(variance / n), "n": n}
