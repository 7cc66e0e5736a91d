"""Batched generation: our own decode loops over a KV cache, with left-padded prompts and seeded, batch-invariant
sampling on the model's device (uniapl.generation.sampling). Two engines decode the same tokens:

- `plain` (CPUs): a row leaves the running batch, and its rows of the KV cache with it, as soon as it is
  done: at its EOS, at its token budget, or when the caller's stop predicate says so. A batch whose rows
  end at different lengths therefore does not keep paying for the finished ones.
- `compiled` (GPUs): a static KV cache and a compiled decode step (torch.compile; CUDA graphs on a GPU),
  so a step costs one graph replay instead of hundreds of kernel launches from Python. Shapes stay fixed:
  finished rows ride along until every row is done.

Only the logits and `SamplingParams` shape the distribution: no logits processor of the model's own
generation_config applies.

Both are `RolloutEngine`s, registered by name in ENGINES, so that another engine can take their place without its
callers changing: vLLM's registers itself from uniapl.generation.vllm_engine.
"""

from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

import torch

from uniapl.errors import UniaplError
from uniapl.generation.kv_cache import kv_cache_for
from uniapl.generation.positions import position_ids
from uniapl.generation.sampling import SamplingParams, SeededSampler

# called with a row's index in `prompt_ids` and its generated ids so far (its last token included); True
# stops the row, as not ended
StopPredicate = Callable[[int, list[int]], bool]

# a decode loop's result for each prompt: (generated ids, their sampling log-probs, ended with EOS)
Decoded = list[tuple[list[int], list[float], bool]]


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


class RolloutEngine(ABC):
    """What training, evaluation, teaching and analysis draw completions from: one call whatever decodes them."""

    name: ClassVar[str]  # its key in ENGINES and its value of `rollout.engine`

    @abstractmethod
    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int] | None = None,
                 batch_size: int | None = None, on_batch_done: Callable[[int], None] | None = None,
                 stop: StopPredicate | None = None) -> list[Completion]:
        """One completion per prompt, `batch_size` prompts at a time. Sampling needs one seed per prompt (see
        `sequence_seed`); greedy decoding (`params.do_sample` off) needs none and records no log-probs. `stop` ends a
        row early, as truncated; it is not asked about a row whose last token is EOS."""


class ModelEngine(RolloutEngine):
    """An engine that decodes with the transformers model itself, in this process; subclasses give the decode loop."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int] | None = None,
                 batch_size: int | None = None, on_batch_done: Callable[[int], None] | None = None,
                 stop: StopPredicate | None = None) -> list[Completion]:
        if params.do_sample and (seeds is None or len(seeds) != len(prompt_ids)):
            raise ValueError("sampling needs one seed per prompt")
        eos_ids = eos_token_ids(self.model, self.tokenizer)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else eos_ids[0]
        batch_size = batch_size or len(prompt_ids)
        was_training = self.model.training
        self.model.eval()
        results: list[Completion] = []
        try:
            for start in range(0, len(prompt_ids), batch_size):
                chunk = [list(p) for p in prompt_ids[start : start + batch_size]]
                chunk_seeds = list(seeds[start : start + batch_size]) if params.do_sample else [0] * len(chunk)
                chunk_stop = (lambda row, ids, offset=start: stop(offset + row, ids)) if stop else None
                for ids, logprobs, ended in self._decode(chunk, params, chunk_seeds, eos_ids, pad_id, chunk_stop, batch_size):
                    text = self.tokenizer.decode(ids, skip_special_tokens=True)
                    results.append(Completion(ids, text, truncated=not ended, logprobs=logprobs if params.do_sample else []))
                if on_batch_done:
                    on_batch_done(len(chunk))
        finally:
            self.model.train(was_training)
        return results

    @abstractmethod
    def _decode(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], eos_ids: list[int], pad_id: int,
                stop: StopPredicate | None, batch_size: int) -> Decoded:
        """Each prompt's result, decoded as one batch of at most `batch_size` prompts."""


def _left_padded(prompts: list[list[int]], width: int, pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input ids, attention mask and position ids of prompts left-padded to `width`."""
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], device=device)
    attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    return input_ids, attention_mask, position_ids(attention_mask)


class PlainEngine(ModelEngine):
    """The decode loop that sheds its rows as they finish: for CPUs, where every row's step costs."""

    name = "plain"

    def _decode(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], eos_ids: list[int], pad_id: int,
                stop: StopPredicate | None, batch_size: int) -> Decoded:
        model, device = self.model, self.device
        input_ids, attention_mask, prompt_positions = _left_padded(prompts, max(len(p) for p in prompts), pad_id, device)
        cache = kv_cache_for(model) or _default_cache(model)
        sampler = SeededSampler(params)
        eos = set(eos_ids)

        live = torch.arange(len(prompts), device=device)  # the prompt index of each row still decoding
        live_seeds = torch.tensor(seeds, dtype=torch.int64, device=device)
        generated: list[list[int]] = [[] for _ in prompts]
        ended = [False] * len(prompts)
        logprobs = torch.zeros(len(prompts), params.max_new_tokens, device=device)  # moved to the host once, at the end
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=prompt_positions, cache=cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]
        next_position = prompt_positions[:, -1:] + 1
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


CACHE_BUCKET = 128  # the static cache's length is a multiple of this, so steps with other prompt widths reuse its compiled step


class _CompiledStep:
    """A static KV cache for `rows` rows of `length` tokens, and the model's forward compiled for one decode step."""

    def __init__(self, model, rows: int, length: int):
        from transformers import StaticCache

        self.shape = (rows, length)
        self.cache = StaticCache(config=model.config, max_cache_len=length)
        cuda = next(model.parameters()).device.type == "cuda"
        self.forward = torch.compile(model.__call__, mode="reduce-overhead" if cuda else "default", dynamic=False)


_COMPILED_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_step(model, rows: int, length: int) -> _CompiledStep:
    """The model's compiled step for this shape, its cache emptied: built once, reused by later calls (and engines)."""
    step = _COMPILED_STEPS.get(model)
    if step is None or step.shape != (rows, length):
        step = _COMPILED_STEPS[model] = _CompiledStep(model, rows, length)
    else:
        step.cache.reset()
    return step


class CompiledEngine(ModelEngine):
    """PlainEngine's results, from fixed shapes, for GPUs: the batch padded to `batch_size` rows (copies of the first
    prompt, dropped at the end) and the cache to a multiple of CACHE_BUCKET tokens."""

    name = "compiled"

    def _decode(self, prompts: list[list[int]], params: SamplingParams, seeds: list[int], eos_ids: list[int], pad_id: int,
                stop: StopPredicate | None, batch_size: int) -> Decoded:
        model, device = self.model, self.device
        n, rows, budget = len(prompts), max(batch_size, len(prompts)), params.max_new_tokens
        length = -(-(max(len(p) for p in prompts) + budget) // CACHE_BUCKET) * CACHE_BUCKET
        padded = prompts + [prompts[0]] * (rows - n)
        input_ids, prompt_mask, prompt_positions = _left_padded(padded, length - budget, pad_id, device)
        attention_mask = torch.cat([prompt_mask, prompt_mask.new_ones(rows, budget)], dim=1)
        step = _compiled_step(model, rows, length)
        sampler = SeededSampler(params)
        row_seeds = torch.tensor(seeds + [seeds[0]] * (rows - n), dtype=torch.int64, device=device)
        eos = torch.tensor(eos_ids, device=device)
        tokens = torch.full((rows, budget), pad_id, device=device)
        logprobs = torch.zeros(rows, budget, device=device)
        ended = torch.zeros(rows, dtype=torch.bool, device=device)
        lengths = torch.full((rows,), budget, device=device)  # a row's length: where it ended or was stopped
        generated: list[list[int]] = [[] for _ in padded]  # kept on the host only for the stop predicate
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=prompt_positions, cache=step.cache,
                       use_cache=True, logits_to_keep=1).logits[:, -1]
        next_position = prompt_positions[:, -1:] + 1
        for position in range(budget):
            chosen, chosen_logprobs = sampler(logits, row_seeds, position)
            running = lengths == budget
            tokens[:, position], logprobs[:, position] = chosen, chosen_logprobs
            finishing = running & torch.isin(chosen, eos)
            if stop is not None:
                for row, token in enumerate(chosen.tolist()[:n]):
                    generated[row].append(token)
                    if bool(running[row]) and not bool(finishing[row]) and stop(row, generated[row]):
                        finishing[row] = True
            ended |= finishing & torch.isin(chosen, eos)
            lengths = torch.where(finishing, position + 1, lengths)
            # every 16 steps, one look from the host: stop once every real row is done
            if position == budget - 1 or (position % 16 == 15 and not bool((lengths[:n] == budget).any())):
                break
            logits = step.forward(input_ids=chosen[:, None], attention_mask=attention_mask, position_ids=next_position,
                                  cache=step.cache, use_cache=True).logits[:, -1].clone()
            next_position = next_position + 1
        tokens, logprobs, lengths, ended = tokens[:n].tolist(), logprobs[:n].tolist(), lengths[:n].tolist(), ended[:n].tolist()
        return [(tokens[i][: lengths[i]], logprobs[i][: lengths[i]], ended[i]) for i in range(n)]


# name -> engine class or factory, called with (model, tokenizer): where another engine registers itself (vLLM's, from
# uniapl.generation.vllm_engine)
ENGINES: dict[str, Callable[..., RolloutEngine]] = {engine.name: engine for engine in (PlainEngine, CompiledEngine)}


def resolve_engine_name(name: str, device, model_config=None) -> str:
    """`auto` (the config's default) is `vllm` where it is installed and supports the model of `model_config` (when
    given); else `compiled` on a GPU, where one graph replay replaces a step's kernel launches, and `plain` elsewhere,
    where shedding finished rows saves more. Other names stand."""
    if name != "auto":
        return name
    if model_config is not None:
        from uniapl.generation.vllm_engine import VLLMEngine, vllm_unsupported_reason

        if vllm_unsupported_reason(model_config) is None:
            return VLLMEngine.name
    return CompiledEngine.name if torch.device(device).type == "cuda" else PlainEngine.name


def generate(
    model,
    tokenizer,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    seeds: Sequence[int] | None = None,
    batch_size: int | None = None,
    on_batch_done: Callable[[int], None] | None = None,
    stop: StopPredicate | None = None,
    engine: str = "plain",
) -> list[Completion]:
    """`RolloutEngine.generate` by the engine named `engine` (a key of ENGINES) over this model: for callers that
    hold a model, not an engine."""
    if engine not in ENGINES:
        raise ValueError(f"engine '{engine}' is not one of: {', '.join(ENGINES)}")
    return ENGINES[engine](model, tokenizer).generate(prompt_ids, params, seeds, batch_size, on_batch_done, stop)


def _default_cache(model):
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def eos_token_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise UniaplError("the model and tokenizer define no EOS token; generation could not stop")
    return ids
