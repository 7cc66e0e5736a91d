"""The reproduction's scripts (scripts/repro/): the tuned learning rate, the results table, publishing, the compute.

They decide and print the figures of docs/results.md, so they are run here as a user runs them, on
run folders laid out like `scripts/repro/run.sh` leaves them, with made-up scores.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "repro"


def script(name: str, *args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPTS / name), *args], cwd=cwd, capture_output=True, text=True, check=check)


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def heldout_scores(reward: float) -> dict:
    return {"mean_partial_reward": reward, "prompt_level_strict_acc": reward / 2}


def test_select_lr_picks_the_best_heldout_reward_and_breaks_ties_to_the_smaller_rate(tmp_path):
    tune = tmp_path / "runs/repro/tune"
    for lr, grpo, uniapl in (("3e-6", 0.40, 0.45), ("1e-5", 0.50, 0.45)):
        write_json(tune / f"lr{lr}/grpo-seed0/final/heldout/ifeval_scores.json", heldout_scores(grpo))
        write_json(tune / f"lr{lr}/uniapl-seed0/final/heldout/ifeval_scores.json", heldout_scores(uniapl))
    (tune / "lr1e-5/sft_then_grpo-seed0").mkdir(parents=True)  # started, not finished
    assert script("select_lr.py", "--algorithm", "grpo", cwd=tmp_path).stdout.strip() == "1e-05"
    assert script("select_lr.py", "--algorithm", "uniapl", cwd=tmp_path).stdout.strip() == "3e-06"
    unfinished = script("select_lr.py", "--algorithm", "sft_then_grpo", cwd=tmp_path, check=False)
    assert unfinished.returncode != 0 and "missing or unfinished" in unfinished.stderr
    table = script("select_lr.py", "--table", cwd=tmp_path).stdout
    assert "| grpo | 1e-05 | 0.5000 | 25.00 |" in table and "| sft_then_grpo | 1e-05 | unfinished | unfinished |" in table
    assert "| start model (no training) | - | unfinished | unfinished |" in table
    write_json(tmp_path / "runs/repro/start/final/heldout/ifeval_scores.json", heldout_scores(0.3))
    assert "| start model (no training) | - | 0.3000 | 15.00 |" in script("select_lr.py", "--table", cwd=tmp_path).stdout


def test_results_table_gives_mean_standard_error_and_the_difference_of_uniapl(tmp_path):
    grid = tmp_path / "runs/repro/grid"
    strict = {"grpo": [0.20, 0.22, 0.27], "uniapl": [0.25, 0.30, 0.26]}
    for algorithm, values in strict.items():
        for seed, value in zip((1, 2, 3), values):
            write_json(grid / f"{algorithm}-seed{seed}/final/ifeval_scores.json",
                       {"prompt_level_strict_acc": value, "degeneration": {"echo_rate": 0.01}})
    write_json(tmp_path / "runs/repro/start/final/ifeval_scores.json", {"prompt_level_strict_acc": 0.18})
    out = script("results_table.py", cwd=tmp_path).stdout

    def row(name: str) -> list[str]:
        line = next(line for line in out.splitlines() if line.startswith(f"| {name} |"))
        return [c.strip() for c in line.strip("|").split("|")]

    header = row("model")
    mean, stderr = statistics.mean(strict["grpo"]), statistics.stdev(strict["grpo"]) / math.sqrt(3)
    assert row("grpo")[header.index("IFEval prompt strict")] == f"{100 * mean:.2f} ± {100 * stderr:.2f} (n=3)"
    assert row("start model (SmolLM2-135M-Instruct)")[header.index("IFEval prompt strict")] == "18.00 (n=1)"
    assert row("grpo")[header.index("held-out reward")] == "missing"
    assert row("grpo")[header.index("echo %")] == "1.00 ± 0.00 (n=3)"
    assert "sft_then_grpo" not in out.split("\n\n")[0]  # no runs, no row
    difference = 100 * (statistics.mean(strict["uniapl"]) - mean)
    se = 100 * math.sqrt(statistics.variance(strict["uniapl"]) / 3 + statistics.variance(strict["grpo"]) / 3)
    paired = [100 * (u - g) for u, g in zip(strict["uniapl"], strict["grpo"])]
    paired_se = statistics.stdev(paired) / math.sqrt(3)
    assert (f"- uniapl − grpo, IFEval prompt strict: {difference:+.2f} ± {se:.2f} (standard error of the difference; "
            f"n=3 and 3); paired by seed: {statistics.mean(paired):+.2f} ± {paired_se:.2f} (n=3: +5.00, +8.00, -1.00)") in out


def test_results_table_has_a_column_for_the_discriminators_scores_where_there_are_any(tmp_path):
    grid = tmp_path / "runs/repro/grid"
    write_json(grid / "grpo-seed1/final/ifeval_scores.json", {"prompt_level_strict_acc": 0.2})
    assert "disc-minilm" not in script("results_table.py", cwd=tmp_path).stdout
    for seed, logit in ((1, -1.5), (2, -0.5)):
        write_json(grid / f"grpo-seed{seed}/final/analysis/discriminators.json",
                   {"disc-minilm": {"scores": {"policy": {"mean": logit}, "expert": {"mean": 2.25}}}})
    out = script("results_table.py", cwd=tmp_path).stdout
    header, _, start, _, grpo = out.splitlines()[:5]
    cells = [c.strip() for c in grpo.strip("|").split("|")]
    column = [c.strip() for c in header.strip("|").split("|")].index("disc-minilm logit")
    assert cells[column] == "-1.00 ± 0.50 (n=2 of 3)" and start.endswith("| missing |")
    assert "- disc-minilm's mean logit on the expert's held-out demonstrations: 2.250" in out


def test_results_table_gives_no_standard_error_for_one_seed(tmp_path):
    grid = tmp_path / "runs/repro/grid"
    for algorithm, reward in (("grpo", 0.40), ("uniapl", 0.45)):
        write_json(grid / f"{algorithm}-seed1/final/heldout/ifeval_scores.json", heldout_scores(reward))
    out = script("results_table.py", cwd=tmp_path).stdout
    assert "- uniapl − grpo, held-out reward: +0.0500 (no standard error: n=1 and 1)" in out
    assert "sft_then_grpo −" not in out  # no runs, no difference
    write_json(grid / "sft_then_grpo-seed1/final/heldout/ifeval_scores.json", heldout_scores(0.43))
    out = script("results_table.py", cwd=tmp_path).stdout
    assert "- sft_then_grpo − grpo, held-out reward: +0.0300 (no standard error: n=1 and 1)" in out


def test_results_table_compares_the_second_group_with_grpo_sft_then_grpo_and_uniapl(tmp_path):
    grid = tmp_path / "runs/repro/grid"
    rewards = {"grpo": 0.40, "sft_then_grpo": 0.50, "uniapl": 0.42, "chord": 0.44, "grpo_aapa": 0.38, "sft": 0.41}
    for algorithm, reward in rewards.items():
        write_json(grid / f"{algorithm}-seed1/final/heldout/ifeval_scores.json", heldout_scores(reward))
    differences = [line for line in script("results_table.py", cwd=tmp_path).stdout.splitlines()
                   if line.startswith(("- chord", "- grpo_aapa", "- sft −"))]
    assert differences == [
        "- chord − grpo, held-out reward: +0.0400 (no standard error: n=1 and 1)",
        "- chord − sft_then_grpo, held-out reward: -0.0600 (no standard error: n=1 and 1)",
        "- chord − uniapl, held-out reward: +0.0200 (no standard error: n=1 and 1)",
        "- grpo_aapa − grpo, held-out reward: -0.0200 (no standard error: n=1 and 1)",
        "- sft − grpo, held-out reward: +0.0100 (no standard error: n=1 and 1)",
        "- sft − sft_then_grpo, held-out reward: -0.0900 (no standard error: n=1 and 1)",
    ]


def test_the_second_grid_reads_its_own_folder_and_compares_staged_aapa_too(tmp_path):
    runs = tmp_path / "runs/repro2"
    for lr, reward in (("1e-5", 0.40), ("3e-5", 0.45)):
        write_json(runs / f"tune/lr{lr}/staged_aapa-seed0/final/heldout/ifeval_scores.json", heldout_scores(reward))
    assert script("select_lr.py", "--runs", "runs/repro2", "--algorithm", "staged_aapa", cwd=tmp_path).stdout.strip() == "3e-05"
    missing = script("select_lr.py", "--algorithm", "staged_aapa", cwd=tmp_path, check=False)  # the first grid's folder
    assert missing.returncode != 0 and "runs/repro/tune" in missing.stderr
    for algorithm, reward in (("sft_then_grpo", 0.40), ("staged_aapa", 0.43)):
        write_json(runs / f"grid/{algorithm}-seed1/final/heldout/ifeval_scores.json", heldout_scores(reward))
    out = script("results_table.py", "--runs", "runs/repro2", cwd=tmp_path).stdout
    assert "- staged_aapa − sft_then_grpo, held-out reward: +0.0300 (no standard error: n=1 and 1)" in out
    assert "uniapl −" not in out


def test_the_third_group_has_its_own_folder_its_own_tuning_and_rows_beside_the_grid(tmp_path):
    """staged_aapa on the best-of-K data: runs/repro2/bestofk, compared with GRPO, SFT-then-GRPO and itself on the grid's data."""
    runs = tmp_path / "runs/repro2"
    write_json(runs / "start/final/heldout/ifeval_scores.json", heldout_scores(0.3))
    for lr, reward in (("1e-5", 0.42), ("3e-5", 0.41)):
        write_json(runs / f"bestofk/tune/lr{lr}/staged_aapa-seed0/final/heldout/ifeval_scores.json", heldout_scores(reward))
    write_json(runs / "tune/lr3e-5/staged_aapa-seed0/final/heldout/ifeval_scores.json", heldout_scores(0.45))
    chosen = script("select_lr.py", "--runs", "runs/repro2/bestofk", "--algorithm", "staged_aapa", cwd=tmp_path)
    assert chosen.stdout.strip() == "1e-05"  # its own tuning, not the grid's
    table = script("select_lr.py", "--runs", "runs/repro2/bestofk", "--start", "runs/repro2/start", "--table", cwd=tmp_path).stdout
    assert "| start model (no training) | - | 0.3000 | 15.00 |" in table and "| staged_aapa | 1e-05 | 0.4200 | 21.00 |" in table
    for folder, algorithm, reward in (("grid", "grpo", 0.40), ("grid", "staged_aapa", 0.43), ("bestofk/grid", "staged_aapa", 0.38)):
        write_json(runs / f"{folder}/{algorithm}-seed1/final/heldout/ifeval_scores.json", heldout_scores(reward))
    out = script("results_table.py", "--runs", "runs/repro2", "--track", "bestofk=best-of-K data", cwd=tmp_path).stdout
    assert "| staged_aapa (best-of-K data) | " in out and "| staged_aapa | " in out
    assert "- staged_aapa (best-of-K data) − grpo, held-out reward: -0.0200 (no standard error: n=1 and 1)" in out
    assert "- staged_aapa (best-of-K data) − staged_aapa, held-out reward: -0.0500 (no standard error: n=1 and 1)" in out
    assert "best-of-K data) − sft_then_grpo" not in out  # no runs, no difference
    assert "best-of-K" not in script("results_table.py", "--runs", "runs/repro2", cwd=tmp_path).stdout
    wrong = script("results_table.py", "--runs", "runs/repro2", "--track", "bestofk", cwd=tmp_path, check=False)
    assert wrong.returncode != 0 and "--track 'bestofk' is not FOLDER=LABEL" in wrong.stderr


def published_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def start_training_runs(*runs: Path) -> None:
    """What a training run writes first: its config and a metrics line."""
    for run in runs:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.yaml").write_text("algorithm: {name: grpo}\n")
        (run / "metrics.jsonl").write_text('{"step": 1}\n')


def test_publish_copies_results_not_weights_and_marks_unfinished_metrics(tmp_path):
    runs = tmp_path / "runs/repro"
    finished = runs / "grid/grpo-seed1"
    write_json(finished / "final/config.json", {})
    (finished / "final/model.safetensors").write_bytes(b"weights")
    (finished / "checkpoints/step-000040").mkdir(parents=True)
    (finished / "checkpoints/step-000040/config.yaml").write_text("a: 1\n")
    write_json(finished / "final/ifeval_scores.json", {"prompt_level_strict_acc": 0.2})
    write_json(finished / "final/heldout/ifeval_scores.json", heldout_scores(0.4))
    write_json(finished / "final/analysis/analysis.json", {"n_prompts": 3})
    write_json(finished / "final/analysis/discriminators.json", {"disc-minilm": {}})
    (finished / "final/analysis/discriminator_disc-minilm_hist.png").write_bytes(b"png")
    (finished / "final/analysis/responses.jsonl").write_text('{"key": "k1"}\n')
    write_json(finished / "final/ifbench/ifbench_summary.json", {"n_prompts": 300})
    write_json(finished / "final/ifbench/ifbench_run.json", {"model": "m"})
    (finished / "final/ifbench/ifbench_responses.jsonl").write_text('{"key": "1000"}\n')
    running = runs / "grid/uniapl-seed1"
    start_training_runs(finished, running)
    write_json(runs / "start/final/ifeval_scores.json", {"prompt_level_strict_acc": 0.18})
    write_json(runs / "start/final/heldout/ifeval_run.json", {"model": "m"})  # an evaluation in progress: not yet
    for report in ("grid/report", "bestofk/grid/report"):  # a group's own folder has its report too
        (runs / report).mkdir(parents=True)
        (runs / report / "report.md").write_text("# report\n")

    script("publish.py", cwd=tmp_path)
    assert set(published_files(tmp_path / "docs/repro")) == {
        "grid/grpo-seed1/config.yaml", "grid/grpo-seed1/metrics.jsonl", "grid/grpo-seed1/ifeval/ifeval_scores.json",
        "grid/grpo-seed1/heldout/ifeval_scores.json", "grid/grpo-seed1/analysis/analysis.json",
        "grid/grpo-seed1/analysis/discriminators.json", "grid/grpo-seed1/analysis/discriminator_disc-minilm_hist.png",
        "grid/grpo-seed1/analysis/responses.jsonl.gz",
        "grid/grpo-seed1/ifbench/ifbench_summary.json", "grid/grpo-seed1/ifbench/ifbench_run.json",
        "grid/grpo-seed1/ifbench/ifbench_responses.jsonl.gz",
        "grid/uniapl-seed1/config.yaml", "grid/uniapl-seed1/metrics.partial.jsonl",
        "start/ifeval/ifeval_scores.json", "grid/report/report.md", "bestofk/grid/report/report.md",
    }

    # its training ends, but its compare call asked for the held-out split too: still a snapshot
    write_json(running / "final/config.json", {})
    write_json(running / "compare_steps.json", {"steps": ["heldout"]})
    script("publish.py", cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "docs/repro/grid/uniapl-seed1").iterdir()) == ["config.yaml", "metrics.partial.jsonl"]

    write_json(running / "final/heldout/ifeval_scores.json", heldout_scores(0.4))  # it finishes: the snapshot is replaced
    script("publish.py", cwd=tmp_path)
    assert sorted(p.name for p in (tmp_path / "docs/repro/grid/uniapl-seed1").iterdir()) == ["config.yaml", "heldout", "metrics.jsonl"]


def test_restore_lays_finished_results_out_as_the_runs_left_them(tmp_path):
    """A fresh clone restores runs/repro from docs/repro; publishing it again gives the same files back."""
    runs = tmp_path / "runs/repro"
    finished = runs / "tune/lr1e-5/grpo-seed0"
    write_json(finished / "final/config.json", {})
    write_json(finished / "final/heldout/ifeval_scores.json", heldout_scores(0.4))
    (finished / "final/heldout/ifeval_responses.jsonl").write_text('{"key": "k1"}\n')
    start_training_runs(finished, runs / "grid/uniapl-seed3")
    write_json(runs / "start/final/ifeval_scores.json", {"prompt_level_strict_acc": 0.18})
    write_json(runs / "start/final/analysis/analysis.json", {"n_prompts": 3})
    write_json(runs / "start/final/analysis/discriminators.json", {"disc-minilm": {}, "disc-ngram": {}})
    for name in ("disc-minilm", "disc-ngram"):
        (runs / f"start/final/analysis/discriminator_{name}_hist.png").write_bytes(name.encode())
    write_json(runs / "start/final/ifbench/ifbench_summary.json", {"n_prompts": 300})
    script("publish.py", cwd=tmp_path)
    docs = tmp_path / "docs/repro"
    before = published_files(docs)
    published_responses = docs / "tune/lr1e-5/grpo-seed0/heldout/ifeval_responses.jsonl.gz"
    assert gzip.decompress(published_responses.read_bytes()) == b'{"key": "k1"}\n'

    fresh = tmp_path / "fresh"
    (fresh / "docs").mkdir(parents=True)
    docs.rename(fresh / "docs/repro")
    out = script("publish.py", "--restore", cwd=fresh).stdout
    assert "grid/uniapl-seed3: unfinished when published; not restored" in out
    restored = fresh / "runs/repro"
    assert (restored / "tune/lr1e-5/grpo-seed0/final/heldout/ifeval_scores.json").is_file()
    assert (restored / "tune/lr1e-5/grpo-seed0/final/heldout/ifeval_responses.jsonl").read_text() == '{"key": "k1"}\n'
    assert (restored / "start/final/analysis/analysis.json").is_file()
    assert (restored / "start/final/analysis/discriminator_disc-ngram_hist.png").read_bytes() == b"disc-ngram"
    assert (restored / "start/final/ifbench/ifbench_summary.json").is_file()
    assert not (restored / "grid/uniapl-seed3").exists()
    assert script("select_lr.py", "--algorithm", "grpo", cwd=fresh).stdout.strip() == "1e-05"

    # restoring twice leaves what is there alone; publishing the restored runs gives the same files back
    (restored / "start/final/ifeval_scores.json").write_text('{"prompt_level_strict_acc": 0.5}')
    assert "start: already under runs/repro; left alone" in script("publish.py", "--restore", cwd=fresh).stdout
    (restored / "start/final/ifeval_scores.json").write_text(json.dumps({"prompt_level_strict_acc": 0.18}))
    shutil.rmtree(fresh / "docs/repro/grid")  # the unfinished snapshot: not restored, so not published again
    script("publish.py", cwd=fresh)
    assert published_files(fresh / "docs/repro") == {k: v for k, v in before.items() if not k.startswith("grid/")}


def test_compute_adds_up_training_steps_and_evaluations_per_run_and_stage(tmp_path):
    grid = tmp_path / "runs/repro/grid/grpo-seed1"
    grid.mkdir(parents=True)
    (grid / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "time/step": t}) + "\n" for i, t in enumerate([60, 90, 150], 1)))
    write_json(grid / "final/heldout/ifeval_scores.json", {**heldout_scores(0.4), "generation_seconds": 360})
    write_json(grid / "final/ifeval_scores.json", {"prompt_level_strict_acc": 0.2, "generation_seconds": 900})
    write_json(grid / "final/analysis/analysis.json", {"n_prompts": 3, "seconds": {"sampling": 240, "scoring": 960}})
    tune = tmp_path / "runs/repro/tune/lr1e-5/grpo-seed0"  # held-out only; an analysis from before it kept its time
    tune.mkdir(parents=True)
    (tune / "metrics.jsonl").write_text(json.dumps({"step": 1, "time/step": 120}) + "\n")
    write_json(tune / "final/analysis/analysis.json", {"n_prompts": 3})
    out = script("compute.py", cwd=tmp_path).stdout
    assert "| grpo-seed1 | 3 | 90.0 | 5.0 | 6.0 | 15.0 | - | 20.0 | 0.77 |" in out  # (300 + 360 + 900 + 1200) s
    assert "grid: 1 runs, 0.8 lane-hours recorded" in out
    assert "| lr1e-5/grpo-seed0 | 1 | 120.0 | 2.0 | - | - | - | not recorded | 0.03 |" in out
    third = tmp_path / "runs/repro/bestofk/grid/staged_aapa-seed1"  # a group in a folder of its own: a stage of its own
    third.mkdir(parents=True)
    (third / "metrics.jsonl").write_text(json.dumps({"step": 1, "time/step": 180}) + "\n")
    out = script("compute.py", cwd=tmp_path).stdout
    assert "## bestofk/grid" in out and "| staged_aapa-seed1 | 1 | 180.0 | 3.0 |" in out
    assert "bestofk/grid: 1 runs, 0.1 lane-hours recorded" in out and "grid: 1 runs, 0.8 lane-hours recorded" in out


@pytest.mark.parametrize("name", ["select_lr.py", "results_table.py", "publish.py", "compute.py"])
def test_each_script_explains_itself(name, tmp_path):
    assert "usage:" in script(name, "--help", cwd=tmp_path).stdout


FAKE_UNIAPL = """#!/usr/bin/env bash
# records which lane (its cores and torch threads) ran what; fails the runs named in $FAIL; a discriminator leaves
# the files that `uniapl discriminator train` leaves
sleep 0.$((RANDOM % 3 + 1))
echo "$VLLM_CPU_OMP_THREADS_BIND/$OMP_NUM_THREADS $*" >> "$CALLS"
case " $* " in *" --algorithms $FAIL "*) exit 1 ;; esac
if [ "$1" = discriminator ]; then
  call="$*"
  out=${call##*--out }
  mkdir -p "$out" && touch "$out"/{discriminator.json,scores_hist.png,negatives.jsonl} && echo '{"auc": 0.9}' > "$out"/report.json
fi
"""


def run_stage(tmp_path: Path, stage: str, *args: str, check: bool = True, **env: str) -> tuple[list[list[str]], str]:
    """`run.sh STAGE ARGS...` from a copy of the repository's layout, with a fake uniapl that records its calls."""
    runner = tmp_path / "scripts/repro2/run.sh"
    runner.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SCRIPTS.parent / "repro2" / "run.sh", runner)
    fake = tmp_path / "fake-uniapl"
    fake.write_text(FAKE_UNIAPL)
    fake.chmod(0o755)
    calls = tmp_path / "calls.log"
    calls.unlink(missing_ok=True)
    select_lr = tmp_path / "scripts/repro/select_lr.py"  # the tuned rate: 3e-5 for every algorithm
    select_lr.parent.mkdir(parents=True, exist_ok=True)
    select_lr.write_text("print('3e-5')\n")
    (select_lr.parent / "results_table.py").write_text("print('the results table')\n")
    environment = {"PATH": "/usr/bin:/bin", "UNIAPL": str(fake), "PYTHON": sys.executable, "CALLS": str(calls), "FAIL": "none", **env}
    done = subprocess.run(["bash", str(runner), stage, *args], cwd=tmp_path, env=environment, capture_output=True, text=True,
                          timeout=120)
    made = [line.split() for line in calls.read_text().splitlines()] if calls.exists() else []
    if not check:
        return made, done.stderr
    assert done.returncode == 0, done.stderr
    logs = "".join(p.read_text() for p in sorted((tmp_path / "runs/repro2").glob("lane-*.log")))
    return made, logs


def option(call: list[str], name: str) -> str:
    return call[call.index(name) + 1]


def runs_of(calls: list[list[str]]) -> list[list[str]]:
    """The calls after the discriminator's fit, which a fresh layout makes first."""
    return [c for c in calls if c[1] != "discriminator"]


def test_the_second_grid_lanes_take_each_tuning_run_once_from_one_queue(tmp_path):
    calls, _ = run_stage(tmp_path, "tune")
    runs = [(option(c, "--algorithms"), option(c, "--set")) for c in calls if c[1] == "compare"]
    expected = {(a, f"training.learning_rate={lr}") for a in ("grpo", "sft_then_grpo", "uniapl", "staged_aapa") for lr in ("1e-5", "3e-5")}
    assert sorted(runs) == sorted(expected)  # each once, none twice
    assert {c[0] for c in calls if c[1] == "compare"} == {"0/1", "1/1"}  # both lanes took runs, one core and thread each
    assert all(option(c, "--seeds") == "0" for c in calls if c[1] == "compare")


def test_priority_2_adds_grpo_aapa_sft_and_chord_to_the_tuning_and_the_grid(tmp_path):
    first = ("grpo", "sft_then_grpo", "uniapl", "staged_aapa")
    calls, _ = run_stage(tmp_path, "tune", PRIORITY="2")
    tuned = sorted({option(c, "--algorithms") for c in calls if c[1] == "compare"})
    assert tuned == sorted((*first, "grpo_aapa", "sft", "chord"))
    calls, _ = run_stage(tmp_path, "grid", PRIORITY="2")
    runs = [(option(c, "--algorithms"), option(c, "--seeds")) for c in runs_of(calls)]
    assert sorted(runs) == sorted((a, s) for a in (*first, "grpo_aapa", "sft", "chord") for s in "123")
    calls, _ = run_stage(tmp_path, "grid", "chord:1")  # a named run may come from either priority
    assert [option(c, "--algorithms") for c in runs_of(calls)] == ["chord"]
    _, error = run_stage(tmp_path, "grid", PRIORITY="4", check=False)
    assert "PRIORITY is '4'; it may be 1" in error


def test_priority_3_adds_staged_aapa_on_the_best_of_k_data_in_its_own_folder_with_its_own_fit(tmp_path):
    calls, _ = run_stage(tmp_path, "tune", PRIORITY="3")
    fits = [(option(c, "--variant"), option(c, "--out")) for c in calls if c[1] == "discriminator"]
    assert fits == [("minilm", "runs/repro2/disc-minilm"), ("minilm", "runs/repro2/disc-minilm-bestofk")]  # what the runs train against
    bestofk_fit = next(c for c in calls if c[1] == "discriminator" and option(c, "--out").endswith("bestofk"))
    assert "data.prompts=data/if_train.jsonl" in bestofk_fit
    assert (tmp_path / "docs/repro2/discriminators/minilm-bestofk/report.json").is_file()
    third = [c for c in calls if c[1] == "compare" and option(c, "--out").startswith("runs/repro2/bestofk/")]
    assert sorted(option(c, "--out") for c in third) == ["runs/repro2/bestofk/tune/lr1e-5", "runs/repro2/bestofk/tune/lr3e-5"]
    assert all(option(c, "--algorithms") == "staged_aapa" and "data.prompts=data/if_train.jsonl" in c
               and "algorithm.anchor.path=runs/repro2/disc-minilm-bestofk" in c for c in third)
    grid_data = [c for c in calls if c[1] == "compare" and c not in third]
    assert len(grid_data) == 14 and not any("data.prompts=data/if_train.jsonl" in c for c in grid_data)
    calls, _ = run_stage(tmp_path, "grid", "staged_aapa@bestofk:2")  # named at any priority; the fits are there now
    assert [(option(c, "--algorithms"), option(c, "--seeds"), option(c, "--out")) for c in calls] == [
        ("staged_aapa", "2", "runs/repro2/bestofk/grid")]
    write_json(tmp_path / "runs/repro2/disc-minilm-bestofk/report.json", {"auc": 0.8})  # a refit that came out otherwise
    ran, error = run_stage(tmp_path, "grid", "staged_aapa@bestofk:1", "staged_aapa:1", check=False, PRIORITY="3")
    assert [option(c, "--out") for c in ran] == ["runs/repro2/grid"] and "staged_aapa@bestofk is left out" in error


def test_the_tuning_runs_only_the_named_runs_and_refuses_a_name_it_does_not_know(tmp_path):
    calls, _ = run_stage(tmp_path, "tune", "chord:3e-5", "sft:1e-5")
    assert [(option(c, "--algorithms"), option(c, "--set")) for c in runs_of(calls) if c[1] == "compare"] in (
        [("chord", "training.learning_rate=3e-5"), ("sft", "training.learning_rate=1e-5")],
        [("sft", "training.learning_rate=1e-5"), ("chord", "training.learning_rate=3e-5")])  # two lanes: either ends first
    _, error = run_stage(tmp_path, "tune", "chord:1e-4", check=False)
    assert "tune job 'chord:1e-4' is not ALGORITHM:LEARNING RATE" in error and "learning rates 1e-5, 3e-5" in error


def test_the_second_grid_goes_on_past_a_failed_run_and_reports_it(tmp_path):
    calls, logs = run_stage(tmp_path, "grid", FAIL="uniapl")
    calls = [c for c in calls if c[1] == "compare"]  # after the discriminators, which staged_aapa needs
    runs = sorted((option(c, "--algorithms"), option(c, "--seeds")) for c in calls)
    assert runs == sorted((a, s) for a in ("grpo", "sft_then_grpo", "uniapl", "staged_aapa") for s in "123")
    assert all(option(c, "--set") == "training.learning_rate=3e-5" for c in calls)
    assert logs.count("run.sh: uniapl at seed") == 3 and "rerun to resume it" in logs
    # a rerun clears the claims and takes every run again (compare itself skips what has finished)
    rerun, _ = run_stage(tmp_path, "grid")
    assert len(rerun) == 12 and all(c[1] == "compare" for c in rerun)


def test_the_second_grid_runs_only_the_named_runs_and_refuses_a_name_it_does_not_know(tmp_path):
    calls, _ = run_stage(tmp_path, "grid", "grpo:2", "uniapl:1")
    assert sorted((option(c, "--algorithms"), option(c, "--seeds")) for c in runs_of(calls)) == [("grpo", "2"), ("uniapl", "1")]
    _, error = run_stage(tmp_path, "grid", "grpo:4", check=False)
    assert "grid job 'grpo:4' is not ALGORITHM:SEED" in error and "seeds 1, 2, 3" in error


def test_a_trained_run_drops_its_checkpoints_and_an_unfinished_one_keeps_them(tmp_path):
    runs = tmp_path / "runs/repro2"
    trained, stopped, tuned = runs / "grid/grpo-seed1", runs / "grid/uniapl-seed1", runs / "tune/lr3e-5/grpo-seed0"
    for run in (trained, stopped, tuned):
        (run / "checkpoints/step-000040").mkdir(parents=True)
    for run in (trained, tuned):
        write_json(run / "final/config.json", {})
    run_stage(tmp_path, "grid", "grpo:1", "uniapl:1", FAIL="uniapl")  # uniapl stops before its final model
    assert not (trained / "checkpoints").exists() and (trained / "final/config.json").is_file()
    assert (stopped / "checkpoints/step-000040").is_dir()
    run_stage(tmp_path, "tune", "grpo:3e-5")
    assert not (tuned / "checkpoints").exists()


def test_the_report_leaves_out_an_algorithm_until_all_its_seeds_are_evaluated(tmp_path):
    grid = tmp_path / "runs/repro2/grid"
    evaluated = [f"{a}-seed{s}" for a in ("grpo", "sft_then_grpo", "uniapl", "staged_aapa") for s in (1, 2, 3)] + ["chord-seed1"]
    for run in evaluated:
        write_json(grid / run / "final/analysis/analysis.json", {})
    write_json(grid / "chord-seed2/final/config.json", {})  # trained, and being evaluated in its lane
    calls, _ = run_stage(tmp_path, "report", PRIORITY="2")
    compares = [c for c in calls if c[1] == "compare"]
    assert [option(c, "--algorithms") for c in compares] == ["grpo,sft_then_grpo,uniapl,staged_aapa"]  # never chord's seed 2
    _, error = run_stage(tmp_path, "report", PRIORITY="2", check=False)
    assert "chord is left out of the report until its seeds 2 3 are trained and evaluated" in error
    assert "sft is left out of the report until its seeds 1 2 3" in error


def test_one_lane_runs_the_queue_on_every_core(tmp_path):
    calls, _ = run_stage(tmp_path, "grid", "grpo:1", "grpo:2", LANES="1")
    cores = len(os.sched_getaffinity(0))
    assert [(c[0], option(c, "--seeds")) for c in runs_of(calls)] == [(f"0-{cores - 1}/{cores}", "1"), (f"0-{cores - 1}/{cores}", "2")]
    _, error = run_stage(tmp_path, "grid", LANES="3", check=False)
    assert "LANES is '3'; it may be 1" in error


def test_one_named_lane_runs_its_queue_on_its_core_and_keeps_the_other_lanes_claims(tmp_path):
    claims = tmp_path / "runs/repro2/claims/grid"
    for job in ("grpo_1", "uniapl_1"):  # grpo 1: this queue's own claim, left by a stopped lane; uniapl 1: the other lane's
        (claims / job).mkdir(parents=True)
    calls, _ = run_stage(tmp_path, "grid", "grpo:1", "grpo:2", LANE="1")
    assert [(c[0], option(c, "--seeds")) for c in runs_of(calls)] == [("1/1", "1"), ("1/1", "2")]
    assert (claims / "uniapl_1").is_dir()
    for bad, lanes in (("2", "2"), ("1", "1")):
        _, error = run_stage(tmp_path, "grid", LANE=bad, LANES=lanes, check=False)
        assert f"LANE is '{bad}'; it may be 0 or 1" in error


def test_two_lanes_started_together_on_a_fresh_clone_refit_the_discriminator_once(tmp_path):
    """LANE=0 and LANE=1 queues started at the same moment both find the fit missing: one refits it, the other waits."""
    write_json(tmp_path / "docs/repro2/discriminators/minilm/report.json", {"auc": 0.9})  # what the fake fit reports
    run_stage(tmp_path, "grid", "grpo:1", LANE="0")  # lays the scripts and the fake out
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "calls.log").unlink()
    environment = {"PATH": "/usr/bin:/bin", "UNIAPL": str(tmp_path / "fake-uniapl"), "PYTHON": sys.executable,
                   "CALLS": str(tmp_path / "calls.log"), "FAIL": "none"}
    lanes = [subprocess.Popen(["bash", "scripts/repro2/run.sh", "grid", f"grpo:{lane + 1}"], cwd=tmp_path,
                              env={**environment, "LANE": str(lane)}, stderr=subprocess.PIPE, text=True) for lane in (0, 1)]
    for lane in lanes:
        assert lane.wait(timeout=120) == 0, lane.stderr.read()
    calls = [line.split() for line in (tmp_path / "calls.log").read_text().splitlines()]
    assert [c[1] for c in calls].count("discriminator") == 1
    assert sorted(option(c, "--seeds") for c in calls if c[1] == "compare") == ["1", "2"]


def test_a_fresh_clone_refits_only_the_discriminator_the_runs_train_against(tmp_path):
    published = tmp_path / "docs/repro2/discriminators"
    for variant in ("ngram", "policy"):
        write_json(published / variant / "report.json", {})
    calls, _ = run_stage(tmp_path, "discriminator")
    assert [option(c, "--variant") for c in calls] == ["minilm"]
    assert (published / "minilm/report.json").exists() and (published / "negatives.jsonl").exists()
    shutil.rmtree(published / "policy")
    calls, _ = run_stage(tmp_path, "discriminator")  # minilm is there now; policy's report is not
    assert [option(c, "--variant") for c in calls] == ["policy"]
    assert option(calls[0], "--negatives") == "docs/repro2/discriminators/negatives.jsonl"
    calls, _ = run_stage(tmp_path, "discriminator", "minilm-bestofk")  # only the one named
    assert [(option(c, "--variant"), option(c, "--out")) for c in calls] == [("minilm", "runs/repro2/disc-minilm-bestofk")]
    _, error = run_stage(tmp_path, "discriminator", "bert", check=False)
    assert "discriminator 'bert' is not one of minilm, ngram, policy, minilm-bestofk" in error


def test_the_grid_refits_the_discriminator_first_and_every_run_is_scored_by_it(tmp_path):
    """staged_aapa trains against it and every final model's samples are scored by it, so a fresh clone refits it once."""
    for variant in ("ngram", "policy"):
        write_json(tmp_path / f"docs/repro2/discriminators/{variant}/report.json", {})
    write_json(tmp_path / "docs/repro2/discriminators/minilm/report.json", {"auc": 0.9})  # what the fake fit reports
    calls, _ = run_stage(tmp_path, "grid", "grpo:1")
    assert calls[0][1] == "discriminator" and option(calls[0], "--variant") == "minilm"
    assert [c[1] for c in calls[1:]] == ["compare"] and option(calls[1], "--discriminator") == "runs/repro2/disc-minilm"
    calls, _ = run_stage(tmp_path, "grid", "staged_aapa:2")  # refitted once, kept
    assert [c[1] for c in calls] == ["compare"] and option(calls[0], "--discriminator") == "runs/repro2/disc-minilm"
    calls, _ = run_stage(tmp_path, "start")
    assert option(next(c for c in calls if c[1] == "analyze"), "--discriminator") == "runs/repro2/disc-minilm"


def test_the_grid_and_the_tuning_leave_staged_aapa_out_unless_the_discriminator_is_the_published_fit(tmp_path):
    write_json(tmp_path / "docs/repro2/discriminators/minilm/report.json", {"auc": 0.915, "best_epoch": 3})
    fit = tmp_path / "runs/repro2/disc-minilm"
    write_json(fit / "discriminator.json", {})
    write_json(fit / "report.json", {"auc": 0.91, "best_epoch": 3})  # a refit that came out otherwise
    ran, error = run_stage(tmp_path, "grid", "staged_aapa:1", "grpo:1", check=False)
    assert [(option(c, "--algorithms"), option(c, "--seeds")) for c in ran] == [("grpo", "1")]
    assert "runs/repro2/disc-minilm is not the fit" in error and "staged_aapa is left out" in error
    assert "--discriminator" not in ran[0] and "no model's samples are scored by the discriminator" in error
    ran, error = run_stage(tmp_path, "tune", check=False)  # the tuning too
    assert sorted({option(c, "--algorithms") for c in ran if c[1] == "compare"}) == ["grpo", "sft_then_grpo", "uniapl"]
    assert "staged_aapa is left out" in error
    ran, error = run_stage(tmp_path, "tune", check=False, PRIORITY="2")  # and grpo_aapa, which trains against it too
    assert sorted({option(c, "--algorithms") for c in ran if c[1] == "compare"}) == ["chord", "grpo", "sft", "sft_then_grpo", "uniapl"]
    assert "grpo_aapa is left out" in error
    write_json(fit / "report.json", {"auc": 0.915, "best_epoch": 3})
    calls, _ = run_stage(tmp_path, "grid", "staged_aapa:1", "grpo:1")
    assert sorted(option(c, "--algorithms") for c in calls) == ["grpo", "staged_aapa"]


def test_the_second_grid_publish_stage_copies_the_results_and_writes_the_compute_table(tmp_path):
    for name in ("publish.py", "compute.py"):
        (tmp_path / "scripts/repro").mkdir(parents=True, exist_ok=True)
        shutil.copy(SCRIPTS / name, tmp_path / "scripts/repro" / name)
    run = tmp_path / "runs/repro2/grid/grpo-seed1"
    start_training_runs(run)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i, "time/step": 60.0}) + "\n" for i in (1, 2)))
    run_stage(tmp_path, "publish")
    assert (tmp_path / "docs/repro2/grid/grpo-seed1/metrics.partial.jsonl").is_file()  # training has not ended
    compute = (tmp_path / "docs/repro2/compute.md").read_text()
    assert compute.startswith("# The compute of runs/repro2") and "| grpo-seed1 | 2 | 60.0 | 2.0 |" in compute


def test_the_second_grid_start_stage_keeps_the_results_it_has_and_makes_the_rest(tmp_path):
    calls, _ = run_stage(tmp_path, "start")
    calls = runs_of(calls)
    made = sorted((c[1], c[2] if c[1] == "eval" else "", option(c, "--model"), option(c, "--out")) for c in calls)
    runs = "runs/repro2"
    assert made == sorted([
        ("analyze", "", "smollm2-135m-instruct", f"{runs}/start/final/analysis"),
        ("eval", "ifbench", "smollm2-135m-instruct", f"{runs}/start/final/ifbench"),
        ("eval", "ifeval", "echo", f"{runs}/echo/final"),
        ("eval", "ifeval", "echo", f"{runs}/echo/final/heldout"),
        ("eval", "ifeval", "smollm2-135m-instruct", f"{runs}/start/final"),
        ("eval", "ifeval", "smollm2-135m-instruct", f"{runs}/start/final/heldout"),
    ])
    assert all(option(c, "--engine") == "vllm" and option(c, "--dtype") == "fp32" for c in calls if option(c, "--model") != "echo")
    for result in ("start/final/ifeval_scores.json", "start/final/heldout/ifeval_scores.json", "start/final/ifbench/ifbench_summary.json"):
        write_json(tmp_path / runs / result, {})
    rerun, _ = run_stage(tmp_path, "start")  # `uniapl analyze` keeps a finished analysis itself
    assert sorted((c[1], option(c, "--out")) for c in rerun) == [
        ("analyze", f"{runs}/start/final/analysis"), ("eval", f"{runs}/echo/final"), ("eval", f"{runs}/echo/final/heldout")]
