"""Seeded sampling on the model's device, from counter-based noise.

The Gumbel noise of token `t` at completion position `p` of a sequence with seed `s` is a hash of
(s, p, t) computed in integer torch ops, where the logits are: no generator per row, no host round
trip per token. A completion therefore depends only on its prompt and its seed, not on which other
sequences share its batch, on which process or device draws it, or on the global RNG state. That is
what lets a 2-process run match a 1-process run, and a resumed run match an uninterrupted one.

The hash is 32-bit integer arithmetic on int32 tensors that hold the bit patterns: products wrap modulo
2^32, and right shifts are masked to act as logical shifts. (int32 rather than int64 halves the memory
traffic: on one CPU core it draws the noise of 32 rows x 49,152 tokens in about 10 ms.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MASK32 = 0xFFFFFFFF
_TOKEN_SALT = 0x9E3779B9
_POSITION_SALT = 0x85EBCA6B
_UNIFORM_BITS = 24  # float32 holds 24 bits of mantissa: uniforms on a grid of 2^-24, never 0 or 1


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    do_sample: bool = True


def _int32(value: int) -> int:
    """The int32 with the bit pattern of a value in [0, 2^32)."""
    return value - (1 << 32) if value >= 1 << 31 else value


def _as_int32(x: torch.Tensor) -> torch.Tensor:
    """int64 values in [0, 2^32) -> int32 tensors with their bit patterns."""
    return (x - ((x >> 31) << 32)).to(torch.int32)


def mix32_(x: torch.Tensor) -> torch.Tensor:
    """Wellons' lowbias32, a bijective 32-bit hash, in place on an int32 tensor of bit patterns."""
    x.bitwise_xor_((x >> 16) & 0xFFFF)
    x.mul_(_int32(0x7FEB352D))
    x.bitwise_xor_((x >> 15) & 0x1FFFF)
    x.mul_(_int32(0x846CA68B))
    return x.bitwise_xor_((x >> 16) & 0xFFFF)


def row_keys(seeds: torch.Tensor, position: int) -> torch.Tensor:
    """One 32-bit key per row ([B] int64 seeds below 2^63) for the token at completion position `position`."""
    low, high = _as_int32(seeds & MASK32), _as_int32((seeds >> 32) & MASK32)
    salted = torch.full_like(low, _int32((position + _POSITION_SALT) & MASK32))
    return mix32_(low ^ mix32_(high ^ mix32_(salted)))


def token_keys(vocab_size: int, device) -> torch.Tensor:
    """The per-token half of the hash: computed once per generation, reused at every position."""
    return mix32_(_as_int32(torch.arange(vocab_size, device=device, dtype=torch.int64) + _TOKEN_SALT))


def gumbel_noise(row_key: torch.Tensor, token_key: torch.Tensor) -> torch.Tensor:
    """[B, V] standard Gumbel noise, a pure function of (row key, token key)."""
    bits = mix32_(row_key[:, None] ^ token_key[None, :])
    uniform = ((bits >> (32 - _UNIFORM_BITS)) & ((1 << _UNIFORM_BITS) - 1)).float()
    uniform = uniform.add_(0.5).mul_(1.0 / (1 << _UNIFORM_BITS))
    return uniform.log_().neg_().log_().neg_()


def truncate(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k, then top-p (nucleus) truncation of [B, V] logits: what is cut becomes -inf. As transformers'
    TopK/TopP warpers: the smallest set whose probability exceeds top_p is kept, and at least one token."""
    if top_k and top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        ascending, order = torch.sort(scaled, dim=-1)
        cut = ascending.softmax(dim=-1).cumsum(dim=-1) <= 1.0 - top_p
        cut[:, -1] = False
        scaled = scaled.masked_fill(cut.scatter(1, order, cut), float("-inf"))
    return scaled


class SeededSampler:
    """Draws each row's next token from softmax(logits / T) after top-k/top-p, by the Gumbel-max trick on
    counter-based noise; greedy (argmax) when `params.do_sample` is off. Also gives the chosen token's log-prob
    under softmax(logits / T) before truncation, the distribution the training forward pass scores."""

    def __init__(self, params: SamplingParams):
        self.params = params
        self.token_key: torch.Tensor | None = None

    def __call__(self, logits: torch.Tensor, seeds: torch.Tensor, position: int) -> tuple[torch.Tensor, torch.Tensor]:
        """logits [B, V], seeds [B] int64 on the logits' device -> (chosen [B], chosen log-probs [B])."""
        p = self.params
        scaled = logits.float() / p.temperature
        if p.do_sample:
            if self.token_key is None:
                self.token_key = token_keys(scaled.shape[-1], scaled.device)
            noise = gumbel_noise(row_keys(seeds, position), self.token_key)
            chosen = torch.argmax(truncate(scaled, p.top_k, p.top_p) + noise, dim=-1)
        else:
            chosen = torch.argmax(scaled, dim=-1)
        logprob = scaled.gather(-1, chosen[:, None]).squeeze(-1) - torch.logsumexp(scaled, dim=-1)
        return chosen, logprob
