"""Responses per second of the IFEval rewards, beside lm-eval's full process_results (strict and loose).

The responses are IFEval's own 541 prompts, scored against the constraints of the first 541 rows of a
training file, so most instructions fail: the slow case for the loose check. No model is needed.

    python benchmarks/reward_speed.py                       # data/if_train.jsonl, 3 repeats
    python benchmarks/reward_speed.py --rows 100 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import time

from uniapl.io import read_jsonl
from uniapl.ifeval.prompts import load_ifeval
from uniapl.ifeval.scoring import check_response
from uniapl.rewards import resolve_reward

REWARDS = ("ifeval_strict", "ifeval_loose", "ifeval_partial")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", default="data/if_train.jsonl")
    parser.add_argument("--rows", type=int, default=541)
    parser.add_argument("--repeats", type=int, default=3, help="the median of this many timed passes is printed")
    args = parser.parse_args()

    rows = read_jsonl(args.train)[: args.rows]
    responses = [doc["prompt"] for doc in load_ifeval()][: len(rows)]
    columns = dict(prompts=[r["prompt"] for r in rows], completions=responses,
                   instruction_id_list=[r["instruction_id_list"] for r in rows], kwargs=[r["kwargs"] for r in rows])

    def full_reference_check():
        for row, response in zip(rows, responses):
            check_response(row["prompt"], row["instruction_id_list"], row["kwargs"], response)

    candidates = {name: (lambda name=name: resolve_reward(name)(**columns)) for name in REWARDS}
    candidates["lm-eval process_results"] = full_reference_check
    resolve_reward("ifeval_strict")(**{k: v[:5] for k, v in columns.items()})  # warm-up: imports, punkt, langdetect
    print(f"{len(rows)} responses, median of {args.repeats} passes")
    print(f"{'scorer':<26} {'responses/s':>12}")
    for name, run in candidates.items():
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            run()
            seconds.append(time.perf_counter() - start)
        print(f"{name:<26} {len(rows) / statistics.median(seconds):>12.0f}")


if __name__ == "__main__":
    main()
