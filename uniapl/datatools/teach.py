"""Expert demonstrations: a best-of-K teacher whose samples must pass the verifier and quality filters.

For each prompt the teacher draws samples in rounds (`Sampling.round_size` at a time, at most
`Sampling.samples` in all), and a prompt stops once `Sampling.enough` samples pass the whole funnel of
`uniapl.datatools.quality`: ended on its own (EOS, not the length cap), passes every instruction
under the strict checker, no loop, no echo of the prompt, enough content, the right language.
Among the passing samples the one with the highest mean token log-prob under the teacher is kept:
the teacher's most confident verified answer, which is the least likely to carry a sampling accident
(a stray token drawn from the tail at temperature 1), and, per token, is not biased toward length.

The teacher is a local HF model (batched, seeded sampling) or an OpenAI-compatible chat endpoint
(concurrent requests, the `n` parameter where the server honours it, per-request deadlines,
retries). Each prompt is saved as soon as it is finished: its row (with a `completion` only where a
sample passed) to the output, its funnel to `<out>.status.jsonl`. A rerun continues with the prompts
that have no status yet.

The rule-assisted teacher (`rule_assisted`, off by default) keeps a sample that passes as it is
("sampled"); otherwise each complete draft (`quality.is_complete_draft`) is rewritten by
`uniapl.datatools.repair.rewrite`, and a rewrite is kept only if it passes strict and every quality
filter ("repaired": the one with the fewest rules fired, then the most likely draft). A prompt stops
once `Sampling.enough` samples or rewrites pass. Its status records the rules that fired, the text
they chose, and why the other drafts' rewrites failed. The drafts are sampled from the full prompt, or
with `draft_prompt="task"` from the prompt without its instruction text (`repair.task_text`).
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path

from uniapl.io import append_jsonl, read_jsonl, read_resumable_jsonl, write_json_atomic, write_jsonl_atomic
from uniapl.datatools.quality import FUNNEL, NUMBER_WORDS, QualityRules, is_complete_draft, judge, loop_is_certain, passes
from uniapl.datatools.repair import NoRewrite, Rewrite, rewrite, task_text
from uniapl.errors import UniaplError
from uniapl.generation import SamplingParams, encode_prompts, generate, sequence_seed
from uniapl.ifeval.prompts import load_constraint_rows

# outcome of a prompt: a sample passed, a rewritten draft passed (rule-assisted teacher only), none did,
# or the endpoint refused every request for it
SAMPLED, REPAIRED, DROPPED, FAILED = "sampled", "repaired", "dropped", "failed"
# what the drafts are sampled from: the whole prompt, or the prompt without its instruction text
DRAFT_PROMPTS = ("full", "task")
# tokens allowed per word asked for by "at least N words", plus room for a title and a sign-off
TOKENS_PER_WORD, LENGTH_MARGIN = 1.6, 64


@dataclass(frozen=True)
class Sampling:
    """Sample j of the prompt at file position i is seeded by (seed, j, i), so reruns repeat it."""

    samples: int = 8  # K: the most samples drawn for one prompt
    round_size: int = 4  # samples drawn per prompt and round
    enough: int = 2  # a prompt stops drawing once this many samples pass every filter
    seed: int = 0
    params: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=384, temperature=1.0, top_p=1.0))

    def length_budget(self, row: dict) -> int:
        """max_new_tokens for this prompt: the base budget, or more where it asks for at least N words."""
        budget = self.params.max_new_tokens
        for instruction, kwargs in zip(row["instruction_id_list"], row["kwargs"]):
            if instruction == NUMBER_WORDS and kwargs.get("relation") == "at least":
                budget = max(budget, math.ceil(kwargs["num_words"] * TOKENS_PER_WORD) + LENGTH_MARGIN)
        return budget


@dataclass(frozen=True)
class Request:
    row: dict  # the constraint row: its prompt, and the instructions a sample is judged by
    seed: int
    max_new_tokens: int
    prompt_index: int  # the prompt's position in the file: requests of one prompt may share a call
    messages: list[dict] | None = None  # what the teacher is asked, where it is not the row's prompt

    @property
    def prompt(self):
        return self.messages if self.messages is not None else self.row["prompt"]


@dataclass(frozen=True)
class Sample:
    text: str
    ended: bool  # stopped on its own, not at the length cap
    mean_logprob: float | None  # mean token log-prob under the teacher; None where the endpoint gives none


@dataclass(frozen=True)
class Refused:
    """A request the endpoint refused for good (a 4xx, or answers it could not parse after retries)."""

    reason: str


class LocalTeacher:
    """A local HF model, batched; seeded per sample, so reruns repeat it. A sample that can no longer pass
    the loop filter (`quality.loop_is_certain`, checked every LOOP_CHECK_EVERY tokens) stops early, as
    not ended, and leaves the batch."""

    LOOP_CHECK_EVERY = 16

    def __init__(self, model: str, sampling: Sampling, dtype: str = "auto", batch_size: int = 64, rules: QualityRules = QualityRules()):
        from uniapl.models import load_model_and_tokenizer

        self.model, self.tokenizer = load_model_and_tokenizer(model, dtype)
        self.params = sampling.params
        self.batch_size = batch_size
        self.rules = rules
        self.chunk_size = max(1, batch_size // sampling.round_size)  # prompts whose round fills one batch

    def draw(self, requests: list[Request]) -> list[Sample]:
        out: dict[int, Sample] = {}
        by_budget = sorted(range(len(requests)), key=lambda i: requests[i].max_new_tokens)
        for budget, group in groupby(by_budget, key=lambda i: requests[i].max_new_tokens):
            indices = list(group)

            def lost_to_a_loop(row: int, ids: list[int]) -> bool:
                if len(ids) % self.LOOP_CHECK_EVERY:
                    return False
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                return loop_is_certain(requests[indices[row]].row, text, budget - len(ids), self.rules)

            prompt_ids = encode_prompts(self.tokenizer, [requests[i].prompt for i in indices])
            completions = generate(self.model, self.tokenizer, prompt_ids, replace(self.params, max_new_tokens=budget),
                                   seeds=[requests[i].seed for i in indices], batch_size=self.batch_size, stop=lost_to_a_loop)
            for i, c in zip(indices, completions):
                mean = sum(c.logprobs) / len(c.logprobs) if c.logprobs else None
                out[i] = Sample(c.text, not c.truncated, mean)
        return [out[i] for i in range(len(requests))]


class TeacherUnavailable(UniaplError):
    """The endpoint could not be reached within the retries: stop, keeping every finished prompt."""


class _Unreachable(Exception):
    """A network error or a timeout: retried; if it persists the run stops."""


class _Refusal(Exception):
    """An answer that is not a usable one: an HTTP error, or a body that is not a chat completion.
    429, 5xx and garbled bodies are retried; if they persist, or at once for other 4xx, that request
    is refused and the run goes on."""

    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


class EndpointTeacher:
    """An OpenAI-compatible `/v1/chat/completions` server, called from a thread pool.

    Each call has a deadline: `timeout` seconds for the whole answer, however slowly it trickles in
    (checked after every read, and no read waits longer than the time left). Failures are retried
    with exponential backoff; then an unreachable server stops the run (`TeacherUnavailable`, with
    every finished prompt saved), while a refused request costs only that sample.
    """

    def __init__(self, url: str, sampling: Sampling, model: str | None = None, timeout: float = 120.0, retries: int = 3,
                 concurrency: int = 4):
        self.base_url = url.rstrip("/")
        self.params = sampling.params
        self.timeout = timeout
        self.retries = retries
        self.concurrency = concurrency
        self.chunk_size = 4 * concurrency
        self.supports_n: bool | None = None  # learned from the first multi-sample call
        self.model = model or self._first_served_model()

    def _once(self, path: str, payload: dict | None):
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, headers={"Content-Type": "application/json"})
        deadline = time.monotonic() + self.timeout
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = bytearray()
                while True:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise _Unreachable(f"no complete answer within the {self.timeout:g} s deadline")
                    _set_read_timeout(response, left)
                    chunk = response.read1(65536)
                    if not chunk:
                        break
                    body += chunk
                if response.length:  # the connection closed before the promised Content-Length
                    raise http.client.IncompleteRead(bytes(body), response.length)
        except urllib.error.HTTPError as exc:
            detail = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
            raise _Refusal(detail, retry=exc.code == 429 or exc.code >= 500) from None
        except TimeoutError:
            raise _Unreachable(f"no complete answer within the {self.timeout:g} s deadline") from None
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            raise _Unreachable(f"{exc.__class__.__name__}: {exc}") from None
        except http.client.HTTPException as exc:  # a body cut short (IncompleteRead) or a broken status line
            raise _Refusal(f"{exc.__class__.__name__}: {exc}", retry=True) from None
        try:
            return json.loads(bytes(body).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _Refusal(f"the body is not UTF-8 JSON ({exc.__class__.__name__}: {str(exc)[:100]})", retry=True) from None

    def _call(self, path: str, payload: dict | None = None, parse=lambda answer: answer):
        """One call with retries; `parse` turns the answer into a result, raising ValueError on a bad one."""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(2.0**attempt, 30.0))
            try:
                return parse(self._once(path, payload))
            except _Unreachable as exc:
                error: Exception = exc
            except ValueError as exc:
                error = _Refusal(str(exc), retry=True)
            except _Refusal as exc:
                error = exc
                if not exc.retry:
                    break
        tries = f"{attempt + 1} {'try' if attempt == 0 else 'tries'}"
        if isinstance(error, _Unreachable):
            raise TeacherUnavailable(f"teacher endpoint {self.base_url + path} failed after {tries}: {error}")
        return Refused(f"{error} (after {tries})")

    def _first_served_model(self) -> str:
        def first_id(answer):
            models = answer.get("data") if isinstance(answer, dict) else None
            if not models or not isinstance(models[0], dict) or "id" not in models[0]:
                raise ValueError(f"teacher endpoint {self.base_url} lists no model; pass --teacher-model")
            return models[0]["id"]

        served = self._call("/models", parse=first_id)
        if isinstance(served, Refused):
            raise UniaplError(f"teacher endpoint {self.base_url}/models: {served.reason}")
        return served

    def _complete(self, prompt, seed: int, max_new_tokens: int, n: int) -> list[Sample] | Refused:
        payload = {
            "model": self.model, "messages": prompt, "max_tokens": max_new_tokens,
            "temperature": self.params.temperature, "top_p": self.params.top_p, "seed": seed % 2**31, "logprobs": True,
        }
        if n > 1:
            payload["n"] = n
        return self._call("/chat/completions", payload, parse=_samples_of)

    def _draw_group(self, group: list[Request]) -> list[Sample | Refused]:
        """One prompt's requests of a round: one call with `n` where the server honours it, else one each."""
        first = group[0]
        samples: list[Sample | Refused] = []
        if len(group) > 1 and self.supports_n is not False:
            answer = self._complete(first.prompt, first.seed, first.max_new_tokens, len(group))
            if isinstance(answer, Refused):
                return [answer] * len(group)
            self.supports_n = len(answer) >= len(group)
            samples = answer[: len(group)]
        for request in group[len(samples):]:
            answer = self._complete(request.prompt, request.seed, request.max_new_tokens, 1)
            samples.append(answer if isinstance(answer, Refused) else answer[0])
        return samples

    def draw(self, requests: list[Request]) -> list[Sample | Refused]:
        groups = [list(g) for _, g in groupby(requests, key=lambda r: r.prompt_index)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return [s for samples in pool.map(self._draw_group, groups) for s in samples]


def _set_read_timeout(response, seconds: float) -> None:
    """Bound the next read of an HTTP response by the time left before its deadline."""
    sock = getattr(getattr(response.fp, "raw", None), "_sock", None)  # http.client keeps it on its SocketIO
    if sock is not None:
        sock.settimeout(max(seconds, 0.01))


def _samples_of(answer) -> list[Sample]:
    """The samples of a chat completion answer; ValueError where it is not one."""
    choices = answer.get("choices") if isinstance(answer, dict) else None
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"the answer has no choices: {str(answer)[:200]}")
    samples = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, str):
            raise ValueError(f"choices[].message.content is not a string: {str(choice)[:200]}")
        tokens = ((choice.get("logprobs") or {}).get("content") or []) if isinstance(choice.get("logprobs"), dict) else []
        values = [t["logprob"] for t in tokens if isinstance(t, dict) and isinstance(t.get("logprob"), (int, float))]
        samples.append(Sample(content, choice.get("finish_reason") == "stop", sum(values) / len(values) if values else None))
    return samples


def make_teacher(teacher: str, sampling: Sampling, dtype: str = "auto", batch_size: int = 64, teacher_model: str | None = None,
                 timeout: float = 120.0, retries: int = 3, concurrency: int = 4, rules: QualityRules = QualityRules()):
    """An http(s) URL is an endpoint; anything else is a local model or alias."""
    if teacher.startswith(("http://", "https://")):
        return EndpointTeacher(teacher, sampling, teacher_model, timeout, retries, concurrency)
    return LocalTeacher(teacher, sampling, dtype, batch_size, rules)


def draft_messages(row: dict, draft_prompt: str) -> list[dict] | None:
    """What the teacher is asked for a draft: None for the row's own prompt, else its task without the instructions."""
    if draft_prompt == "full":
        return None
    task = task_text(row)
    return None if task is None else [{"role": "user", "content": task}]


@dataclass
class PromptWork:
    """One prompt's samples so far: how far each got down the funnel, the passing ones, and (rule-assisted)
    the complete drafts and their rewrites."""

    index: int
    row: dict
    budget: int
    rule_assisted: bool = False
    messages: list[dict] | None = None  # what the teacher is asked, where it is not the row's prompt
    drawn: int = 0
    refused: list[str] = field(default_factory=list)
    funnel: Counter = field(default_factory=Counter)
    passing: list[tuple[float, int, str]] = field(default_factory=list)  # (-mean log-prob, sample number, text)
    best_raw: tuple[int, list[bool]] | None = None  # (instructions passed, per instruction) of the best sample
    complete: int = 0  # samples that passed as they were or are complete drafts
    drafts: list[str] = field(default_factory=list)  # complete drafts that did not pass as they were
    repaired: list[tuple[int, float, int, Rewrite]] = field(default_factory=list)  # (rules fired, -mean log-prob, number, rewrite)
    refusals: Counter = field(default_factory=Counter)  # why a complete draft's rewrite was not kept

    def add(self, sample: Sample | Refused, rules: QualityRules) -> None:
        number = self.drawn + len(self.refused)
        if isinstance(sample, Refused):
            self.refused.append(sample.reason)
            return
        self.drawn += 1
        verdicts, per_instruction = judge(self.row, sample.text, sample.ended, rules)
        for stage in FUNNEL:
            if not verdicts[stage]:
                break
            self.funnel[stage] += 1
        score = sample.mean_logprob if sample.mean_logprob is not None else -math.inf
        complete = is_complete_draft(self.row, sample.text, sample.ended, rules)
        self.complete += passes(verdicts) or complete
        if passes(verdicts):
            self.passing.append((-score, number, sample.text))
        elif self.rule_assisted and complete:
            self.rewrite(sample.text, -score, number, rules)
        if self.best_raw is None or sum(per_instruction) > self.best_raw[0]:
            self.best_raw = (sum(per_instruction), per_instruction)

    def rewrite(self, draft: str, neg_score: float, number: int, rules: QualityRules) -> None:
        """Rewrite a complete draft (the earlier drafts serve as a second response) and keep it if it passes."""
        result = rewrite(self.row, draft, self.drafts)
        self.drafts.append(draft)
        if isinstance(result, NoRewrite):
            self.refusals[result.reason] += 1
            return
        verdicts, _ = judge(self.row, result.text, True, rules)
        failed = next((stage for stage in FUNNEL if not verdicts[stage]), None)
        if failed is not None:
            self.refusals[f"quality: {failed}"] += 1
            return
        self.repaired.append((len(result.rules), neg_score, number, result))

    def next_round(self, sampling: Sampling) -> range:
        """The numbers of the samples this prompt draws in its next round."""
        start = self.drawn + len(self.refused)
        return range(start, min(start + sampling.round_size, sampling.samples))

    def finished(self, sampling: Sampling) -> bool:
        return len(self.passing) + len(self.repaired) >= sampling.enough or self.drawn + len(self.refused) >= sampling.samples

    def result(self) -> tuple[dict, dict]:
        """The output row and the status row."""
        row = self.row
        outcome, kept, kept_rewrite = DROPPED, None, None
        if self.passing:
            outcome, kept = SAMPLED, min(self.passing)[2]
        elif self.repaired:
            kept_rewrite = min(self.repaired, key=lambda r: r[:3])[3]
            outcome, kept = REPAIRED, kept_rewrite.text
        elif not self.drawn and self.refused:
            outcome = FAILED
        output = {k: row[k] for k in ("key", "prompt", "instruction_id_list", "kwargs")}
        if kept is not None:
            output["completion"] = [{"role": "assistant", "content": kept}]
        status = {
            "key": row["key"], "outcome": outcome, "instruction_id_list": row["instruction_id_list"],
            "raw_pass": self.best_raw[1] if self.best_raw else [False] * len(row["instruction_id_list"]),
            "drawn": self.drawn, "max_new_tokens": self.budget, "funnel": {stage: self.funnel[stage] for stage in FUNNEL},
            "passing": len(self.passing),
        }
        if self.rule_assisted:
            status.update({"complete": self.complete, "rewritten": len(self.drafts), "rewrites_passing": len(self.repaired),
                           "refusals": dict(self.refusals),
                           "rules": list(kept_rewrite.rules) if kept_rewrite else [],
                           "added": list(kept_rewrite.added) if kept_rewrite else []})
        if self.refused:
            status["refused"] = self.refused
        return output, status


def status_path(out: str | Path) -> Path:
    return Path(f"{out}.status.jsonl")


def _finished_keys(out: Path) -> set:
    """Keys with a final outcome. Rows written after the last outcome (a crash), and prompts the endpoint
    refused (FAILED), are removed, so that a rerun does them again."""
    statuses = read_resumable_jsonl(status_path(out))
    done = {s["key"] for s in statuses if s["outcome"] != FAILED}
    if len(done) != len(statuses):
        write_jsonl_atomic(status_path(out), [s for s in statuses if s["key"] in done])
    rows = read_resumable_jsonl(out)
    kept = [r for r in rows if r["key"] in done]
    if len(kept) != len(rows):
        write_jsonl_atomic(out, kept)
    return done


def teach(prompts: str, out: str, teacher, sampling: Sampling, rules: QualityRules = QualityRules(), rule_assisted: bool = False,
          draft_prompt: str = "full", limit: int | None = None, progress: bool = True, start: int = 0) -> dict:
    """Run the teacher over the prompts not done yet, then return (and save) the statistics of all of them.

    `start` and `limit` select prompts [start, start + limit) of the file. Seeds follow a prompt's position
    in the whole file, so runs over disjoint ranges (in parallel, into separate outputs) draw exactly
    the samples one run over the file would."""
    from tqdm import tqdm

    if draft_prompt not in DRAFT_PROMPTS:
        raise UniaplError(f"--draft-prompt must be one of {', '.join(DRAFT_PROMPTS)}, got '{draft_prompt}'")
    if draft_prompt != "full" and not rule_assisted:
        raise UniaplError(f"--draft-prompt {draft_prompt} needs --rule-assisted: without rules, a sample must follow instructions it was not shown")
    rows = list(enumerate(load_constraint_rows(prompts)))[start : start + limit if limit else None]
    out_path = Path(out)
    done = _finished_keys(out_path)
    pending = [PromptWork(i, row, sampling.length_budget(row), rule_assisted, draft_messages(row, draft_prompt))
               for i, row in rows if row["key"] not in done]
    with tqdm(total=len(rows), initial=len(rows) - len(pending), desc="teach", unit="prompt", disable=not progress) as bar:
        for start in range(0, len(pending), teacher.chunk_size):
            active = pending[start : start + teacher.chunk_size]
            while active:
                owners, requests = [], []
                for work in active:
                    for number in work.next_round(sampling):
                        owners.append(work)
                        requests.append(Request(work.row, sequence_seed(sampling.seed, number, work.index), work.budget, work.index,
                                                work.messages))
                for work, sample in zip(owners, teacher.draw(requests)):
                    work.add(sample, rules)
                finished = [work for work in active if work.finished(sampling)]
                results = [work.result() for work in finished]
                append_jsonl(out_path, [output for output, _ in results])
                append_jsonl(status_path(out_path), [status for _, status in results])
                bar.update(len(finished))
                active = [work for work in active if not work.finished(sampling)]
    stats = summarize(read_jsonl(status_path(out_path)) if status_path(out_path).exists() else [])
    write_json_atomic(Path(f"{out}.stats.json"), stats)
    return stats


def summarize(outcomes: list[dict]) -> dict:
    """Outcome counts; the funnel over samples and over prompts; each instruction type's coverage; and for the
    rule-assisted teacher, complete drafts, the rules that made the kept rewrites, and why rewrites failed."""
    counts = Counter(o["outcome"] for o in outcomes)
    samples = sum(o.get("drawn", 0) for o in outcomes)
    funnel_samples = {stage: sum(o.get("funnel", {}).get(stage, 0) for o in outcomes) for stage in FUNNEL}
    funnel_prompts = {stage: sum(o.get("funnel", {}).get(stage, 0) > 0 for o in outcomes) for stage in FUNNEL}
    per_type = defaultdict(lambda: {"n": 0, "raw_pass": 0, "demonstrations": 0, "complete": 0, SAMPLED: 0, REPAIRED: 0})
    for o in outcomes:
        for inst, ok in zip(o["instruction_id_list"], o["raw_pass"]):
            per_type[inst]["n"] += 1
            per_type[inst]["raw_pass"] += ok
            per_type[inst]["demonstrations"] += o["outcome"] in (SAMPLED, REPAIRED)
            per_type[inst]["complete"] += o.get("complete", 0) > 0
            per_type[inst][SAMPLED] += o["outcome"] == SAMPLED
            per_type[inst][REPAIRED] += o["outcome"] == REPAIRED
    total = len(outcomes)
    solved = counts[SAMPLED] + counts[REPAIRED]
    return {
        "prompts": total,
        SAMPLED: counts[SAMPLED],
        REPAIRED: counts[REPAIRED],
        DROPPED: counts[DROPPED],
        FAILED: counts[FAILED],
        "solved_rate": solved / total if total else 0.0,
        "samples": samples,
        "funnel_samples": funnel_samples,
        "funnel_prompts": funnel_prompts,
        "complete_drafts": sum(o.get("complete", 0) for o in outcomes),  # samples that passed, or are complete drafts
        "prompts_with_complete_draft": sum(o.get("complete", 0) > 0 for o in outcomes),
        "rules": dict(Counter(rule for o in outcomes if o["outcome"] == REPAIRED for rule in o.get("rules", [])).most_common()),
        "refusals": dict(sum((Counter(o.get("refusals", {})) for o in outcomes), Counter()).most_common()),
        "per_instruction": {
            inst: {"n": t["n"], "raw_pass_rate": t["raw_pass"] / t["n"], "demonstrations": t["demonstrations"],
                   "with_complete_draft": t["complete"], SAMPLED: t[SAMPLED], REPAIRED: t[REPAIRED]}
            for inst, t in sorted(per_type.items())
        },
    }


def attach_demonstrations(prompts: str, demonstrations: str | list[str]) -> tuple[list[dict], int]:
    """Every prompt row, with the `completion` of the teacher's output where it solved that prompt.

    A teacher run can stop part-way (it resumes later); this gives the full prompt set in the meantime.
    Several outputs (runs over disjoint ranges of the prompts, `teach --start`) are read together.
    """
    rows = load_constraint_rows(prompts)
    files = [demonstrations] if isinstance(demonstrations, (str, Path)) else demonstrations
    solved = {d["key"]: d["completion"] for path in files for d in read_jsonl(path) if "completion" in d}
    attached = [{**row, "completion": solved[row["key"]]} if row["key"] in solved else row for row in rows]
    return attached, sum(row["key"] in solved for row in rows)
