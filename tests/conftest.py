"""Shared fixtures: the tiny random model (built once, offline) and small data files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TOY_ROWS = [
    ("Write one sentence about cats. Do not use commas.", "Cats sleep in the sun all day long."),
    ("Describe rain in one sentence without commas.", "Rain falls softly on the quiet town."),
    ("Say hello to a friend without commas.", "Hello my friend and welcome back."),
    ("Name three fruits without commas.", "Apples and pears and plums."),
    ("Write a short greeting for a letter.", "Dear reader I hope you are well."),
    ("Describe the sea in a few words.", "The sea is wide and blue and calm."),
    ("Tell me what a dog likes.", "A dog likes long walks and good food."),
    ("Give a tip for sleeping well.", "Go to bed at the same time each night."),
]


@pytest.fixture(scope="session")
def tiny_model() -> str:
    from uniapl.models import resolve_model_path

    return resolve_model_path("tiny-random-smollm2")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def chat_row(prompt: str, completion: str | None = None) -> dict:
    row = {"prompt": [{"role": "user", "content": prompt}]}
    if completion is not None:
        row["completion"] = [{"role": "assistant", "content": completion}]
    return row


@pytest.fixture
def paired_data(tmp_path) -> Path:
    """Prompts paired with comma-free demonstrations, conversational, in one file."""
    return write_jsonl(tmp_path / "paired.jsonl", [chat_row(p, c) for p, c in TOY_ROWS])


@pytest.fixture
def tiny_overrides(tiny_model, paired_data, tmp_path) -> list[str]:
    """Settings for 2-step runs of the tiny model that take about a second each."""
    return [
        f"model.name={tiny_model}",
        "model.dtype=fp32",
        f"data.prompts={paired_data}",
        "rewards=[{name: no_commas}]",
        "rollout.max_new_tokens=8",
        "rollout.num_generations=2",
        "training.prompts_per_step=2",
        "training.demos_per_step=2",
        "training.max_steps=2",
        "training.progress=false",
        "training.tensorboard=false",
        f"training.output_dir={tmp_path / 'run'}",
    ]
