"""Training data in TRL's formats, from JSONL files or `datasets` folders.

Accepted rows:
- conversational: {"messages": [...]}; a final assistant turn is the completion;
- {"prompt": str | messages, "completion": str | messages} (completion optional: prompt-only);
Every other column passes through to the reward functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from uniapl.errors import DataError
from uniapl.io import jsonl_rows

ROLES = {"system", "user", "assistant", "tool"}


@dataclass
class Example:
    prompt: Any  # str, or a list of messages
    completion: Any = None  # str, a list of messages, or None for prompt-only rows
    columns: dict = field(default_factory=dict)
    where: str = ""  # "file:line", for error messages

    @property
    def conversational(self) -> bool:
        return not isinstance(self.prompt, str)

    def completion_text(self) -> str:
        if isinstance(self.completion, str):
            return self.completion
        return "".join(m["content"] for m in self.completion)

    def prompt_key(self) -> str:
        """Identity of the prompt, to pair an RL prompt with its demonstration."""
        return json.dumps(self.prompt, sort_keys=True)


def _check_messages(value, where: str, name: str) -> list:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field '{name}' must be a non-empty list of messages")
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise DataError(f"{where}: field '{name}[{i}]' must be an object with a string 'content'")
        if message.get("role") not in ROLES:
            raise DataError(f"{where}: field '{name}[{i}].role' is {message.get('role')!r}; allowed: {', '.join(sorted(ROLES))}")
        if not message["content"].strip():
            raise DataError(f"{where}: field '{name}[{i}].content' is empty")
    return value


def text_or_messages(value, where: str, name: str):
    """A prompt or completion: a non-empty string, or a list of messages."""
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: field '{name}' is empty")
        return value
    if not isinstance(value, list):
        raise DataError(f"{where}: field '{name}' must be a non-empty string or a list of messages, got {value!r}")
    return _check_messages(value, where, name)


def parse_row(row: Any, where: str) -> Example:
    if not isinstance(row, dict):
        raise DataError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    columns = {k: v for k, v in row.items() if k not in ("prompt", "completion", "messages")}
    if "messages" in row:
        messages = _check_messages(row["messages"], where, "messages")
        if messages[-1]["role"] == "assistant":
            if len(messages) < 2:
                raise DataError(f"{where}: field 'messages' has an assistant turn but no prompt before it")
            return Example(messages[:-1], [messages[-1]], columns, where)
        return Example(messages, None, columns, where)
    if "prompt" not in row:
        raise DataError(f"{where}: the row has neither 'prompt' nor 'messages' (fields found: {', '.join(row) or 'none'})")
    prompt = text_or_messages(row["prompt"], where, "prompt")
    completion = row.get("completion")
    if completion is not None:
        completion = text_or_messages(completion, where, "completion")
        if isinstance(prompt, str) != isinstance(completion, str):
            raise DataError(f"{where}: 'prompt' and 'completion' must both be strings or both be message lists")
    return Example(prompt, completion, columns, where)


def _dataset_rows(path: Path) -> Iterable[tuple[str, Any]]:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(path))
    except FileNotFoundError as exc:
        raise DataError(f"'{path}' is not a saved `datasets` folder: {exc}") from None
    if isinstance(dataset, DatasetDict):
        if "train" not in dataset:
            raise DataError(f"'{path}' holds splits {list(dataset)}; expected a 'train' split")
        dataset = dataset["train"]
    for index, row in enumerate(dataset):
        yield f"{path}[row {index}]", row


def load_examples(path: str | Path) -> list[Example]:
    """Examples from a .jsonl file or a `datasets.save_to_disk` folder; errors name the file and line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file '{path}' does not exist")
    rows = _dataset_rows(path) if path.is_dir() else jsonl_rows(path)
    examples = [parse_row(row, where) for where, row in rows]
    if not examples:
        raise DataError(f"data file '{path}' has no rows")
    return examples


def examples_from_records(records: Iterable[dict], name: str = "dataset") -> list[Example]:
    """Examples from in-memory rows (a list of dicts or a `datasets.Dataset`), for the Python API."""
    examples = [parse_row(row, f"{name}[row {i}]") for i, row in enumerate(records)]
    if not examples:
        raise DataError(f"{name} has no rows")
    return examples


def expert_demos(prompts: list[Example], expert: list[Example] | None) -> list[Example]:
    """The demonstrations: a separate set, or the rows of the (paired) prompt set that carry a completion."""
    demos = expert if expert is not None else [e for e in prompts if e.completion is not None]
    for example in demos:
        if example.completion is None:
            raise DataError(f"{example.where}: an expert demonstration needs a 'completion' (or a final assistant message)")
    return demos

