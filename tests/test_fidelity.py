"""The trainer does what the method, its baselines and a TRL user expect (issue 8): each test pins one behaviour
that used to differ, on the tiny model, in a few seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from uniapl import UniAPLConfig, UniAPLTrainer
from uniapl.errors import ConfigError


@pytest.mark.parametrize("algorithm", ["grpo", "luffy", "uniapl", "sft_then_grpo"])
def test_rl_needs_two_generations_per_prompt(algorithm, tiny_overrides):
    with pytest.raises(ConfigError, match="rollout.num_generations: must be >= 2 for algorithm"):
        UniAPLConfig.from_yaml(None, tiny_overrides + [f"algorithm.name={algorithm}", "rollout.num_generations=1"])


def test_sft_takes_one_generation_per_prompt(tiny_overrides):
    UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=sft", "rollout.num_generations=1"])


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def train(overrides: list[str], **trainer_args) -> list[dict]:
    """Run the trainer to the end; the metrics of each step."""
    config = UniAPLConfig.from_yaml(None, overrides)
    return read_metrics(UniAPLTrainer(args=config, **trainer_args).train().parent)


@pytest.mark.parametrize("iterations", [1, 2])
def test_lr_schedule_is_sized_in_optimizer_updates(iterations, tiny_overrides, monkeypatch):
    seen = []
    adamw_step = torch.optim.AdamW.step

    def record_lr(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return adamw_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", record_lr)
    rows = train(tiny_overrides + ["algorithm.name=grpo", "training.lr_scheduler=linear", "training.learning_rate=1e-3",
                                   f"algorithm.num_iterations={iterations}"])
    # 2 steps x `iterations` updates, linear from 1e-3: 1 - u / updates for update u; none at lr 0
    updates = 2 * iterations
    assert seen == pytest.approx([1e-3 * (1 - u / updates) for u in range(updates)])
    # `lr` is the rate of the step's first update: the same per step whatever num_iterations is
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 5e-4])
