"""The tuned learning rate of each algorithm: the best held-out mean reward among its tuning runs.

Tuning runs live in <runs>/tune/lr<LR>/<algorithm>-seed0 (scripts/repro/run.sh tune, scripts/repro2/run.sh tune);
only their held-out scores (final/heldout) are read, never IFEval. Ties go to the smaller learning rate.

    python scripts/repro/select_lr.py --algorithm uniapl     # prints the chosen learning rate
    python scripts/repro/select_lr.py --table                # every tuning run and its score, and the start model's, as markdown
    python scripts/repro/select_lr.py --runs runs/repro2 --table   # the second grid's
    python scripts/repro/select_lr.py --runs runs/repro2/bestofk --start runs/repro2/start --table  # its third group's
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SCORES = Path("final/heldout/ifeval_scores.json")


def tuning_scores(tune: Path, algorithm: str | None = None) -> dict[tuple[str, float], dict | None]:
    """(algorithm, learning rate) -> the held-out scores of its tuning run (None while it is unfinished)."""
    found = {}
    for lr_dir in sorted(tune.glob("lr*")):
        for run in sorted(lr_dir.glob("*-seed0")):
            name = run.name.removesuffix("-seed0")
            if algorithm in (None, name):
                path = run / SCORES
                found[(name, float(lr_dir.name[2:]))] = json.loads(path.read_text()) if path.is_file() else None
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithm")
    parser.add_argument("--table", action="store_true")
    parser.add_argument("--runs", default="runs/repro", type=Path, help="the grid's folder: its tune/ and start/ (the start model, "
                        "evaluated the same way by run.sh start)")
    parser.add_argument("--start", type=Path, help="the start model's folder, where it is not <runs>/start")
    args = parser.parse_args()
    tune = args.runs / "tune"
    scores = tuning_scores(tune, args.algorithm)
    if args.table:
        start = (args.start or args.runs / "start") / SCORES
        rows = [("start model (no training)", "-", json.loads(start.read_text()) if start.is_file() else None)]
        rows += [(name, f"{lr:g}", s) for (name, lr), s in sorted(scores.items())]
        print("| algorithm | learning rate | held-out reward | held-out prompt strict % |\n|---|---|---|---|")
        for name, lr, s in rows:
            cells = f"{s['mean_partial_reward']:.4f} | {100 * s['prompt_level_strict_acc']:.2f}" if s else "unfinished | unfinished"
            print(f"| {name} | {lr} | {cells} |")
        return
    if not scores or any(s is None for s in scores.values()):
        sys.exit(f"select_lr: the tuning runs of {args.algorithm} are missing or unfinished under {tune}")
    best = max(scores, key=lambda key: (scores[key]["mean_partial_reward"], -key[1]))
    print(f"{best[1]:g}")


if __name__ == "__main__":
    main()
