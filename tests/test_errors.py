"""User errors get one clear message naming the field, file or line, and no traceback."""

from __future__ import annotations

import pytest

from uniapl.cli import main


def run_cli(capsys, args: list[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def train_args(overrides: list[str]) -> list[str]:
    return ["train"] + [x for o in overrides for x in ("--set", o)]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("algorithm.name=dpo", "algorithm.name: 'dpo' is not allowed"),
        ("training.max_steps=ten", "training.max_steps: expected an integer, got 'ten'"),
        ("training.learning_rate=-0.001", "training.learning_rate: must be > 0"),
        ("model.dtype=int8", "allowed values: auto, bf16, fp32"),
        ("training.warmup=3", "unknown field 'training.warmup'"),
        ("rewards=[{name: no_such_module.fn}]", "could not import module 'no_such_module'"),
        ("rewards=[{name: uniapl.rewards.builtin.nothing_here}]", "has no function 'nothing_here'"),
    ],
)
def test_bad_config_values(override, expected, tiny_overrides, capsys):
    err = run_cli(capsys, train_args(tiny_overrides + [override]))
    assert expected in err


def test_missing_config_file(capsys, tmp_path):
    assert "does not exist" in run_cli(capsys, ["train", str(tmp_path / "nope.yaml")])


def test_missing_data_file(tiny_overrides, tmp_path, capsys):
    err = run_cli(capsys, train_args(tiny_overrides + [f"data.prompts={tmp_path / 'missing.jsonl'}"]))
    assert "missing.jsonl' does not exist" in err


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"prompt": "a", "completion": "b"}\n{not json\n', ":2: not valid JSON"),
        ('{"prompt": "a", "completion": "b"}\n{"question": "x"}\n', ":2: the row has neither 'prompt' nor 'messages'"),
        ('{"prompt": "a", "completion": 5}\n', ":1: field 'completion' must be a non-empty string or a list of messages, got 5"),
        ('{"messages": [{"role": "robot", "content": "hi"}]}\n', ":1: field 'messages[0].role'"),
        ("\n\n", "has no rows"),
    ],
)
def test_bad_data_rows(content, expected, tiny_overrides, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    err = run_cli(capsys, train_args(tiny_overrides + [f"data.prompts={bad}"]))
    assert str(bad) in err and expected in err


def test_demonstrations_required(tiny_overrides, tmp_path, capsys):
    prompts_only = tmp_path / "prompts.jsonl"
    prompts_only.write_text('{"prompt": "Say hi."}\n')
    err = run_cli(capsys, train_args(tiny_overrides + [f"data.prompts={prompts_only}", "algorithm.name=uniapl"]))
    assert "needs expert demonstrations" in err


def test_missing_model_folder(tiny_overrides, tmp_path, capsys):
    err = run_cli(capsys, train_args(tiny_overrides + [f"model.name={tmp_path / 'no-model'}"]))
    assert "does not exist" in err


def test_rl_without_a_reward(tiny_overrides, capsys):
    err = run_cli(capsys, train_args(tiny_overrides + ["rewards=[]", "algorithm.name=grpo"]))
    assert "rewards: algorithm 'grpo' runs RL on the task reward and needs at least one reward function" in err


@pytest.mark.parametrize("has_bf16, warns", [(False, True), (True, False)])
def test_emulated_bf16_warns_and_auto_picks_fp32(has_bf16, warns, tiny_model, monkeypatch):
    import warnings

    import torch

    from uniapl import models
    from uniapl.errors import UniaplWarning

    monkeypatch.setattr(models, "native_bf16", lambda: has_bf16)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert models.load_model(tiny_model, "bf16").dtype == torch.bfloat16
    assert any(issubclass(w.category, UniaplWarning) and "emulated" in str(w.message) for w in caught) == warns
    assert models.load_model(tiny_model, "auto").dtype == (torch.bfloat16 if has_bf16 else torch.float32)


@pytest.mark.parametrize("flags, speedup, picks_bf16", [
    ({"avx512f"}, None, False),  # no bf16 instructions: emulated, never timed
    ({"avx512_bf16", "amx_bf16"}, None, True),  # AMX: always faster, never timed
    ({"avx512_bf16"}, 0.67, False),  # AVX512-BF16 alone, timed slower (as measured on a Xeon without AMX)
    ({"avx512_bf16"}, 1.9, True),  # ... or timed clearly faster
    ({"avx512_bf16"}, 1.1, False),  # within the noise margin: fp32
])
def test_auto_dtype_picks_bf16_only_where_it_is_faster(flags, speedup, picks_bf16):
    from uniapl.models import bf16_is_faster

    def timed() -> float:
        assert speedup is not None, "timed bf16 although the CPU flags decide"
        return speedup

    assert bf16_is_faster(flags, timed) == picks_bf16


def test_bf16_timing_is_a_ratio_of_real_matmuls():
    import math

    from uniapl.models import bf16_matmul_speedup

    # a ratio of two measured times: positive and finite; its size depends on the CPU and on what else runs
    speedup = bf16_matmul_speedup(size=128, repeats=2)
    assert speedup > 0 and math.isfinite(speedup)


def test_cli_prints_our_warnings_on_one_line(tiny_model, monkeypatch, tmp_path):
    import warnings

    from uniapl.errors import UniaplWarning

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # main() installs its own
    assert main(["eval", "ifeval", "--model", "echo", "--limit", "1", "--out", str(tmp_path)]) == 0
    ours = warnings.formatwarning("bf16 is emulated", UniaplWarning, "/x/uniapl/models.py", 164)
    assert ours == "uniapl eval: warning: bf16 is emulated\n"
    theirs = warnings.formatwarning("deprecated", FutureWarning, "/x/transformers/a.py", 7)
    assert "transformers/a.py:7" in theirs and "FutureWarning" in theirs
