"""Fault injection: the bad-input table, reward functions that misbehave, and kill -9 trials.

Each bad input is run through `uniapl.cli.main` in this process and sorted into one of four outcomes:
a clear error (exit 2, one `error:` line that names the problem, no traceback), a traceback, a silent
accept (exit 0), or an unclear error (any other failure). tests/test_reliability.py asserts that every case
is a clear error; run this file to count the outcomes, and to run kill -9 trials:

    .venv/bin/python tests/fault_injection.py bad-inputs
    .venv/bin/python tests/fault_injection.py kill9 --trials 10
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

TOY = [
    ("Write one sentence about cats. Do not use commas.", "Cats sleep in the sun all day long."),
    ("Describe rain in one sentence without commas.", "Rain falls softly on the quiet town."),
    ("Say hello to a friend without commas.", "Hello my friend and welcome back."),
    ("Name three fruits without commas.", "Apples and pears and plums."),
]
CONSTRAINT_ROW = {"key": "k1", "prompt": "Write about tea in lowercase letters.",
                  "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
NOT_UTF8 = b'{"prompt": "caf\xe9", "completion": "ok"}\n'


def _jsonl(*rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _chat(prompt, completion=None) -> dict:
    row = {"prompt": [{"role": "user", "content": prompt}]}
    if completion is not None:
        row["completion"] = [{"role": "assistant", "content": completion}]
    return row


# files every case's folder starts with
COMMON_FILES = {
    "good.jsonl": _jsonl(*[_chat(p, c) for p, c in TOY]),
    "prompts.jsonl": _jsonl(CONSTRAINT_ROW, {**CONSTRAINT_ROW, "key": "k2", "prompt": "Write about rain in lowercase letters."}),
    "demos.jsonl": _jsonl({"key": "k1", "completion": "tea is warm."}),
    "afile.txt": b"not a folder\n",
    "config.yaml": b"training:\n  max_steps: 2\n",
    "responses.jsonl": _jsonl({"key": "k1", "response": "tea."}, {"key": "k2", "response": "rain."}),
}


# ---- reward functions that misbehave (imported by dotted path: fault_injection.NAME) -----------------


def raises(prompts, completions, **kwargs):
    raise ValueError("my reward is broken")


def returns_none(prompts, completions, **kwargs):
    return None


def returns_scalar(prompts, completions, **kwargs):
    return 0.5


def returns_strings(prompts, completions, **kwargs):
    return ["good"] * len(completions)


def returns_numeric_strings(prompts, completions, **kwargs):
    return ["0.5"] * len(completions)


def returns_too_few(prompts, completions, **kwargs):
    return [1.0]


def returns_nan(prompts, completions, **kwargs):
    return [float("nan")] + [1.0] * (len(completions) - 1)


def returns_inf(prompts, completions, **kwargs):
    return [1.0] * (len(completions) - 1) + [float("inf")]


def returns_minus_inf(prompts, completions, **kwargs):
    return [float("-inf")] * len(completions)


def returns_dict(prompts, completions, **kwargs):
    return {"score": 1.0}


def returns_lists(prompts, completions, **kwargs):
    return [[1.0]] * len(completions)


def wrong_signature(completions):
    return [0.0] * len(completions)


NOT_A_FUNCTION = "a string"


# ---- the table ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A command line ({dir}: the case's folder, {model}: the tiny model), files to write first, and the text the
    error must contain."""

    name: str
    argv: tuple[str, ...]
    expected: str
    files: dict = field(default_factory=dict)


def train(*settings: str, files: dict | None = None, name: str = "", expected: str = "", extra: tuple = ()) -> Case:
    """`uniapl train` of the tiny model on good.jsonl for 1 step, with `settings` on top."""
    base = ["model.name={model}", "model.dtype=fp32", "data.prompts={dir}/good.jsonl", "rewards=[{name: no_commas}]",
            "rollout.max_new_tokens=4", "rollout.num_generations=2", "training.prompts_per_step=2", "training.demos_per_step=2",
            "training.max_steps=1", "training.progress=false", "training.tensorboard=false", "training.output_dir={dir}/run"]
    argv = ["train", *extra] + [x for s in base + list(settings) for x in ("--set", s)]
    return Case(name or " ".join(settings), tuple(argv), expected, files or {})


def data_file(content: bytes, expected: str, name: str, setting: str = "data.prompts") -> Case:
    return train(f"{setting}={{dir}}/bad.jsonl", files={"bad.jsonl": content}, name=name, expected=expected)


def reward(function: str, expected: str) -> Case:
    return train(f"rewards=[{{name: fault_injection.{function}}}]", name=f"reward {function}",
                 expected=expected)


# a complete config for a 1-step run of the tiny model, which a case breaks by adding lines
CONFIG = b"""model: {name: "{model}", dtype: fp32}
data: {prompts: "{dir}/good.jsonl"}
rewards: [{name: no_commas}]
rollout: {max_new_tokens: 4, num_generations: 2}
training: {prompts_per_step: 2, demos_per_step: 2, max_steps: 1, progress: false, tensorboard: false, output_dir: "{dir}/run"}
"""


def config_file(name: str, added: bytes, expected: str) -> Case:
    return Case(name, ("train", "{dir}/bad.yaml"), expected, {"bad.yaml": CONFIG + added})


def cmd(name: str, *argv: str, expected: str, files: dict | None = None) -> Case:
    return Case(name, tuple(argv), expected, files or {})


PICKLE_ONLY = "pickle-model"  # a copy of the tiny model with pytorch_model.bin instead of safetensors
TRUNCATED = "truncated-model"  # a copy whose model.safetensors is cut short

CASES: list[Case] = [
    # ---- train: config values ----
    train("training.seed=-1", expected="training.seed: must be in [0, 2**32 - 1], got -1"),
    train("training.seed=4294967296", expected="training.seed: must be in [0, 2**32 - 1]"),
    train("model.lora.r=0", expected="model.lora.r: must be >= 1"),
    train("model.lora.alpha=0", expected="model.lora.alpha: must be > 0"),
    train("model.lora.dropout=1.5", expected="model.lora.dropout: must be in [0, 1)"),
    train("model.lora.target_modules=[]", expected="model.lora.target_modules: must name at least one module"),
    train("model.lora.target_modules=q_proj", expected="model.lora.target_modules: expected a list"),
    train("data.max_prompt_length=0", expected="data.max_prompt_length: must be >= 1"),
    train("data.max_prompt_length=-5", expected="data.max_prompt_length: must be >= 1"),
    train("data.max_demo_length=0", expected="data.max_demo_length: must be >= 1"),
    train("algorithm.discriminator.width=0", expected="algorithm.discriminator.width: must be >= 1"),
    train("training.warmup_steps=-3", expected="training.warmup_steps: must be >= 0"),
    train("rollout.batch_size=0", expected="rollout.batch_size: must be >= 1"),
    train("rewards=[{name: no_commas, weight: .nan}]", expected="rewards[0].weight: must be a finite number, got nan"),
    train("rewards=[{name: no_commas, weight: .inf}]", expected="rewards[0].weight: must be a finite number, got inf"),
    train("training.learning_rate=.nan", expected="training.learning_rate: must be a finite number"),
    train("training.max_grad_norm=-.inf", expected="training.max_grad_norm: must be a finite number"),
    train("algorithm.epsilon=.nan", expected="algorithm.epsilon: must be a finite number"),
    train("training.adam_beta1=1.0", expected="training.adam_beta1: must be in [0, 1)"),
    train("training.adam_beta2=-0.1", expected="training.adam_beta2: must be in [0, 1)"),
    train("training.adam_epsilon=0", expected="training.adam_epsilon: must be > 0"),
    train("training.weight_decay=-1", expected="training.weight_decay: must be >= 0"),
    train("algorithm.name=dpo", expected="algorithm.name: 'dpo' is not allowed"),
    train("training.max_steps=ten", expected="training.max_steps: expected an integer, got 'ten'"),
    train("training.max_steps=2.5", expected="training.max_steps: expected an integer, got 2.5"),
    train("training.max_steps=0", expected="training.max_steps: must be > 0"),
    train("training.learning_rate=-0.001", expected="training.learning_rate: must be > 0"),
    train("training.learning_rate=fast", expected="training.learning_rate: expected a number, got 'fast'"),
    train("model.dtype=int8", expected="model.dtype: 'int8' is not allowed"),
    train("training.warmup=3", expected="unknown field 'training.warmup'"),
    train("trainig.max_steps=3", expected="unknown field 'trainig'"),
    train("rewards=[{name: no_such_module.fn}]", expected="could not import module 'no_such_module'"),
    train("rewards=[{name: uniapl.rewards.builtin.nothing_here}]", expected="has no function 'nothing_here'"),
    train("rewards=[{name: nonexistent_builtin}]", expected="unknown reward 'nonexistent_builtin'"),
    train("rewards=[{weight: 1.0}]", expected="field 'rewards[0].name' is required"),
    train("rewards=[{name: ''}]", expected="rewards[0].name: must name a built-in reward"),
    train("rewards=no_commas", expected="rewards: expected a list"),
    train("rewards=[5]", expected="rewards[0] (overrides): expected a mapping"),
    train("rewards=[]", "algorithm.name=grpo", expected="rewards: algorithm 'grpo' runs RL on the task reward and needs at least one reward function"),
    train("algorithm.name=grpo", "rollout.num_generations=1", expected="rollout.num_generations: must be >= 2 for algorithm 'grpo'"),
    train("rollout.temperature=0", expected="rollout.temperature: must be > 0"),
    train("rollout.top_p=0", expected="rollout.top_p: must be in (0, 1]"),
    train("rollout.top_p=1.5", expected="rollout.top_p: must be in (0, 1]"),
    train("rollout.top_k=-1", expected="rollout.top_k: must be >= 0"),
    train("rollout.max_new_tokens=0", expected="rollout.max_new_tokens: must be >= 1"),
    train("training.prompts_per_step=0", expected="training.prompts_per_step: must be > 0"),
    train("training.demos_per_step=-2", expected="training.demos_per_step: must be > 0"),
    train("training.micro_batch_size=0", expected="training.micro_batch_size: must be > 0"),
    train("training.save_steps=-1", expected="training.save_steps: must be >= 0"),
    train("training.save_total_limit=0", expected="training.save_total_limit: must be >= 1"),
    train("training.max_consecutive_skipped_updates=0", expected="training.max_consecutive_skipped_updates: must be >= 1"),
    train("algorithm.eps_low=1", expected="algorithm.eps_low: must be in [0, 1)"),
    train("algorithm.num_iterations=0", expected="algorithm.num_iterations: must be >= 1"),
    train("algorithm.lambda_init=20", expected="algorithm.lambda_init: must be in [0, lambda_max]"),
    train("algorithm.schedule_peak=2", expected="algorithm.schedule_peak: must be in [0, 1]"),
    train("algorithm.c_batch_ema=1", expected="algorithm.c_batch_ema: must be in [0, 1)"),
    train("algorithm.discriminator.label_smoothing=0.5", expected="algorithm.discriminator.label_smoothing: must be in [0, 0.5)"),
    train("algorithm.discriminator.kind=cnn", expected="algorithm.discriminator.kind: 'cnn' is not allowed"),
    train("algorithm.discriminator.max_accuracy=0", expected="algorithm.discriminator.max_accuracy: must be in (0, 1]"),
    train("algorithm.discriminator.warmup_steps=-1", expected="algorithm.discriminator.warmup_steps: must be >= 0"),
    train("algorithm.name=sft_then_grpo", "algorithm.sft_stage_steps=5", expected="algorithm.sft_stage_steps: must be in (0, training.max_steps=1)"),
    train("training.lr_scheduler=exp", expected="training.lr_scheduler: 'exp' is not allowed"),
    train("algorithm.loss_aggregation=sum", expected="algorithm.loss_aggregation: 'sum' is not allowed"),
    train("training.tensorboard=maybe", expected="training.tensorboard: expected true or false, got 'maybe'"),
    train("model=5", expected="model (overrides): expected a mapping, got 5"),
    train("model.name=", expected="model.name: expected a string, got None"),
    train("training.output_dir=''", expected="training.output_dir: must name a folder"),
    train("training.max_steps.x=3", expected="'max_steps' is not a section"),
    Case("override without '='", ("train", "--set", "training.max_steps"), "override 'training.max_steps' must look like section.field=value"),
    # ---- train: paths and models ----
    train("training.output_dir={dir}/afile.txt", expected="training.output_dir: '{dir}/afile.txt' is a file; expected a folder"),
    train("training.output_dir=/proc/uniapl-run", expected="training.output_dir: cannot write to the folder '/proc/uniapl-run'"),
    train("training.output_dir={dir}/afile.txt/run", expected="training.output_dir: cannot write to the folder '{dir}/afile.txt/run'"),
    train("model.name={dir}/no-model", expected="model folder '{dir}/no-model' does not exist"),
    train("model.name={dir}", expected="has no config.json; expected a Hugging Face model folder"),
    train("model.name={dir}/" + TRUNCATED, expected=f"{TRUNCATED}/model.safetensors: damaged safetensors file"),
    train("model.name={dir}/" + PICKLE_ONLY, expected="has its weights only as pickle (pytorch_model.bin)"),
    train("model.name={dir}/garbage-config", files={"garbage-config/config.json": b"{not json"},
          expected="could not load model '{dir}/garbage-config'"),
    train("algorithm.discriminator.kind=model", "algorithm.discriminator.model={dir}/" + PICKLE_ONLY,
          expected="has its weights only as pickle"),
    train("data.prompts={dir}/missing.jsonl", expected="data file '{dir}/missing.jsonl' does not exist"),
    train("data.prompts={dir}/afile.txt/x.jsonl", expected="data file '{dir}/afile.txt/x.jsonl' does not exist"),
    train("data.prompts={dir}", expected="is not a saved `datasets` folder"),
    train("data.expert={dir}/missing.jsonl", expected="data file '{dir}/missing.jsonl' does not exist"),
    # ---- train: config files ----
    cmd("config file missing", "train", "{dir}/nope.yaml", expected="config file '{dir}/nope.yaml' does not exist"),
    cmd("config file is a folder", "train", "{dir}", expected="config file {dir}: is a folder; expected a file"),
    config_file("config file not UTF-8", b"# caf\xe9\n", "config file {dir}/bad.yaml:6: not UTF-8 text"),
    config_file("config file not YAML", b"algorithm: [1, 2\n", "config file {dir}/bad.yaml:7: not valid YAML"),
    cmd("config file holds a list", "train", "{dir}/bad.yaml", files={"bad.yaml": b"- a\n- b\n"},
        expected="must hold a mapping of sections, got list"),
    config_file("config file with a repeated key", b"algorithm:\n  name: sft\n  name: grpo\n",
                "{dir}/bad.yaml:8: not valid YAML (the key 'name' appears twice"),
    config_file("config file with a repeated section", b"rollout:\n  max_new_tokens: 8\n",
                "{dir}/bad.yaml:6: not valid YAML (the key 'rollout' appears twice"),
    config_file("config section not a mapping", b"algorithm: 5\n", "algorithm ({dir}/bad.yaml): expected a mapping, got 5"),
    config_file("config with a tab indent", b"algorithm:\n\tname: sft\n", "{dir}/bad.yaml:7: not valid YAML"),
    # ---- train: data rows ----
    data_file(b'{"prompt": "a", "completion": "b"}\n{not json\n', ":2: not valid JSON", "data: not JSON"),
    data_file(b'{"prompt": "a", "completion": "b"}\n' + NOT_UTF8, "bad.jsonl:2: not UTF-8 text (byte 0xe9", "data: not UTF-8"),
    data_file(b'[1, 2]\n', "bad.jsonl:1: expected a JSON object, got list", "data: a list row"),
    data_file(b'"text"\n', "bad.jsonl:1: expected a JSON object, got str", "data: a string row"),
    data_file(_jsonl({"question": "x"}), "bad.jsonl:1: the row has neither 'prompt' nor 'messages'", "data: no prompt"),
    data_file(_jsonl({"prompt": "a", "completion": 5}), "bad.jsonl:1: field 'completion' must be a non-empty string or a list of messages, got 5",
              "data: completion is a number"),
    data_file(_jsonl({"prompt": 5}), "bad.jsonl:1: field 'prompt' must be a non-empty string or a list of messages, got 5",
              "data: prompt is a number"),
    data_file(_jsonl({"prompt": ""}), "bad.jsonl:1: field 'prompt' is empty", "data: empty prompt"),
    data_file(_jsonl({"prompt": "   "}), "bad.jsonl:1: field 'prompt' is empty", "data: blank prompt"),
    data_file(_jsonl(_chat("")), "bad.jsonl:1: field 'prompt[0].content' is empty", "data: empty message content"),
    data_file(_jsonl(_chat(" \n ")), "bad.jsonl:1: field 'prompt[0].content' is empty", "data: blank message content"),
    data_file(_jsonl(_chat("hi", "  ")), "bad.jsonl:1: field 'completion[0].content' is empty", "data: blank completion content"),
    data_file(_jsonl({"messages": []}), "bad.jsonl:1: field 'messages' must be a non-empty list", "data: empty messages"),
    data_file(_jsonl({"messages": [{"role": "assistant", "content": "hi"}]}), "has an assistant turn but no prompt before it",
              "data: only an assistant turn"),
    data_file(_jsonl({"messages": [{"role": "robot", "content": "hi"}]}), "field 'messages[0].role' is 'robot'", "data: unknown role"),
    data_file(_jsonl({"prompt": [{"role": "user"}]}), "field 'prompt[0]' must be an object with a string 'content'", "data: no content"),
    data_file(_jsonl({"prompt": ["hello"]}), "field 'prompt[0]' must be an object with a string 'content'", "data: list of strings"),
    data_file(_jsonl({"prompt": "a", "completion": [{"role": "assistant", "content": "b"}]}),
              "'prompt' and 'completion' must both be strings or both be message lists", "data: mixed formats"),
    data_file(b"\n\n", "has no rows", "data: only blank lines"),
    data_file(b"", "has no rows", "data: empty file"),
    data_file(b'{"prompt": "a", "completion": "b"}\n{"prompt": "c", "compl', "bad.jsonl:2: not valid JSON", "data: cut-off last line"),
    data_file(_jsonl({"prompt": "Say hi."}), "needs expert demonstrations", "data: no demonstrations for uniapl"),
    data_file(_jsonl({"prompt": "Say hi."}), "an expert demonstration needs a 'completion'", "expert: a row without a completion",
              setting="data.expert"),
    data_file(NOT_UTF8, "bad.jsonl:1: not UTF-8 text", "expert: not UTF-8", setting="data.expert"),
    train("data.max_demo_length=1", expected="data.max_demo_length=1: all 4 expert demonstrations are longer"),
    train("algorithm.name=luffy", "data.prompts={dir}/prompts-only.jsonl", "data.expert={dir}/good.jsonl",
          files={"prompts-only.jsonl": _jsonl(_chat("Something else entirely."))},
          expected="algorithm.expert_in_group needs prompts paired with a demonstration"),
    # ---- train: reward functions that misbehave ----
    reward("raises", "reward 'raises' raised ValueError: my reward is broken"),
    reward("returns_none", "reward 'returns_none' returned None (NoneType); a reward function is called as f(prompts, completions"),
    reward("returns_scalar", "reward 'returns_scalar' returned 0.5 (float); a reward function is called as"),
    reward("returns_strings", "reward 'returns_strings' returned 'good' (str) for completion 0"),
    reward("returns_numeric_strings", "reward 'returns_numeric_strings' returned '0.5' (str) for completion 0"),
    reward("returns_too_few", "reward 'returns_too_few' returned 1 scores for 4 completions"),
    reward("returns_nan", "reward 'returns_nan' returned nan for completion 0 (prompt {dir}/good.jsonl:"),
    reward("returns_inf", "reward 'returns_inf' returned inf for completion 3 (prompt {dir}/good.jsonl:"),
    reward("returns_minus_inf", "reward 'returns_minus_inf' returned -inf for completion 0"),
    reward("returns_dict", "reward 'returns_dict' returned {'score': 1.0} (dict)"),
    reward("returns_lists", "reward 'returns_lists' returned [1.0] (list) for completion 0"),
    reward("wrong_signature", "reward 'wrong_signature' raised TypeError"),
    reward("NOT_A_FUNCTION", "module 'fault_injection' has no function 'NOT_A_FUNCTION'"),
    # ---- train --resume on a folder that is not a run ----
    train("training.output_dir={dir}/run", extra=("--resume",), name="resume: latest names another run's folder",
          files={"run/checkpoints/latest": b"/elsewhere/step-000002"}, expected="run/checkpoints/latest: holds '/elsewhere/step-000002'"),
    train("training.output_dir={dir}/run", extra=("--resume",), name="resume: latest is empty",
          files={"run/checkpoints/latest": b""}, expected="run/checkpoints/latest: holds ''"),
    train("training.output_dir={dir}/run", extra=("--resume",), name="resume: latest is not UTF-8",
          files={"run/checkpoints/latest": b"\xff\xfe"}, expected="run/checkpoints/latest:1: not UTF-8 text"),
    train("training.output_dir={dir}/run", extra=("--resume",), name="resume: latest names ../",
          files={"run/checkpoints/latest": b"../step-000001"}, expected="it may only name a checkpoint folder beside it"),
    train("training.output_dir={dir}/run", extra=("--resume",), name="resume: latest names a missing folder",
          files={"run/checkpoints/latest": b"step-000002"}, expected="no intact checkpoint to resume from: {dir}/run/checkpoints/step-000002: missing"),
    train("training.output_dir={dir}/run", extra=("--resume",), name="resume: a checkpoint without a manifest",
          files={"run/checkpoints/latest": b"step-000002", "run/checkpoints/step-000002/trainer_state.json": b"{}"},
          expected="step-000002/manifest.json: file not found"),
    train("training.output_dir={dir}/run", extra=("--resume",), name="resume: metrics.jsonl is not uniapl's",
          files={"run/metrics.jsonl": b'{"loss": 1}\n'}, expected="run/metrics.jsonl:1: the row has no integer 'step'"),
    # ---- eval ----
    cmd("eval without a model", "eval", "ifeval", expected="pass --model (to generate) or --responses FILE"),
    cmd("eval --max-new-tokens 0", "eval", "ifeval", "--model", "echo", "--max-new-tokens", "0", "--out", "{dir}/e",
        expected="--max-new-tokens must be at least 1, got 0"),
    cmd("eval --batch-size 0", "eval", "ifeval", "--model", "echo", "--batch-size", "0", "--out", "{dir}/e",
        expected="--batch-size must be at least 1, got 0"),
    cmd("eval --limit 0", "eval", "ifeval", "--model", "echo", "--limit", "0", "--out", "{dir}/e", expected="--limit must be at least 1, got 0"),
    cmd("eval --limit -3", "eval", "ifeval", "--model", "echo", "--limit", "-3", "--out", "{dir}/e", expected="--limit must be at least 1"),
    cmd("eval --limit x", "eval", "ifeval", "--model", "echo", "--limit", "x", expected="argument --limit: invalid int value: 'x'"),
    cmd("eval --dtype int8", "eval", "ifeval", "--model", "echo", "--dtype", "int8", expected="argument --dtype: invalid choice: 'int8'"),
    cmd("eval --responses missing", "eval", "ifeval", "--responses", "{dir}/missing.jsonl", "--data", "{dir}/prompts.jsonl",
        expected="{dir}/missing.jsonl: file not found"),
    cmd("eval --responses not UTF-8", "eval", "ifeval", "--responses", "{dir}/r.jsonl", "--data", "{dir}/prompts.jsonl",
        files={"r.jsonl": b'{"key": "k1", "response": "caf\xe9"}\n'}, expected="{dir}/r.jsonl:1: not UTF-8 text"),
    cmd("eval --responses not JSON", "eval", "ifeval", "--responses", "{dir}/r.jsonl", "--data", "{dir}/prompts.jsonl",
        files={"r.jsonl": b'{"key": "k1", "response": "x"}\n{oops\n'}, expected="{dir}/r.jsonl:2: not valid JSON"),
    cmd("eval --responses without a response field", "eval", "ifeval", "--responses", "{dir}/r.jsonl", "--data", "{dir}/prompts.jsonl",
        files={"r.jsonl": _jsonl({"key": "k1", "text": "x"})}, expected="{dir}/r.jsonl: row 1: needs a 'key' and a string 'response'"),
    cmd("eval --responses with a numeric response", "eval", "ifeval", "--responses", "{dir}/r.jsonl", "--data", "{dir}/prompts.jsonl",
        files={"r.jsonl": _jsonl({"key": "k1", "response": 5})}, expected="{dir}/r.jsonl: row 1: needs a 'key' and a string 'response'"),
    cmd("eval --responses missing a prompt", "eval", "ifeval", "--responses", "{dir}/r.jsonl", "--data", "{dir}/prompts.jsonl",
        files={"r.jsonl": _jsonl({"key": "k1", "response": "x"})}, expected="no response for 1 of 2 prompts"),
    cmd("eval --data not UTF-8", "eval", "ifeval", "--model", "echo", "--data", "{dir}/d.jsonl", "--out", "{dir}/e",
        files={"d.jsonl": b'{"key": "k", "prompt": "caf\xe9"}\n'}, expected="{dir}/d.jsonl:1: not UTF-8 text"),
    cmd("eval --data unknown instruction", "eval", "ifeval", "--model", "echo", "--data", "{dir}/d.jsonl", "--out", "{dir}/e",
        files={"d.jsonl": _jsonl({**CONSTRAINT_ROW, "instruction_id_list": ["no:such"]})},
        expected="{dir}/d.jsonl:1: field 'instruction_id_list' has unknown instruction ids"),
    cmd("eval --data repeated key", "eval", "ifeval", "--model", "echo", "--data", "{dir}/d.jsonl", "--out", "{dir}/e",
        files={"d.jsonl": _jsonl(CONSTRAINT_ROW, CONSTRAINT_ROW)}, expected="{dir}/d.jsonl:2: field 'key' repeats the value 'k1'"),
    cmd("eval --data kwargs mismatch", "eval", "ifeval", "--model", "echo", "--data", "{dir}/d.jsonl", "--out", "{dir}/e",
        files={"d.jsonl": _jsonl({**CONSTRAINT_ROW, "kwargs": []})}, expected="{dir}/d.jsonl:1: field 'kwargs' must be a list of 1 objects"),
    cmd("eval --data without key", "eval", "ifeval", "--model", "echo", "--data", "{dir}/d.jsonl", "--out", "{dir}/e",
        files={"d.jsonl": _jsonl({k: v for k, v in CONSTRAINT_ROW.items() if k != "key"})}, expected="{dir}/d.jsonl:1: field 'key' is missing"),
    cmd("eval --data empty", "eval", "ifeval", "--model", "echo", "--data", "{dir}/d.jsonl", "--out", "{dir}/e",
        files={"d.jsonl": b""}, expected="{dir}/d.jsonl: no rows"),
    cmd("eval --out is a file", "eval", "ifeval", "--model", "echo", "--data", "{dir}/prompts.jsonl", "--out", "{dir}/afile.txt",
        expected="--out: '{dir}/afile.txt' is a file; expected a folder"),
    cmd("eval --out under /proc", "eval", "ifeval", "--model", "echo", "--data", "{dir}/prompts.jsonl", "--out", "/proc/uniapl-eval",
        expected="--out: cannot write to the folder '/proc/uniapl-eval'"),
    cmd("eval --model missing", "eval", "ifeval", "--model", "{dir}/no-model", "--data", "{dir}/prompts.jsonl", "--out", "{dir}/e",
        expected="model folder '{dir}/no-model' does not exist"),
    cmd("eval --model pickle only", "eval", "ifeval", "--model", "{dir}/" + PICKLE_ONLY, "--data", "{dir}/prompts.jsonl", "--out", "{dir}/e",
        expected="has its weights only as pickle"),
    cmd("eval --model truncated", "eval", "ifeval", "--model", "{dir}/" + TRUNCATED, "--data", "{dir}/prompts.jsonl", "--out", "{dir}/e",
        expected="model.safetensors: damaged safetensors file"),
    cmd("eval --responses is a folder", "eval", "ifeval", "--responses", "{dir}", "--data", "{dir}/prompts.jsonl",
        expected="{dir}: is a folder; expected a file"),
    # ---- data build-if ----
    cmd("build-if --n 0", "data", "build-if", "--n", "0", "--out", "{dir}/if.jsonl", expected="--n must be at least 1"),
    cmd("build-if --n -1", "data", "build-if", "--n", "-1", "--out", "{dir}/if.jsonl", expected="--n must be at least 1"),
    cmd("build-if --n abc", "data", "build-if", "--n", "abc", "--out", "{dir}/if.jsonl", expected="argument --n: invalid int value: 'abc'"),
    cmd("build-if --heldout -2", "data", "build-if", "--n", "2", "--heldout", "-2", "--heldout-out", "{dir}/h.jsonl", "--out", "{dir}/if.jsonl",
        expected="--heldout at least 0"),
    cmd("build-if --out is a folder", "data", "build-if", "--n", "2", "--out", "{dir}", expected="--out: '{dir}' is a folder; expected a file path"),
    cmd("build-if --out under a file", "data", "build-if", "--n", "2", "--out", "{dir}/afile.txt/if.jsonl",
        expected="--out: '{dir}/afile.txt' is a file; expected a folder"),
    cmd("build-if --out under /proc", "data", "build-if", "--n", "2", "--out", "/proc/uniapl/if.jsonl",
        expected="--out: cannot write to the folder '/proc/uniapl'"),
    cmd("build-if --heldout without --heldout-out", "data", "build-if", "--n", "2", "--heldout", "2", "--out", "{dir}/if.jsonl",
        expected="--heldout N and --heldout-out FILE go together"),
    cmd("build-if --heldout-out is a folder", "data", "build-if", "--n", "2", "--heldout", "2", "--heldout-out", "{dir}",
        "--out", "{dir}/if.jsonl", expected="--heldout-out: '{dir}' is a folder; expected a file path"),
    cmd("build-if --decontaminate none", "data", "build-if", "--n", "2", "--decontaminate", "none", "--out", "{dir}/if.jsonl",
        expected="argument --decontaminate: invalid choice: 'none'"),
    # ---- data attach-demos ----
    cmd("attach-demos --prompts missing", "data", "attach-demos", "--prompts", "{dir}/missing.jsonl", "--demos", "{dir}/demos.jsonl",
        "--out", "{dir}/o.jsonl", expected="{dir}/missing.jsonl: file not found"),
    cmd("attach-demos --demos missing", "data", "attach-demos", "--prompts", "{dir}/prompts.jsonl", "--demos", "{dir}/missing.jsonl",
        "--out", "{dir}/o.jsonl", expected="{dir}/missing.jsonl: file not found"),
    cmd("attach-demos completion is a number", "data", "attach-demos", "--prompts", "{dir}/prompts.jsonl", "--demos", "{dir}/d.jsonl",
        "--out", "{dir}/o.jsonl", files={"d.jsonl": _jsonl({"key": "k1", "completion": 5})},
        expected="{dir}/d.jsonl:1: field 'completion' must be a non-empty string or a list of messages"),
    cmd("attach-demos completion is empty", "data", "attach-demos", "--prompts", "{dir}/prompts.jsonl", "--demos", "{dir}/d.jsonl",
        "--out", "{dir}/o.jsonl", files={"d.jsonl": _jsonl({"key": "k1", "completion": " "})},
        expected="{dir}/d.jsonl:1: field 'completion' is empty"),
    cmd("attach-demos demo without key", "data", "attach-demos", "--prompts", "{dir}/prompts.jsonl", "--demos", "{dir}/d.jsonl",
        "--out", "{dir}/o.jsonl", files={"d.jsonl": _jsonl({"completion": "x"})}, expected="{dir}/d.jsonl:1: field 'key' is missing"),
    cmd("attach-demos demos not UTF-8", "data", "attach-demos", "--prompts", "{dir}/prompts.jsonl", "--demos", "{dir}/d.jsonl",
        "--out", "{dir}/o.jsonl", files={"d.jsonl": b'{"key": "k1", "completion": "caf\xe9"}\n'}, expected="{dir}/d.jsonl:1: not UTF-8 text"),
    cmd("attach-demos prompts not UTF-8", "data", "attach-demos", "--prompts", "{dir}/p.jsonl", "--demos", "{dir}/demos.jsonl",
        "--out", "{dir}/o.jsonl", files={"p.jsonl": b'{"key": "k1", "prompt": "caf\xe9"}\n'}, expected="{dir}/p.jsonl:1: not UTF-8 text"),
    cmd("attach-demos --out is a folder", "data", "attach-demos", "--prompts", "{dir}/prompts.jsonl", "--demos", "{dir}/demos.jsonl",
        "--out", "{dir}", expected="--out: '{dir}' is a folder; expected a file path"),
    # ---- teach ----
    cmd("teach --samples 0", "teach", "--prompts", "{dir}/prompts.jsonl", "--teacher", "{model}", "--out", "{dir}/t.jsonl", "--samples", "0",
        expected="--samples must be at least 1, got 0"),
    cmd("teach --temperature 0", "teach", "--prompts", "{dir}/prompts.jsonl", "--teacher", "{model}", "--out", "{dir}/t.jsonl",
        "--temperature", "0", expected="--temperature and --timeout must be > 0"),
    cmd("teach --top-p 1.5", "teach", "--prompts", "{dir}/prompts.jsonl", "--teacher", "{model}", "--out", "{dir}/t.jsonl",
        "--top-p", "1.5", expected="--top-p in (0, 1]"),
    cmd("teach --timeout 0", "teach", "--prompts", "{dir}/prompts.jsonl", "--teacher", "http://127.0.0.1:9/v1", "--out", "{dir}/t.jsonl",
        "--timeout", "0", expected="--temperature and --timeout must be > 0"),
    cmd("teach --prompts missing", "teach", "--prompts", "{dir}/missing.jsonl", "--teacher", "{model}", "--out", "{dir}/t.jsonl",
        expected="{dir}/missing.jsonl: file not found"),
    cmd("teach --prompts not UTF-8", "teach", "--prompts", "{dir}/p.jsonl", "--teacher", "{model}", "--out", "{dir}/t.jsonl",
        files={"p.jsonl": b'{"key": "k1", "prompt": "caf\xe9"}\n'}, expected="{dir}/p.jsonl:1: not UTF-8 text"),
    cmd("teach --prompts row without key", "teach", "--prompts", "{dir}/p.jsonl", "--teacher", "{model}", "--out", "{dir}/t.jsonl",
        files={"p.jsonl": _jsonl({"prompt": "x"})}, expected="{dir}/p.jsonl:1: field 'key' is missing"),
    cmd("teach --teacher missing", "teach", "--prompts", "{dir}/prompts.jsonl", "--teacher", "{dir}/no-model", "--out", "{dir}/t.jsonl",
        expected="model folder '{dir}/no-model' does not exist"),
    cmd("teach --teacher pickle only", "teach", "--prompts", "{dir}/prompts.jsonl", "--teacher", "{dir}/" + PICKLE_ONLY,
        "--out", "{dir}/t.jsonl", expected="has its weights only as pickle"),
    cmd("teach --out is a folder", "teach", "--prompts", "{dir}/prompts.jsonl", "--teacher", "{model}", "--out", "{dir}",
        expected="--out: '{dir}' is a folder; expected a file path"),
    cmd("teach --out under /proc", "teach", "--prompts", "{dir}/prompts.jsonl", "--teacher", "{model}", "--out", "/proc/uniapl/t.jsonl",
        expected="--out: cannot write to the folder '/proc/uniapl'"),
    cmd("teach earlier output not UTF-8", "teach", "--prompts", "{dir}/prompts.jsonl", "--teacher", "{model}", "--out", "{dir}/t.jsonl",
        files={"t.jsonl.status.jsonl": b'{"key": "caf\xe9"}\n'}, expected="{dir}/t.jsonl.status.jsonl:1: not UTF-8 text"),
    # ---- analyze ----
    cmd("analyze --max-new-tokens 0", "analyze", "--model", "{model}", "--expert", "{dir}/good.jsonl", "--out", "{dir}/a",
        "--max-new-tokens", "0", expected="--max-new-tokens must be at least 1, got 0"),
    cmd("analyze --temperature 0", "analyze", "--model", "{model}", "--expert", "{dir}/good.jsonl", "--out", "{dir}/a",
        "--temperature", "0", expected="--temperature must be > 0, got 0.0"),
    cmd("analyze --top-p 0", "analyze", "--model", "{model}", "--expert", "{dir}/good.jsonl", "--out", "{dir}/a",
        "--top-p", "0", expected="--top-p must be in (0, 1], got 0.0"),
    cmd("analyze --batch-size 0", "analyze", "--model", "{model}", "--expert", "{dir}/good.jsonl", "--out", "{dir}/a",
        "--batch-size", "0", expected="--batch-size must be at least 1, got 0"),
    cmd("analyze --limit 0", "analyze", "--model", "{model}", "--expert", "{dir}/good.jsonl", "--out", "{dir}/a",
        "--limit", "0", expected="--limit must be at least 1, got 0"),
    cmd("analyze --expert missing", "analyze", "--model", "{model}", "--expert", "{dir}/missing.jsonl", "--out", "{dir}/a",
        expected="data file '{dir}/missing.jsonl' does not exist"),
    cmd("analyze --expert not UTF-8", "analyze", "--model", "{model}", "--expert", "{dir}/e.jsonl", "--out", "{dir}/a",
        files={"e.jsonl": NOT_UTF8}, expected="{dir}/e.jsonl:1: not UTF-8 text"),
    cmd("analyze --expert without demonstrations", "analyze", "--model", "{model}", "--expert", "{dir}/e.jsonl", "--out", "{dir}/a",
        files={"e.jsonl": _jsonl({"prompt": "hi"})}, expected="no rows with an expert demonstration to analyze"),
    cmd("analyze --prompts not UTF-8", "analyze", "--model", "{model}", "--expert", "{dir}/good.jsonl", "--prompts", "{dir}/p.jsonl",
        "--out", "{dir}/a", files={"p.jsonl": NOT_UTF8}, expected="{dir}/p.jsonl:1: not UTF-8 text"),
    cmd("analyze --reward unknown", "analyze", "--model", "{model}", "--expert", "{dir}/good.jsonl", "--out", "{dir}/a",
        "--reward", "nope", expected="unknown reward 'nope'"),
    cmd("analyze --reward returns strings", "analyze", "--model", "{model}", "--expert", "{dir}/good.jsonl", "--out", "{dir}/a",
        "--reward", "fault_injection.returns_strings", "--max-new-tokens", "2", expected="reward 'fault_injection.returns_strings' returned 'good' (str)"),
    cmd("analyze --out is a file", "analyze", "--model", "{model}", "--expert", "{dir}/good.jsonl", "--out", "{dir}/afile.txt",
        expected="--out: '{dir}/afile.txt' is a file; expected a folder"),
    cmd("analyze --model missing", "analyze", "--model", "{dir}/no-model", "--expert", "{dir}/good.jsonl", "--out", "{dir}/a",
        expected="model folder '{dir}/no-model' does not exist"),
    cmd("analyze --model truncated", "analyze", "--model", "{dir}/" + TRUNCATED, "--expert", "{dir}/good.jsonl", "--out", "{dir}/a",
        expected="model.safetensors: damaged safetensors file"),
    # ---- report ----
    cmd("report on a missing run", "report", "{dir}/no-run", "--out", "{dir}/rep", expected="run folder '{dir}/no-run' does not exist"),
    cmd("report --out is a file", "report", "{dir}/r1", "--out", "{dir}/afile.txt", files={"r1/metrics.jsonl": _jsonl({"step": 1})},
        expected="--out: '{dir}/afile.txt' is a file; expected a folder"),
    cmd("report with metrics not UTF-8", "report", "{dir}/r1", "--out", "{dir}/rep", files={"r1/metrics.jsonl": b'{"step": 1, "x": "\xff"}\n'},
        expected="{dir}/r1/metrics.jsonl:1: not UTF-8 text"),
    cmd("report with metrics not JSON", "report", "{dir}/r1", "--out", "{dir}/rep", files={"r1/metrics.jsonl": b'{"step": 1}\n{"st\n{"step": 3}\n'},
        expected="{dir}/r1/metrics.jsonl:2: not valid JSON"),
    cmd("report with a bad config.yaml", "report", "{dir}/r1", "--out", "{dir}/rep", files={"r1/config.yaml": b"training: [1\n"},
        expected="{dir}/r1/config.yaml"),
    cmd("report with scores not JSON", "report", "{dir}/r1", "--out", "{dir}/rep",
        files={"r1/final/config.json": b"{}", "r1/final/ifeval_scores.json": b"{oops"}, expected="{dir}/r1/final/ifeval_scores.json:1: not valid JSON"),
    cmd("report with scores not UTF-8", "report", "{dir}/r1", "--out", "{dir}/rep",
        files={"r1/final/config.json": b"{}", "r1/final/ifeval_scores.json": b'{"a": "\xff"}'}, expected="{dir}/r1/final/ifeval_scores.json:1: not UTF-8"),
    cmd("report with one run twice", "report", "{dir}/a/run", "{dir}/a/run/", "--out", "{dir}/rep",
        files={"a/run/metrics.jsonl": _jsonl({"step": 1})}, expected="run folder '{dir}/a/run' is given twice"),
    # ---- compare ----
    cmd("compare config missing", "compare", "{dir}/nope.yaml", "--out", "{dir}/cmp", "--expert", "{dir}/good.jsonl",
        expected="config file '{dir}/nope.yaml' does not exist"),
    cmd("compare --algorithms empty", "compare", "{dir}/config.yaml", "--algorithms", ",", "--out", "{dir}/cmp", "--expert", "{dir}/good.jsonl",
        expected="--algorithms is empty"),
    cmd("compare --algorithms dpo", "compare", "{dir}/config.yaml", "--algorithms", "dpo", "--out", "{dir}/cmp", "--expert", "{dir}/good.jsonl",
        expected="algorithm.name: 'dpo' is not allowed"),
    cmd("compare --seeds a,b", "compare", "{dir}/config.yaml", "--seeds", "a,b", "--out", "{dir}/cmp",
        expected="argument --seeds: expected comma-separated integers, got 'a,b'"),
    cmd("compare --seeds -1", "compare", "{dir}/config.yaml", "--seeds=-1", "--out", "{dir}/cmp", "--expert", "{dir}/good.jsonl",
        expected="training.seed: must be in [0, 2**32 - 1], got -1"),
    cmd("compare --expert missing", "compare", "{dir}/config.yaml", "--out", "{dir}/cmp", "--expert", "{dir}/missing.jsonl",
        expected="expert file '{dir}/missing.jsonl' does not exist"),
    cmd("compare --out is a file", "compare", "{dir}/config.yaml", "--out", "{dir}/afile.txt", "--expert", "{dir}/good.jsonl",
        expected="--out: '{dir}/afile.txt' is a file; expected a folder"),
    cmd("compare --eval-limit 0", "compare", "{dir}/config.yaml", "--eval-limit", "0", "--out", "{dir}/cmp", "--expert", "{dir}/good.jsonl",
        expected="--eval-limit must be at least 1, got 0"),
    cmd("compare --eval-max-new-tokens 0", "compare", "{dir}/config.yaml", "--eval-max-new-tokens", "0", "--out", "{dir}/cmp",
        "--expert", "{dir}/good.jsonl", expected="--eval-max-new-tokens must be at least 1, got 0"),
    cmd("compare --analysis-prompts 0", "compare", "{dir}/config.yaml", "--analysis-prompts", "0", "--out", "{dir}/cmp",
        "--expert", "{dir}/good.jsonl", expected="--analysis-prompts must be at least 1, got 0"),
    cmd("compare --set bad", "compare", "{dir}/config.yaml", "--set", "training.max_steps=0", "--out", "{dir}/cmp",
        "--expert", "{dir}/good.jsonl", expected="training.max_steps: must be > 0"),
    cmd("compare config not UTF-8", "compare", "{dir}/bad.yaml", "--out", "{dir}/cmp", "--expert", "{dir}/good.jsonl",
        files={"bad.yaml": b"training:\n  seed: \xff\n"}, expected="config file {dir}/bad.yaml:2: not UTF-8 text"),
    # ---- AAPA: its discriminator, offline and in training ----
    cmd("discriminator without demonstrations", "discriminator", "train", "--data", "{dir}/prompts.jsonl", "--variant", "ngram",
        "--out", "{dir}/disc", expected="{dir}/prompts.jsonl: no row has a demonstration"),
    cmd("discriminator with missing negatives", "discriminator", "train", "--data", "{dir}/good.jsonl", "--variant", "ngram",
        "--negatives", "{dir}/missing.jsonl", "--out", "{dir}/disc", expected="data file '{dir}/missing.jsonl' does not exist"),
    cmd("discriminator with negatives to other prompts", "discriminator", "train", "--data", "{dir}/good.jsonl", "--variant", "ngram",
        "--negatives", "{dir}/other.jsonl", "--out", "{dir}/disc", files={"other.jsonl": _jsonl(_chat("Elsewhere.", "An answer."))},
        expected="{dir}/other.jsonl: no policy response to any prompt of {dir}/good.jsonl"),
    cmd("discriminator with negatives without responses", "discriminator", "train", "--data", "{dir}/good.jsonl", "--variant", "ngram",
        "--negatives", "{dir}/prompts.jsonl", "--out", "{dir}/disc", expected="a negative needs a 'completion'"),
    cmd("discriminator of an unknown variant", "discriminator", "train", "--data", "{dir}/good.jsonl", "--variant", "bert",
        "--out", "{dir}/disc", expected="argument --variant: invalid choice: 'bert'"),
    cmd("discriminator with a fine-tuned ngram", "discriminator", "train", "--data", "{dir}/good.jsonl", "--variant", "ngram",
        "--finetune-encoder", "--out", "{dir}/disc", expected="--finetune-encoder: only the minilm encoder is fine-tuned"),
    cmd("discriminator --heldout-fraction 1", "discriminator", "train", "--data", "{dir}/good.jsonl", "--variant", "ngram",
        "--heldout-fraction", "1", "--out", "{dir}/disc", expected="--heldout-fraction: must be in (0, 1), got 1.0"),
    cmd("discriminator --out is a file", "discriminator", "train", "--data", "{dir}/good.jsonl", "--out", "{dir}/afile.txt",
        expected="--out: '{dir}/afile.txt' is a file; expected a folder"),
    cmd("discriminator with a missing encoder", "discriminator", "train", "--data", "{dir}/good.jsonl", "--variant", "policy",
        "--encoder", "{dir}/no-model", "--out", "{dir}/disc", expected="model folder '{dir}/no-model' does not exist"),
    train("algorithm.name=grpo_aapa", expected="algorithm.anchor.path: algorithm 'grpo_aapa' adds AAPA's anchoring reward"),
    train("algorithm.name=staged_aapa", "algorithm.anchor.path={dir}/no-disc",
          expected="algorithm.anchor.path: the discriminator folder '{dir}/no-disc' does not exist"),
    train("algorithm.name=grpo_aapa", "algorithm.anchor.path={dir}", expected="algorithm.anchor.path: '{dir}' is not a discriminator folder"),
    train("algorithm.name=grpo_aapa", "algorithm.anchor.path={dir}/disc", files={"disc/discriminator.json": b"{}"},
          expected="algorithm.anchor.path: the discriminator folder is damaged: {dir}/disc/manifest.json: file not found"),
    train("algorithm.anchor.weight=-1", expected="algorithm.anchor.weight: must be >= 0, got -1.0"),
    train("algorithm.anchor.clip=0", expected="algorithm.anchor.clip: must be > 0"),
    train("algorithm.anchor.transform=tanh", expected="algorithm.anchor.transform: 'tanh' is not allowed"),
    train("algorithm.anchor.variant=bert", expected="algorithm.anchor.variant: 'bert' is not allowed"),
    train("algorithm.anchor.drift_sample=-1", expected="algorithm.anchor.drift_sample: must be >= 0"),
    # ---- eval ifbench ----
    cmd("ifbench row without a key", "eval", "ifbench", "--model", "{model}", "--out", "{dir}/ifb", "--data", "{dir}/bad.jsonl",
        files={"bad.jsonl": _jsonl({"prompt": "Write a poem."})}, expected="bad.jsonl:1: a row needs a 'key' and a non-empty 'prompt'"),
    cmd("ifbench file missing", "eval", "ifbench", "--model", "{model}", "--out", "{dir}/ifb", "--data", "{dir}/missing.jsonl",
        expected="{dir}/missing.jsonl: file not found"),
    cmd("ifbench --limit 0", "eval", "ifbench", "--model", "{model}", "--out", "{dir}/ifb", "--limit", "0",
        expected="--limit must be at least 1, got 0"),
    # ---- the command line itself ----
    cmd("no command", expected="the following arguments are required: COMMAND"),
    cmd("unknown command", "fly", expected="argument COMMAND: invalid choice: 'fly'"),
    cmd("unknown option", "train", "--fast", expected="unrecognized arguments: --fast"),
]


# ---- running a case ---------------------------------------------------------------------------------


def make_damaged_models(tiny_model: str, root: Path) -> None:
    """The pickle-only and truncated copies of the tiny model that some cases load."""
    import shutil

    import torch
    from safetensors.torch import load_file

    for name in (PICKLE_ONLY, TRUNCATED):
        shutil.copytree(tiny_model, root / name, dirs_exist_ok=True)
    torch.save(load_file(str(root / PICKLE_ONLY / "model.safetensors")), root / PICKLE_ONLY / "pytorch_model.bin")
    (root / PICKLE_ONLY / "model.safetensors").unlink()
    weights = root / TRUNCATED / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)


@dataclass
class Outcome:
    kind: str  # "clear", "traceback", "silent accept", "unclear"
    exit_code: int | None
    stderr: str


def run_case(case: Case, folder: Path, model: str, models: Path) -> Outcome:
    """Run the case's command line in this process, in `folder`, and sort out what happened."""
    from uniapl.cli import main

    for name, content in {**COMMON_FILES, **case.files}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content.replace(b"{dir}", str(folder).encode()).replace(b"{model}", model.encode()))
    for name in (PICKLE_ONLY, TRUNCATED):
        if not (folder / name).exists():
            (folder / name).symlink_to(models / name)
    def fill(text: str) -> str:
        return text.replace("{dir}", str(folder)).replace("{model}", model)

    argv = [fill(arg) for arg in case.argv]
    expected = fill(case.expected)
    stderr = io.StringIO()
    code: int | None
    cwd = os.getcwd()
    os.chdir(folder)  # a case that is accepted writes its default outputs here, not where the table runs
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 -- what the user would see as a traceback
            code = None
            traceback.print_exc(file=stderr)
        finally:
            os.chdir(cwd)
    text = stderr.getvalue()
    if code is None or "Traceback" in text:
        kind = "traceback"
    elif code == 0:
        kind = "silent accept"
    elif code == 2 and expected in text and sum("error:" in line for line in text.splitlines()) == 1:
        kind = "clear"
    else:
        kind = "unclear"
    return Outcome(kind, code, text)


def count_bad_inputs() -> Counter:
    """Every case of the table, each in its own folder; prints the cases that are not clear errors."""
    from uniapl.models import resolve_model_path

    model = resolve_model_path("tiny-random-smollm2")
    tally: Counter = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        models = Path(tmp) / "models"
        make_damaged_models(model, models)
        for number, case in enumerate(CASES):
            folder = Path(tmp) / f"case{number}"
            folder.mkdir()
            outcome = run_case(case, folder, model, models)
            tally[outcome.kind] += 1
            if outcome.kind != "clear":
                print(f"{outcome.kind}: {case.name}\n  exit {outcome.exit_code}: {outcome.stderr.strip()[-600:]}\n  expected: {case.expected}")
    return tally


# ---- kill -9 trials -----------------------------------------------------------------------------------


def train_command(run: Path, model: str, data: Path, steps: int, launcher: Sequence[str] = (sys.executable,),
                  extra: Sequence[str] = ()) -> list[str]:
    """`uniapl train` of a short uniapl run that saves every step, started by `launcher` (python, or accelerate's
    launcher of several processes), with `extra` settings."""
    settings = [f"model.name={model}", "model.dtype=fp32", f"data.prompts={data}", "rewards=[{name: no_commas}]",
                "algorithm.name=uniapl", "algorithm.discriminator.warmup_steps=0", "algorithm.alpha_adv_warmup_steps=0",
                "rollout.max_new_tokens=8", "rollout.num_generations=2", "training.prompts_per_step=2", "training.demos_per_step=2",
                f"training.max_steps={steps}", "training.save_steps=1", "training.learning_rate=1e-3",
                "training.progress=false", "training.tensorboard=false", f"training.output_dir={run}", *extra]
    return [*launcher, "-m", "uniapl", "train"] + [x for s in settings for x in ("--set", s)]


def _checkpoints_being_written(run: Path) -> bool:
    folder = run / "checkpoints"
    return folder.is_dir() and any(p.name.startswith(".step-") for p in folder.iterdir())


def kill9_trial(run: Path, reference: Path, model: str, data: Path, steps: int, during_save: bool, delay: float,
                launcher: Sequence[str] = (sys.executable,), extra: Sequence[str] = ()) -> bool:
    """Train, kill -9 every process of the run (while a checkpoint folder is being written, or after `delay` seconds),
    then `--resume` to the end; whether the final weights are bit-identical to `reference`'s and the metrics have
    each step once."""
    from safetensors.torch import load_file
    import torch

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = train_command(run, model, data, steps, launcher, extra)
    # its own process group: the launcher's workers die with it, as on a machine that goes down
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    start = time.monotonic()
    while process.poll() is None:
        if (during_save and _checkpoints_being_written(run)) or (not during_save and time.monotonic() - start > delay):
            os.killpg(process.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait()
    resumed = subprocess.run(command + ["--resume"], env=env, capture_output=True, text=True)
    if resumed.returncode != 0:
        print(resumed.stderr[-2000:])
        return False
    a, b = load_file(str(reference / "final" / "model.safetensors")), load_file(str(run / "final" / "model.safetensors"))
    steps_logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if not identical or steps_logged != list(range(1, steps + 1)):
        print(f"{run}: weights {'identical' if identical else 'differ'}, steps logged {steps_logged}\n{resumed.stderr[-2000:]}")
        return False
    return True


def train_to_the_end(run: Path, model: str, data: Path, steps: int, launcher: Sequence[str] = (sys.executable,),
                     extra: Sequence[str] = (), resume: bool = False) -> None:
    command = train_command(run, model, data, steps, launcher, extra) + (["--resume"] if resume else [])
    result = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def kill9_trials(trials: int, steps: int = 3) -> tuple[int, int]:
    """(trials, bit-identical resumes): every other trial is killed while a checkpoint is being written."""
    import random

    from uniapl.models import resolve_model_path

    model = resolve_model_path("tiny-random-smollm2")
    rng = random.Random(0)
    identical = 0
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.jsonl"
        data.write_bytes(COMMON_FILES["good.jsonl"])
        reference = Path(tmp) / "reference"
        train_to_the_end(reference, model, data, steps)
        for trial in range(trials):
            ok = kill9_trial(Path(tmp) / f"trial{trial}", reference, model, data, steps, during_save=trial % 2 == 0,
                             delay=rng.uniform(4.0, 9.0))
            identical += ok
            print(f"trial {trial}: {'bit-identical' if ok else 'DIFFERENT'}", flush=True)
    return trials, identical


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("bad-inputs", help="run the bad-input table and count the outcomes")
    kill = sub.add_parser("kill9", help="kill -9 training runs and resume them")
    kill.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    if args.what == "bad-inputs":
        tally = count_bad_inputs()
        print(f"cases {len(CASES)}: " + ", ".join(f"{kind} {tally[kind]}" for kind in ("clear", "traceback", "silent accept", "unclear")))
    else:
        trials, identical = kill9_trials(args.trials)
        print(f"kill -9 trials {trials}: bit-identical resumes {identical}")


if __name__ == "__main__":
    main()
