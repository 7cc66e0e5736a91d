"""A trained discriminator's folder, the one thing policy training reads of it:

    discriminator.json   what it is (variant, settings, its encoder's identity) and its held-out quality
    head.safetensors     the trained weights (the head; the whole model for ngram)
    encoder/             the fine-tuned encoder, when the minilm encoder was fine-tuned
    report.json          the offline training's report (also printed); scores_hist.png, the held-out scores
    heldout.jsonl        the held-out responses, their labels and scores (the trainer's drift check reads them)
    negatives.jsonl      the start policy's responses it was trained against
    manifest.json        size and SHA-256 of every file: a truncated or changed folder is refused

Loading checks the folder against what the run's config asks for (variant, encoder, tokenizer) and names both
sides of any difference.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from uniapl.anchor.settings import DiscriminatorSettings
from uniapl.anchor.variants import (
    AnchorDiscriminator,
    build_discriminator,
    default_encoder,
)
from uniapl.errors import ConfigError, IntegrityError, UniaplError
from uniapl.io import MANIFEST, read_json, sha256_of, verify_manifest

META_FILE, HEAD_FILE, ENCODER_DIR, REPORT_FILE = "discriminator.json", "head.safetensors", "encoder", "report.json"
HELDOUT_FILE, NEGATIVES_FILE, HISTOGRAM_FILE = "heldout.jsonl", "negatives.jsonl", "scores_hist.png"
FORMAT = "uniapl-aapa-discriminator/1"


def write_discriminator(staging: Path, model: AnchorDiscriminator, report: dict) -> None:
    """The weights and the description of `model` into a staging folder (the caller renames it into place)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}, str(staging / HEAD_FILE))
    identity = model.encoder_identity()
    if model.settings.finetune_encoder:
        model.encoder.save_pretrained(staging / ENCODER_DIR)
        model.tokenizer.save_pretrained(staging / ENCODER_DIR)
        identity["source"] = ENCODER_DIR  # inside the folder
    meta = {"format": FORMAT, "settings": dataclasses.asdict(model.settings), "encoder": identity,
            "heldout": {k: report[k] for k in ("auc", "accuracy", "acc_expert", "acc_policy")}}
    (staging / META_FILE).write_text(json.dumps(meta, indent=1))
    (staging / REPORT_FILE).write_text(json.dumps(report, indent=1))


def fingerprint(folder: Path) -> str:
    """The folder's identity: its manifest's checksum, which covers every file."""
    return sha256_of(folder / MANIFEST)


def read_meta(folder: str | Path, field_name: str) -> tuple[Path, dict]:
    """The folder's description, after checking that it is a complete discriminator folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UniaplError(f"{field_name}: the discriminator folder '{folder}' does not exist; train one with "
                          f"`uniapl discriminator train` (docs/aapa.md)")
    if not (folder / META_FILE).is_file():
        raise UniaplError(f"{field_name}: '{folder}' is not a discriminator folder (no {META_FILE}); train one with "
                          f"`uniapl discriminator train`")
    try:
        verify_manifest(folder)
    except IntegrityError as exc:
        raise IntegrityError(f"{field_name}: the discriminator folder is damaged: {exc}; train it again") from None
    meta = read_json(folder / META_FILE)
    if meta.get("format") != FORMAT:
        raise UniaplError(f"{field_name}: {folder / META_FILE} has format {meta.get('format')!r}; this uniapl reads {FORMAT!r}")
    return folder, meta


def load_discriminator(folder: str | Path, variant: str | None = None, encoder: str | None = None,
                       start_policy: str | None = None, field_name: str = "algorithm.anchor.path") -> AnchorDiscriminator:
    """The frozen discriminator of `folder`: eval mode, no gradients. `variant` and `encoder` are what the config
    asks for (None: whatever the folder holds; the encoder then defaults to the variant's: the built-in MiniLM, or
    `start_policy` for the policy variant); any difference from the folder is an error naming both."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder, meta = read_meta(folder, field_name)
    settings = DiscriminatorSettings(**meta["settings"])
    saved = meta["encoder"]
    if variant is not None and variant != settings.variant:
        raise ConfigError(f"algorithm.anchor.variant is '{variant}', but {folder} holds a '{settings.variant}' discriminator")
    finetuned = settings.finetune_encoder
    if finetuned and encoder is not None:
        raise ConfigError(f"algorithm.anchor.encoder is '{encoder}', but {folder} fine-tuned its encoder and keeps it in "
                          f"{folder / ENCODER_DIR}; leave algorithm.anchor.encoder null")
    source = str(folder / ENCODER_DIR) if finetuned else (encoder or default_encoder(settings, start_policy) or saved.get("source"))
    model = build_discriminator(settings, source)
    if settings.variant != "ngram" and not finetuned:
        check_encoder(model.encoder_identity(), saved, folder, encoder is not None)
    try:
        state = load_file(str(folder / HEAD_FILE))
    except (SafetensorError, OSError) as exc:
        raise IntegrityError(f"{field_name}: {folder / HEAD_FILE} cannot be read ({exc}); train the discriminator again") from None
    try:
        model.head.load_state_dict(state)
    except RuntimeError as exc:
        raise IntegrityError(f"{field_name}: {folder / HEAD_FILE} does not fit its {settings.variant} head ({exc})") from None
    return model.eval().requires_grad_(False)


def check_encoder(loaded: dict, saved: dict, folder: Path, named: bool) -> None:
    """The encoder this run loaded must be the one the discriminator was trained on, tokenizer and weights."""
    for part in ("tokenizer", "weights"):
        key = f"{part}_sha256"
        if loaded[key] != saved.get(key):
            asked = "algorithm.anchor.encoder" if named else "the encoder this run asks for"
            other = {"tokenizer": "another tokenizer", "weights": "other weights"}[part]
            raise ConfigError(f"{folder} was trained with the encoder '{saved.get('source')}', but {asked} is '{loaded['source']}', "
                              f"which has {other} ({key} {saved.get(key, '?')[:12]} vs {loaded[key][:12]}); set "
                              f"algorithm.anchor.encoder to the encoder it was trained with, or train a discriminator for this one")


def heldout_expert_responses(folder: Path, limit: int) -> tuple[list[str], list[str], list[float]]:
    """The first `limit` held-out expert responses (prompts, responses, the logits saved with them): a fixed
    sample whose score must not move while a policy trains."""
    from uniapl.io import read_jsonl

    rows = [r for r in read_jsonl(folder / HELDOUT_FILE) if r["label"] == 1][:limit]
    return [r["prompt"] for r in rows], [r["response"] for r in rows], [r["logit"] for r in rows]
