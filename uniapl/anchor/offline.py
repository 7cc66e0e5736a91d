"""`uniapl discriminator train`: demonstrations and the start policy's responses in, a discriminator folder out."""

from __future__ import annotations

import shutil
from pathlib import Path

from uniapl.anchor.fit import (
    EXPERT,
    POLICY,
    LabelledResponse,
    fit_discriminator,
    split_by_prompt,
)
from uniapl.anchor.folder import (
    HELDOUT_FILE,
    HISTOGRAM_FILE,
    META_FILE,
    NEGATIVES_FILE,
    write_discriminator,
)
from uniapl.anchor.negatives import read_negatives, sample_negatives
from uniapl.anchor.settings import DiscriminatorSettings, FitSettings
from uniapl.anchor.variants import build_discriminator, default_encoder
from uniapl.config import UniAPLConfig
from uniapl.errors import DataError, UniaplError
from uniapl.examples import Example, load_examples
from uniapl.ifeval.prompts import prompt_text
from uniapl.io import write_folder_atomically, write_jsonl_atomic


def demonstrations_of(data: str, limit: int | None) -> list[Example]:
    """The rows of `data` that carry a demonstration (the first `limit`)."""
    demos = [row for row in load_examples(data) if row.completion is not None]
    if not demos:
        raise DataError(f"{data}: no row has a demonstration (a 'completion' or a final assistant message); the "
                        f"discriminator's positives are the demonstrations")
    return demos[:limit]


def labelled(examples: list[Example], label: int) -> list[LabelledResponse]:
    return [LabelledResponse(e.prompt_key(), prompt_text(e.prompt), e.completion_text(), label) for e in examples]


def train_discriminator_folder(config: UniAPLConfig, data: str, out: Path, settings: DiscriminatorSettings, fit: FitSettings,
                               negatives_file: str | None = None, per_prompt: int = 1, limit: int | None = None,
                               overwrite: bool = False, progress: bool = True) -> dict:
    """Sample (or read) the negatives, fit the discriminator, and write its folder; returns the report."""
    settings.validate()
    fit.validate()
    if (out / META_FILE).exists() and not overwrite:
        raise UniaplError(f"--out: '{out}' already holds a trained discriminator; choose another --out, or pass --overwrite")
    demos = demonstrations_of(data, limit)
    encoder = default_encoder(settings, config.model.name)
    model = build_discriminator(settings, encoder)  # a bad encoder fails before any sampling
    if negatives_file:
        negatives = read_negatives(negatives_file)
    else:
        out.mkdir(parents=True, exist_ok=True)
        negatives = sample_negatives(config, demos, out / NEGATIVES_FILE, per_prompt, progress)
    prompts = {d.prompt_key() for d in demos}
    negatives = [n for n in negatives if n.prompt_key() in prompts]
    if not negatives:
        raise DataError(f"{negatives_file or out / NEGATIVES_FILE}: no policy response to any prompt of {data}; the "
                        f"discriminator's negatives are the policy's responses to the demonstrations' prompts")
    train, heldout = split_by_prompt(labelled(demos, EXPERT) + labelled(negatives, POLICY), fit.heldout_fraction, fit.seed)
    model, report, logits = fit_discriminator(model, train, heldout, fit, progress)
    report["data"] = {"demonstrations": str(data), "negatives": str(negatives_file or NEGATIVES_FILE),
                      "start_policy": config.model.name if not negatives_file else None,
                      "sampling": {k: getattr(config.rollout, k) for k in ("temperature", "top_p", "top_k", "max_new_tokens")}
                      if not negatives_file else None}

    def fill(staging: Path) -> None:
        from uniapl.analysis.distributions import compare_samples
        from uniapl.analysis.plots import overlaid_histogram

        write_discriminator(staging, model, report)
        write_jsonl_atomic(staging / HELDOUT_FILE, [{"key": r.key, "prompt": r.prompt, "response": r.response, "label": r.label,
                                                     "logit": float(s)} for r, s in zip(heldout, logits)])
        expert = [float(s) for r, s in zip(heldout, logits) if r.label == EXPERT]
        policy = [float(s) for r, s in zip(heldout, logits) if r.label == POLICY]
        overlaid_histogram(compare_samples(policy, expert), f"Held-out logits, {settings.variant} (AUC {report['auc']:.3f})",
                           "discriminator logit", staging / HISTOGRAM_FILE)
        shutil.copyfile(negatives_file or out / NEGATIVES_FILE, staging / NEGATIVES_FILE)

    write_folder_atomically(out, fill, manifest=True)
    return report


def summary_lines(report: dict, out: Path) -> list[str]:
    held = report["heldout"]
    return [f"discriminator ({report['variant']}) -> {out}",
            f"  held out: {held['prompts']} prompts, {held['expert']} expert and {held['policy']} policy responses",
            f"  ROC AUC {report['auc']:.4f}, accuracy {report['accuracy']:.4f} (expert {report['acc_expert']:.3f}, "
            f"policy {report['acc_policy']:.3f}), best epoch {report['best_epoch']} of {report['epochs_run']}",
            f"  time: features {report['seconds']['features']} s, fit {report['seconds']['fit']} s",
            f"  report: {out / 'report.json'}; scores: {out / HISTOGRAM_FILE}"]
