"""Data parallel through accelerate: 2 CPU processes (gloo), in micro-batches, reach the parameters of a 1-process run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_trainer import ADVERSARIAL_FROM_STEP_0


def run_training(launcher: list[str], overrides: list[str], output_dir) -> None:
    args = [x for o in overrides + [f"training.output_dir={output_dir}"] for x in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(launcher + ["-m", "uniapl", "train", *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_match_one(tiny_overrides, tiny_model, tmp_path):
    # Adam's first steps are sign(g) * lr wherever |g| >> eps, so float noise on a near-zero gradient
    # flips whole updates; a large eps makes the update proportional to g, and comparable across runs
    overrides = tiny_overrides + ADVERSARIAL_FROM_STEP_0 + ["algorithm.name=uniapl", "training.learning_rate=1.0", "training.adam_epsilon=1.0"]
    run_training([sys.executable], overrides, tmp_path / "one")
    # accelerate's multi-process launcher (torchrun); without a GPU each process runs on the CPU with gloo
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]
    # and in micro-batches of 2 rows (3 per process): gradients are averaged across processes once per step
    run_training(launch, overrides + ["training.micro_batch_size=2"], tmp_path / "two")

    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert {r["processes"] for r in rows} == {2}
    one = load_file(str(tmp_path / "one" / "final" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "final" / "model.safetensors"))
    start = load_file(str(Path(tiny_model) / "model.safetensors"))
    assert one.keys() == two.keys()
    moved = max((one[k] - start[k]).abs().max().item() for k in one)
    assert moved > 1e-4  # training changed the weights, so agreement is not trivial
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-6, msg=key)
