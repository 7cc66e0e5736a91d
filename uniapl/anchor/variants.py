"""AAPA's discriminator variants behind one interface: `features(units)` (what the variant's encoder makes of each
text, without gradients unless it fine-tunes its encoder) and `head_logits(features)` (the trained part), so the
offline training caches the features of a frozen encoder once and the trainer scores a step's rollouts in one call.

- `minilm`: all-MiniLM-L6-v2, mean-pooled over the attention mask (sentence-transformers' pooling), with a small
  MLP head; its encoder frozen, or fine-tuned during the offline training;
- `policy`: the frozen start policy's last hidden states, mean-pooled over the response's tokens, with the same head;
- `ngram`: logistic regression on hashed word n-grams, the cheapest baseline.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from typing import ClassVar, Sequence

import torch
from torch import nn

from uniapl.algorithms.adversarial import DiscriminatorHead, mean_pool
from uniapl.algorithms.anchoring import mean_by_owner
from uniapl.anchor.settings import DiscriminatorSettings
from uniapl.anchor.text import Unit, units_of


def weights_sha256(module: nn.Module) -> str:
    """A fingerprint of a module's weights: the bytes of every tensor, in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_sha256(tokenizer) -> str:
    """A fingerprint of a tokenizer's vocabulary."""
    return hashlib.sha256(json.dumps(sorted(tokenizer.get_vocab().items())).encode()).hexdigest()


class AnchorDiscriminator(nn.Module):
    """One logit per unit: high where the text reads like the expert's."""

    variant: ClassVar[str]

    def __init__(self, settings: DiscriminatorSettings):
        super().__init__()
        self.settings = settings

    @property
    def trains_encoder(self) -> bool:
        return self.settings.finetune_encoder

    def features(self, units: Sequence[Unit]) -> torch.Tensor:
        """[N, D] (sparse for ngram), in `batch_size` units at a time, shortest first (less padding)."""
        order = sorted(range(len(units)), key=lambda i: len(units[i].text) + len(units[i].context or ""))
        batches = [order[s : s + self.settings.batch_size] for s in range(0, len(order), self.settings.batch_size)]
        grad = torch.enable_grad() if self.trains_encoder and self.training else torch.no_grad()
        device = self.device
        with grad, torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.settings.dtype == "bf16"):
            parts = [self._encode([units[i] for i in batch]).float() for batch in batches]
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        return torch.cat(parts).index_select(0, inverse.to(device))

    def _encode(self, units: list[Unit]) -> torch.Tensor:
        raise NotImplementedError

    def head_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def encoder_identity(self) -> dict:
        """Where its encoder comes from and what it is (compared when a run loads the discriminator)."""
        raise NotImplementedError

    @torch.no_grad()
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """One logit per response: of the response, or the mean over its sentences."""
        self.eval()
        s = self.settings
        units, owners = units_of(prompts, responses, s.granularity, s.include_prompt)
        unit_logits = self.head_logits(self.features(units))
        return mean_by_owner(unit_logits.float(), torch.tensor(owners, device=unit_logits.device), len(responses))


class EncoderDiscriminator(AnchorDiscriminator):
    """A transformers encoder, mean-pooled, under `DiscriminatorHead`."""

    def __init__(self, settings: DiscriminatorSettings, encoder, tokenizer, source: str):
        super().__init__(settings)
        self.encoder, self.tokenizer, self.source = encoder, tokenizer, source
        self.encoder.requires_grad_(settings.finetune_encoder)
        self.head = DiscriminatorHead(encoder.config.hidden_size, settings.width)

    def encoder_identity(self) -> dict:
        return {"source": self.source, "weights_sha256": weights_sha256(self.encoder),
                "tokenizer_sha256": tokenizer_sha256(self.tokenizer)}


class MiniLMDiscriminator(EncoderDiscriminator):
    variant = "minilm"

    def _encode(self, units: list[Unit]) -> torch.Tensor:
        texts = [u.text for u in units]
        pair = [u.context for u in units] if units[0].context is not None else None
        batch = self.tokenizer(*((pair, texts) if pair else (texts,)), truncation=True, max_length=self.settings.max_length,
                               padding=True, return_tensors="pt").to(self.device)
        hidden = self.encoder(**batch).last_hidden_state
        return mean_pool(hidden, batch["attention_mask"])


class PolicyDiscriminator(EncoderDiscriminator):
    """The start policy reads the response after the chat-rendered prompt (with `include_prompt`) or alone, and its
    hidden states are pooled over the response's tokens only."""

    variant = "policy"

    def _encode(self, units: list[Unit]) -> torch.Tensor:
        from uniapl.generation import encode_prompts
        from uniapl.train.sequences import pack

        tokenizer, limit = self.tokenizer, self.settings.max_length
        prompts = ([ids[-limit:] for ids in encode_prompts(tokenizer, [[{"role": "user", "content": u.context}] for u in units])]
                   if units[0].context is not None else [[] for _ in units])
        texts = [tokenizer(u.text, add_special_tokens=False)["input_ids"][:limit] or [tokenizer.eos_token_id] for u in units]
        batch = pack(prompts, texts, tokenizer.pad_token_id).to(self.device)
        hidden = self.encoder.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                         position_ids=batch.position_ids, use_cache=False).last_hidden_state
        return mean_pool(hidden[:, batch.prompt_width :], batch.completion_mask)


class NgramHead(nn.Module):
    """Logistic regression on sparse n-gram features."""

    def __init__(self, buckets: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(buckets))
        self.bias = nn.Parameter(torch.zeros(()))

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.zero_()
            self.bias.zero_()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(features, self.weight[:, None]).squeeze(-1) + self.bias


class NgramDiscriminator(AnchorDiscriminator):
    """Word n-grams (orders 1..n) hashed into buckets (CRC-32, the same on every machine), counts scaled to unit L2
    norm. With `include_prompt`, the prompt's words count as features of their own (prefixed)."""

    variant = "ngram"

    def __init__(self, settings: DiscriminatorSettings):
        super().__init__(settings)
        self.head = NgramHead(settings.ngram_buckets)

    def grams(self, unit: Unit) -> list[str]:
        from uniapl.textstats import ngrams, words

        tokens = words(unit.text)
        out = [" ".join(g) for n in range(1, self.settings.ngram_order + 1) for g in ngrams(tokens, n)]
        if unit.context is not None:
            out += ["prompt:" + w for w in words(unit.context)]
        return out

    def _encode(self, units: list[Unit]) -> torch.Tensor:
        rows, columns, values = [], [], []
        for row, unit in enumerate(units):
            counts: dict[int, float] = {}
            for gram in self.grams(unit):
                bucket = zlib.crc32(gram.encode()) % self.settings.ngram_buckets
                counts[bucket] = counts.get(bucket, 0.0) + 1.0
            norm = sum(c * c for c in counts.values()) ** 0.5 or 1.0
            rows += [row] * len(counts)
            columns += list(counts)
            values += [c / norm for c in counts.values()]
        return torch.sparse_coo_tensor(torch.tensor([rows, columns], dtype=torch.long).view(2, -1), torch.tensor(values),
                                       (len(units), self.settings.ngram_buckets), device=self.device,
                                       check_invariants=False).coalesce()

    def encoder_identity(self) -> dict:
        return {"source": f"hashed word n-grams (orders 1..{self.settings.ngram_order}, {self.settings.ngram_buckets} buckets)"}


def default_encoder(settings: DiscriminatorSettings, start_policy: str | None) -> str | None:
    """The encoder a variant reads with, unless one is named: minilm's built-in MiniLM, or the start policy."""
    from uniapl.models import MINILM

    if settings.encoder is not None or settings.variant == "ngram":
        return settings.encoder
    return MINILM if settings.variant == "minilm" else start_policy


def build_discriminator(settings: DiscriminatorSettings, encoder_source: str | None) -> AnchorDiscriminator:
    """A new, untrained discriminator of the settings' variant, its encoder loaded from `encoder_source`."""
    if settings.variant == "ngram":
        return NgramDiscriminator(settings)
    from transformers import AutoModel, AutoModelForCausalLM

    from uniapl.models import load_pretrained, load_tokenizer

    tokenizer = load_tokenizer(encoder_source)
    if settings.variant == "minilm":
        tokenizer.padding_side = "right"
        return MiniLMDiscriminator(settings, load_pretrained(AutoModel, encoder_source), tokenizer, encoder_source)
    encoder = load_pretrained(AutoModelForCausalLM, encoder_source, dtype=torch.float32)
    return PolicyDiscriminator(settings, encoder, tokenizer, encoder_source)
