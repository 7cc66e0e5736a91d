"""Copy the reproduction's small result files from runs/repro/ into docs/repro/, to be committed.

Weights and checkpoints stay behind. For each run: its config, its metrics (as metrics.partial.jsonl
while it has not finished, so a snapshot cannot pass for a finished run), and whatever it has of the
held-out evaluation, IFEval (scores, settings, responses) and the analysis (JSON and histograms).
Each comparison report (report.md, report.html, PNGs) is copied whole. Rerun it as runs finish; it
replaces what it copied before.

    python scripts/repro/publish.py
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

EVAL_FILES = ("ifeval_scores.json", "ifeval_run.json", "ifeval_responses.jsonl")
# (folder under final/, files, folder under the published run); a result is published once its first file (the
# scores, written when the evaluation ends) exists, so an evaluation in progress leaves nothing half-done in docs/
RESULT_FILES = [
    ("heldout", EVAL_FILES, "heldout"),
    (".", EVAL_FILES, "ifeval"),
    ("analysis", ("analysis.json", "length_hist.png", "logprob_hist.png"), "analysis"),
]


def run_folders(root: Path) -> list[Path]:
    """Training runs (a config.yaml beside metrics.jsonl) and the start model and echo floor (only final/)."""
    return sorted({p.parent for p in root.glob("**/metrics.jsonl")} | {p.parent for p in root.glob("*/final")})


def publish_run(run: Path, target: Path) -> list[str]:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    copied = []
    final = run / "final"
    finished = (final / "config.json").is_file() or not (run / "config.yaml").is_file()
    sources = [(run / "config.yaml", target / "config.yaml"),
               (run / "metrics.jsonl", target / ("metrics.jsonl" if finished else "metrics.partial.jsonl"))]
    sources += [(final / folder / name, target / published / name) for folder, names, published in RESULT_FILES
                if (final / folder / names[0]).is_file() for name in names]
    for source, destination in sources:
        if source.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, destination)
            copied.append(str(destination.relative_to(target)))
    return copied


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/repro", type=Path)
    parser.add_argument("--out", default="docs/repro", type=Path)
    args = parser.parse_args()
    for run in run_folders(args.runs):
        relative = run.relative_to(args.runs)
        copied = publish_run(run, args.out / relative)
        print(f"{relative}: {', '.join(copied) or 'nothing yet'}")
    for report in sorted(args.runs.glob("*/report/report.md")):  # tune/ and grid/: the reports over all their runs
        relative = report.parent.relative_to(args.runs)
        shutil.copytree(report.parent, args.out / relative, dirs_exist_ok=True)
        print(f"{relative}: the whole report")


if __name__ == "__main__":
    main()
