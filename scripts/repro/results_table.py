"""The results table of docs/results.md, from the grid's result files: mean ± standard error over seeds.

Reads <runs>/grid/<algorithm>-seed<s>/final (IFEval scores, held-out scores, analysis), the start model
(<runs>/start/final) and the echo floor (<runs>/echo/final), as scripts/repro/run.sh and scripts/repro2/run.sh
leave them. Also prints the differences of UniAPL (and of staged AAPA) from GRPO and from SFT-then-GRPO, and of
SFT-then-GRPO from GRPO, with their standard errors, unpaired and paired by seed (a seed fixes the data order, so
the same seed of two algorithms saw the same prompts), with each seed's difference. Where the runs' analyses were
scored by an AAPA discriminator (`uniapl compare --discriminator`), its mean logit on each model's samples is a
column, and its mean on the expert's is printed.

A group of runs on other data lives in a folder of its own under <runs>, laid out the same way (`--track
FOLDER=LABEL`): its algorithms are rows labelled "ALGORITHM (LABEL)", each compared with GRPO, with SFT-then-GRPO
and with the same algorithm on the grid's own data.

    python scripts/repro/results_table.py
    python scripts/repro/results_table.py --runs runs/repro2     # the second grid
    python scripts/repro/results_table.py --runs runs/repro2 --track "bestofk=best-of-K data"   # and its third group
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from uniapl.analysis.discriminators import DISCRIMINATORS_JSON
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
# ours against each baseline, then what the demonstrations give the staged baseline; then the second group: CHORD,
# the other one-stage mix of SFT and RL, against the same two and UniAPL, AAPA's anchor as a plug-in to GRPO, and SFT
# alone against RL alone and against SFT followed by RL
PAIRS = [("uniapl", "grpo"), ("uniapl", "sft_then_grpo"), ("staged_aapa", "grpo"), ("staged_aapa", "sft_then_grpo"),
         ("sft_then_grpo", "grpo"), ("chord", "grpo"), ("chord", "sft_then_grpo"), ("chord", "uniapl"),
         ("grpo_aapa", "grpo"), ("sft", "grpo"), ("sft", "sft_then_grpo")]
COMPARED = [("IFEval prompt strict", True), ("IFEval inst strict", True), ("held-out reward", False)]


def value(final: Path, file: str, keys: tuple[str, ...]) -> float | None:
    path = final / file
    if not path.is_file():
        return None
    node = json.loads(path.read_text())
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, (int, float)) else None


def row_values(finals: list[Path], columns: list[tuple]) -> dict[str, list[float | None]]:
    return {header: [value(f, file, keys) for f in finals] for header, file, keys, _ in columns}


def discriminator_column(name: str, side: str = "policy") -> tuple:
    return f"{name} logit", f"analysis/{DISCRIMINATORS_JSON}", (name, "scores", side, "mean"), False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/repro", type=Path, help="the grid's folder: its grid/, start/ and echo/")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--discriminator", default="disc-minilm",
                        help="the discriminator (its folder's name) whose scores of the analyses are a column, where there are any")
    parser.add_argument("--track", action="append", default=[], metavar="FOLDER=LABEL",
                        help="runs on other data, under <runs>/FOLDER/grid (repeatable)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    finals = {"start model (SmolLM2-135M-Instruct)": [args.runs / "start" / "final"], "echo the prompt (floor)": [args.runs / "echo" / "final"]}
    tracks = [("", None)]  # the grid's own folder, then each --track's
    for track in args.track:
        folder, _, label = track.partition("=")
        if not folder or not label:
            parser.error(f"--track '{track}' is not FOLDER=LABEL")
        tracks.append((folder, label))
    pairs = list(PAIRS)
    for folder, label in tracks:
        for algorithm in ALGORITHMS:
            runs = [args.runs / folder / "grid" / f"{algorithm}-seed{s}" / "final" for s in seeds]
            if any(f.is_dir() for f in runs):
                name = f"{algorithm} ({label})" if label else algorithm
                finals[name] = runs
                if label:
                    pairs += [(name, "grpo"), (name, "sft_then_grpo"), (name, algorithm)]
    scored = discriminator_column(args.discriminator)
    columns = COLUMNS + [scored]
    rows = {name: row_values(runs, columns) for name, runs in finals.items()}
    if not any(v is not None for values in rows.values() for v in values[scored[0]]):
        columns = COLUMNS
    percent = {header: pct for header, _, _, pct in columns}
    print("| model | " + " | ".join(h for h, *_ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(format_mean(values[h], percent[h]) for h, *_ in columns) + " |")
    print()
    if len(columns) > len(COLUMNS):  # the expert's held-out demonstrations are the same for every run
        _, file, keys, _ = discriminator_column(args.discriminator, "expert")
        expert = next(v for runs in finals.values() for f in runs if (v := value(f, file, keys)) is not None)
        print(f"- {args.discriminator}'s mean logit on the expert's held-out demonstrations: {expert:.3f}\n")
    for ours, other in pairs:
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
            # each seed's values sit at its position, None where it is missing, so zip pairs the same seeds
            differences = [scale * (x - y) for x, y in zip(rows[ours][header], rows[other][header])
                           if x is not None and y is not None]
            paired = mean_and_standard_error(differences)
            if paired["stderr"] is not None:
                each = ", ".join(f"{d:+.{digits}f}" for d in differences)
                line += (f"; paired by seed: {paired['mean']:+.{digits}f} ± {paired['stderr']:.{digits}f} "
                         f"(n={paired['n']}: {each})")
            print(line)


if __name__ == "__main__":
    main()
