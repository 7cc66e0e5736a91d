"""Step throughput of two revisions of this repository side by side, in one run: a change's cost, measured.

Each revision runs its own `benchmarks/step_throughput.py --only SYSTEM` in a subprocess, from a copy of its
tree (`git archive`) with that tree first on the import path, so each measures its own code. The runs
alternate, system by system and round by round (before, after, before, after, ...), so that a drift of the
machine's speed falls on both sides alike. The table gives each revision's median over its rounds and the
ratio after / before.

    python benchmarks/revisions.py --before HEAD~3                        # the working tree against HEAD~3
    python benchmarks/revisions.py --before v1 --after v2 --rounds 2 -- --steps 3 --threads 2

Arguments after `--` go to step_throughput.py as they are (steps, prompts, model, dtype, threads, ...).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "RESULT "  # step_throughput.py's line
COLUMNS = ("median_step_s", "median_generation_s", "median_first_pass_s", "median_backward_s", "median_optimizer_s", "peak_memory_mb")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = list(sys.argv[1:] if argv is None else argv)
    passed = argv[argv.index("--") + 1 :] if "--" in argv else []
    own = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, help="a git revision: the baseline")
    p.add_argument("--after", default=None, help="a git revision; default: the working tree as it is")
    p.add_argument("--systems", default="ours-grpo,ours-uniapl", help="comma-separated step_throughput.py systems")
    p.add_argument("--rounds", type=int, default=1, help="runs of each system by each revision, alternating")
    p.add_argument("--json-out", help="also write every run's RESULT to this JSON file")
    args = p.parse_args(own)
    if args.rounds < 1:
        p.error("--rounds must be >= 1")
    return args, passed


def export_tree(revision: str, into: Path) -> Path:
    """The files of `revision` under `into`, as `git archive` gives them (tracked files only)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision], capture_output=True, check=False)
    if archive.returncode:
        raise SystemExit(f"git archive {revision}: {archive.stderr.decode().strip()}")
    into.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(into, filter="data")
    return into


def run_system(tree: Path, system: str, passed: list[str]) -> dict:
    """One step_throughput.py run of `system` by the code of `tree`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    command = [sys.executable, str(tree / "benchmarks" / "step_throughput.py"), "--only", system, *passed]
    proc = subprocess.run(command, cwd=tree, env=env, stdout=subprocess.PIPE, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode or not lines:
        print(proc.stdout[-4000:], flush=True)
        raise SystemExit(f"{system} at {tree} failed with exit code {proc.returncode}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def main(argv: list[str] | None = None) -> dict:
    args, passed = parse_args(argv)
    after_name = args.after or "working tree"
    runs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="uniapl-revisions-") as scratch:
        trees = {args.before: export_tree(args.before, Path(scratch) / "before"),
                 after_name: export_tree(args.after, Path(scratch) / "after") if args.after else ROOT}
        for system in args.systems.split(","):
            for round_number in range(args.rounds):
                for name, tree in trees.items():
                    print(f"== {system}, {name}, round {round_number + 1} of {args.rounds}", flush=True)
                    result = run_system(tree, system, passed)
                    print(json.dumps(result), flush=True)
                    runs.setdefault((system, name), []).append(result)
    print(f"\nstep_throughput.py {' '.join(passed) or '(its defaults)'}; median over {args.rounds} round(s) of each revision")
    print("| system | revision | " + " | ".join(c.removeprefix("median_") for c in COLUMNS) + " | s/step of each round |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 1))
    for system in args.systems.split(","):
        medians = {}
        for name in (args.before, after_name):
            results = runs[(system, name)]
            medians[name] = {c: statistics.median(r[c] for r in results) for c in COLUMNS}
            print(f"| {system} | {name} | " + " | ".join(f"{medians[name][c]:.2f}" for c in COLUMNS) + " | "
                  + ", ".join(f"{r['median_step_s']:.2f}" for r in results) + " |")
        ratio = medians[after_name]["median_step_s"] / medians[args.before]["median_step_s"]
        print(f"| {system} | after / before | {ratio:.3f} |" + " |" * len(COLUMNS))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({f"{s} @ {n}": r for (s, n), r in runs.items()}, indent=1))
    return runs


if __name__ == "__main__":
    main()
