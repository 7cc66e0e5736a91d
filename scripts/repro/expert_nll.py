"""The start policy's per-token NLL on the training demonstrations: the constraint C(theta_0).

The reproduction sets UniAPL's budget epsilon to this value, so the constraint reads "do not drift
further from the expert than you started": lambda grows only when the policy moves away.

    OMP_NUM_THREADS=1 python scripts/repro/expert_nll.py --data data/if_train.jsonl
"""

from __future__ import annotations

import argparse

from uniapl.examples import load_examples
from uniapl.generation import encode_prompts
from uniapl.models import load_model_and_tokenizer
from uniapl.train.sequences import completion_logprobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--data", default="data/if_train.jsonl")
    parser.add_argument("--max-demo-length", type=int, default=512, help="demonstrations longer than this (with EOS) are left out, as in training")
    parser.add_argument("--dtype", default="fp32", help="training computes C in fp32")
    args = parser.parse_args()

    model, tokenizer = load_model_and_tokenizer(args.model, args.dtype)
    demos = [e for e in load_examples(args.data) if e.completion is not None]
    completion_ids = [tokenizer(e.completion_text(), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for e in demos]
    kept = [(e, ids) for e, ids in zip(demos, completion_ids) if len(ids) <= args.max_demo_length]
    prompt_ids = encode_prompts(tokenizer, [e.prompt for e, _ in kept])
    logprobs = completion_logprobs(model, prompt_ids, [ids for _, ids in kept], tokenizer.pad_token_id, batch_size=8)
    tokens = sum(len(lp) for lp in logprobs)
    nll = -sum(sum(lp) for lp in logprobs) / tokens
    print(f"{len(kept)} of {len(demos)} demonstrations, {tokens} tokens: per-token NLL {nll:.4f}")


if __name__ == "__main__":
    main()
