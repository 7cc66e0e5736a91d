"""`uniapl compare`: which steps run and which are skipped, and a real tiny grid trained end to end."""

from __future__ import annotations

import json
import statistics
from dataclasses import replace

import pytest
import yaml
from markdown_tables import cell, table_with
from synthetic_runs import analysis_result, eval_scores, make_run

from uniapl import compare as compare_module
from uniapl.compare import CompareSettings, compare
from uniapl.io import read_json
from uniapl.cli import main
from uniapl.errors import UniaplError

SYNTHETIC_PROMPTS = eval_scores(0, 0)["n_prompts"]  # the IFEval limit the synthetic scores stand for


def tiny_config(tmp_path, data_file) -> str:
    config = {
        "model": {"name": "tiny-random-smollm2", "dtype": "fp32"},
        "data": {"prompts": str(data_file), "max_prompt_length": 64, "max_demo_length": 32},
        "rewards": [{"name": "no_commas"}],
        "rollout": {"num_generations": 2, "max_new_tokens": 8},
        "algorithm": {"discriminator": {"width": 16}},
        "training": {"max_steps": 2, "prompts_per_step": 2, "demos_per_step": 2, "tensorboard": False, "progress": False},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def instruction_rows(path):
    rows = [
        {"key": f"k{i}", "prompt": [{"role": "user", "content": f"Describe item {i} without any commas."}],
         "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}],
         "completion": [{"role": "assistant", "content": f"Item {i} is small and round and blue."}]}
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_only_unfinished_steps_run(tmp_path, monkeypatch):
    """A finished run with results is left alone; a finished run without an eval is only evaluated and analyzed."""
    out = tmp_path / "grid"
    out.mkdir()
    make_run(out, "sft-seed1", "sft", 1, eval_scores(0.2, 0.3), analysis_result([1, 2], [2, 3]))
    make_run(out, "sft-seed2", "sft", 2, None, None)
    calls = []

    def fake_train(config):
        calls.append(("train", config.algorithm.name, config.training.seed))
        make_run(out, f"{config.algorithm.name}-seed{config.training.seed}", config.algorithm.name, config.training.seed)

    def fake_eval(final, settings, data=None, out_dir=None):
        calls.append(("heldout" if data else "evaluate", final.parent.name))
        (out_dir or final).mkdir(exist_ok=True)
        ((out_dir or final) / "ifeval_scores.json").write_text(json.dumps(eval_scores(0.1, 0.2)))

    def fake_analyze(final, settings):
        calls.append(("analyze", final.parent.name))
        (final / "analysis").mkdir()
        (final / "analysis" / "analysis.json").write_text(json.dumps(analysis_result([1, 2], [2, 3])))

    monkeypatch.setattr(compare_module, "train_run", fake_train)
    monkeypatch.setattr(compare_module, "evaluate_run", fake_eval)
    monkeypatch.setattr(compare_module, "analyze_run", fake_analyze)
    data = instruction_rows(tmp_path / "data.jsonl")
    settings = CompareSettings(algorithms=("sft", "grpo"), seeds=(1, 2), expert=str(data), eval_limit=SYNTHETIC_PROMPTS)
    report = compare(tiny_config(tmp_path, data), out, settings, log=lambda line: None)
    assert calls == [
        ("evaluate", "sft-seed2"), ("analyze", "sft-seed2"),
        ("train", "grpo", 1), ("evaluate", "grpo-seed1"), ("analyze", "grpo-seed1"),
        ("train", "grpo", 2), ("evaluate", "grpo-seed2"), ("analyze", "grpo-seed2"),
    ]
    assert (report / "report.md").is_file() and (report / "report.html").is_file()

    # tuning: the held-out split only; IFEval and the analysis are never run
    calls.clear()
    tuning = CompareSettings(algorithms=("grpo",), seeds=(0,), expert=str(data), heldout=str(data), skip=("ifeval", "analyze"))
    compare(tiny_config(tmp_path, data), out, tuning, log=lambda line: None)
    assert calls == [("train", "grpo", 0), ("heldout", "grpo-seed0")]

    # one lane of a grid: its runs, and no report over them alone
    (report / "report.md").unlink()
    lane = CompareSettings(algorithms=("grpo",), seeds=(3,), expert=str(data), skip=("report",))
    assert compare(tiny_config(tmp_path, data), out, lane, log=lambda line: None) is None
    assert ("train", "grpo", 3) in calls and not (report / "report.md").exists()


def test_results_without_weights_are_not_trained_again(tmp_path, monkeypatch):
    """A run restored from its published results has no weights; it is trained only if a result is missing."""
    out = tmp_path / "grid"
    out.mkdir()
    make_run(out, "sft-seed1", "sft", 1, eval_scores(0.2, 0.3), analysis_result([1, 2], [2, 3]), finished=False)
    make_run(out, "sft-seed2", "sft", 2, eval_scores(0.2, 0.3), None, finished=False)
    trained = []
    monkeypatch.setattr(compare_module, "train_run", lambda config: trained.append(config.training.seed))
    monkeypatch.setattr(compare_module, "evaluate_run", lambda *args, **kwargs: pytest.fail("evaluated a result that exists"))
    monkeypatch.setattr(compare_module, "analyze_run", lambda final, settings: None)
    data = instruction_rows(tmp_path / "data.jsonl")
    compare(tiny_config(tmp_path, data), out, CompareSettings(("sft",), (1, 2), expert=str(data), eval_limit=SYNTHETIC_PROMPTS), log=lambda line: None)
    assert trained == [2]  # seed 2 lacks its analysis, which needs the model

    # the held-out split asked for and missing: the model is needed again
    trained.clear()
    monkeypatch.setattr(compare_module, "evaluate_run", lambda *args, **kwargs: None)
    compare(tiny_config(tmp_path, data), out, CompareSettings(("sft",), (1,), expert=str(data), heldout=str(data), eval_limit=SYNTHETIC_PROMPTS, skip=("report",)),
            log=lambda line: None)
    assert trained == [1]

    # every result skipped: training is all that is asked for
    trained.clear()
    compare(tiny_config(tmp_path, data), out, CompareSettings(("sft",), (1,), expert=str(data), skip=("heldout", "ifeval", "analyze", "report")),
            log=lambda line: None)
    assert trained == [1]

    # every step any call asked for is recorded, so a snapshot knows what the run still lacks
    assert read_json(out / "sft-seed1/compare_steps.json") == {"steps": ["heldout", "ifeval", "analyze"]}
    assert compare_module.missing_results(out / "sft-seed1") == ["heldout"]
    assert compare_module.missing_results(out / "sft-seed2") == ["analyze"]


def test_results_made_with_other_settings_are_an_error(tmp_path, monkeypatch):
    """A saved result from another protocol is never reused silently; the batch size, which only splits work, may differ."""
    out = tmp_path / "grid"
    out.mkdir()
    data = instruction_rows(tmp_path / "data.jsonl")
    settings = CompareSettings(("sft",), (1,), expert=str(data), eval_limit=SYNTHETIC_PROMPTS, eval_max_new_tokens=384, dtype="bf16", skip=("report",))
    analysis = {**analysis_result([1, 2], [2, 3]), **compare_module.analysis_request(settings)}
    analysis["settings"]["batch_size"] = 7
    make_run(out, "sft-seed1", "sft", 1, {**eval_scores(0.2, 0.3), "max_new_tokens": 384, "dtype": "bf16"}, analysis)
    for step in ("train_run", "evaluate_run", "analyze_run"):
        monkeypatch.setattr(compare_module, step, lambda *args, **kwargs: pytest.fail("redid a step whose result exists"))
    config = tiny_config(tmp_path, data)
    compare(config, out, settings, log=lambda line: None)

    scores = out / "sft-seed1" / "final" / "ifeval_scores.json"
    with pytest.raises(UniaplError, match=r"ifeval_scores.json was made with other settings .*'max_new_tokens': \(384, 1280\)"):
        compare(config, out, replace(settings, eval_max_new_tokens=1280), log=lambda line: None)
    with pytest.raises(UniaplError, match=r"'n_prompts': \(20, 541\)"):
        compare(config, out, replace(settings, eval_limit=None), log=lambda line: None)
    with pytest.raises(UniaplError, match=r"analysis.json was made with other settings .*'settings.reward': \('ifeval_strict', None\)"):
        compare(config, out, replace(settings, analysis_reward=None), log=lambda line: None)
    assert json.loads(scores.read_text())["max_new_tokens"] == 384  # nothing saved was touched


def test_a_result_lacking_a_requested_key_counts_unless_every_key_is_asked_for(tmp_path):
    """Results made before a setting was recorded still count; a discriminator asked for since is scored again."""
    path = tmp_path / "result.json"
    path.write_text(json.dumps({"ngram": {"folder": "a/ngram"}}))
    request = {"ngram": {"folder": "a/ngram"}, "minilm": {"folder": "b/minilm"}}
    assert compare_module.result_done(path, request)
    assert not compare_module.result_done(path, request, every_key=True)
    assert compare_module.result_done(path, {"ngram": {"folder": "a/ngram"}}, every_key=True)
    assert not compare_module.result_done(tmp_path / "absent.json", request)
    with pytest.raises(UniaplError, match=r"result.json was made with other settings \{'ngram.folder': \('a/ngram', 'c/ngram'\)\}"):
        compare_module.result_done(path, {"ngram": {"folder": "c/ngram"}}, every_key=True)


def test_bad_inputs_fail_before_any_training(tmp_path, monkeypatch):
    monkeypatch.setattr(compare_module, "train_run", lambda config: pytest.fail("trained despite a bad input"))
    data = instruction_rows(tmp_path / "data.jsonl")
    config = tiny_config(tmp_path, data)
    with pytest.raises(UniaplError, match="expert file"):
        compare(config, tmp_path / "grid", CompareSettings(("sft",), (1,), expert=str(tmp_path / "missing.jsonl")))
    with pytest.raises(UniaplError, match="algorithm.name"):
        compare(config, tmp_path / "grid", CompareSettings(("sft", "no_such_algorithm"), (1,), expert=str(data)))
    with pytest.raises(UniaplError, match="held-out prompts"):
        compare(config, tmp_path / "grid", CompareSettings(("sft",), (1,), expert=str(data), heldout=str(tmp_path / "none.jsonl")))
    with pytest.raises(UniaplError, match="steps that can be skipped: heldout, ifeval, ifbench, analyze, discriminators, report"):
        compare(config, tmp_path / "grid", CompareSettings(("sft",), (1,), expert=str(data), skip=("train",)))


def test_tiny_grid_end_to_end_and_resume(tmp_path, capsys):
    """Real training, IFEval and analysis on the tiny model; the second call only rewrites the report."""
    data = instruction_rows(tmp_path / "data.jsonl")
    out = tmp_path / "grid"
    argv = ["compare", tiny_config(tmp_path, data), "--algorithms", "sft,uniapl", "--seeds", "1,2", "--out", str(out),
            "--expert", str(data), "--eval-limit", "2", "--eval-max-new-tokens", "8", "--eval-batch-size", "4",
            "--analysis-prompts", "2", "--dtype", "fp32", "--heldout", str(data)]
    assert main(argv) == 0
    runs = [out / f"{a}-seed{s}" for a in ("sft", "uniapl") for s in (1, 2)]
    for run in runs:
        assert (run / "final" / "config.json").is_file()
        assert (run / "final" / "analysis" / "analysis.json").is_file()
        assert json.loads((run / "final" / "heldout" / "ifeval_scores.json").read_text())["n_prompts"] == 4
    assert yaml.safe_load((out / "uniapl-seed2" / "config.yaml").read_text())["training"]["seed"] == 2

    text = (out / "report" / "report.md").read_text()
    pooled = table_with(text, "prompt strict %", index=1)
    for algorithm in ("sft", "uniapl"):
        values = [100 * json.loads((out / f"{algorithm}-seed{s}" / "final" / "ifeval_scores.json").read_text())["prompt_level_strict_acc"] for s in (1, 2)]
        expected = f"{statistics.mean(values):.2f} ± {statistics.stdev(values) / 2**0.5:.2f} (n=2)"
        assert cell(pooled, algorithm, "prompt strict %") == expected
    assert (out / "report" / "curve_reward.png").is_file()  # uniapl logs rewards; sft does not
    heldout = json.loads((out / "sft-seed1" / "final" / "heldout" / "ifeval_scores.json").read_text())
    assert cell(table_with(text, "held-out reward"), "sft-seed1", "held-out prompt strict %") == f"{100 * heldout['prompt_level_strict_acc']:.2f}"

    stamps = {run: (run / "final" / "config.json").stat().st_mtime_ns for run in runs}
    capsys.readouterr()
    assert main(argv) == 0
    log = capsys.readouterr().out
    assert log.count("already done, skipped") == 4 * len(runs)
    assert {run: (run / "final" / "config.json").stat().st_mtime_ns for run in runs} == stamps


def test_ifbench_responses_join_the_results(tmp_path, capsys):
    """--ifbench: every final model's greedy responses to IFBench's 300 prompts, into final/ifbench, once."""
    data = instruction_rows(tmp_path / "data.jsonl")
    out = tmp_path / "grid"
    argv = ["compare", tiny_config(tmp_path, data), "--algorithms", "grpo", "--seeds", "1", "--out", str(out), "--expert", str(data),
            "--eval-limit", "2", "--eval-max-new-tokens", "4", "--eval-batch-size", "100", "--dtype", "fp32", "--skip", "analyze",
            "--ifbench"]
    assert main(argv) == 0
    summary = json.loads((out / "grpo-seed1" / "final" / "ifbench" / "ifbench_summary.json").read_text())
    assert summary["n_prompts"] == 300 and summary["scores"] is None and summary["max_new_tokens"] == 4
    assert len((out / "grpo-seed1" / "final" / "ifbench" / "ifbench_responses.jsonl").read_text().splitlines()) == 300
    capsys.readouterr()
    assert main(argv) == 0
    assert "grpo-seed1: ifbench: already done, skipped" in capsys.readouterr().out
