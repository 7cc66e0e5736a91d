"""teach: best-of-K with the verifier, repair, crash-safe resume, a local teacher and a real OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from uniapl.cli import main
from uniapl.datatools.build_if import build_if_rows
from uniapl.datatools.jsonl import write_jsonl_atomic
from uniapl.datatools.teach import (
    DROPPED, REPAIRED, SAMPLED, EndpointTeacher, LocalTeacher, Sampling, attach_demonstrations, judge, status_path, teach,
)
from uniapl.errors import UniaplError
from uniapl.models import resolve_model_path
from uniapl.rollout import SamplingParams

TINY = "tiny-random-smollm2"
ROW = {
    "key": "k",
    "prompt": [{"role": "user", "content": "Greet me in lowercase letters and add a postscript starting with P.S."}],
    "instruction_id_list": ["change_case:english_lowercase", "detectable_content:postscript"],
    "kwargs": [{}, {"postscript_marker": "P.S."}],
}


def test_best_of_k_keeps_the_sample_that_passes():
    outcome, kept, raw = judge(ROW, ["HELLO THERE", "hello there\np.s. see you", "hello"], use_repair=True)
    assert (outcome, kept, raw) == (SAMPLED, "hello there\np.s. see you", [True, True])


def test_repair_fixes_the_best_sample_and_is_kept_only_if_it_passes():
    outcome, kept, raw = judge(ROW, ["Hello there"], use_repair=True)
    assert outcome == REPAIRED and raw == [False, False]
    assert kept == "hello there\n\np.s. thank you for reading."
    assert judge(ROW, ["Hello there"], use_repair=False)[:2] == (DROPPED, None)
    keyword_row = {**ROW, "instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": ["zebra"]}]}
    assert judge(keyword_row, ["no such word"], use_repair=True)[:2] == (DROPPED, None)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    rows, _, _ = build_if_rows(4, seed=11)
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    write_jsonl_atomic(path, rows)
    return path


class CrashingTeacher:
    """A teacher that dies on its second chunk, as a killed run would."""

    def __init__(self, teacher):
        self.teacher, self.chunk_size, self.calls = teacher, teacher.chunk_size, 0

    def sample(self, indexed_rows):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.teacher.sample(indexed_rows)


def test_local_teacher_crash_loses_nothing_and_rerun_matches_an_uninterrupted_run(prompts_file, tmp_path):
    teacher = LocalTeacher(TINY, Sampling(samples=2, seed=3, params=SamplingParams(max_new_tokens=6, temperature=1.0)), dtype="fp32", batch_size=2)
    whole = tmp_path / "whole.jsonl"
    stats = teach(str(prompts_file), str(whole), teacher, progress=False)
    assert stats["prompts"] == 4 and stats[SAMPLED] + stats[REPAIRED] + stats[DROPPED] == 4
    assert set(stats["per_instruction"]) == {i for r in map(json.loads, prompts_file.read_text().splitlines()) for i in r["instruction_id_list"]}

    resumed = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        teach(str(prompts_file), str(resumed), CrashingTeacher(teacher), progress=False)
    assert len(resumed.read_text().splitlines()) == 2  # the first chunk survived
    with resumed.open("a") as f:  # and a half-written row from the crash
        f.write('{"key": "half')
    teach(str(prompts_file), str(resumed), teacher, progress=False)
    assert resumed.read_text() == whole.read_text()
    assert status_path(resumed).read_text() == status_path(whole).read_text()
    for row in map(json.loads, whole.read_text().splitlines()):
        assert set(row) <= {"key", "prompt", "instruction_id_list", "kwargs", "completion"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def openai_server():
    """`transformers serve` (a real OpenAI-compatible server) on 127.0.0.1, serving the tiny model folder."""
    port = _free_port()
    folder = resolve_model_path(TINY)
    command = [str(Path(sys.executable).parent / "transformers"), "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    server = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    pytest.fail(f"transformers serve did not start: {server.stderr.read().decode()[-2000:]}")
                time.sleep(1)
        yield url + "/v1"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_endpoint_teacher_against_a_real_server(openai_server, prompts_file, tmp_path, capsys):
    teacher = EndpointTeacher(openai_server, Sampling(samples=2, params=SamplingParams(max_new_tokens=8)), timeout=60, retries=1, concurrency=2)
    assert teacher.model == resolve_model_path(TINY)  # the first model the server lists
    samples = teacher.sample([(0, {"prompt": [{"role": "user", "content": "Say hi."}]})])
    assert len(samples) == 1 and len(samples[0]) == 2 and all(isinstance(s, str) for s in samples[0])

    out = tmp_path / "endpoint.jsonl"
    code = main(["teach", "--prompts", str(prompts_file), "--teacher", openai_server, "--samples", "2", "--max-new-tokens", "8",
                 "--concurrency", "2", "--limit", "3", "--out", str(out)])
    assert code == 0
    assert [json.loads(line)["key"] for line in out.read_text().splitlines()] == [f"if-11-{i:05d}" for i in range(3)]
    assert "3 prompts:" in capsys.readouterr().out


def test_unreachable_endpoint_fails_clearly_after_retries():
    port = _free_port()  # nothing listens there
    with pytest.raises(UniaplError, match=r"failed after 2 tries"):
        EndpointTeacher(f"http://127.0.0.1:{port}/v1", Sampling(), timeout=2, retries=1)


def test_attach_demos_gives_every_prompt_and_the_solved_completions(prompts_file, tmp_path):
    demos = tmp_path / "demos.jsonl"
    first = json.loads(prompts_file.read_text().splitlines()[0])
    write_jsonl_atomic(demos, [{**first, "completion": [{"role": "assistant", "content": "done"}]}])
    rows, solved = attach_demonstrations(str(prompts_file), str(demos))
    assert len(rows) == 4 and solved == 1
    assert rows[0]["completion"][0]["content"] == "done" and all("completion" not in r for r in rows[1:])
    out = tmp_path / "all.jsonl"
    assert main(["data", "attach-demos", "--prompts", str(prompts_file), "--demos", str(demos), "--out", str(out)]) == 0
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows
