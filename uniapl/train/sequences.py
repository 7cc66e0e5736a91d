"""Prompt + completion sequences as padded tensors, and the per-token log-probs a model gives them.

Prompts are left-padded and completions right-padded, so every completion starts at the same column:
the forward pass then only computes logits for the completion columns (`logits_to_keep`), and
position ids follow the attention mask exactly as they do during generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from uniapl.algorithms.adversarial import mean_pool


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # [B, P + C]
    attention_mask: torch.Tensor  # [B, P + C]
    completion_mask: torch.Tensor  # [B, C], 1 on real completion tokens
    prompt_width: int  # P

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    @property
    def position_ids(self) -> torch.Tensor:
        return torch.clamp(self.attention_mask.cumsum(-1) - 1, min=0)

    def select(self, rows: torch.Tensor) -> "SequenceBatch":
        """A subset of the rows, with the same widths (a micro-batch)."""
        return SequenceBatch(self.input_ids[rows], self.attention_mask[rows], self.completion_mask[rows], self.prompt_width)

    def to(self, device) -> "SequenceBatch":
        return SequenceBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.completion_mask.to(device), self.prompt_width
        )


def pack(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int) -> SequenceBatch:
    prompt_width = max(len(p) for p in prompt_ids)
    completion_width = max(max(len(c) for c in completion_ids), 1)
    rows, masks, completion_masks = [], [], []
    for p, c in zip(prompt_ids, completion_ids):
        left, right = prompt_width - len(p), completion_width - len(c)
        rows.append([pad_id] * left + list(p) + list(c) + [pad_id] * right)
        masks.append([0] * left + [1] * (len(p) + len(c)) + [0] * right)
        completion_masks.append([1] * len(c) + [0] * right)
    return SequenceBatch(torch.tensor(rows), torch.tensor(masks), torch.tensor(completion_masks, dtype=torch.float32), prompt_width)


@dataclass
class ForwardOutput:
    logits: torch.Tensor  # [B, C, V]: the logits that predict each completion token
    hidden: torch.Tensor | None  # [B, C, H]: last hidden states at the completion tokens


def forward_completions(model, batch: SequenceBatch, return_hidden: bool = False) -> ForwardOutput:
    """One forward pass that keeps only what predicts the completion tokens."""
    completion_width = batch.completion_mask.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        logits_to_keep=completion_width + 1,
        output_hidden_states=return_hidden,
        use_cache=False,
    )
    hidden = out.hidden_states[-1][:, batch.prompt_width :] if return_hidden else None
    # logit at column j predicts token j + 1; the last kept column predicts nothing
    return ForwardOutput(logits=out.logits[:, :-1], hidden=hidden)


@dataclass
class TokenScores:
    """What one pass gives each completion token: its log-prob (in the graph when gradients are on) and the
    policy's entropy there (detached), and the rows' pooled hidden states when asked for."""

    logp: torch.Tensor  # [B, C]
    entropy: torch.Tensor  # [B, C]
    pooled: torch.Tensor | None  # [B, H]


def score_tokens(model, batch: SequenceBatch, temperatures: torch.Tensor, pool: bool = False) -> TokenScores:
    """Log-probs and entropies of every row's completion tokens, each row at its temperature."""
    out = forward_completions(model, batch, return_hidden=pool)
    logits = out.logits / temperatures.to(out.logits.dtype)[:, None, None]
    with torch.no_grad():
        token_entropy = entropy(logits)
    pooled = mean_pool(out.hidden.detach(), batch.completion_mask) if pool else None
    return TokenScores(gather_logprobs(logits, batch.completion_ids), token_entropy, pooled)


def gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log softmax(logits / T)[target], without materializing the full log-softmax."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    chosen = logits.gather(-1, targets[..., None]).squeeze(-1)
    return chosen - torch.logsumexp(logits, dim=-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution ([B, C, V] -> [B, C])."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def completion_logprobs(
    model,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    pad_id: int,
    temperature: float = 1.0,
    batch_size: int = 8,
) -> list[list[float]]:
    """Per-token log-probs the model gives each completion, teacher-forced after its prompt."""
    device = next(model.parameters()).device
    out: list[list[float]] = []
    for start in range(0, len(prompt_ids), batch_size):
        batch = pack(prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size], pad_id).to(device)
        logits = forward_completions(model, batch).logits
        logp = gather_logprobs(logits, batch.completion_ids, temperature)
        out.extend(row[mask.bool()].tolist() for row, mask in zip(logp, batch.completion_mask))
    return out
