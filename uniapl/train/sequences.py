"""Prompt + completion sequences as padded tensors, and the per-token log-probs a model gives them.

Prompts are left-padded and completions right-padded, so every completion starts at the same column, and
position ids follow the attention mask exactly as they do during generation. `score_tokens` runs the
model without its output layer and applies that layer in chunks (uniapl.train.lm_head), so no pass holds
full-vocabulary logits; and with `share_prefix`, rows with the same prompt (a prompt's rollouts, its LUFFY
member, its paired demonstration) forward that prompt once and attend to its KV cache, gradients included.
`length_buckets` puts rows of like lengths in the same passes, so that short rows do not pay for a long one's padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol, Sequence

import torch
import torch.nn.functional as F

from uniapl.algorithms.adversarial import mean_pool
from uniapl.generation.positions import position_ids
from uniapl.train.lm_head import chunked_token_logprobs, head_is_last, headless, unwrapped
from uniapl.train.sharding import is_sharded


@dataclass
class SequenceBatch:
    input_ids: torch.Tensor  # [B, P + C]
    attention_mask: torch.Tensor  # [B, P + C]
    completion_mask: torch.Tensor  # [B, C], 1 on real completion tokens
    prompt_width: int  # P
    prompt_index: torch.Tensor  # [B]: rows with the same prompt ids have the same index

    @property
    def completion_ids(self) -> torch.Tensor:
        return self.input_ids[:, self.prompt_width :]

    @property
    def position_ids(self) -> torch.Tensor:
        return position_ids(self.attention_mask)

    def select(self, rows: torch.Tensor) -> "SequenceBatch":
        """A subset of the rows, with the same widths (a micro-batch)."""
        return SequenceBatch(self.input_ids[rows], self.attention_mask[rows], self.completion_mask[rows], self.prompt_width,
                             self.prompt_index[rows])

    def trimmed(self) -> "SequenceBatch":
        """Without the prompt columns that are padding in every row, nor the completion columns past the longest."""
        prompt_pad = int((self.attention_mask[:, : self.prompt_width].sum(0) == 0).sum())
        width = max(int(self.completion_mask.sum(-1).max()), 1)
        columns = slice(prompt_pad, self.prompt_width + width)
        return SequenceBatch(self.input_ids[:, columns], self.attention_mask[:, columns], self.completion_mask[:, :width],
                             self.prompt_width - prompt_pad, self.prompt_index)

    def to(self, device) -> "SequenceBatch":
        return SequenceBatch(self.input_ids.to(device), self.attention_mask.to(device), self.completion_mask.to(device),
                             self.prompt_width, self.prompt_index.to(device))


def pack(prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], pad_id: int) -> SequenceBatch:
    prompt_width = max(len(p) for p in prompt_ids)
    completion_width = max(max(len(c) for c in completion_ids), 1)
    rows, masks, completion_masks, index = [], [], [], {}
    for p, c in zip(prompt_ids, completion_ids):
        left, right = prompt_width - len(p), completion_width - len(c)
        rows.append([pad_id] * left + list(p) + list(c) + [pad_id] * right)
        masks.append([0] * left + [1] * (len(p) + len(c)) + [0] * right)
        completion_masks.append([1] * len(c) + [0] * right)
        index.setdefault(tuple(p), len(index))
    return SequenceBatch(torch.tensor(rows), torch.tensor(masks), torch.tensor(completion_masks, dtype=torch.float32), prompt_width,
                         torch.tensor([index[tuple(p)] for p in prompt_ids]))


class TokenRow(Protocol):
    """What planning passes needs of a row: its prompt's and its completion's token ids."""

    @property
    def prompt_ids(self) -> Sequence[int]: ...

    @property
    def completion_ids(self) -> Sequence[int]: ...


class PromptCompletion(NamedTuple):
    prompt_ids: Sequence[int]
    completion_ids: Sequence[int]


PASS_OVERHEAD_TOKENS = 64  # what one more pass costs beyond its tokens, in token slots: buckets stop splitting there


def padded_cost(rows: Sequence[TokenRow]) -> int:
    """Tokens one pass forwards: each distinct prompt once, padded to the longest, and every completion padded
    to the longest completion."""
    prompts = {tuple(r.prompt_ids) for r in rows}
    return len(prompts) * max(len(p) for p in prompts) + len(rows) * max(max(len(r.completion_ids) for r in rows), 1)


def passes_cost(rows: Sequence[TokenRow], passes: list[list[int]]) -> int:
    return sum(padded_cost([rows[i] for i in members]) + PASS_OVERHEAD_TOKENS for members in passes)


def length_buckets(rows: Sequence[TokenRow], units: list[list[int]], size: int) -> list[list[int]]:
    """The units (rows that must share a pass) sorted by length and cut into consecutive passes of at most `size`
    rows, where the cuts minimize `passes_cost` (dynamic programming; a candidate pass's cost grows as it takes
    one more unit, so a plan costs O(units x size))."""
    units = [unit[s : s + size] for unit in units for s in range(0, len(unit), size)]  # a group larger than a pass is cut
    if not units:
        return []
    prompt_number: dict[tuple, int] = {}
    prompt_of = [prompt_number.setdefault(tuple(r.prompt_ids), len(prompt_number)) for r in rows]
    length = lambda unit: (max(len(rows[i].completion_ids) for i in unit), max(len(rows[i].prompt_ids) for i in unit))  # noqa: E731
    units = sorted(units, key=length)
    best = [0.0] + [float("inf")] * len(units)  # best[j]: the cheapest plan of the first j units
    cut = [0] * (len(units) + 1)
    for j in range(1, len(units) + 1):
        prompts: set[int] = set()
        members, longest_prompt, longest_completion = 0, 0, 1
        for i in range(j - 1, -1, -1):  # the last pass holds units i..j-1
            members += len(units[i])
            if members > size:
                break
            for k in units[i]:
                prompts.add(prompt_of[k])
                longest_prompt = max(longest_prompt, len(rows[k].prompt_ids))
                longest_completion = max(longest_completion, len(rows[k].completion_ids))
            # padded_cost of units i..j-1, kept up to date as the pass grows
            cost = best[i] + len(prompts) * longest_prompt + members * longest_completion + PASS_OVERHEAD_TOKENS
            if cost < best[j]:
                best[j], cut[j] = cost, i
    passes, j = [], len(units)
    while j:
        passes.insert(0, [k for unit in units[cut[j] : j] for k in unit])
        j = cut[j]
    return passes


@dataclass
class TokenScores:
    """What one pass gives each completion token: its log-prob (in the graph when gradients are on) and the
    policy's entropy there (detached), and the rows' pooled hidden states when asked for."""

    logp: torch.Tensor  # [B, C]
    entropy: torch.Tensor  # [B, C]
    pooled: torch.Tensor | None  # [B, H]


def score_tokens(model, batch: SequenceBatch, temperatures: torch.Tensor, pool: bool = False,
                 share_prefix: bool = False) -> TokenScores:
    """Log-probs and entropies of every row's completion tokens, each row at its temperature (0 on padding).
    `pool` adds the rows' mean last hidden states over their completion tokens (detached). `share_prefix`
    forwards each distinct prompt once, where the model allows it (see `can_share_prefix`)."""
    part = batch.trimmed()
    width = batch.completion_mask.shape[1]
    if not head_is_last(model):
        return _full_logits_scores(model, part, temperatures, pool, width)
    mask = part.completion_mask.bool()
    # a sharded model runs the same forwards on every process (each gathers its weights with the others), so it
    # takes the shared path whether or not this process's rows repeat a prompt
    repeated = len(torch.unique(part.prompt_index)) < len(part.prompt_index) or is_sharded(model)
    shared = share_prefix and repeated and can_share_prefix(model)
    with headless(model) as head:
        hidden = _prefix_shared_hidden(model, part) if shared else _packed_hidden(model, part)
    inverse_temperature = (1.0 / temperatures.float())[:, None].expand(mask.shape)[mask]
    logp, token_entropy = chunked_token_logprobs(hidden[:, :-1][mask], head.weight, part.completion_ids[mask], inverse_temperature)
    zeros = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    pooled = mean_pool(hidden[:, 1:].detach(), part.completion_mask) if pool else None
    return TokenScores(_widen(zeros.masked_scatter(mask, logp), width), _widen(zeros.masked_scatter(mask, token_entropy), width), pooled)


def can_share_prefix(model) -> bool:
    """A prompt's KV cache stands in for its forward pass where every layer attends to all earlier tokens
    (sliding-window or linear-attention layers keep a different cache)."""
    text_config = unwrapped(model).config.get_text_config(decoder=True)
    layer_types = getattr(text_config, "layer_types", None)
    if layer_types:
        return all(t == "full_attention" for t in layer_types)
    return not getattr(text_config, "sliding_window", None)


def _widen(values: torch.Tensor, width: int) -> torch.Tensor:
    """[B, C'] -> [B, width], zeros on the right."""
    return F.pad(values, (0, width - values.shape[1]))


def _packed_hidden(model, batch: SequenceBatch) -> torch.Tensor:
    """[B, C + 1, H]: last hidden states from the last prompt token on; column j predicts completion token j."""
    return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                 logits_to_keep=batch.completion_mask.shape[1] + 1, use_cache=False).logits


def _prefix_shared_hidden(model, batch: SequenceBatch) -> torch.Tensor:
    """`_packed_hidden` with each distinct prompt forwarded once: its KV cache is gathered to its rows, which
    then forward their completions alone. Gradients flow through the gathered cache into the prompt's pass."""
    from transformers import DynamicCache

    rows = len(batch.prompt_index)
    _, row_prompt = torch.unique(batch.prompt_index, return_inverse=True)
    first_row = torch.full((int(row_prompt.max()) + 1,), rows, device=row_prompt.device)
    first_row = first_row.scatter_reduce(0, row_prompt, torch.arange(rows, device=row_prompt.device), "amin")
    prompt_ids = batch.input_ids[first_row, : batch.prompt_width]
    prompt_mask = batch.attention_mask[first_row, : batch.prompt_width]
    cache = DynamicCache(config=unwrapped(model).config)
    last_prompt_hidden = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids(prompt_mask),
                               cache=cache, use_cache=True, logits_to_keep=1).logits
    cache.batch_select_indices(row_prompt)
    completion_width = batch.completion_mask.shape[1]
    prompt_length = prompt_mask.sum(-1)[row_prompt]
    completion_positions = prompt_length[:, None] + torch.arange(completion_width, device=prompt_length.device)
    attention_mask = torch.cat([prompt_mask[row_prompt], batch.attention_mask[:, batch.prompt_width :]], dim=1)
    completion_hidden = model(input_ids=batch.completion_ids, attention_mask=attention_mask, position_ids=completion_positions,
                              cache=cache, use_cache=True, logits_to_keep=completion_width).logits
    return torch.cat([last_prompt_hidden[row_prompt], completion_hidden], dim=1)


def _full_logits_scores(model, batch: SequenceBatch, temperatures: torch.Tensor, pool: bool, width: int) -> TokenScores:
    """For models whose logits are more than their output layer's product (soft-capped, scaled): the full logits."""
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                logits_to_keep=batch.completion_mask.shape[1] + 1, output_hidden_states=pool, use_cache=False)
    # logit at column j predicts completion token j; the last kept column predicts nothing
    logits = out.logits[:, :-1].float() / temperatures.float()[:, None, None]
    logp = torch.log_softmax(logits, dim=-1)
    with torch.no_grad():
        token_entropy = -(logp.exp() * logp).sum(-1)
    pooled = mean_pool(out.hidden_states[-1][:, batch.prompt_width :].detach(), batch.completion_mask) if pool else None
    chosen = logp.gather(-1, batch.completion_ids[..., None]).squeeze(-1) * batch.completion_mask
    return TokenScores(_widen(chosen, width), _widen(token_entropy * batch.completion_mask, width), pooled)


@torch.no_grad()
def completion_logprobs(
    model,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    pad_id: int,
    temperature: float = 1.0,
    batch_size: int = 8,
    by_length: bool = True,
) -> list[list[float]]:
    """Per-token log-probs the model gives each completion, teacher-forced after its prompt, in the rows' order.
    `by_length` forwards rows of like lengths together (`length_buckets`), so that a short row does not pay for the
    padding of a long one (docs/benchmarks.md, "An analysis's scoring in length buckets")."""
    device = next(model.parameters()).device
    rows = [PromptCompletion(p, c) for p, c in zip(prompt_ids, completion_ids)]
    if by_length:
        passes = length_buckets(rows, [[i] for i in range(len(rows))], batch_size)
    else:
        passes = [list(range(s, min(s + batch_size, len(rows)))) for s in range(0, len(rows), batch_size)]
    out: list[list[float]] = [[] for _ in rows]
    for members in passes:
        batch = pack([prompt_ids[i] for i in members], [completion_ids[i] for i in members], pad_id).to(device)
        logp = score_tokens(model, batch, torch.full((len(members),), temperature, device=device)).logp
        for i, row, mask in zip(members, logp, batch.completion_mask):
            out[i] = row[mask.bool()].tolist()
    return out
