"""Token log-probs and entropies from the last hidden state, without the full-vocabulary logits.

A forward pass that keeps the logits of every completion token holds [rows, tokens, vocabulary] in fp32
several times over (the logits, the log-softmax pieces of the loss and the entropy, their gradients):
about 80 GB per copy at 128 rows x 1,024 tokens x Qwen's 151,936 tokens. Here the model runs without its
output layer (`headless`), and `chunked_token_logprobs` applies that layer a chunk of tokens at a time,
keeping only each token's log-sum-exp; the backward pass recomputes each chunk's logits.
"""

from __future__ import annotations

import contextlib
import weakref

import torch
from torch.nn.parallel import DistributedDataParallel

CHUNK_ELEMENTS = 1 << 25  # logits per chunk: 128 MB in fp32, whatever the vocabulary


class _ChunkedTokenLogprobs(torch.autograd.Function):
    """(hidden [N, H], weight [V, H], targets [N], inverse temperatures [N]) -> (log-probs [N], entropies [N]) of
    softmax(hidden @ weight.T * inverse temperature); the entropies carry no gradient."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, inverse_temperature, chunk):
        device = hidden.device.type
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        ctx.chunk = chunk
        logp = torch.empty(len(hidden), dtype=torch.float32, device=hidden.device)
        entropy, lse = torch.empty_like(logp), torch.empty_like(logp)
        for start in range(0, len(hidden), chunk):
            part = slice(start, start + chunk)
            logits = (hidden[part] @ weight.T).float() * inverse_temperature[part, None]
            lse[part] = torch.logsumexp(logits, dim=-1)
            logp[part] = logits.gather(-1, targets[part, None]).squeeze(-1) - lse[part]
            entropy[part] = lse[part] - (torch.softmax(logits, dim=-1) * logits).sum(-1)
        ctx.save_for_backward(hidden, weight, targets, inverse_temperature, lse)
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, _grad_entropy):
        hidden, weight, targets, inverse_temperature, lse = ctx.saved_tensors
        device, dtype, enabled = ctx.autocast
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
        with torch.autocast(device, dtype=dtype, enabled=enabled):
            for start in range(0, len(hidden), ctx.chunk):
                part = slice(start, start + ctx.chunk)
                logits = (hidden[part] @ weight.T).float() * inverse_temperature[part, None]
                # d logp / d logits = onehot(target) - softmax, then through the temperature
                grad_logits = torch.exp(logits - lse[part, None]) * -grad_logp[part, None]
                grad_logits.scatter_add_(-1, targets[part, None], grad_logp[part, None])
                grad_logits = grad_logits * inverse_temperature[part, None]
                if grad_hidden is not None:
                    grad_hidden[part] = (grad_logits @ weight).to(hidden.dtype)
                if grad_weight is not None:
                    grad_weight += (grad_logits.T @ hidden[part]).float()
        return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None, None


def chunked_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                           inverse_temperature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log softmax(h W^T / T)[target] and the entropy of softmax(h W^T / T), for each of N tokens ([N, H] -> [N])."""
    chunk = max(1, CHUNK_ELEMENTS // weight.shape[0])
    return _ChunkedTokenLogprobs.apply(hidden, weight, targets, inverse_temperature.float(), chunk)


def unwrapped(model):
    """The model inside a DistributedDataParallel wrapper (the same object otherwise)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


@contextlib.contextmanager
def headless(model):
    """The model with an identity for its output layer: its 'logits' are the last hidden states, which is what
    the output layer would have read."""
    inner = unwrapped(model)
    head = inner.get_output_embeddings()
    inner.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        inner.set_output_embeddings(head)


_HEAD_IS_LAST: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@torch.no_grad()
def head_is_last(model) -> bool:
    """Whether the model's logits are its output layer applied to its last hidden states and nothing after (no
    soft-capping or scaling, as Gemma 2 or Cohere add), so that the headless path computes the same log-probs.
    Checked once per model on a few tokens."""
    inner = unwrapped(model)
    if inner not in _HEAD_IS_LAST:
        head = inner.get_output_embeddings()
        answer = isinstance(head, torch.nn.Linear) and head.bias is None
        if answer:
            ids = torch.arange(3, 7, device=head.weight.device)[None]
            logits = inner(input_ids=ids, use_cache=False).logits.float()
            with headless(inner):
                hidden = inner(input_ids=ids, use_cache=False).logits
            answer = torch.allclose(head(hidden).float(), logits, rtol=1e-3, atol=1e-3 * logits.abs().max().item())
        _HEAD_IS_LAST[inner] = answer
    return _HEAD_IS_LAST[inner]
