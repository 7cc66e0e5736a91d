"""The trainer does what the method, its baselines and a TRL user expect (issue 8): each test pins one behaviour
that used to differ, on the tiny model, in a few seconds."""

from __future__ import annotations

import pytest

from uniapl import UniAPLConfig
from uniapl.errors import ConfigError


@pytest.mark.parametrize("algorithm", ["grpo", "luffy", "uniapl", "sft_then_grpo"])
def test_rl_needs_two_generations_per_prompt(algorithm, tiny_overrides):
    with pytest.raises(ConfigError, match="rollout.num_generations: must be >= 2 for algorithm"):
        UniAPLConfig.from_yaml(None, tiny_overrides + [f"algorithm.name={algorithm}", "rollout.num_generations=1"])


def test_sft_takes_one_generation_per_prompt(tiny_overrides):
    UniAPLConfig.from_yaml(None, tiny_overrides + ["algorithm.name=sft", "rollout.num_generations=1"])
