"""teach: best-of-K in rounds, the quality funnel, crash-safe resume, a local teacher, a real
OpenAI-compatible server and a fault-injecting one."""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import pytest

from uniapl.cli import main
from uniapl.datatools.build_if import build_if_rows
from uniapl.io import write_jsonl_atomic
from uniapl.datatools.quality import QualityRules, judge, loop_is_certain, passes, repeated_ngram_rate
from uniapl.datatools.repair import task_text
from uniapl.datatools.teach import (
    DROPPED, FAILED, REPAIRED, SAMPLED, EndpointTeacher, LocalTeacher, Refused, Request, Sample, Sampling, TeacherUnavailable,
    attach_demonstrations, status_path, teach,
)
from uniapl.errors import UniaplError
from uniapl.generation import SamplingParams
from uniapl.models import resolve_model_path

TINY = "tiny-random-smollm2"
RULES = QualityRules()
ROW = {
    "key": "k",
    "prompt": [{"role": "user", "content": "Describe tide pools to a child in lowercase letters and add a postscript starting with P.S."}],
    "instruction_id_list": ["change_case:english_lowercase", "detectable_content:postscript"],
    "kwargs": [{}, {"postscript_marker": "P.S."}],
}
GOOD = ("tide pools are small worlds of water left behind on the rocks when the sea goes out. crabs hide under "
        "stones and anemones wave their arms.\np.s. bring a bucket next time.")


def verdicts(text, ended=True, row=ROW):
    return judge(row, text, ended, RULES)[0]


def test_the_funnel_keeps_a_real_answer_and_rejects_each_kind_of_bad_sample():
    assert passes(verdicts(GOOD))
    assert not verdicts(GOOD, ended=False)["ended"]  # ran into the length cap
    assert not verdicts(GOOD.replace("tide", "Tide"))["strict"]
    loop = "tide pools are nice. " * 12 + "\np.s. bye."
    assert repeated_ngram_rate(loop, 4) > 0.5 and not verdicts(loop)["no_loop"]
    echo = "describe tide pools to a child in lowercase letters and add a postscript starting with p.s. ok\np.s. ok"
    assert not verdicts(echo)["no_echo"]
    assert not verdicts("cacheslace\np.s. hi")["content"]
    french = ("les cuvettes de marée sont de petits mondes d'eau laissés sur les rochers quand la mer se retire "
              "et les crabes se cachent sous les pierres.\np.s. apporte un seau.")
    postscript_only = {**ROW, "instruction_id_list": ROW["instruction_id_list"][1:], "kwargs": ROW["kwargs"][1:]}
    assert verdicts(french, row=postscript_only)["strict"] and not verdicts(french, row=postscript_only)["language"]


def test_a_sample_is_given_up_only_once_no_continuation_could_pass_the_loop_filter():
    loop = "the tide comes in and the tide goes out " * 8
    assert repeated_ngram_rate(loop, 4) > RULES.max_repeated_ngrams
    assert loop_is_certain(ROW, loop, tokens_left=10, rules=RULES)
    # with room left, enough new words could still bring the rate under the threshold
    assert not loop_is_certain(ROW, loop, tokens_left=400, rules=RULES)
    assert not loop_is_certain(ROW, GOOD, tokens_left=0, rules=RULES)
    two = {**ROW, "instruction_id_list": ["combination:two_responses"], "kwargs": [{}]}
    assert not loop_is_certain(two, loop, tokens_left=0, rules=RULES)  # judged per response, at the end


def test_the_filters_follow_what_the_prompt_asks():
    repeat = {"key": "r", "prompt": [{"role": "user", "content": "Say why kites fly. First repeat the request word for word without change."}],
              "instruction_id_list": ["combination:repeat_prompt"], "kwargs": [{"prompt_to_repeat": "Say why kites fly."}]}
    answer = "Say why kites fly. Kites fly because the wind pushes against the tilted sail and lifts it while the line holds it in place."
    assert passes(verdicts(answer, row=repeat))  # repeating the request is asked for, so it is no echo
    short = {"key": "s", "prompt": [{"role": "user", "content": "Is chess fun? Answer with one of the following options: ..."}],
             "instruction_id_list": ["detectable_format:constrained_response"], "kwargs": [{}]}
    assert passes(verdicts("My answer is yes.", row=short))  # a yes/no answer format needs no 15 words
    two = {"key": "t", "prompt": [{"role": "user", "content": "Give two different answers."}],
           "instruction_id_list": ["combination:two_responses"], "kwargs": [{}]}
    first = "Kites fly because wind lifts the sail while the string holds it at an angle against the moving air."
    second = "A kite is a small wing: air flowing over it makes lift, and the tether keeps it from simply drifting away."
    assert passes(verdicts(f"{first}\n******\n{second}", row=two))  # two answers on one topic are not a loop


class ScriptedTeacher:
    """A stand-in teacher that answers each request from a script: (prompt index, sample number) -> Sample."""

    def __init__(self, script, chunk_size=2):
        self.script, self.chunk_size, self.requests = script, chunk_size, []

    def draw(self, requests):
        self.requests.append([(r.prompt_index, r.seed) for r in requests])
        return [self.script(r) for r in requests]


def _prompt_rows(tmp_path, n=3, row=ROW):
    path = tmp_path / "p.jsonl"
    write_jsonl_atomic(path, [{**row, "key": f"k{i}"} for i in range(n)])
    return path


def test_rounds_stop_a_prompt_once_enough_samples_pass_and_keep_the_most_likely_one(tmp_path):
    sampling = Sampling(samples=8, round_size=2, enough=2, seed=0)
    likely = GOOD.replace("bucket", "net")
    first_round = iter([Sample(GOOD, True, -3.0), Sample(likely, True, -0.5)])

    def script(request):  # prompt 0 passes from the start; prompt 1 never; prompt 2 is refused by the endpoint
        if request.prompt_index == 2:
            return Refused("HTTP 400: bad request")
        return next(first_round) if request.prompt_index == 0 else Sample("no", True, -1.0)

    teacher = ScriptedTeacher(script, chunk_size=3)
    out = tmp_path / "out.jsonl"
    stats = teach(str(_prompt_rows(tmp_path)), str(out), teacher, sampling, progress=False)
    statuses = {s["key"]: s for s in map(json.loads, status_path(out).read_text().splitlines())}
    assert statuses["k0"]["drawn"] == 2 and statuses["k0"]["outcome"] == SAMPLED  # stopped after its first round
    assert statuses["k1"]["drawn"] == 8 and statuses["k1"]["outcome"] == DROPPED  # drew all K
    assert statuses["k2"]["outcome"] == FAILED and len(statuses["k2"]["refused"]) == 8
    assert statuses["k1"]["funnel"] == {"ended": 8, "strict": 0, "no_loop": 0, "no_echo": 0, "content": 0, "language": 0}
    assert [len(r) for r in teacher.requests] == [6, 4, 4, 4]  # rounds of 2 per unfinished prompt
    rows = {r["key"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert rows["k0"]["completion"][0]["content"] == likely and "completion" not in rows["k1"]
    assert stats["prompts"] == 3 and stats[SAMPLED] == 1 and stats[FAILED] == 1 and stats["samples"] == 10

    # a rerun retries only the prompt the endpoint refused
    teacher = ScriptedTeacher(lambda r: Sample(GOOD, True, -1.0), chunk_size=3)
    stats = teach(str(_prompt_rows(tmp_path)), str(out), teacher, sampling, progress=False)
    assert {idx for batch in teacher.requests for idx, _ in batch} == {2}
    assert stats[SAMPLED] == 2 and stats[FAILED] == 0 and stats["prompts"] == 3


POSTSCRIPT_ROW = {**ROW, "instruction_id_list": ROW["instruction_id_list"][1:], "kwargs": ROW["kwargs"][1:]}
# a complete draft that misses only the postscript
ALMOST = GOOD.replace("\np.s. bring a bucket next time.", " the water is cold but clear. you can see tiny fish dart between the weeds.")


def _statuses(out):
    return {s["key"]: s for s in map(json.loads, status_path(out).read_text().splitlines())}


def test_rule_assisted_keeps_passing_samples_rewrites_complete_drafts_and_drops_the_rest(tmp_path):
    sampling = Sampling(samples=4, round_size=2, enough=1)
    rows = [{**POSTSCRIPT_ROW, "key": f"k{i}"} for i in range(4)]
    prompts = tmp_path / "p.jsonl"
    write_jsonl_atomic(prompts, rows)
    loop = "tide pools are nice and tide pools are fun. " * 12
    drafts = {0: Sample(GOOD, True, -1.0), 1: Sample(ALMOST, True, -1.0), 2: Sample(ALMOST, False, -1.0), 3: Sample(loop, True, -1.0)}
    teacher = ScriptedTeacher(lambda r: drafts[r.prompt_index], chunk_size=4)

    plain = teach(str(prompts), str(tmp_path / "plain.jsonl"), teacher, sampling, progress=False)
    assert plain[SAMPLED] == 1 and plain[REPAIRED] == 0  # nothing is rewritten unless asked

    out = tmp_path / "assisted.jsonl"
    stats = teach(str(prompts), str(out), teacher, sampling, rule_assisted=True, progress=False)
    statuses = _statuses(out)
    assert {k: s["outcome"] for k, s in statuses.items()} == {"k0": SAMPLED, "k1": REPAIRED, "k2": DROPPED, "k3": DROPPED}
    assert statuses["k1"]["rules"] == ["detectable_content:postscript"] and statuses["k1"]["drawn"] == 2  # stopped after one round
    assert statuses["k1"]["added"] and all(a in ALMOST for a in statuses["k1"]["added"])  # the postscript is a draft sentence
    assert statuses["k2"]["rewritten"] == 0 and statuses["k3"]["rewritten"] == 0  # cut off, looping: never rewritten
    assert statuses["k2"]["complete"] == 0 and statuses["k3"]["complete"] == 0
    assert statuses["k0"]["rules"] == [] and statuses["k0"]["complete"] == 2 and statuses["k0"]["rewritten"] == 0
    kept = {r["key"]: r["completion"][0]["content"] for r in map(json.loads, out.read_text().splitlines()) if "completion" in r}
    assert set(kept) == {"k0", "k1"} and kept["k0"] == GOOD and "p.s. " in kept["k1"].lower()
    assert passes(verdicts(kept["k1"], row=POSTSCRIPT_ROW))
    assert stats["rules"] == {"detectable_content:postscript": 1} and stats["prompts_with_complete_draft"] == 2
    assert stats["per_instruction"]["detectable_content:postscript"] | {"raw_pass_rate": None} == {
        "n": 4, "raw_pass_rate": None, "demonstrations": 2, "with_complete_draft": 2, SAMPLED: 1, REPAIRED: 1}

    # a rerun draws nothing for the prompts that have a status
    again = ScriptedTeacher(lambda r: drafts[r.prompt_index], chunk_size=4)
    assert teach(str(prompts), str(out), again, sampling, rule_assisted=True, progress=False) == stats and again.requests == []


def test_a_rewrite_that_fails_a_quality_filter_is_not_kept_and_its_reason_is_recorded(tmp_path):
    row = {**ROW, "prompt": [{"role": "user", "content": "Describe tide pools to a child."}],
           "instruction_id_list": ["keywords:forbidden_words"], "kwargs": [{"forbidden_words": ["tide", "fish", "cold"]}]}
    prompts = tmp_path / "p.jsonl"
    write_jsonl_atomic(prompts, [row])
    out = tmp_path / "o.jsonl"
    teacher = ScriptedTeacher(lambda r: Sample(ALMOST, True, -1.0))
    stats = teach(str(prompts), str(out), teacher, Sampling(samples=2, round_size=2), rule_assisted=True, progress=False)
    status = _statuses(out)["k"]
    assert stats[DROPPED] == 1 and status["complete"] == 2 and status["rewritten"] == 2 and status["rewrites_passing"] == 0
    # without the sentences that hold a forbidden word, 9 words are left: strict passes, the content filter does not
    assert status["refusals"] == {"quality: content": 2} and stats["refusals"] == status["refusals"]


def test_drafts_can_be_asked_for_without_the_instruction_text(prompts_file, tmp_path):
    asked = {}

    def script(request):
        asked.setdefault(request.row["key"], set()).add(request.prompt[0]["content"])
        return Sample(ALMOST, True, -1.0)

    sampling = Sampling(samples=2, round_size=2)
    teach(str(prompts_file), str(tmp_path / "o.jsonl"), ScriptedTeacher(script, 4), sampling, rule_assisted=True, draft_prompt="task",
          progress=False)
    rows = list(map(json.loads, prompts_file.read_text().splitlines()))
    assert asked == {row["key"]: {task_text(row)} for row in rows}
    assert all(task_text(row) != row["prompt"][0]["content"] for row in rows)
    with pytest.raises(UniaplError, match="--draft-prompt"):
        teach(str(prompts_file), str(tmp_path / "x.jsonl"), ScriptedTeacher(script), sampling, draft_prompt="bare", progress=False)
    with pytest.raises(UniaplError, match="needs --rule-assisted"):
        teach(str(prompts_file), str(tmp_path / "x.jsonl"), ScriptedTeacher(script), sampling, draft_prompt="task", progress=False)


def test_length_budget_fits_an_at_least_n_words_instruction():
    sampling = Sampling(params=SamplingParams(max_new_tokens=384))
    long_row = {**ROW, "instruction_id_list": ["length_constraints:number_words"], "kwargs": [{"num_words": 500, "relation": "at least"}]}
    assert sampling.length_budget(ROW) == 384 and sampling.length_budget(long_row) == 864


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory):
    rows, _, _ = build_if_rows(4, seed=11)
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    write_jsonl_atomic(path, rows)
    return path


class CrashingTeacher:
    """A teacher that dies on its second call, as a killed run would."""

    def __init__(self, teacher):
        self.teacher, self.chunk_size, self.calls = teacher, teacher.chunk_size, 0

    def draw(self, requests):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.teacher.draw(requests)


def _by_key(path):
    return sorted(path.read_text().splitlines())


def test_local_teacher_crash_loses_nothing_and_rerun_matches_an_uninterrupted_run(prompts_file, tmp_path):
    sampling = Sampling(samples=2, round_size=2, seed=3, params=SamplingParams(max_new_tokens=6, temperature=1.0))
    teacher = LocalTeacher(TINY, sampling, dtype="fp32", batch_size=4)
    assert teacher.chunk_size == 2
    whole = tmp_path / "whole.jsonl"
    stats = teach(str(prompts_file), str(whole), teacher, sampling, progress=False)
    assert stats["prompts"] == 4 and stats["samples"] == 8 and stats[DROPPED] == 4  # random weights never pass
    assert set(stats["per_instruction"]) == {i for r in map(json.loads, prompts_file.read_text().splitlines()) for i in r["instruction_id_list"]}

    # two runs over disjoint ranges of the file draw the samples one run draws
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    teach(str(prompts_file), str(first), teacher, sampling, progress=False, limit=3)
    teach(str(prompts_file), str(second), teacher, sampling, progress=False, start=3)
    assert sorted(first.read_text().splitlines() + second.read_text().splitlines()) == _by_key(whole)
    assert attach_demonstrations(str(prompts_file), [str(first), str(second)]) == attach_demonstrations(str(prompts_file), str(whole))

    resumed = tmp_path / "resumed.jsonl"
    with pytest.raises(KeyboardInterrupt):
        teach(str(prompts_file), str(resumed), CrashingTeacher(teacher), sampling, progress=False)
    assert len(resumed.read_text().splitlines()) == 2  # the first chunk survived
    with resumed.open("a") as f:  # and a half-written row from the crash
        f.write('{"key": "half')
    teach(str(prompts_file), str(resumed), teacher, sampling, progress=False)
    assert _by_key(resumed) == _by_key(whole)
    assert _by_key(status_path(resumed)) == _by_key(status_path(whole))
    for row in map(json.loads, whole.read_text().splitlines()):
        assert set(row) <= {"key", "prompt", "instruction_id_list", "kwargs", "completion"}


def test_local_teacher_rule_assisted_runs_resumes_and_records_each_prompt(prompts_file, tmp_path, capsys):
    sampling = Sampling(samples=2, round_size=2, seed=3, params=SamplingParams(max_new_tokens=6, temperature=1.0))
    teacher = LocalTeacher(TINY, sampling, dtype="fp32", batch_size=4)
    whole, resumed = tmp_path / "whole.jsonl", tmp_path / "resumed.jsonl"
    teach(str(prompts_file), str(whole), teacher, sampling, rule_assisted=True, draft_prompt="task", progress=False)
    with pytest.raises(KeyboardInterrupt):
        teach(str(prompts_file), str(resumed), CrashingTeacher(teacher), sampling, rule_assisted=True, draft_prompt="task", progress=False)
    assert len(status_path(resumed).read_text().splitlines()) == 2
    stats = teach(str(prompts_file), str(resumed), teacher, sampling, rule_assisted=True, draft_prompt="task", progress=False)
    assert _by_key(status_path(resumed)) == _by_key(status_path(whole)) and _by_key(resumed) == _by_key(whole)
    statuses = list(_statuses(resumed).values())
    assert len(statuses) == 4 and stats["prompts"] == 4 and stats["samples"] == 8
    for status in statuses:  # six random tokens are never a complete draft
        assert status["outcome"] == DROPPED and status["complete"] == status["rewritten"] == 0 and status["rules"] == [] and status["refusals"] == {}

    out = tmp_path / "cli.jsonl"
    code = main(["teach", "--prompts", str(prompts_file), "--teacher", TINY, "--dtype", "fp32", "--samples", "2", "--round-size", "2",
                 "--max-new-tokens", "6", "--rule-assisted", "--draft-prompt", "task", "--limit", "2", "--out", str(out)])
    assert code == 0 and "samples that passed or were complete drafts 0 (prompts with one: 0)" in capsys.readouterr().out
    assert len(_statuses(out)) == 2


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
    sampling = Sampling(samples=2, round_size=2, params=SamplingParams(max_new_tokens=8))
    teacher = EndpointTeacher(openai_server, sampling, timeout=60, retries=1, concurrency=2)
    assert teacher.model == resolve_model_path(TINY)  # the first model the server lists
    request = Request({**ROW, "prompt": [{"role": "user", "content": "Say hi."}]}, seed=1, max_new_tokens=8, prompt_index=0)
    samples = teacher.draw([request, replace(request, seed=2)])
    assert len(samples) == 2 and all(isinstance(s, Sample) and isinstance(s.text, str) for s in samples)
    assert teacher.supports_n is not None  # learned from the first two-sample call

    out = tmp_path / "endpoint.jsonl"
    code = main(["teach", "--prompts", str(prompts_file), "--teacher", openai_server, "--samples", "2", "--round-size", "2",
                 "--max-new-tokens", "8", "--concurrency", "2", "--limit", "3", "--out", str(out)])
    assert code == 0
    assert sorted(json.loads(line)["key"] for line in out.read_text().splitlines()) == [f"if-11-{i:05d}" for i in range(3)]
    assert "3 prompts:" in capsys.readouterr().out


class FaultyServer(http.server.ThreadingHTTPServer):
    """An OpenAI-compatible stand-in on 127.0.0.1 that answers each chat request by the first word of its prompt."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), FaultyHandler)
        self.calls: dict[str, int] = {}
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def _answer(n, text="a fine answer"):
    return {"choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"} for i in range(n)]}


class FaultyHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _send(self, code, body: bytes, length=None):
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self._send(200, json.dumps({"data": [{"id": "faulty"}]}).encode())

    def do_POST(self):
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = payload["messages"][0]["content"].split()[0]
        calls = self.server.calls[mode] = self.server.calls.get(mode, 0) + 1
        n = payload.get("n", 1)
        if mode == "flaky" and calls == 1:  # a 500, then fine
            return self._send(500, b"overloaded")
        if mode == "bad":
            return self._send(400, b'{"error": "context too long"}')
        if mode == "nochoices":
            return self._send(200, b'{"object": "chat.completion"}')
        if mode == "number":
            return self._send(200, json.dumps({"choices": [{"message": {"content": 5}}]}).encode())
        if mode == "latin1":
            return self._send(200, '{"choices": "caf\u00e9"}'.encode("latin-1"))
        if mode == "cut":  # the body ends before its Content-Length
            body = json.dumps(_answer(n)).encode()
            return self._send(200, body[:20], length=len(body))
        if mode == "trickle":  # one byte every 0.6 s: each read is quick, the whole answer is not
            self.send_response(200)
            self.send_header("Content-Length", "200")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b" ")
                    self.wfile.flush()
                    threading.Event().wait(0.6)  # not time.sleep, which the test stubs out for backoff
            except BrokenPipeError:  # the client gave up, as it should
                pass
            return None
        return self._send(200, json.dumps(_answer(1 if mode == "one" else n)).encode())


@pytest.fixture
def faulty_server():
    server = FaultyServer()
    yield server
    server.shutdown()


def _draw(teacher, word, k=2):
    row = {**ROW, "prompt": [{"role": "user", "content": f"{word} please"}]}
    requests = [Request(row, seed=i, max_new_tokens=8, prompt_index=0) for i in range(k)]
    return teacher.draw(requests)


def test_endpoint_retries_what_is_transient_and_refuses_only_the_request_that_is_bad(faulty_server, monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda seconds: None)  # no backoff waits in the test
    teacher = EndpointTeacher(faulty_server.url, Sampling(), timeout=1.5, retries=2, concurrency=2)
    assert teacher.model == "faulty"
    assert all(isinstance(s, Sample) and s.ended for s in _draw(teacher, "flaky"))  # retried after the 500
    assert teacher.supports_n is True
    for word, reason in [("bad", "HTTP 400"), ("nochoices", "no choices"), ("number", "not a string"), ("latin1", "not UTF-8 JSON"),
                         ("cut", "IncompleteRead")]:
        samples = _draw(teacher, word)
        assert all(isinstance(s, Refused) and reason in s.reason for s in samples), (word, samples)
    assert faulty_server.calls["bad"] == 1  # a 4xx is not retried
    assert faulty_server.calls["nochoices"] == 3  # a garbled answer is, twice
    started = time.monotonic()
    with pytest.raises(TeacherUnavailable, match="deadline"):
        _draw(teacher, "trickle", k=1)
    assert time.monotonic() - started < 3 * 1.5 + 2  # three tries, each bounded by its deadline
    # a server that ignores `n` gets the rest of the samples one request at a time
    teacher = EndpointTeacher(faulty_server.url, Sampling(), timeout=5, retries=0)
    assert len(_draw(teacher, "one", k=3)) == 3 and teacher.supports_n is False


def test_a_refused_prompt_is_skipped_and_finished_prompts_are_saved(faulty_server, tmp_path, capsys):
    rows = [{**ROW, "key": f"k{i}", "prompt": [{"role": "user", "content": f"{word} {i}"}]} for i, word in enumerate(["ok", "bad", "ok"])]
    prompts = tmp_path / "p.jsonl"
    write_jsonl_atomic(prompts, rows)
    out = tmp_path / "out.jsonl"
    code = main(["teach", "--prompts", str(prompts), "--teacher", faulty_server.url, "--samples", "2", "--out", str(out)])
    assert code == 0 and "1 refused by the endpoint" in capsys.readouterr().out
    outcomes = {s["key"]: s["outcome"] for s in map(json.loads, status_path(out).read_text().splitlines())}
    assert outcomes == {"k0": DROPPED, "k1": FAILED, "k2": DROPPED}


def test_unreachable_endpoint_fails_clearly_after_retries(capsys, tmp_path):
    port = _free_port()  # nothing listens there
    with pytest.raises(UniaplError, match=r"failed after 2 tries"):
        EndpointTeacher(f"http://127.0.0.1:{port}/v1", Sampling(), timeout=2, retries=1)
    code = main(["teach", "--prompts", str(_prompt_rows(tmp_path)), "--teacher", f"http://127.0.0.1:{port}/v1", "--retries", "0",
                 "--out", str(tmp_path / "o.jsonl")])
    assert code == 2 and "failed after 1 try" in capsys.readouterr().err


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
