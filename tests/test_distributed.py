"""Data parallel through accelerate on 2 CPU processes (gloo): DDP and FSDP2 (configs/accelerate/fsdp2.yaml), in
micro-batches, reach the parameters of a 1-process run; an FSDP2 run resumes bit-identically after kill -9, and
its checkpoint resumes with another number of processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fault_injection import kill9_trial, train_to_the_end
from safetensors.torch import load_file
from test_trainer import ADVERSARIAL_FROM_STEP_0

from uniapl.errors import UniaplError
from uniapl.train.sharding import Sharding

ROOT = Path(__file__).resolve().parents[1]
# accelerate's multi-process launcher (torchrun); without a GPU each process runs on the CPU with gloo
DDP = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
       "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]
FSDP2 = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"),
         "--main_process_port", "29518"]
# the processes add up the same sums in another order: the weights differ by under 1e-6 where they moved by 0.1
TOLERANCE = {"rtol": 1e-4, "atol": 1e-6}
# Adam's first steps are sign(g) * lr wherever |g| >> eps, so float noise on a near-zero gradient flips whole
# updates; a large eps makes the update proportional to g, and comparable across runs
COMPARABLE = ["training.learning_rate=1.0", "training.adam_epsilon=1.0"]
# a reward whose values differ within a group, so that GRPO's advantages are not all 0 (tests/ is on the path)
LEARNABLE_REWARD = ["rewards=[{name: test_trainer.low_token_reward}]"]


def run_training(launcher: list[str], overrides: list[str], output_dir) -> None:
    args = [x for o in overrides + [f"training.output_dir={output_dir}"] for x in ("--set", o)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    result = subprocess.run(launcher + ["-m", "uniapl", "train", *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def assert_same_weights(expected: Path, actual: Path, start_model: str, **tolerance) -> None:
    """The two runs' final weights agree, and training moved them, so that agreement is not trivial."""
    a, b = final_weights(expected), final_weights(actual)
    start = load_file(str(Path(start_model) / "model.safetensors"))
    assert a.keys() == b.keys()
    assert max((a[k] - start[k]).abs().max().item() for k in a) > 1e-4
    for key in a:
        torch.testing.assert_close(b[key], a[key], **(tolerance or TOLERANCE), msg=key)


@pytest.mark.slow
def test_ddp_and_fsdp2_match_one_process(tiny_overrides, tiny_model, tmp_path):
    overrides = tiny_overrides + ADVERSARIAL_FROM_STEP_0 + COMPARABLE + ["algorithm.name=uniapl"]
    run_training([sys.executable], overrides, tmp_path / "one")
    # in micro-batches of 2 rows (3 per process): DDP averages the gradients once per update, FSDP2 reduce-scatters
    # each micro-batch's
    micro = overrides + ["training.micro_batch_size=2"]
    run_training(DDP, micro, tmp_path / "ddp")
    run_training(FSDP2, micro, tmp_path / "fsdp2")

    for run in ("ddp", "fsdp2"):
        rows = [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
        assert {r["processes"] for r in rows} == {2}
        assert_same_weights(tmp_path / "one", tmp_path / run, tiny_model)
    assert_same_weights(tmp_path / "ddp", tmp_path / "fsdp2", tiny_model)


FSDP2_FEATURES = {
    # the frozen reference model sharded too; LoRA adapters on a sharded frozen base; recomputed layers
    "kl_lora_checkpointing": ["algorithm.name=grpo", "algorithm.beta_kl=0.1", "model.lora.enabled=true", "model.lora.dropout=0.0",
                              "model.gradient_checkpointing=true", "training.micro_batch_size=2", *LEARNABLE_REWARD],
    # two stages: the sharded policy gets a new optimizer, and the second stage's reference is the first one's model
    "two_stages": ["algorithm.name=sft_then_grpo", "algorithm.sft_stage_steps=1", "algorithm.beta_kl=0.1", *LEARNABLE_REWARD],
    # a sharded sequence-classifier discriminator, whose accuracy cap every process decides alike
    "model_discriminator": ["algorithm.name=uniapl", "algorithm.discriminator.kind=model", "algorithm.discriminator.max_accuracy=0.9",
                            *ADVERSARIAL_FROM_STEP_0],
    # LUFFY's expert members in the groups
    "luffy": ["algorithm.name=luffy", "training.micro_batch_size=2", *LEARNABLE_REWARD],
    # CHORD's scheduled mix of the SFT and RL terms
    "chord": ["algorithm.name=chord", "training.micro_batch_size=3", *LEARNABLE_REWARD],
}


@pytest.mark.slow
@pytest.mark.parametrize("feature", sorted(FSDP2_FEATURES))
def test_fsdp2_matches_one_process(feature, tiny_overrides, tiny_model, tmp_path):
    overrides = tiny_overrides + COMPARABLE + FSDP2_FEATURES[feature]
    run_training([sys.executable], overrides, tmp_path / "one")
    run_training(FSDP2, overrides, tmp_path / "fsdp2")
    assert_same_weights(tmp_path / "one", tmp_path / "fsdp2", tiny_model)


@pytest.mark.slow
def test_fsdp2_in_bf16_matches_one_process_in_bf16(tiny_overrides, tiny_model, tmp_path):
    """FSDP2 gathers the fp32 shards in bf16 and reduces the gradients in fp32; one process runs its bf16 autocast
    on the fp32 weights. The passes round differently, so the two agree to bf16's precision, not to fp32's."""
    overrides = tiny_overrides + COMPARABLE + ADVERSARIAL_FROM_STEP_0 + ["model.dtype=bf16", "algorithm.name=uniapl"]
    run_training([sys.executable], overrides, tmp_path / "one")
    run_training(FSDP2, overrides, tmp_path / "fsdp2")
    assert_same_weights(tmp_path / "one", tmp_path / "fsdp2", tiny_model, rtol=0.0, atol=1e-2)


@pytest.mark.slow
def test_fsdp2_resumes_after_kill_9_and_with_another_number_of_processes(tiny_model, paired_data, tmp_path):
    extra = ["algorithm.discriminator.kind=model", *COMPARABLE]  # its sharded weights and optimizer are checkpointed too
    train_to_the_end(tmp_path / "reference", tiny_model, paired_data, 3, FSDP2, extra)
    # every process killed while a checkpoint is being written; `--resume` under FSDP2 reaches the same bits
    assert kill9_trial(tmp_path / "killed", tmp_path / "reference", tiny_model, paired_data, 3, during_save=True, delay=0,
                       launcher=FSDP2, extra=extra)
    # checkpoints hold full tensors: 2 FSDP2 processes save step 1, one process resumes it
    train_to_the_end(tmp_path / "resized", tiny_model, paired_data, 1, FSDP2, extra)
    train_to_the_end(tmp_path / "resized", tiny_model, paired_data, 3, [sys.executable], extra, resume=True)
    assert_same_weights(tmp_path / "reference", tmp_path / "resized", tiny_model)


@pytest.mark.parametrize("setting, value, message", [
    ("FSDP_VERSION", "1", "fsdp_config.fsdp_version is not supported by uniapl; set it to 2"),
    ("FSDP_OFFLOAD_PARAMS", "true", "fsdp_config.fsdp_offload_params is not supported"),
    ("FSDP_CPU_RAM_EFFICIENT_LOADING", "true", "fsdp_config.fsdp_cpu_ram_efficient_loading is not supported"),
    ("FSDP_ACTIVATION_CHECKPOINTING", "true", "set model.gradient_checkpointing in the uniapl config instead"),
])
def test_an_unsupported_fsdp_launch_setting_is_named(setting, value, message, monkeypatch):
    for name, launched in {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", setting: value}.items():  # as the launcher sets them
        monkeypatch.setenv(name, launched)
    with pytest.raises(UniaplError, match=message):
        Sharding.from_launch(None)


def test_without_an_fsdp_launch_nothing_is_sharded(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    assert Sharding.from_launch(torch.bfloat16) is None
