"""Seconds and token slots of an analysis's scoring (`uniapl analyze`: the model's per-token log-probs on its own
samples and on the expert's responses), its rows in passes in their order or in length buckets
(`completion_logprobs(by_length=...)`).

The rows are a finished analysis's: its prompts, its expert's responses and its samples (responses.jsonl, re-tokenized
and ended with EOS, so a truncated sample is one token longer than it was scored). Any model scores them; the
figures in docs/benchmarks.md scored a grid run's rows with the start model, one thread, on the lanes' CPU.

    OMP_NUM_THREADS=1 python benchmarks/analysis_scoring.py --analysis runs/repro2/grid/chord-seed1/final/analysis
    python benchmarks/analysis_scoring.py --analysis ... --model tiny-random-smollm2 --limit 16
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from uniapl.analysis.expert_rows import load_expert_examples
from uniapl.generation import encode_prompts
from uniapl.io import jsonl_rows
from uniapl.models import load_model_and_tokenizer
from uniapl.train.sequences import completion_logprobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--analysis", required=True, help="a finished analysis's folder (analysis.json, responses.jsonl)")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--limit", type=int, default=None, help="only the first N rows")
    args = parser.parse_args()

    folder = Path(args.analysis)
    recorded = json.loads((folder / "analysis.json").read_text())
    examples = load_expert_examples(recorded["expert_file"], recorded["prompts_file"], args.limit)
    responses = {row["key"]: row["response"] for _, row in jsonl_rows(next(folder.glob("responses.jsonl*")))}
    model, tokenizer = load_model_and_tokenizer(args.model, args.dtype)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]  # noqa: E731
    prompt_ids = encode_prompts(tokenizer, [e.prompt for e in examples])
    sides = {"samples": [encode(responses[e.key]) for e in examples], "expert": [encode(e.expert_response) for e in examples]}
    batch_size = recorded["settings"]["batch_size"]

    slots: list[int] = []
    model.register_forward_pre_hook(lambda _, a, kwargs: slots.append(kwargs["input_ids"].numel()), with_kwargs=True)
    completion_logprobs(model, prompt_ids[:2], sides["expert"][:2], tokenizer.pad_token_id)  # warm-up
    print(f"{len(examples)} rows, passes of at most {batch_size}, {torch.get_num_threads()} thread(s), {args.model} {args.dtype}")
    print("| rows | passes | token slots | real tokens | seconds | max abs logp difference |")
    print("|---|---|---|---|---|---|")
    for side, completions in sides.items():
        real = sum(len(p) + len(c) for p, c in zip(prompt_ids, completions))
        scored = {}
        for by_length in (False, True):
            slots.clear()
            start = time.perf_counter()
            scored[by_length] = completion_logprobs(model, prompt_ids, completions, tokenizer.pad_token_id, batch_size=batch_size,
                                                    by_length=by_length)
            seconds = time.perf_counter() - start
            if by_length:
                difference = f"{max(abs(a - b) for row, other in zip(scored[True], scored[False]) for a, b in zip(row, other)):.2e}"
            else:
                difference = "(the reference)"
            layout = "length buckets" if by_length else "in order"
            print(f"| {side}, {layout} | {len(slots)} | {sum(slots)} | {real} | {seconds:.1f} | {difference} |")


if __name__ == "__main__":
    main()
