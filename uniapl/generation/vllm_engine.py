"""`rollout.engine: vllm`: vLLM in this process, beside the trainer (colocated, as TRL's vllm_mode="colocate").

The engine is built once from the model's config alone, with vLLM's random ("dummy") weights, so no checkpoint is read:
every weight it decodes with comes from memory through `load_weights`, at the build and, in training, after each
optimizer step (uniapl.train.policy). Prompts go in as token ids and completions come out as token ids.

Sampling: temperature, top_k, top_p and the token budget as `SamplingParams` say, EOS (the model's and the
tokenizer's) ending a row, and one seed per row (vLLM's per-request generator): a run is reproducible on one machine,
though its tokens are not our engines' (other noise). The log-probs are vLLM's `processed_logprobs`, those of the
distribution it sampled from: log softmax(logits / T) when top_k and top_p are off, which is what the trainer scores;
with either on, vLLM renormalizes over the kept tokens, so its log-probs sit above the trainer's by -log(kept mass).
A stop predicate cannot run inside vLLM's loop: it is applied to each finished row, which is cut where our engines
would have stopped it (vLLM decodes past that point, in vain).
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch

from uniapl.errors import UniaplError
from uniapl.generation.engines import ENGINES, Completion, RolloutEngine, StopPredicate, eos_token_ids
from uniapl.generation.sampling import SamplingParams

NOT_INSTALLED = "vLLM is not installed"
INSTALL_HINT = "bash scripts/setup.sh --vllm sets up .venv-vllm with it (docs/vllm.md)"
DEFAULT_KV_CACHE_GB = 2.0  # as rollout.vllm_kv_cache_gb's default


def vllm_unsupported_reason(model_config) -> str | None:
    """Why vLLM cannot decode a model of this config here, or None when it can. Imports vLLM for an engine in this
    process (its engine core in a subprocess could not take weights from memory), its logging cut to errors unless
    VLLM_LOGGING_LEVEL says otherwise."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import vllm
    except Exception as error:  # a broken install too: `auto` passes it by, `vllm` says why
        if isinstance(error, ModuleNotFoundError) and error.name == "vllm":
            return NOT_INSTALLED
        return f"vLLM is installed but does not import ({type(error).__name__}: {error})"
    from vllm.platforms import current_platform

    architectures = list(getattr(model_config, "architectures", None) or [])
    if not set(architectures) & set(vllm.ModelRegistry.get_supported_archs()):
        return f"vLLM has no implementation of {', '.join(architectures) or 'this model'}"
    if current_platform.is_cpu():
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads
        sizes = CPUAttentionBackend.get_supported_head_sizes()
        if head_dim not in sizes:
            return f"vLLM's CPU attention takes head sizes {sizes}, and this model's is {head_dim}"
    return None


def plain_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """A transformers model's weights under their names, as `VLLMEngine.load_weights` takes them."""
    for name, param in model.named_parameters():
        yield name, param.detach()


class VLLMEngine(RolloutEngine):
    """vLLM's engine over a copy of `model`'s weights. `weights` are the model's weights to start from (default: its
    parameters as they are; a LoRA or sharded model's owner gives them whole, see `PolicyModels.rollout_weights`).
    `kv_cache_gb` is its KV cache, on the GPU or in RAM, which bounds the longest sequence. With
    `sleep_between_calls`, on a GPU where vLLM has sleep mode, it frees its memory (weights and KV cache) after
    each `generate` for the training passes, and takes it back at the next `load_weights`."""

    name = "vllm"

    def __init__(self, model, tokenizer, dtype: torch.dtype | None = None, kv_cache_gb: float = DEFAULT_KV_CACHE_GB,
                 sleep_between_calls: bool = False, weights: Iterable[tuple[str, torch.Tensor]] | None = None):
        reason = vllm_unsupported_reason(model.config)
        if reason is not None:
            fix = INSTALL_HINT if reason == NOT_INSTALLED else "set rollout.engine to auto, plain or compiled"
            raise UniaplError(f"rollout.engine: vllm cannot run here: {reason}; {fix}")
        from vllm import LLM
        from vllm.platforms import current_platform

        self.tokenizer = tokenizer
        self.eos_ids = eos_token_ids(model, tokenizer)
        self.sleeps = sleep_between_calls and current_platform.is_sleep_mode_available()
        self.asleep = False
        with tempfile.TemporaryDirectory() as folder, _process_state_kept():
            model.config.save_pretrained(folder)
            self.llm = LLM(
                model=folder,
                skip_tokenizer_init=True,  # token ids in and out: the tokenizer stays ours
                load_format="dummy",  # random weights, replaced from memory below
                dtype=dtype or next(model.parameters()).dtype,
                kv_cache_memory_bytes=int(kv_cache_gb * 2**30),
                max_model_len=-1,  # the longest the KV cache holds, up to the model's own limit
                generation_config="vllm",  # as our engines: no sampling defaults from the model's generation_config
                logprobs_mode="processed_logprobs",
                enforce_eager=current_platform.is_cpu(),  # compiling on a CPU took 80 s for 10% more tokens/s
                enable_sleep_mode=self.sleeps,
                **({"gpu_memory_utilization": _free_gpu_share()} if current_platform.is_cuda_alike() else {}),
                **_launcher_settings(),
            )
        # on a CPU, a sampled call's prompts go in groups that prefill in one scheduler step (see `_request_groups`)
        scheduler = self.llm.llm_engine.vllm_config.scheduler_config
        self.prefill_budget = scheduler.max_num_batched_tokens if current_platform.is_cpu() else None
        self.max_rows = scheduler.max_num_seqs
        self.load_weights(weights if weights is not None else plain_weights(model))

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Every weight of the model, under its transformers name, in any dtype (vLLM casts). The prefix cache, made with
        the old weights, is dropped."""
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        self.llm.apply_model(_repack_output_layers)
        self.llm.reset_prefix_cache()

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int] | None = None,
                 batch_size: int | None = None, on_batch_done: Callable[[int], None] | None = None,
                 stop: StopPredicate | None = None) -> list[Completion]:
        if params.do_sample and (seeds is None or len(seeds) != len(prompt_ids)):
            raise ValueError("sampling needs one seed per prompt")
        if self.asleep:
            raise RuntimeError("the vLLM engine slept after its last generate and freed its weights: load_weights first")
        batch_size = batch_size or len(prompt_ids)
        results: list[Completion] = []
        for start in range(0, len(prompt_ids), batch_size):
            chunk = prompt_ids[start : start + batch_size]
            for group in self._request_groups(chunk, params.do_sample):
                requests = [{"prompt_token_ids": list(chunk[i])} for i in group]
                sampling = [self._sampling_params(params, seeds[start + i] if params.do_sample else None) for i in group]
                for i, output in zip(group, self.llm.generate(requests, sampling, use_tqdm=False)):
                    results.append(self._completion(output.outputs[0], params.do_sample, start + i, stop))
            if on_batch_done:
                on_batch_done(len(chunk))
        if self.sleeps:
            self.llm.sleep(level=2)  # weights too: the next load_weights brings all of them
            self.asleep = True
        return results

    def _request_groups(self, chunk: Sequence[Sequence[int]], sampled: bool) -> list[range]:
        """The rows of one `generate` batch, split so that vLLM never prefills a seeded row over two scheduler steps:
        it then rewinds the row's generator, which torch's CPU generator cannot do ("CPU Generator does not use
        offset"). Each group's prompts fit the scheduler's token budget together, and its rows the scheduler's row
        limit, so they all prefill in the first step. Greedy rows have no generator and go in as one group."""
        if not sampled or self.prefill_budget is None:
            return [range(len(chunk))]
        groups, first, tokens = [], 0, 0
        for i, prompt in enumerate(chunk):
            if len(prompt) > self.prefill_budget:
                raise UniaplError(f"a prompt of {len(prompt)} tokens is longer than vLLM's prefill budget on this CPU "
                                  f"({self.prefill_budget} tokens), and vLLM cannot sample it with a seed there; "
                                  f"shorten the prompt or use another engine (plain or compiled)")
            if tokens + len(prompt) > self.prefill_budget or i - first == self.max_rows:
                groups.append(range(first, i))
                first, tokens = i, 0
            tokens += len(prompt)
        return groups + [range(first, len(chunk))]

    def _sampling_params(self, params: SamplingParams, seed: int | None):
        from vllm import SamplingParams as VLLMSamplingParams

        return VLLMSamplingParams(
            max_tokens=params.max_new_tokens,
            temperature=params.temperature if params.do_sample else 0.0,
            top_p=params.top_p,
            top_k=params.top_k,
            seed=seed,
            stop_token_ids=self.eos_ids,
            logprobs=0 if params.do_sample else None,  # the sampled token's only
            detokenize=False,
        )

    def _completion(self, output, sampled: bool, index: int, stop: StopPredicate | None) -> Completion:
        ids = list(output.token_ids)
        logprobs = [step[token].logprob for step, token in zip(output.logprobs, ids)] if sampled else []
        ended = bool(ids) and ids[-1] in self.eos_ids
        if stop is not None:
            for length in range(1, len(ids) + 1 - ended):
                if stop(index, ids[:length]):
                    ids, logprobs, ended = ids[:length], logprobs[:length], False
                    break
        return Completion(ids, self.tokenizer.decode(ids, skip_special_tokens=True), truncated=not ended, logprobs=logprobs)


def _repack_output_layers(model) -> None:
    """vLLM's CPU build packs an output layer's weight for its matmul when the weights are loaded. A reload repacks
    only the layers it loads, and an output layer tied to the input embedding is never loaded on its own: it would
    keep decoding with the weights of the build. Pack it again (elsewhere this does nothing)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import ParallelLMHead

    for module in model.modules():
        if isinstance(module, ParallelLMHead):
            module.quant_method.process_weights_after_loading(module)


def _launcher_settings() -> dict:
    """Under several training processes (accelerate launch), each runs its own engine on its share of the prompts:
    vLLM's "external_launcher" joins the process group the launcher made instead of making its own."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    return {"distributed_executor_backend": "external_launcher"} if distributed and torch.distributed.get_world_size() > 1 else {}


def _free_gpu_share() -> float:
    """vLLM refuses to start on a GPU with less free memory than `gpu_memory_utilization` of it, and the colocated
    trainer already holds its own: the share that is free now (the KV cache is sized by `kv_cache_gb`, not by this)."""
    free, total = torch.cuda.mem_get_info()
    return 0.95 * free / total


@contextlib.contextmanager
def _process_state_kept():
    """vLLM's worker assumes it owns the process: it seeds the global random generators and replaces
    torch.set_num_threads with a no-op on a CPU. The trainer's generators and thread setting stay as they were."""
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    set_num_threads = torch.set_num_threads
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        torch.set_num_threads = set_num_threads


ENGINES[VLLMEngine.name] = VLLMEngine
