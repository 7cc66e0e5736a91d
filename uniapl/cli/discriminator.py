"""`uniapl discriminator train`: AAPA's fixed discriminator, trained once before policy training (docs/aapa.md)."""

from __future__ import annotations

import argparse

from uniapl.cli import require_at_least


def add_parser(subparsers) -> None:
    from uniapl.anchor.settings import (
        GRANULARITIES,
        VARIANTS,
        DiscriminatorSettings,
        FitSettings,
    )

    settings, fit = DiscriminatorSettings(), FitSettings()
    group = subparsers.add_parser("discriminator", help="train AAPA's fixed discriminator offline",
                                  description="AAPA's discriminator: expert demonstrations against the start policy's "
                                  "responses, trained once; policy training loads its folder (algorithm.anchor.path).")
    commands = group.add_subparsers(dest="discriminator_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "train", help="train a discriminator and save its folder",
        description="Positives: the demonstrations of a data file. Negatives: the start policy's responses to the same "
        "prompts, sampled at the config's rollout settings (resumable) or read from --negatives. A share of the prompts "
        "is held out; training stops early on its ROC AUC. The folder holds the weights, discriminator.json, report.json "
        "and a histogram of the held-out scores.")
    p.add_argument("config", nargs="?", help="the training config (YAML) of the run that will use it: its model is the start "
                   "policy that writes the negatives, at its rollout settings; its data the demonstrations")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=VALUE", help="a config override (repeatable)")
    p.add_argument("--out", required=True, help="the discriminator folder (set algorithm.anchor.path to it)")
    p.add_argument("--data", default=None, help="rows with demonstrations (default: the config's data.expert, else data.prompts)")
    p.add_argument("--negatives", default=None, help="the policy's responses, rows with a prompt and a completion (default: sample "
                   "them into OUT/negatives.jsonl)")
    p.add_argument("--negatives-per-prompt", type=int, default=1, help="responses sampled per prompt (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="use the first N demonstrations")
    p.add_argument("--overwrite", action="store_true", help="replace a trained discriminator in OUT")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    what = p.add_argument_group("the discriminator (saved in its folder; training scores with the same)")
    what.add_argument("--variant", choices=VARIANTS, default=settings.variant,
                      help="minilm: all-MiniLM-L6-v2 with a head; policy: the frozen start policy's pooled hidden states with a "
                      "head; ngram: logistic regression on hashed word n-grams (default: %(default)s)")
    what.add_argument("--encoder", default=None, help="minilm: another encoder folder; policy: default the config's model.name")
    what.add_argument("--granularity", choices=GRANULARITIES, default=settings.granularity,
                      help="score the whole response, or each sentence and take the mean (default: %(default)s)")
    what.add_argument("--include-prompt", action="store_true", help="the discriminator also reads the prompt")
    what.add_argument("--finetune-encoder", action="store_true", help="minilm: fine-tune the encoder too (default: frozen)")
    what.add_argument("--max-length", type=int, default=settings.max_length, help="tokens of a text the encoder reads (default: %(default)s)")
    what.add_argument("--width", type=int, default=settings.width, help="the head's width (default: %(default)s)")
    what.add_argument("--ngram-order", type=int, default=settings.ngram_order, help="ngram: orders 1..N (default: %(default)s)")
    what.add_argument("--ngram-buckets", type=int, default=settings.ngram_buckets, help="ngram: hash buckets (default: %(default)s)")
    what.add_argument("--dtype", choices=("fp32", "bf16"), default=settings.dtype, help="the encoder's passes (default: %(default)s)")
    what.add_argument("--encode-batch-size", type=int, default=settings.batch_size, help="texts per encoder pass (default: %(default)s)")
    how = p.add_argument_group("its training")
    how.add_argument("--heldout-fraction", type=float, default=fit.heldout_fraction, help="share of the prompts held out (default: %(default)s)")
    how.add_argument("--epochs", type=int, default=fit.epochs, help="(default: %(default)s)")
    how.add_argument("--patience", type=int, default=fit.patience, help="epochs without a better held-out AUC before stopping (default: %(default)s)")
    how.add_argument("--learning-rate", type=float, default=fit.learning_rate, help="the head's (default: %(default)s)")
    how.add_argument("--encoder-learning-rate", type=float, default=fit.encoder_learning_rate, help="a fine-tuned encoder's (default: %(default)s)")
    how.add_argument("--weight-decay", type=float, default=fit.weight_decay, help="(default: %(default)s)")
    how.add_argument("--batch-size", type=int, default=fit.batch_size, help="texts per optimizer step (default: %(default)s)")
    how.add_argument("--label-smoothing", type=float, default=fit.label_smoothing, help="(default: %(default)s)")
    how.add_argument("--seed", type=int, default=fit.seed, help="the split, the initialization and the order (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from uniapl.anchor.offline import summary_lines, train_discriminator_folder
    from uniapl.anchor.settings import DiscriminatorSettings, FitSettings
    from uniapl.config import UniAPLConfig
    from uniapl.errors import UniaplError
    from uniapl.io import check_output_folder

    require_at_least(args, negatives_per_prompt=1, limit=1)
    config = UniAPLConfig.from_yaml(args.config, args.overrides)
    data = args.data or config.data.expert or config.data.prompts
    if not data:
        raise UniaplError("--data: no demonstrations given; pass --data FILE, or a config whose data.expert or data.prompts names one")
    settings = DiscriminatorSettings(
        variant=args.variant, encoder=args.encoder, granularity=args.granularity, include_prompt=args.include_prompt,
        finetune_encoder=args.finetune_encoder, max_length=args.max_length, width=args.width, ngram_order=args.ngram_order,
        ngram_buckets=args.ngram_buckets, dtype=args.dtype, batch_size=args.encode_batch_size)
    fit = FitSettings(
        heldout_fraction=args.heldout_fraction, epochs=args.epochs, patience=args.patience, learning_rate=args.learning_rate,
        encoder_learning_rate=args.encoder_learning_rate, weight_decay=args.weight_decay, batch_size=args.batch_size,
        label_smoothing=args.label_smoothing, seed=args.seed)
    out = check_output_folder(Path(args.out), "--out")
    report = train_discriminator_folder(config, data, out, settings, fit, args.negatives, args.negatives_per_prompt, args.limit,
                                        args.overwrite, args.progress)
    print("\n".join(summary_lines(report, out)))
    return 0
