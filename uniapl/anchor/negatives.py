"""The discriminator's negatives: the start policy's own responses to the demonstrations' prompts, sampled once at
the rollout settings of the run that will use it (so they look like that run's first rollouts), or read from a file.

Sampling appends each finished batch to the file, so a killed command resumes where it stopped, and the seeds
follow each prompt's position, so the resumed file holds the same samples as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from uniapl.config import UniAPLConfig
from uniapl.errors import DataError
from uniapl.examples import Example, load_examples
from uniapl.io import append_jsonl, read_resumable_jsonl


def sample_negatives(config: UniAPLConfig, demonstrations: Sequence[Example], out: Path, per_prompt: int,
                     progress: bool = True) -> list[Example]:
    """`per_prompt` samples of `config.model` for each demonstration's prompt, at `config.rollout`'s settings."""
    from tqdm import tqdm

    from uniapl.generation import (
        ENGINES,
        SamplingParams,
        encode_prompts,
        resolve_engine_name,
        sequence_seed,
    )
    from uniapl.models import load_model_and_tokenizer, resolve_dtype

    wanted = [(i, sample) for i in range(len(demonstrations)) for sample in range(per_prompt)]
    done = {(row["index"], row["sample"]) for row in read_resumable_jsonl(out)} if out.exists() else set()
    pending = [w for w in wanted if w not in done]
    if pending:
        r = config.rollout
        model, tokenizer = load_model_and_tokenizer(config.model.name, resolve_dtype(config.model.dtype))
        params = SamplingParams(r.max_new_tokens, r.temperature, r.top_p, r.top_k, do_sample=True)
        # the engine the run would roll out with (`auto` weighs vLLM too), built once for every batch
        engine = ENGINES[resolve_engine_name(r.engine, next(model.parameters()).device, model.config)](model, tokenizer)
        batch = r.batch_size or 32
        with tqdm(total=len(wanted), initial=len(wanted) - len(pending), desc="negatives", unit="response", disable=not progress) as bar:
            for start in range(0, len(pending), batch):
                chunk = pending[start : start + batch]
                prompts = encode_prompts(tokenizer, [demonstrations[i].prompt for i, _ in chunk], config.data.max_prompt_length)
                seeds = [sequence_seed(config.training.seed, 0, i * per_prompt + sample) for i, sample in chunk]
                completions = engine.generate(prompts, params, seeds, batch)
                append_jsonl(out, [{"index": i, "sample": sample, "prompt": demonstrations[i].prompt, "completion": _as_completion(demonstrations[i], c.text),
                                    "truncated": c.truncated} for (i, sample), c in zip(chunk, completions)])
                bar.update(len(chunk))
    return load_examples(out)


def _as_completion(example: Example, text: str):
    return [{"role": "assistant", "content": text}] if example.conversational else text


def read_negatives(path: str | Path) -> list[Example]:
    """Policy responses from a file in the data format (a prompt and a completion per row)."""
    examples = load_examples(path)
    missing = [e for e in examples if e.completion is None]
    if missing:
        raise DataError(f"{missing[0].where}: a negative needs a 'completion' (the policy's response to its prompt)")
    return examples
