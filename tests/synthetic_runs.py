"""Small run folders laid out like the trainer's, for testing the report without training anything.

They test the report, not the trainer: every number in them is made up, and the tests compare the
report against these files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from uniapl.analysis.analyze import ANALYSIS_JSON, LENGTH_PNG, LOGPROB_PNG
from uniapl.analysis.distributions import compare_samples
from uniapl.analysis.plots import overlaid_histogram


def base_config(algorithm: str, seed: int, output_dir: Path) -> dict:
    return {
        "model": {"name": "tiny-random-smollm2"},
        "data": {"train": "data/train.jsonl"},
        "rewards": {"functions": ["no_commas"]},
        "rollout": {"max_new_tokens": 16, "group_size": 4},
        "algorithm": {"name": algorithm, "epsilon": 2.0},
        "training": {"seed": seed, "output_dir": str(output_dir), "max_steps": 5},
    }


def metrics_rows(seed: int, with_discriminator: bool, steps: int = 5) -> list[dict]:
    rows = []
    for step in range(1, steps + 1):
        row = {
            "step": step,
            "reward/mean": 0.1 * step + 0.01 * seed,
            "reward/std": 0.2,
            "reward/no_commas": 0.1 * step,
            "lambda": 1.0 / step,
            "c_batch": 3.0 - 0.2 * step,
            "epsilon": 2.0,
            "clip/low_frac": 0.01 * step,
            "clip/high_frac": 0.02,
            "length/mean": 10.0 + step + seed,
            "entropy": 1.5,
        }
        if with_discriminator:
            row.update({"disc/acc_expert": 0.6, "disc/acc_policy": 0.5 + 0.05 * step, "adv/r_adv_mean": math.sin(step)})
        rows.append(row)
    return rows


def eval_scores(prompt_strict: float, inst_strict: float) -> dict:
    return {
        "prompt_level_strict_acc": prompt_strict,
        "inst_level_strict_acc": inst_strict,
        "prompt_level_loose_acc": prompt_strict + 0.01,
        "inst_level_loose_acc": inst_strict + 0.01,
        "per_instruction": {},
        "n_prompts": 20,
        "mean_length_tokens": 42.5,
    }


def analysis_result(policy_lengths: list[float], expert_lengths: list[float]) -> dict:
    return {
        "n_prompts": len(policy_lengths),
        "length_tokens": compare_samples(policy_lengths, expert_lengths),
        "mean_token_logprob": compare_samples([-1.0, -1.5, -2.0], [-2.5, -3.0, -2.0]),
        "expert_nll": 2.5,
        "degeneration": {
            "policy": {"n": 3, "echo_rate": 0.0, "repetition_rate": 1 / 3, "distinct_2": 0.8, "truncation_rate": 2 / 3, "empty_rate": 0.0}
        },
    }


def make_run(
    root: Path,
    name: str,
    algorithm: str = "uniapl",
    seed: int = 1,
    scores: dict | None = None,
    analysis: dict | None = None,
    with_discriminator: bool = True,
    finished: bool = True,
) -> Path:
    """A run folder; leave out `scores` or `analysis` to make that result missing."""
    run = root / name
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(base_config(algorithm, seed, run)), encoding="utf-8")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics_rows(seed, with_discriminator)), encoding="utf-8")
    if finished:
        (run / "final" / "config.json").write_text("{}", encoding="utf-8")
    if scores is not None:
        (run / "final" / "ifeval_scores.json").write_text(json.dumps(scores), encoding="utf-8")
    if analysis is not None:
        analysis_dir = run / "final" / "analysis"
        analysis_dir.mkdir()
        (analysis_dir / ANALYSIS_JSON).write_text(json.dumps(analysis), encoding="utf-8")
        overlaid_histogram(analysis["length_tokens"], "Response length", "tokens", analysis_dir / LENGTH_PNG)
        overlaid_histogram(analysis["mean_token_logprob"], "Log-prob", "log-prob", analysis_dir / LOGPROB_PNG)
    return run
