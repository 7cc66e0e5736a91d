"""Batched generation: our own decode loop over a KV cache, with left-padded prompts and seeded, batch-invariant
sampling on the model's device (uniapl.train.sampling).

A row leaves the running batch, and its rows of the KV cache with it, as soon as it is done: at its EOS,
at its token budget, or when the caller's stop predicate says so. A batch whose rows end at different
lengths therefore does not keep paying for the finished ones. Only the logits and `SamplingParams` shape
the distribution: no logits processor of the model's own generation_config applies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from uniapl.errors import UniaplError
from uniapl.train.kv_cache import kv_cache_for
from uniapl.train.sampling import SamplingParams, SeededSampler

# called with a row's index in `prompt_ids` and its generated ids so far (its last token included); True
# stops the row, as not ended
StopPredicate = Callable[[int, list[int]], bool]


@dataclass
class Completion:
    completion_ids: list[int]
    text: str
    truncated: bool  # no EOS: the token budget ran out, or the stop predicate stopped the row
    logprobs: list[float] = field(default_factory=list)  # sampling log-probs at the sampling temperature


def render_prompt(tokenizer, prompt) -> str:
    """Conversational prompts (a list of messages) go through the chat template; strings stay as they are."""
    if isinstance(prompt, str):
        return prompt
    if getattr(tokenizer, "chat_template", None) is None:
        raise UniaplError("the data is conversational but the tokenizer has no chat template")
    return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


def encode_prompts(tokenizer, prompts: Sequence, max_prompt_length: int | None = None) -> list[list[int]]:
    """Token ids of each rendered prompt; long prompts keep their last `max_prompt_length` tokens."""
    ids = [tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in prompts]
    if max_prompt_length:
        ids = [x[-max_prompt_length:] for x in ids]
    return ids


def sequence_seed(seed: int, step: int, index: int) -> int:
    """A 63-bit seed for one sequence, from the run seed, the step and the sequence's global index."""
    x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) & (2**64 - 1)
    x ^= x >> 31
    return x & (2**63 - 1)


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    seeds: Sequence[int] | None = None,
    batch_size: int | None = None,
    on_batch_done: Callable[[int], None] | None = None,
    stop: StopPredicate | None = None,
) -> list[Completion]:
    """One completion per prompt, `batch_size` prompts at a time. Sampling needs one seed per prompt (see
    `sequence_seed`); greedy decoding (`params.do_sample` off) needs none and records no log-probs. `stop` ends a
    row early, as truncated; it is not asked about a row whose last token is EOS."""
    if params.do_sample and (seeds is None or len(seeds) != len(prompt_ids)):
        raise ValueError("sampling needs one seed per prompt")
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    batch_size = batch_size or len(prompt_ids)
    was_training = model.training
    model.eval()
    results: list[Completion] = []
    try:
        for start in range(0, len(prompt_ids), batch_size):
            chunk = [list(p) for p in prompt_ids[start : start + batch_size]]
            chunk_seeds = list(seeds[start : start + batch_size]) if params.do_sample else [0] * len(chunk)
            chunk_stop = (lambda row, ids, offset=start: stop(offset + row, ids)) if stop else None
            for ids, logprobs, ended in _decode(model, chunk, params, chunk_seeds, eos_ids, pad_id, chunk_stop):
                text = tokenizer.decode(ids, skip_special_tokens=True)
                results.append(Completion(ids, text, truncated=not ended, logprobs=logprobs if params.do_sample else []))
            if on_batch_done:
                on_batch_done(len(chunk))
    finally:
        model.train(was_training)
    return results


def _decode(model, prompts: list[list[int]], params: SamplingParams, seeds: list[int], eos_ids: list[int], pad_id: int,
            stop: StopPredicate | None) -> list[tuple[list[int], list[float], bool]]:
    """(generated ids, their sampling log-probs, ended with EOS) of each prompt, decoded as one batch that sheds
    its rows as they finish."""
    device = next(model.parameters()).device
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    position_ids = torch.clamp(attention_mask.cumsum(-1) - 1, min=0)
    cache = kv_cache_for(model) or _default_cache(model)
    sampler = SeededSampler(params)
    eos = set(eos_ids)

    live = torch.arange(len(prompts), device=device)  # the prompt index of each row still decoding
    live_seeds = torch.tensor(seeds, dtype=torch.int64, device=device)
    generated: list[list[int]] = [[] for _ in prompts]
    ended = [False] * len(prompts)
    logprobs = torch.zeros(len(prompts), params.max_new_tokens, device=device)  # moved to the host once, at the end
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                   use_cache=True, logits_to_keep=1).logits[:, -1]
    next_position = position_ids[:, -1:] + 1
    for position in range(params.max_new_tokens):
        chosen, chosen_logprobs = sampler(logits, live_seeds, position)
        logprobs[live, position] = chosen_logprobs
        keep = []
        for row, (index, token) in enumerate(zip(live.tolist(), chosen.tolist())):
            generated[index].append(token)
            if token in eos:
                ended[index] = True
            elif stop is None or not stop(index, generated[index]):
                keep.append(row)
        if not keep or position == params.max_new_tokens - 1:
            break
        if len(keep) < len(live):  # the finished rows leave the batch and the cache
            kept = torch.tensor(keep, device=device)
            cache.batch_select_indices(kept)
            live, live_seeds, chosen = live[kept], live_seeds[kept], chosen[kept]
            attention_mask, next_position = attention_mask[kept], next_position[kept]
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(len(live), 1)], dim=1)
        logits = model(input_ids=chosen[:, None], attention_mask=attention_mask, position_ids=next_position,
                       cache=cache, use_cache=True).logits[:, -1]
        next_position = next_position + 1
    logprobs = logprobs.tolist()
    return [(ids, logprobs[i][: len(ids)], ended[i]) for i, ids in enumerate(generated)]


def _default_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise UniaplError("the model and tokenizer define no EOS token; generation could not stop")
    return ids
