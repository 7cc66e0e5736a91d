"""The compute a reproduction took, from what its runs recorded: per run, the training time (the sum of every
step's `time/step`) and each evaluation's time, in minutes; per stage (tune/, grid/, and a group's own folder's, such as
bestofk/tune/), the lane-hours.

The evaluations' figures are their generation times (`generation_seconds`) and the analysis's sampling and
scoring (`seconds`); loading the model and starting an engine are not in them, so a run's total is a little
under the wall-clock time of its lane. "-": not run (or not asked for); "not recorded": made before the
analysis recorded its time.

    python scripts/repro/compute.py                     # runs/repro
    python scripts/repro/compute.py --runs runs/repro2  # the second grid (scripts/repro2/run.sh publish writes it to
                                                        # docs/repro2/compute.md)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from uniapl.compare import result_paths

NOT_RECORDED = "not recorded"
# (header, compare's result step, how its seconds are read from the step's result)
EVALUATIONS = [
    ("held-out min", "heldout", lambda result: result.get("generation_seconds")),
    ("IFEval min", "ifeval", lambda result: result.get("generation_seconds")),
    ("IFBench min", "ifbench", lambda result: result.get("generation_seconds")),
    ("analysis min", "analyze", lambda result: sum(result["seconds"].values()) if "seconds" in result else None),
]


def step_times(run: Path) -> list[float]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [row["time/step"] for row in rows if isinstance(row.get("time/step"), (int, float))]


def evaluation_seconds(run: Path) -> dict[str, float | str]:
    """Each evaluation's seconds; "-" where it has not run (or was not asked for), NOT_RECORDED where it kept none."""
    seconds: dict[str, float | str] = {}
    paths = result_paths(run)
    for header, step, read in EVALUATIONS:
        path = paths[step]
        recorded = read(json.loads(path.read_text())) if path.is_file() else "-"
        seconds[header] = NOT_RECORDED if recorded is None else recorded
    return seconds


def minutes(seconds: float | str) -> str:
    return seconds if isinstance(seconds, str) else f"{seconds / 60:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/repro", type=Path, help="the reproduction's folder: its tune/ and grid/")
    args = parser.parse_args()
    headers = ["run", "steps", "median step s", "training min", *(h for h, *_ in EVALUATIONS), "total h"]
    print(f"# The compute of {args.runs}\n\nEach run's training (the sum of its steps' `time/step`; an unfinished run's steps "
          f"so far) and each evaluation's generation, in minutes (`python scripts/repro/compute.py --runs {args.runs}`).\n")
    groups = sorted(args.runs.glob("*/tune")) + sorted(args.runs.glob("*/grid"))  # a group's own folder's, as bestofk/
    for stage in ("tune", "grid", *(p.relative_to(args.runs).as_posix() for p in groups)):
        runs = sorted(p.parent for p in (args.runs / stage).glob("**/metrics.jsonl"))
        if not runs:
            continue
        print(f"## {stage}\n\n| " + " | ".join(headers) + " |\n|" + "---|" * len(headers))
        stage_seconds = 0.0
        for run in runs:
            steps = step_times(run)
            evaluations = evaluation_seconds(run)
            total = sum(steps) + sum(s for s in evaluations.values() if not isinstance(s, str))
            stage_seconds += total
            cells = [str(run.relative_to(args.runs / stage)), str(len(steps)), f"{statistics.median(steps):.1f}" if steps else "-",
                     minutes(sum(steps)), *(minutes(s) for s in evaluations.values()), f"{total / 3600:.2f}"]
            print("| " + " | ".join(cells) + " |")
        print(f"\n{stage}: {len(runs)} runs, {stage_seconds / 3600:.1f} lane-hours recorded\n")


if __name__ == "__main__":
    main()
