"""Copy the reproduction's small result files from runs/repro/ into docs/repro/, to be committed.

Weights and checkpoints stay behind. For each run: its config, its metrics (as metrics.partial.jsonl until its
training and every evaluation its `uniapl compare` calls asked for have finished, so a snapshot cannot pass for a
finished run), and whatever it has of the held-out evaluation, IFEval (scores, settings, responses), IFBench's
responses (with their settings and summary) and the analysis (JSON, histograms and samples, and the AAPA
discriminators' scores of the samples). The responses are published gzipped (`zcat` reads them): as JSONL they
are most of a run's 2 MB, and the repository's working tree must stay under the 64 MiB that a call of the device
machine carries. `--restore` unzips them.
Each comparison report (report.md, report.html, PNGs) is copied whole. Rerun it as runs finish; it
replaces what it copied before.

`--restore` goes the other way, for a fresh clone or a lost runs/: it lays the finished runs' results
out under runs/repro/ as the runs left them, so that the table, the tuning choice and the reports can
be rebuilt, and `run.sh` trains only what has no results (compare trains a run only for a missing
result). Unfinished runs are not restored: their checkpoints are gone, so they start over. Run
folders already under runs/repro/ are left alone.

    python scripts/repro/publish.py             # runs/repro -> docs/repro
    python scripts/repro/publish.py --restore   # docs/repro -> runs/repro
"""

from __future__ import annotations

import argparse
import gzip
import shutil
from pathlib import Path

from uniapl.analysis.analyze import LENGTH_PNG, LOGPROB_PNG, RESPONSES_JSONL
from uniapl.analysis.discriminators import histogram_file
from uniapl.analysis.report import load_run
from uniapl.compare import missing_results, result_paths
from uniapl.ifeval import ifbench, runner

EVAL_FILES = (runner.SETTINGS_FILE, runner.RESPONSES_FILE)
# (compare's result step, the files beside its result that go with it, the folder under the published run); a
# result is published once the step's result (written when the step ends) exists, so an evaluation in progress
# leaves nothing half-done in docs/. A name may be a glob pattern.
RESULT_FILES = [
    ("heldout", EVAL_FILES, "heldout"),
    ("ifeval", EVAL_FILES, "ifeval"),
    ("ifbench", (ifbench.SETTINGS_FILE, ifbench.RESPONSES_FILE), "ifbench"),
    ("analyze", (LENGTH_PNG, LOGPROB_PNG, RESPONSES_JSONL), "analysis"),  # the samples: what the discriminators score
    ("discriminators", (histogram_file("*"),), "analysis"),  # one histogram per discriminator, named after it
]


GZIPPED = {runner.RESPONSES_FILE, ifbench.RESPONSES_FILE, RESPONSES_JSONL}


def published_name(name: str) -> str:
    return f"{name}.gz" if name in GZIPPED else name


def result_files(run: Path, published_run: Path | None = None) -> list[tuple[Path, str, Path]]:
    """(a result's file under the run, the folder it is published in, its result) for every file of every step;
    patterns match the files there are under the run, or under `published_run` when restoring it."""
    paths = result_paths(run)
    files = []
    for step, names, published in RESULT_FILES:
        folder = published_run / published if published_run else paths[step].parent
        for name in (paths[step].name, *names):
            matches = sorted(p.name for p in folder.glob(name)) if "*" in name else [name]
            files += [(paths[step].parent / match, published, paths[step]) for match in matches]
    return files


def run_folders(root: Path) -> list[Path]:
    """Training runs (a config.yaml beside metrics.jsonl) and the start model and echo floor (only final/)."""
    return sorted({p.parent for p in root.glob("**/metrics.jsonl")} | {p.parent for p in root.glob("*/final")})


def copy_existing(sources: list[tuple[Path, Path]], root: Path) -> list[str]:
    """Copy each (source, destination) whose source exists, gzipping into a .gz destination and unzipping out of a .gz
    source; the copies, relative to `root`."""
    copied = []
    for source, destination in sources:
        if source.is_file():
            destination.parent.mkdir(parents=True, exist_ok=True)
            if destination.suffix == ".gz" != source.suffix:
                # mtime 0: publishing the same responses again gives the same bytes, so git sees no change
                destination.write_bytes(gzip.compress(source.read_bytes(), compresslevel=9, mtime=0))
            elif source.suffix == ".gz" != destination.suffix:
                destination.write_bytes(gzip.decompress(source.read_bytes()))
            else:
                shutil.copyfile(source, destination)
            copied.append(str(destination.relative_to(root)))
    return copied


def publish_run(run: Path, target: Path) -> list[str]:
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    finished = not (run / "config.yaml").is_file() or (load_run(run, run.name).finished and not missing_results(run))
    sources = [(run / "config.yaml", target / "config.yaml"),
               (run / "metrics.jsonl", target / ("metrics.jsonl" if finished else "metrics.partial.jsonl"))]
    sources += [(path, target / published / published_name(path.name)) for path, published, result in result_files(run)
                if result.is_file()]
    return copy_existing(sources, target)


def published_runs(root: Path) -> list[Path]:
    """Published run folders: those with metrics (finished or not), and the start model and echo floor."""
    metrics = {p.parent for name in ("metrics.jsonl", "metrics.partial.jsonl") for p in root.glob(f"**/{name}")}
    return sorted(metrics | {p.parent for p in root.glob("*/ifeval")})


def restore_run(published: Path, run: Path) -> list[str]:
    sources = [(published / "config.yaml", run / "config.yaml"), (published / "metrics.jsonl", run / "metrics.jsonl")]
    sources += [(published / folder / published_name(path.name), path) for path, folder, _ in result_files(run, published)]
    return copy_existing(sources, run)


def restore(published_root: Path, runs_root: Path) -> None:
    for published in published_runs(published_root):
        relative = published.relative_to(published_root)
        run = runs_root / relative
        if (published / "metrics.partial.jsonl").is_file():
            print(f"{relative}: unfinished when published; not restored (it starts over)")
        elif run.exists():
            print(f"{relative}: already under {runs_root}; left alone")
        else:
            print(f"{relative}: {', '.join(restore_run(published, run))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/repro", type=Path)
    parser.add_argument("--out", default="docs/repro", type=Path)
    parser.add_argument("--restore", action="store_true", help="copy the published results (--out) back into --runs")
    args = parser.parse_args()
    if args.restore:
        restore(args.out, args.runs)
        return
    for run in run_folders(args.runs):
        relative = run.relative_to(args.runs)
        copied = publish_run(run, args.out / relative)
        print(f"{relative}: {', '.join(copied) or 'nothing yet'}")
    # tune/ and grid/ (bestofk/tune/ and bestofk/grid/ too): the reports over all their runs
    for report in sorted(args.runs.glob("**/report/report.md")):
        relative = report.parent.relative_to(args.runs)
        shutil.copytree(report.parent, args.out / relative, dirs_exist_ok=True)
        print(f"{relative}: the whole report")


if __name__ == "__main__":
    main()
