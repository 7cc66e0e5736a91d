"""Batched generation with a KV cache, left padding and seeded, batch-invariant sampling.

Sampling draws Gumbel noise from a generator seeded by (sequence seed, position). A completion
therefore depends only on its prompt and its seed, not on which other sequences share its batch,
on which process generates it, or on the global RNG state. That is what lets a 2-process run match
a 1-process run, and a resumed run match an uninterrupted one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from uniapl.errors import UniaplError
from uniapl.train.kv_cache import kv_cache_for


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 128
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    do_sample: bool = True


@dataclass
class Completion:
    completion_ids: list[int]
    text: str
    truncated: bool  # hit max_new_tokens before EOS
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


class _SeededSampler:
    """A logits processor that samples the next token itself and forces it, so HF's greedy path keeps it.

    It records the log-prob of the chosen token under softmax(logits / temperature), before
    top-k/top-p truncation, which is the distribution the training forward pass scores.
    """

    def __init__(self, params: SamplingParams, seeds: Sequence[int], prompt_len: int):
        from transformers import TopKLogitsWarper, TopPLogitsWarper

        self.params = params
        self.seeds = list(seeds)
        self.prompt_len = prompt_len
        self.warpers = []
        if params.top_k and params.top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k=params.top_k))
        if params.top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=params.top_p))
        self.logprobs: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scaled = scores.float() / self.params.temperature
        logprobs = torch.log_softmax(scaled, dim=-1)
        for warp in self.warpers:
            scaled = warp(input_ids, scaled)
        position = input_ids.shape[1] - self.prompt_len
        noise = torch.empty_like(scaled, device="cpu")
        for row, seed in enumerate(self.seeds):
            gen = torch.Generator().manual_seed((seed + position * 0x2545F4914F6CDD1D) & (2**63 - 1))
            noise[row].uniform_(1e-20, 1.0, generator=gen)
        gumbel = -torch.log(-torch.log(noise)).to(scaled.device)
        chosen = torch.argmax(scaled + gumbel, dim=-1)
        self.logprobs.append(logprobs.gather(-1, chosen[:, None]).squeeze(-1).cpu())
        forced = torch.full_like(scores, float("-inf"))
        forced.scatter_(-1, chosen[:, None], 0.0)
        return forced


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    seeds: Sequence[int] | None = None,
    batch_size: int | None = None,
    on_batch_done: Callable[[int], None] | None = None,
) -> list[Completion]:
    """Generate one completion per prompt. Sampling needs one seed per prompt (see `sequence_seed`). Only `params`
    shape the distribution: the processors of the model's own generation_config are left out."""
    from transformers import GenerationConfig, LogitsProcessorList

    if params.do_sample and (seeds is None or len(seeds) != len(prompt_ids)):
        raise ValueError("sampling needs one seed per prompt")
    eos_ids = _eos_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    gen_config = GenerationConfig(
        max_new_tokens=params.max_new_tokens,
        do_sample=False,
        eos_token_id=eos_ids,
        pad_token_id=pad_id,
    )
    batch_size = batch_size or len(prompt_ids)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results: list[Completion] = []
    for start in range(0, len(prompt_ids), batch_size):
        chunk = [list(p) for p in prompt_ids[start : start + batch_size]]
        width = max(len(p) for p in chunk)
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in chunk], device=device)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
        processors = LogitsProcessorList()
        sampler = None
        if params.do_sample:
            sampler = _SeededSampler(params, seeds[start : start + batch_size], width)
            processors.append(sampler)
        with _without_model_generation_defaults(model, gen_config):
            out = model.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                generation_config=gen_config,
                logits_processor=processors,
                past_key_values=kv_cache_for(model),
            )
        new_tokens = out[:, width:].tolist()
        step_logprobs = torch.stack(sampler.logprobs, dim=1).tolist() if sampler else None
        for row, tokens in enumerate(new_tokens):
            length, truncated = _completion_length(tokens, eos_ids, params.max_new_tokens)
            ids = tokens[:length]
            results.append(
                Completion(
                    completion_ids=ids,
                    text=tokenizer.decode(ids, skip_special_tokens=True),
                    truncated=truncated,
                    logprobs=step_logprobs[row][:length] if step_logprobs else [],
                )
            )
        if on_batch_done:
            on_batch_done(len(chunk))
    model.train(was_training)
    return results


@contextlib.contextmanager
def _without_model_generation_defaults(model, gen_config):
    """Generate with `gen_config` alone. HF fills every field that `gen_config` leaves unset from the model's own
    generation_config, whose processors (repetition_penalty, no_repeat_ngram_size, suppress_tokens, ...) would
    reshape the scores before the sampler draws, so rollouts would come from a distribution that training does
    not score. The model's generation_config is put back afterwards, so saved models keep it."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model generates with its base's
    own = base.generation_config
    base.generation_config = gen_config
    try:
        yield
    finally:
        base.generation_config = own


def _eos_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise UniaplError("the model and tokenizer define no EOS token; generation could not stop")
    return ids


def _completion_length(tokens: list[int], eos_ids: list[int], max_new_tokens: int) -> tuple[int, bool]:
    """Tokens up to and including the first EOS; truncated when no EOS came within the budget."""
    for i, tok in enumerate(tokens):
        if tok in eos_ids:
            return i + 1, False
    return len(tokens), len(tokens) >= max_new_tokens
