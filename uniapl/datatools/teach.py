"""Expert demonstrations: best-of-K samples from a teacher, kept only if the reference verifier passes them.

The teacher is a local HF model (batched, seeded sampling) or an OpenAI-compatible chat endpoint
(timeouts, retries, a thread pool). Work goes in chunks; after each chunk its rows are appended to
the output and its outcomes to `<out>.status.jsonl`, so a crash loses no finished demonstration and a
rerun continues at the first prompt with no outcome. Output rows keep the training row format, with
a `completion` only where the teacher pipeline solved the prompt.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from uniapl.datatools.jsonl import append_jsonl, read_jsonl, read_resumable_jsonl, write_json_atomic, write_jsonl_atomic
from uniapl.datatools.repair import repair
from uniapl.errors import UniaplError
from uniapl.ifeval.data import load_constraint_rows
from uniapl.ifeval.scoring import follows_instructions
from uniapl.rollout import SamplingParams, encode_prompts, generate, sequence_seed

# outcome of a prompt: the best raw sample passed, a repair of it passed, or neither
SAMPLED, REPAIRED, DROPPED = "sampled", "repaired", "dropped"


@dataclass(frozen=True)
class Sampling:
    """K samples per prompt; sample j of the prompt at file position i is seeded by (seed, j, i)."""

    samples: int = 2
    seed: int = 0
    params: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=192, temperature=0.7, top_p=0.95))


class LocalTeacher:
    """A local HF model, batched; seeded per sample, so reruns repeat it."""

    def __init__(self, model: str, sampling: Sampling, dtype: str = "auto", batch_size: int = 32):
        from uniapl.models import load_model_and_tokenizer

        self.model, self.tokenizer = load_model_and_tokenizer(model, dtype)
        self.sampling = sampling
        self.batch_size = batch_size
        self.chunk_size = batch_size

    def sample(self, indexed_rows: list[tuple[int, dict]]) -> list[list[str]]:
        k = self.sampling.samples
        prompts = [row["prompt"] for _, row in indexed_rows for _ in range(k)]
        seeds = [sequence_seed(self.sampling.seed, j, index) for index, _ in indexed_rows for j in range(k)]
        completions = generate(self.model, self.tokenizer, encode_prompts(self.tokenizer, prompts), self.sampling.params, seeds=seeds, batch_size=self.batch_size)
        texts = [c.text for c in completions]
        return [texts[i * k : (i + 1) * k] for i in range(len(indexed_rows))]


class EndpointTeacher:
    """An OpenAI-compatible `/v1/chat/completions` server, called from a thread pool with retries."""

    def __init__(self, url: str, sampling: Sampling, model: str | None = None, timeout: float = 120.0, retries: int = 3, concurrency: int = 4):
        self.base_url = url.rstrip("/")
        self.sampling = sampling
        self.timeout = timeout
        self.retries = retries
        self.concurrency = concurrency
        self.chunk_size = 4 * concurrency
        self.model = model or self._first_served_model()

    def _request(self, path: str, payload: dict | None = None) -> dict:
        """One HTTP call, retried with exponential backoff on network errors, timeouts and 5xx/429 answers."""
        data = json.dumps(payload).encode() if payload is not None else None
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(2.0**attempt, 30.0))
            request = urllib.request.Request(self.base_url + path, data=data, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as exc:
                last_error = f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
                if exc.code != 429 and exc.code < 500:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as exc:
                last_error = f"{exc.__class__.__name__}: {exc}"
        raise UniaplError(f"teacher endpoint {self.base_url + path} failed after {attempt + 1} tries: {last_error}")

    def _first_served_model(self) -> str:
        models = self._request("/models").get("data") or []
        if not models:
            raise UniaplError(f"teacher endpoint {self.base_url} serves no model; pass --teacher-model")
        return models[0]["id"]

    def _complete(self, messages: list[dict], seed: int) -> str:
        answer = self._request("/chat/completions", {
            "model": self.model,
            "messages": messages,
            "max_tokens": self.sampling.params.max_new_tokens,
            "temperature": self.sampling.params.temperature,
            "top_p": self.sampling.params.top_p,
            "seed": seed,
        })
        try:
            return answer["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UniaplError(f"teacher endpoint {self.base_url} answered without choices[0].message.content: {str(answer)[:200]}") from None

    def sample(self, indexed_rows: list[tuple[int, dict]]) -> list[list[str]]:
        k = self.sampling.samples
        jobs = [(row["prompt"], sequence_seed(self.sampling.seed, j, index) % 2**31) for index, row in indexed_rows for j in range(k)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            texts = list(pool.map(lambda job: self._complete(*job), jobs))
        return [texts[i * k : (i + 1) * k] for i in range(len(indexed_rows))]


def make_teacher(teacher: str, sampling: Sampling, dtype: str = "auto", batch_size: int = 32, teacher_model: str | None = None,
                 timeout: float = 120.0, retries: int = 3, concurrency: int = 4):
    """An http(s) URL is an endpoint; anything else is a local model or alias."""
    if teacher.startswith(("http://", "https://")):
        return EndpointTeacher(teacher, sampling, teacher_model, timeout, retries, concurrency)
    return LocalTeacher(teacher, sampling, dtype, batch_size)


def strict_results(row: dict, response: str) -> list[bool]:
    return follows_instructions(row["prompt"], row["instruction_id_list"], row["kwargs"], response)


def judge(row: dict, samples: list[str], use_repair: bool) -> tuple[str, str | None, list[bool]]:
    """Outcome, kept response and the best raw sample's per-instruction results.

    The best sample passes the most instructions (the first one on ties); if it fails, a rule-based
    repair of it is tried, and kept only if the verifier passes it.
    """
    results = [strict_results(row, s) for s in samples]
    best = max(range(len(samples)), key=lambda i: (sum(results[i]), -i))
    if all(results[best]):
        return SAMPLED, samples[best], results[best]
    if use_repair:
        fixed = repair(samples[best], row["instruction_id_list"], row["kwargs"], [not ok for ok in results[best]])
        if fixed is not None and all(strict_results(row, fixed)):
            return REPAIRED, fixed, results[best]
    return DROPPED, None, results[best]


def status_path(out: str | Path) -> Path:
    return Path(f"{out}.status.jsonl")


def _finished_keys(out: Path) -> set:
    """Keys with a recorded outcome; output rows written after the last outcome (a crash) are cut off."""
    done = {s["key"] for s in read_resumable_jsonl(status_path(out))}
    rows = read_resumable_jsonl(out)
    kept = [r for r in rows if r["key"] in done]
    if len(kept) != len(rows):
        write_jsonl_atomic(out, kept)
    return done


def teach(prompts: str, out: str, teacher, use_repair: bool = True, limit: int | None = None, progress: bool = True) -> dict:
    """Run the teacher over the prompts not done yet, then return (and save) the statistics of all of them."""
    from tqdm import tqdm

    rows = load_constraint_rows(prompts)[:limit]
    out_path = Path(out)
    done = _finished_keys(out_path)
    pending = [(i, row) for i, row in enumerate(rows) if row["key"] not in done]
    with tqdm(total=len(rows), initial=len(rows) - len(pending), desc="teach", unit="prompt", disable=not progress) as bar:
        for start in range(0, len(pending), teacher.chunk_size):
            chunk = pending[start : start + teacher.chunk_size]
            outputs, outcomes = [], []
            for (_, row), samples in zip(chunk, teacher.sample(chunk)):
                outcome, response, raw = judge(row, samples, use_repair)
                output = {k: row[k] for k in ("key", "prompt", "instruction_id_list", "kwargs")}
                if response is not None:
                    output["completion"] = [{"role": "assistant", "content": response}]
                outputs.append(output)
                outcomes.append({"key": row["key"], "outcome": outcome, "instruction_id_list": row["instruction_id_list"], "raw_pass": raw})
            append_jsonl(out_path, outputs)
            append_jsonl(status_path(out_path), outcomes)
            bar.update(len(chunk))
    stats = summarize(read_jsonl(status_path(out_path)))
    write_json_atomic(Path(f"{out}.stats.json"), stats)
    return stats


def summarize(outcomes: list[dict]) -> dict:
    """How many prompts were solved by sampling, by repair, or dropped; and each type's pass rates."""
    counts = Counter(o["outcome"] for o in outcomes)
    per_type = defaultdict(lambda: {"n": 0, "raw_pass": 0, "final_pass": 0})
    for o in outcomes:
        solved = o["outcome"] != DROPPED
        for inst, ok in zip(o["instruction_id_list"], o["raw_pass"]):
            per_type[inst]["n"] += 1
            per_type[inst]["raw_pass"] += ok
            per_type[inst]["final_pass"] += solved or ok
    total = len(outcomes)
    return {
        "prompts": total,
        SAMPLED: counts[SAMPLED],
        REPAIRED: counts[REPAIRED],
        DROPPED: counts[DROPPED],
        "solved_rate": (counts[SAMPLED] + counts[REPAIRED]) / total if total else 0.0,
        "per_instruction": {
            inst: {"n": t["n"], "raw_pass_rate": t["raw_pass"] / t["n"], "final_pass_rate": t["final_pass"] / t["n"]}
            for inst, t in sorted(per_type.items())
        },
    }


def attach_demonstrations(prompts: str, demonstrations: str) -> tuple[list[dict], int]:
    """Every prompt row, with the `completion` of the teacher's output where it solved that prompt.

    A teacher run can stop part-way (it resumes later); this gives the full prompt set in the meantime.
    """
    rows = load_constraint_rows(prompts)
    solved = {d["key"]: d["completion"] for d in read_jsonl(demonstrations) if "completion" in d}
    attached = [{**row, "completion": solved[row["key"]]} if row["key"] in solved else row for row in rows]
    return attached, sum(row["key"] in solved for row in rows)
