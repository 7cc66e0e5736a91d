"""Which verifiable reward gives GRPO a signal: the base policy's rollouts on the held-out split.

A GRPO group teaches nothing when all its rewards are equal (every advantage is 0). This samples G
rollouts per held-out prompt from the start policy, exactly as training would (seeded, temperature
1), scores them with each candidate reward, and prints, per reward, the mean reward and the share
of groups whose rewards differ. The reproduction uses the reward with more informative groups; the
held-out split is used so the choice never looks at IFEval.

    OMP_NUM_THREADS=1 python scripts/repro/choose_reward.py --prompts data/if_heldout.jsonl --out docs/repro/reward_choice.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from uniapl.generation import SamplingParams, encode_prompts, generate, sequence_seed
from uniapl.ifeval.prompts import load_constraint_rows
from uniapl.models import load_model_and_tokenizer
from uniapl.rewards import resolve_reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", default="data/if_heldout.jsonl")
    parser.add_argument("--rewards", default="ifeval_strict,ifeval_partial")
    parser.add_argument("--generations", type=int, default=4, help="G, as in training")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()

    rows = load_constraint_rows(args.prompts)[: args.limit]
    model, tokenizer = load_model_and_tokenizer(args.model, args.dtype)
    g = args.generations
    prompts = [row["prompt"] for row in rows for _ in range(g)]
    seeds = [sequence_seed(args.seed, 0, i) for i in range(len(prompts))]
    started = time.perf_counter()
    completions = generate(model, tokenizer, encode_prompts(tokenizer, prompts),
                           SamplingParams(args.max_new_tokens, args.temperature), seeds, args.batch_size)
    seconds = time.perf_counter() - started
    texts = [[{"role": "assistant", "content": c.text}] for c in completions]
    columns = {name: [row[name] for row in rows for _ in range(g)] for name in ("instruction_id_list", "kwargs")}
    figures = {"prompts": len(rows), "generations": g, "max_new_tokens": args.max_new_tokens, "generation_seconds": round(seconds, 1),
               "truncated": float(np.mean([c.truncated for c in completions])), "rewards": {}}
    for name in args.rewards.split(","):
        scores = np.array(resolve_reward(name)(prompts=prompts, completions=texts, **columns), dtype=float).reshape(-1, g)
        figures["rewards"][name] = {
            "mean": float(scores.mean()),
            "informative_groups": float((scores.std(axis=1) > 0).mean()),
            "mean_group_std": float(scores.std(axis=1, ddof=1).mean()),
        }
    print(json.dumps(figures, indent=1))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
