"""The results table of docs/results.md, from the grid's result files: mean ± standard error over seeds.

Reads <runs>/grid/<algorithm>-seed<s>/final (IFEval scores, held-out scores, analysis), the start model
(<runs>/start/final) and the echo floor (<runs>/echo/final), as scripts/repro/run.sh and scripts/repro2/run.sh
leave them. Also prints the differences of UniAPL (and of staged AAPA) from GRPO and from SFT-then-GRPO with
their standard errors, unpaired and paired by seed (a seed fixes the data order, so the same seed of two
algorithms saw the same prompts).

    python scripts/repro/results_table.py
    python scripts/repro/results_table.py --runs runs/repro2     # the second grid
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from uniapl.analysis.distributions import mean_and_standard_error
from uniapl.analysis.report import format_mean

# (header, file under final/, keys, percent)
COLUMNS = [
    ("IFEval prompt strict", "ifeval_scores.json", ("prompt_level_strict_acc",), True),
    ("IFEval inst strict", "ifeval_scores.json", ("inst_level_strict_acc",), True),
    ("IFEval prompt loose", "ifeval_scores.json", ("prompt_level_loose_acc",), True),
    ("IFEval inst loose", "ifeval_scores.json", ("inst_level_loose_acc",), True),
    ("held-out reward", "heldout/ifeval_scores.json", ("mean_partial_reward",), False),
    ("held-out prompt strict", "heldout/ifeval_scores.json", ("prompt_level_strict_acc",), True),
    ("echo %", "ifeval_scores.json", ("degeneration", "echo_rate"), True),
    ("repetitive %", "ifeval_scores.json", ("degeneration", "repetition_rate"), True),
    ("truncated %", "ifeval_scores.json", ("degeneration", "truncation_rate"), True),
    ("mean length", "ifeval_scores.json", ("mean_length_tokens",), False),
    ("length W1", "analysis/analysis.json", ("length_tokens", "distance", "wasserstein_1"), False),
    ("length KS", "analysis/analysis.json", ("length_tokens", "distance", "ks_statistic"), False),
    ("log-prob W1", "analysis/analysis.json", ("mean_token_logprob", "distance", "wasserstein_1"), False),
    ("log-prob KS", "analysis/analysis.json", ("mean_token_logprob", "distance", "ks_statistic"), False),
]
ALGORITHMS = ["grpo", "sft_then_grpo", "uniapl", "uniapl_no_adv", "staged_aapa", "grpo_aapa", "sft", "chord", "luffy",
              "uniapl_fixed_lambda"]
OURS = ["uniapl", "staged_aapa"]  # compared with each baseline below
COMPARED = [("IFEval prompt strict", True), ("IFEval inst strict", True), ("held-out reward", False)]


def value(final: Path, file: str, keys: tuple[str, ...]) -> float | None:
    path = final / file
    if not path.is_file():
        return None
    node = json.loads(path.read_text())
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float)) else None


def row_values(finals: list[Path]) -> dict[str, list[float | None]]:
    return {header: [value(f, file, keys) for f in finals] for header, file, keys, _ in COLUMNS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/repro", type=Path, help="the grid's folder: its grid/, start/ and echo/")
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {"start model (SmolLM2-135M-Instruct)": row_values([args.runs / "start" / "final"]),
            "echo the prompt (floor)": row_values([args.runs / "echo" / "final"])}
    for algorithm in ALGORITHMS:
        finals = [args.runs / "grid" / f"{algorithm}-seed{s}" / "final" for s in seeds]
        if any(f.is_dir() for f in finals):
            rows[algorithm] = row_values(finals)
    percent = {header: pct for header, _, _, pct in COLUMNS}
    print("| model | " + " | ".join(h for h, *_ in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(format_mean(values[h], percent[h]) for h, *_ in COLUMNS) + " |")
    print()
    for ours, other in [(ours, other) for ours in OURS for other in ("grpo", "sft_then_grpo")]:
        if ours not in rows or other not in rows:
            continue
        for header, pct in COMPARED:
            a, b = mean_and_standard_error(rows[ours][header]), mean_and_standard_error(rows[other][header])
            if a["mean"] is None or b["mean"] is None:
                continue
            scale, digits = (100, 2) if pct else (1, 4)
            line = f"- {ours} − {other}, {header}: {scale * (a['mean'] - b['mean']):+.{digits}f}"
            if a["stderr"] is None or b["stderr"] is None:  # one seed has no spread to compare against
                line += f" (no standard error: n={a['n']} and {b['n']})"
            else:
                se = scale * math.sqrt(a["stderr"] ** 2 + b["stderr"] ** 2)
                line += f" ± {se:.{digits}f} (standard error of the difference; n={a['n']} and {b['n']})"
            paired = mean_and_standard_error(
                [x - y for x, y in zip(rows[ours][header], rows[other][header]) if x is not None and y is not None]
            )
            if paired["stderr"] is not None:
                line += f"; paired by seed: {scale * paired['mean']:+.{digits}f} ± {scale * paired['stderr']:.{digits}f} (n={paired['n']})"
            print(line)


if __name__ == "__main__":
    main()
