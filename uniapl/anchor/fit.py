"""The discriminator's offline training: expert responses against the start policy's responses to the same prompts,
split by prompt, early-stopped on the held-out split's ROC AUC.

A frozen encoder's features are computed once and only the head trains, which takes seconds; a fine-tuned minilm
encoder runs in every batch.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import asdict, dataclass
from typing import Sequence

import torch

from uniapl.algorithms.adversarial import accuracy
from uniapl.algorithms.anchoring import (
    labelled_discriminator_loss,
    mean_by_owner,
    roc_auc,
)
from uniapl.analysis.distributions import summarize
from uniapl.anchor.settings import FitSettings
from uniapl.anchor.text import Unit, units_of
from uniapl.anchor.variants import AnchorDiscriminator
from uniapl.errors import DataError

EXPERT, POLICY = 1, 0


@dataclass(frozen=True)
class LabelledResponse:
    key: str  # the prompt's identity: the split keeps a prompt's responses together
    prompt: str  # the user's text
    response: str
    label: int  # EXPERT or POLICY


def split_by_prompt(rows: Sequence[LabelledResponse], fraction: float, seed: int) -> tuple[list[LabelledResponse], list[LabelledResponse]]:
    """(train, held out): a seeded share of the prompts, with all their responses, is held out. Both splits need
    both classes."""
    keys = sorted({r.key for r in rows})
    random.Random(seed).shuffle(keys)
    held = set(keys[: max(1, round(fraction * len(keys)))])
    train = [r for r in rows if r.key not in held]
    heldout = [r for r in rows if r.key in held]
    for name, part in (("training", train), ("held-out", heldout)):
        labels = {r.label for r in part}
        if labels != {EXPERT, POLICY}:
            raise DataError(f"the {name} split has {'only expert' if labels == {EXPERT} else 'only policy' if labels else 'no'} "
                            f"responses ({len(keys)} prompts, {len(held)} held out); give more prompts with both an expert "
                            f"and a policy response, or change --heldout-fraction")
    return train, heldout


@dataclass
class Split:
    """One split's units, whose response each belongs to, and the responses' labels."""

    rows: list[LabelledResponse]
    units: list[Unit]
    owners: torch.Tensor
    labels: torch.Tensor  # per response
    features: torch.Tensor | None = None  # of a frozen encoder, computed once

    @classmethod
    def of(cls, rows: list[LabelledResponse], model: AnchorDiscriminator) -> "Split":
        s = model.settings
        units, owners = units_of([r.prompt for r in rows], [r.response for r in rows], s.granularity, s.include_prompt)
        return cls(rows, units, torch.tensor(owners), torch.tensor([r.label for r in rows]))

    @property
    def unit_labels(self) -> torch.Tensor:
        return self.labels[self.owners]

    def unit_logits(self, model: AnchorDiscriminator, idx: torch.Tensor) -> torch.Tensor:
        if self.features is not None:
            return model.head_logits(self.features.index_select(0, idx.to(self.features.device)))
        return model.head_logits(model.features([self.units[i] for i in idx.tolist()]))

    @torch.no_grad()
    def response_logits(self, model: AnchorDiscriminator) -> torch.Tensor:
        model.eval()
        unit_logits = self.unit_logits(model, torch.arange(len(self.units))).float().cpu()
        return mean_by_owner(unit_logits, self.owners, len(self.rows))


def evaluate(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Held-out quality of response-level logits: ROC AUC, accuracy at logit 0 (overall and per class), loss."""
    expert, policy = logits[labels == EXPERT], logits[labels == POLICY]
    acc_expert, acc_policy = accuracy(expert, policy)
    correct = (expert > 0).sum().item() + (policy < 0).sum().item()
    return {"auc": roc_auc(expert, policy), "accuracy": correct / len(labels), "acc_expert": acc_expert, "acc_policy": acc_policy,
            "loss": labelled_discriminator_loss(logits, labels).item()}


def reset_head(model: AnchorDiscriminator) -> None:
    for module in model.head.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


def fit_discriminator(model: AnchorDiscriminator, train_rows: list[LabelledResponse], heldout_rows: list[LabelledResponse],
                      fit: FitSettings, progress: bool = True) -> tuple[AnchorDiscriminator, dict, torch.Tensor]:
    """Train `model`'s head (and a fine-tuned encoder) and keep its best held-out epoch. Returns the model, the report
    and the held-out response logits."""
    from tqdm import tqdm

    torch.manual_seed(fit.seed)
    reset_head(model)  # the seed, not whatever ran before the model was built, sets the initialization
    started = time.perf_counter()
    train, heldout = Split.of(train_rows, model), Split.of(heldout_rows, model)
    if not model.trains_encoder:
        with tqdm(total=2, desc="features", unit="split", disable=not progress) as bar:
            for split in (train, heldout):
                split.features = model.features(split.units)
                bar.update()
    featured = time.perf_counter()
    groups = [{"params": list(model.head.parameters()), "lr": fit.learning_rate}]
    if model.trains_encoder:
        groups.append({"params": list(model.encoder.parameters()), "lr": fit.encoder_learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=fit.weight_decay)
    generator = torch.Generator().manual_seed(fit.seed)
    best, best_state, history, waited = None, None, [], 0
    bar = tqdm(range(1, fit.epochs + 1), desc="discriminator", unit="epoch", disable=not progress)
    for epoch in bar:
        model.train()
        losses = []
        for idx in torch.randperm(len(train.units), generator=generator).split(fit.batch_size):
            loss = labelled_discriminator_loss(train.unit_logits(model, idx).float(), train.unit_labels[idx].to(model.device),
                                               fit.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scores = evaluate(heldout.response_logits(model), heldout.labels)
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses), "heldout_auc": scores["auc"], "heldout_loss": scores["loss"]})
        bar.set_postfix(auc=f"{scores['auc']:.3f}", loss=f"{scores['loss']:.3f}")
        rank = (scores["auc"], -scores["loss"])
        if best is None or rank > best[0]:
            best, best_state, waited = (rank, epoch, scores), copy.deepcopy(_trained_state(model)), 0
        else:
            waited += 1
            if waited >= fit.patience:
                break
    bar.close()
    model.load_state_dict(best_state, strict=False)
    logits = heldout.response_logits(model)
    _, best_epoch, scores = best
    report = {
        "variant": model.variant, "settings": asdict(model.settings), "fit": asdict(fit), **scores,
        "best_epoch": best_epoch, "epochs_run": len(history), "stopped_early": len(history) < fit.epochs,
        "train": _split_sizes(train), "heldout": _split_sizes(heldout),
        "heldout_scores": {"expert": summarize(logits[heldout.labels == EXPERT].tolist()),
                           "policy": summarize(logits[heldout.labels == POLICY].tolist())},
        "seconds": {"features": round(featured - started, 2), "fit": round(time.perf_counter() - featured, 2)},
        "history": history,
    }
    return model, report, logits


def _trained_state(model: AnchorDiscriminator) -> dict:
    """The weights that training changes: the head's, and a fine-tuned encoder's."""
    return {k: v for k, v in model.state_dict().items() if k.startswith("head.") or model.trains_encoder}


def _split_sizes(split: Split) -> dict:
    return {"prompts": len({r.key for r in split.rows}), "responses": len(split.rows), "units": len(split.units),
            "expert": int((split.labels == EXPERT).sum()), "policy": int((split.labels == POLICY).sum())}
