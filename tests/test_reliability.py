"""Faults injected on purpose (issue 11): bad inputs, damaged checkpoints, resumes with another config,
non-finite rewards and losses, half-written files, and kill -9 in the middle of a save."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import TOY_ROWS, chat_row, write_jsonl
from fault_injection import CASES, COMMON_FILES, config_file, kill9_trial, make_damaged_models, run_case, train, train_to_the_end
from safetensors.torch import load_file

from uniapl import UniAPLConfig, UniAPLTrainer
from uniapl.cli import main
from uniapl.errors import ConfigError, IntegrityError, UniaplError, UniaplWarning
from uniapl.io import read_resumable_jsonl, verify_manifest, write_folder_atomically


@pytest.fixture(scope="session")
def damaged_models(tiny_model, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("damaged-models")
    make_damaged_models(tiny_model, root)
    return root


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_is_one_clear_error(case, tiny_model, damaged_models, tmp_path):
    outcome = run_case(case, tmp_path, tiny_model, damaged_models)
    assert outcome.kind == "clear", f"{outcome.kind} (exit {outcome.exit_code}):\n{outcome.stderr}"


def test_the_tables_config_and_train_settings_work_as_they_are(tiny_model, damaged_models, tmp_path):
    """So that each case's error comes from its fault alone: without it, the same command trains."""
    for name, case in (("config", config_file("no fault", b"", "")), ("train", train())):
        (tmp_path / name).mkdir()
        assert run_case(case, tmp_path / name, tiny_model, damaged_models).exit_code == 0


def test_a_fresh_start_does_not_overwrite_a_saved_run(tiny_overrides, tmp_path):
    """Nothing saved is lost: starting over in a run's folder needs --resume, or overwrite_output_dir."""
    from uniapl import UniAPLConfig, UniAPLTrainer

    config = UniAPLConfig.from_yaml(None, tiny_overrides + ["training.max_steps=1"])
    UniAPLTrainer(args=config).train()
    metrics = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(UniaplError, match="already holds a run .final/, metrics.jsonl.; continue it with --resume"):
        UniAPLTrainer(args=config).train()
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == metrics
    overwrite = UniAPLConfig.from_yaml(None, tiny_overrides + ["training.max_steps=1", "training.overwrite_output_dir=true"])
    UniAPLTrainer(args=overwrite).train()


def test_the_table_covers_every_command():
    commands = {case.argv[0] for case in CASES if case.argv}
    assert len(CASES) >= 120 and commands == {"train", "discriminator", "eval", "data", "teach", "analyze", "report", "compare", "fly"}


# ---- checkpoints -------------------------------------------------------------------------------------------


def run_settings(tiny_model: str, data: Path, out: Path, *extra: str) -> list[str]:
    return [f"model.name={tiny_model}", "model.dtype=fp32", f"data.prompts={data}", "rewards=[{name: no_commas}]",
            "rollout.max_new_tokens=8", "rollout.num_generations=2", "training.prompts_per_step=2", "training.demos_per_step=2",
            "training.max_steps=2", "training.save_steps=1", "training.learning_rate=1e-3", "training.progress=false",
            "training.tensorboard=false", f"training.output_dir={out}", *extra]


@pytest.fixture(scope="module")
def saved_run(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """A finished 2-step run with checkpoints step-000001 and step-000002, and its data file."""
    root = tmp_path_factory.mktemp("saved-run")
    data = write_jsonl(root / "paired.jsonl", [chat_row(p, c) for p, c in TOY_ROWS])
    UniAPLTrainer(args=UniAPLConfig.from_yaml(None, run_settings(tiny_model, data, root / "run"))).train()
    return root / "run", data


def copy_of(saved_run, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(saved_run[0], run)
    return run


def resume(tiny_model, data, run, *extra) -> Path:
    return UniAPLTrainer(args=UniAPLConfig.from_yaml(None, run_settings(tiny_model, data, run, *extra))).train(resume=True)


def flip_bytes(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + count] = bytes(b ^ 0xFF for b in data[middle : middle + count])
    path.write_bytes(bytes(data))


DAMAGE = {
    "flipped bytes in the weights": (lambda f: flip_bytes(f / "model" / "model.safetensors"), "changed since it was saved"),
    "truncated optimizer state": (lambda f: (f / "optimizer.safetensors").write_bytes((f / "optimizer.safetensors").read_bytes()[:100]),
                                  "optimizer.safetensors: 100 bytes"),
    "missing rng state": (lambda f: (f / "rng.safetensors").unlink(), "rng.safetensors: missing"),
    "garbage trainer state": (lambda f: (f / "trainer_state.json").write_text("{oops"), "trainer_state.json: "),
    "missing manifest": (lambda f: (f / "manifest.json").unlink(), "manifest.json: file not found"),
    "manifest not JSON": (lambda f: (f / "manifest.json").write_bytes(b"\xff\xfe"), "manifest.json:1: not UTF-8"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(damage, saved_run, tiny_model, tmp_path):
    """The resumed run says which checkpoint it skipped and why, and ends exactly where the run that was never
    damaged ended (step 2 is trained again from step 1)."""
    run = copy_of(saved_run, tmp_path)
    harm, named = DAMAGE[damage]
    harm(run / "checkpoints" / "step-000002")
    with pytest.warns(UniaplWarning, match=rf"checkpoint step-000002 is damaged \(.*{named}.*\); resuming from step-000001"):
        resume(tiny_model, saved_run[1], run)
    a, b = load_file(str(saved_run[0] / "final" / "model.safetensors")), load_file(str(run / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [row["step"] for row in read_resumable_jsonl(run / "metrics.jsonl")] == [1, 2]


def test_no_intact_checkpoint_is_an_error_naming_each_damaged_file(saved_run, tiny_model, tmp_path):
    run = copy_of(saved_run, tmp_path)
    flip_bytes(run / "checkpoints" / "step-000002" / "model" / "model.safetensors")
    (run / "checkpoints" / "step-000001" / "optimizer.json").write_text("{}")
    with pytest.raises(IntegrityError, match=r"no intact checkpoint to resume from: .*step-000002/model/model.safetensors: .*"
                                            r"step-000001/optimizer.json: 2 bytes"):
        resume(tiny_model, saved_run[1], run)


def test_latest_may_only_name_a_sibling_folder(saved_run, tiny_model, tmp_path):
    """An absolute path to another run's checkpoint is refused, not followed."""
    run = copy_of(saved_run, tmp_path)
    (run / "checkpoints" / "latest").write_text(str(saved_run[0] / "checkpoints" / "step-000002"))
    with pytest.raises(IntegrityError, match="it may only name a checkpoint folder beside it"):
        resume(tiny_model, saved_run[1], run)


def test_resume_cuts_a_half_written_metrics_line_and_removes_unfinished_saves(saved_run, tiny_model, tmp_path):
    run = copy_of(saved_run, tmp_path)
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss/sf')
    leftover = run / "checkpoints" / ".step-000003.tmp-x1y2"
    (leftover / "model").mkdir(parents=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resume(tiny_model, saved_run[1], run, "training.max_steps=3")
    messages = [str(w.message) for w in caught if issubclass(w.category, UniaplWarning)]
    assert any("removed 1 unfinished save(s) of an interrupted run: .step-000003.tmp-x1y2" in m for m in messages), messages
    assert any("metrics.jsonl: cut a half-written last line" in m for m in messages), messages
    assert not leftover.exists()
    assert [row["step"] for row in read_resumable_jsonl(run / "metrics.jsonl")] == [1, 2, 3]


# ---- resume with another config ------------------------------------------------------------------------


def test_resume_refuses_changes_that_make_another_run_and_lists_each(saved_run, tiny_model, tmp_path):
    run = copy_of(saved_run, tmp_path)
    config_before = (run / "config.yaml").read_text()
    with pytest.raises(ConfigError) as error:
        resume(tiny_model, saved_run[1], run, "training.learning_rate=0.1", "algorithm.name=grpo")
    message = str(error.value)
    assert "training.learning_rate: 0.001 -> 0.1" in message and "algorithm.name: 'uniapl' -> 'grpo'" in message
    assert "A resume may change: training.max_steps" in message
    assert (run / "config.yaml").read_text() == config_before  # refused before anything is written


def test_resume_refuses_max_steps_below_the_step_reached(saved_run, tiny_model, tmp_path):
    run = copy_of(saved_run, tmp_path)
    with pytest.raises(ConfigError, match="training.max_steps: 1 is below step 2, which the checkpoint has reached"):
        resume(tiny_model, saved_run[1], run, "training.max_steps=1")


def test_resume_applies_allowed_changes(saved_run, tiny_model, tmp_path, capsys):
    """More steps under a linear schedule: the lr of the resumed steps follows the new length, and the new save
    cadence is used."""
    run = copy_of(saved_run, tmp_path)
    resume(tiny_model, saved_run[1], run, "training.max_steps=6", "training.save_steps=2", "training.save_total_limit=5")
    out = capsys.readouterr().out
    assert "resuming step-000002 with these changes: " in out and "; training.max_steps: 2 -> 6; training.save_steps: 1 -> 2" in out
    assert sorted(p.name for p in (run / "checkpoints").glob("step-*")) == ["step-000001", "step-000002", "step-000004", "step-000006"]

    linear = tmp_path / "linear"
    UniAPLTrainer(args=UniAPLConfig.from_yaml(None, run_settings(tiny_model, saved_run[1], linear, "training.lr_scheduler=linear"))).train()
    resume(tiny_model, saved_run[1], linear, "training.lr_scheduler=linear", "training.max_steps=4")
    lrs = [row["lr"] for row in read_resumable_jsonl(linear / "metrics.jsonl")]
    # steps 1-2 ran on a 2-step schedule (1e-3, 5e-4); steps 3-4 on the 4-step one: 1e-3 * (1 - 2/4), 1e-3 * (1 - 3/4),
    # where the saved optimizer's lr would have been the old schedule's end, 0
    assert lrs == pytest.approx([1e-3, 5e-4, 5e-4, 2.5e-4])


def test_resume_keeps_the_dtype_auto_picked_when_the_run_started(tiny_model, tmp_path, monkeypatch, capsys):
    """model.dtype auto depends on the machine; a run resumed on another one goes on in the dtype it was trained in."""
    from uniapl import models

    data = write_jsonl(tmp_path / "paired.jsonl", [chat_row(p, c) for p, c in TOY_ROWS])
    run = tmp_path / "run"
    monkeypatch.setattr(models, "native_bf16", lambda: False)
    UniAPLTrainer(args=UniAPLConfig.from_yaml(None, run_settings(tiny_model, data, run, "model.dtype=auto", "training.max_steps=1"))).train()
    assert json.loads((run / "checkpoints" / "step-000001" / "trainer_state.json").read_text())["dtype"] == "fp32"

    monkeypatch.setattr(models, "native_bf16", lambda: True)  # a machine where auto picks bf16
    trainer = UniAPLTrainer(args=UniAPLConfig.from_yaml(None, run_settings(tiny_model, data, run, "model.dtype=auto")))
    assert trainer.models.dtype == "bf16"
    trainer.train(resume=True)
    assert "resuming step-000001 in fp32, the dtype it was trained in (model.dtype auto would pick bf16 on this hardware)" in capsys.readouterr().out
    assert trainer.models.dtype == "fp32" and trainer.models.rollout_model is trainer.models.policy  # no bf16 copy for generation
    assert json.loads((run / "checkpoints" / "step-000002" / "trainer_state.json").read_text())["dtype"] == "fp32"


# ---- non-finite values -----------------------------------------------------------------------------------


def test_a_diverging_run_skips_non_finite_updates_then_stops_with_finite_weights(tiny_model, tmp_path):
    """lr 1e30 makes the weights huge after one update, so the next losses overflow: those updates are skipped,
    recorded as NaN in metrics.jsonl (not null), and the run stops after 2 in a row."""
    data = write_jsonl(tmp_path / "paired.jsonl", [chat_row(p, c) for p, c in TOY_ROWS])
    config = UniAPLConfig.from_yaml(None, run_settings(tiny_model, data, tmp_path / "run", "training.learning_rate=1e30",
                                                       "training.max_grad_norm=1e30", "training.max_steps=6", "training.save_steps=0",
                                                       "training.max_consecutive_skipped_updates=2"))
    trainer = UniAPLTrainer(args=config)
    with pytest.warns(UniaplWarning, match="skipped an update whose gradient norm is not finite"):
        with pytest.raises(UniaplError, match=r"training stopped at step \d: 2 updates in a row had a non-finite gradient norm"):
            trainer.train()
    assert all(torch.isfinite(p).all() for p in trainer.models.unwrapped().parameters())
    text = (tmp_path / "run" / "metrics.jsonl").read_text()
    assert "null" not in text and ('"grad_norm": NaN' in text or '"grad_norm": Infinity' in text)
    rows = read_resumable_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert rows[-1]["skipped_updates"] == 1 and not math.isfinite(rows[-1]["grad_norm"])


def test_the_discriminator_skips_an_update_with_a_non_finite_gradient():
    from uniapl.config import DiscriminatorConfig
    from uniapl.train.discriminators import DiscriminatorInputs, HeadDiscriminator

    discriminator = HeadDiscriminator(8, DiscriminatorConfig(width=4), "cpu")
    before = [p.detach().clone() for p in discriminator.module.parameters()]
    update = discriminator.update(DiscriminatorInputs(torch.full((2, 8), float("nan")), torch.zeros(2, 8)))
    assert math.isnan(update.loss) and not update.skipped
    assert all(torch.equal(a, b) for a, b in zip(before, discriminator.module.parameters()))


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_rewards_are_an_error_naming_the_function_and_row(value, tiny_model, tmp_path):
    data = write_jsonl(tmp_path / "paired.jsonl", [chat_row(p, c) for p, c in TOY_ROWS])

    def my_reward(prompts, completions, **kwargs):
        return [float(value)] * len(completions)

    trainer = UniAPLTrainer(reward_funcs=[my_reward], args=UniAPLConfig.from_yaml(None, run_settings(tiny_model, data, tmp_path / "run")))
    with pytest.raises(UniaplError, match=rf"reward 'my_reward' returned {value} for completion 0 \(prompt {data}:\d\)"):
        trainer.train()
    assert not (tmp_path / "run" / "final").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_debug_shows_the_traceback_of_the_users_reward(tiny_model, tmp_path, capsys):
    data = write_jsonl(tmp_path / "paired.jsonl", [chat_row(p, c) for p, c in TOY_ROWS])
    args = ["train"] + [x for s in run_settings(tiny_model, data, tmp_path / "run", "rewards=[{name: fault_injection.raises}]")
                        for x in ("--set", s)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--debug shows the traceback of the ValueError" in err
    assert main(args + ["--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and 'raise ValueError("my reward is broken")' in err


# ---- files -------------------------------------------------------------------------------------------------


def test_a_whole_last_line_without_newline_is_kept_and_a_cut_one_dropped(tmp_path):
    whole, cut = tmp_path / "whole.jsonl", tmp_path / "cut.jsonl"
    whole.write_text('{"a": 1}\n{"a": 2}')
    cut.write_text('{"a": 1}\n{"a": ')
    assert read_resumable_jsonl(whole) == [{"a": 1}, {"a": 2}] and whole.read_text().endswith("}\n")
    with pytest.warns(UniaplWarning, match="cut a half-written last line"):
        assert read_resumable_jsonl(cut) == [{"a": 1}]


def test_a_failed_folder_write_keeps_what_was_there(tmp_path):
    target = tmp_path / "folder"
    write_folder_atomically(target, lambda staging: (staging / "a.txt").write_text("old"))

    def fail(staging: Path) -> None:
        (staging / "a.txt").write_text("new")
        raise OSError(28, "No space left on device")

    with pytest.raises(UniaplError, match="could not write .*folder': No space left on device; what was saved there before is unchanged"):
        write_folder_atomically(target, fail)
    assert (target / "a.txt").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["folder"]


def test_pickle_weights_load_only_when_allowed(damaged_models, monkeypatch):
    from uniapl.models import ALLOW_PICKLE_ENV, load_model

    with pytest.raises(UniaplError, match="has its weights only as pickle"):
        load_model(str(damaged_models / "pickle-model"))
    monkeypatch.setenv(ALLOW_PICKLE_ENV, "1")
    assert load_model(str(damaged_models / "pickle-model")).config.num_hidden_layers == 2


# ---- kill -9 -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_during_a_save_then_resume_is_bit_identical(tiny_model, tmp_path):
    """A real SIGKILL while a checkpoint folder is being written, then `uniapl train --resume` in a new process."""
    data = tmp_path / "data.jsonl"
    data.write_bytes(COMMON_FILES["good.jsonl"])
    train_to_the_end(tmp_path / "reference", tiny_model, data, steps=3)
    assert kill9_trial(tmp_path / "killed", tmp_path / "reference", tiny_model, data, 3, during_save=True, delay=0)
    verify_manifest(tmp_path / "killed" / "checkpoints" / "step-000003")


def test_trainer_state_reads_back_what_it_saved_and_the_layout_saved_before_the_multiplier_had_its_own(tmp_path):
    from uniapl.train.state import STATE_FILE, TrainerState

    state = TrainerState(global_step=3, stage_step=3, prompt_cursor=12, demo_cursor=8, multiplier={"lambda": 0.7, "c_ema": 1.2},
                         scheduler={"last_epoch": 3}, dtype="bf16", rng={"numpy": [1]})
    state.save(tmp_path)
    assert TrainerState.load(tmp_path) == state
    old = {k: v for k, v in json.loads((tmp_path / STATE_FILE).read_text()).items() if k not in ("multiplier", "dtype")}
    (tmp_path / STATE_FILE).write_text(json.dumps({**old, "lambda": 0.7, "c_ema": 1.2}))
    assert TrainerState.load(tmp_path) == dataclasses.replace(state, dtype=None)
