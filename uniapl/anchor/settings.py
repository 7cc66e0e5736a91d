"""The discriminator's settings and its offline training's, apart from the code that needs torch (the CLI reads
them to build its options)."""

from __future__ import annotations

from dataclasses import dataclass

from uniapl.errors import ConfigError


def _check(ok: bool, name: str, message: str) -> None:
    """An option's error names it as the command line spells it."""
    if not ok:
        raise ConfigError(f"--{name.replace('_', '-')}: {message}")


VARIANTS = ("minilm", "policy", "ngram")
GRANULARITIES = ("response", "sentence")


@dataclass(frozen=True)
class DiscriminatorSettings:
    """What a discriminator is, saved in its folder: the trainer scores with exactly these."""

    variant: str = "minilm"
    encoder: str | None = None  # minilm: the encoder (null: the built-in all-MiniLM-L6-v2); policy: the start policy
    granularity: str = "response"
    include_prompt: bool = False
    finetune_encoder: bool = False  # minilm only
    max_length: int = 256  # tokens of one unit the encoder reads (its end is cut)
    width: int = 256  # the MLP head's width
    ngram_order: int = 2  # word n-grams of orders 1..ngram_order
    ngram_buckets: int = 1 << 18
    dtype: str = "fp32"  # the encoder's passes: fp32, or bf16 autocast
    batch_size: int = 32  # units per encoder pass

    def validate(self) -> None:
        _check(self.variant in VARIANTS, "variant", f"'{self.variant}' is not allowed; allowed values: {', '.join(VARIANTS)}")
        _check(self.granularity in GRANULARITIES, "granularity",
               f"'{self.granularity}' is not allowed; allowed values: {', '.join(GRANULARITIES)}")
        _check(not self.finetune_encoder or self.variant == "minilm", "finetune_encoder",
               f"only the minilm encoder is fine-tuned (the policy variant's is the frozen start policy), got variant {self.variant}")
        _check(self.encoder is None or self.variant != "ngram", "encoder", "the ngram variant has no encoder")
        _check(self.max_length >= 8, "max_length", f"must be >= 8, got {self.max_length}")
        _check(self.width >= 1, "width", f"must be >= 1, got {self.width}")
        _check(1 <= self.ngram_order <= 5, "ngram_order", f"must be in [1, 5], got {self.ngram_order}")
        _check(self.ngram_buckets >= 16, "ngram_buckets", f"must be >= 16, got {self.ngram_buckets}")
        _check(self.dtype in ("fp32", "bf16"), "dtype", f"'{self.dtype}' is not allowed; allowed values: fp32, bf16")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class FitSettings:
    heldout_fraction: float = 0.15  # of the prompts
    epochs: int = 100
    patience: int = 10  # epochs without a better held-out AUC before it stops
    learning_rate: float = 1e-3
    encoder_learning_rate: float = 2e-5  # a fine-tuned encoder's
    weight_decay: float = 0.01
    batch_size: int = 64  # units per optimizer step
    label_smoothing: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        _check(0 < self.heldout_fraction < 1, "heldout_fraction", f"must be in (0, 1), got {self.heldout_fraction}")
        _check(self.epochs >= 1, "epochs", f"must be >= 1, got {self.epochs}")
        _check(self.patience >= 1, "patience", f"must be >= 1, got {self.patience}")
        _check(self.learning_rate > 0, "learning_rate", f"must be > 0, got {self.learning_rate}")
        _check(self.encoder_learning_rate > 0, "encoder_learning_rate", f"must be > 0, got {self.encoder_learning_rate}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(self.batch_size >= 2, "batch_size", f"must be >= 2, got {self.batch_size}")
        _check(0 <= self.label_smoothing < 0.5, "label_smoothing", f"must be in [0, 0.5), got {self.label_smoothing}")
