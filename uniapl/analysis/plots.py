"""Matplotlib figures (Agg backend, no display needed): policy-vs-expert histograms and training curves.

Figures are small (about 40-80 KB) so that example reports can be committed and HTML reports stay
light when the PNGs are embedded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

POLICY_COLOR = "#1f77b4"
EXPERT_COLOR = "#ff7f0e"
DPI = 100


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _legend_label(name: str, summary: dict) -> str:
    if summary["mean"] is None:
        return f"{name} (none)"
    return f"{name} (n={summary['n']}, mean {summary['mean']:.3g}, median {summary['median']:.3g})"


def overlaid_histogram(comparison: dict, title: str, xlabel: str, path: Path) -> Path:
    """The policy's and the expert's counts over shared bins, from `distributions.compare_samples`."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    histogram, distance = comparison["histogram"], comparison["distance"]
    edges = histogram["bin_edges"]
    if edges:
        centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        for side, color in (("policy", POLICY_COLOR), ("expert", EXPERT_COLOR)):
            ax.hist(centers, bins=edges, weights=histogram[f"{side}_counts"], alpha=0.55, color=color,
                    label=_legend_label(side, comparison[side]))
        ax.legend(fontsize=8)
    if distance["wasserstein_1"] is not None:
        title += f"  (W1 {distance['wasserstein_1']:.3g}, KS {distance['ks_statistic']:.2f})"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("responses")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(fig, path)


@dataclass(frozen=True)
class Series:
    """One line of a curve plot: a metrics key, drawn for every run in the given line style."""

    key: str
    label: str
    linestyle: str = "-"


@dataclass(frozen=True)
class CurveFigure:
    """A training-curve figure; each inner list of series shares one set of axes."""

    filename: str
    title: str
    axes: tuple[tuple[Series, ...], ...]

    @property
    def keys(self) -> list[str]:
        return [s.key for panel in self.axes for s in panel]


@dataclass
class CurveLine:
    """One run's (or one group's mean) values of one key; `band` is (low, high) when seeds were pooled."""

    steps: list[float]
    values: list[float]
    band: tuple[list[float], list[float]] | None = None


def trailing_mean(values: list[float], window: int) -> list[float]:
    """The mean of each value and the up to `window - 1` before it: a smoothing that never looks ahead."""
    means, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        means.append(total / min(i + 1, window))
    return means


def curve_figure(figure: CurveFigure, lines: dict[str, dict[str, CurveLine]], path: Path, smoothing_window: int = 1) -> Path:
    """Runs overlaid on shared axes: `lines[run label][metrics key]`; each run keeps one color throughout.

    With `smoothing_window` > 1 each line is drawn as its trailing mean, over the faint per-step values:
    a few prompts a step make per-step rewards too noisy to compare runs by eye.
    """
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(1, len(figure.axes), figsize=(6 * len(figure.axes), 3.5), squeeze=False)
    for ax, panel in zip(axes[0], figure.axes):
        for run_index, (run, by_key) in enumerate(lines.items()):
            color = colors[run_index % len(colors)]
            for series in panel:
                line = by_key.get(series.key)
                if line is None:
                    continue
                label = run if len(panel) == 1 else f"{run}: {series.label}"
                values, band = line.values, line.band
                if smoothing_window > 1:
                    ax.plot(line.steps, values, linestyle=series.linestyle, color=color, alpha=0.25, linewidth=0.8)
                    values = trailing_mean(values, smoothing_window)
                    band = band and (trailing_mean(band[0], smoothing_window), trailing_mean(band[1], smoothing_window))
                ax.plot(line.steps, values, linestyle=series.linestyle, color=color, label=label)
                if band is not None:
                    ax.fill_between(line.steps, *band, color=color, alpha=0.2, linewidth=0)
        ax.set_xlabel("optimizer step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(" / ".join(s.label for s in panel))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.suptitle(figure.title)
    return _save(fig, path)



SCORE_SIDES = {"expert": ("expert", EXPERT_COLOR), "start_policy": ("start policy", "#7f7f7f"), "policy": ("this policy", POLICY_COLOR)}


def score_histogram(scores: dict[str, list[float]], title: str, path: Path, bins: int = 30) -> Path:
    """A discriminator's logits on expert, start-policy and trained-policy responses, over shared bins."""
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 3.5))
    pooled = [v for values in scores.values() for v in values]
    if pooled:
        edges = np.histogram_bin_edges(pooled, bins=bins)
        for side, (label, color) in SCORE_SIDES.items():
            values = scores.get(side, [])
            ax.hist(values, bins=edges, density=True, alpha=0.45, color=color, label=f"{label} (n={len(values)})")
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("discriminator logit (higher: more expert-like)")
    ax.set_ylabel("density")
    return _save(fig, path)
