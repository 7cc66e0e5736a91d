"""Held-out prompts with expert demonstrations, read from any of the row formats the project accepts.

Formats: the project's `{"prompt": [messages], "completion": [messages]}`, TRL's `prompt` and
`completion` strings, and `{"messages": [...]}` (the last assistant turn is the demonstration).
Rows without a demonstration (unsolved prompts) are left out, because there is nothing to compare.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from uniapl.datatools.jsonl import read_jsonl
from uniapl.errors import DataError

# columns that describe the example itself; every other column goes to reward functions
_EXAMPLE_FIELDS = {"key", "prompt", "completion", "messages"}


@dataclass
class ExpertExample:
    key: str
    prompt: str | list[dict]  # what the chat template renders: a string or a list of messages
    expert_response: str
    columns: dict = field(default_factory=dict)  # e.g. instruction_id_list, kwargs, for a verifier

    @property
    def prompt_text(self) -> str:
        """The user's words, which is what an echoing response repeats."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(m.get("content", "") for m in self.prompt if m.get("role") == "user")


def _assistant_text(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        turns = [m for m in value if m.get("role") == "assistant"]
        if turns:
            return str(turns[-1].get("content", ""))
    raise DataError(f"{where}: field 'completion' must be a string or a list of messages with an assistant turn")


def parse_row(row: dict, where: str) -> ExpertExample | None:
    """One example, or None when the row has no demonstration; `where` is 'file:line' for errors."""
    columns = {k: v for k, v in row.items() if k not in _EXAMPLE_FIELDS}
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise DataError(f"{where}: field 'messages' must be a list of {{role, content}} objects")
        last_assistant = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        if last_assistant is None:
            return None
        if last_assistant == 0:
            raise DataError(f"{where}: field 'messages' has an assistant turn with no prompt before it")
        prompt, response = messages[:last_assistant], str(messages[last_assistant].get("content", ""))
    elif "prompt" in row:
        prompt = row["prompt"]
        if not isinstance(prompt, (str, list)):
            raise DataError(f"{where}: field 'prompt' must be a string or a list of messages")
        if row.get("completion") is None:
            return None
        response = _assistant_text(row["completion"], where)
    else:
        raise DataError(f"{where}: the row has neither 'prompt' nor 'messages'")
    key = str(row["key"]) if "key" in row else json.dumps(prompt, sort_keys=True, ensure_ascii=False)
    return ExpertExample(key=key, prompt=prompt, expert_response=response, columns=columns)


def _prompt_key(row: dict, where: str) -> str:
    if "key" in row:
        return str(row["key"])
    if "prompt" in row:
        return json.dumps(row["prompt"], sort_keys=True, ensure_ascii=False)
    if "messages" in row:
        example = parse_row(row, where)
        if example is not None:
            return example.key
    raise DataError(f"{where}: the row has no 'key', 'prompt' or 'messages' to match an expert row by")


def load_expert_examples(expert_file: str | Path, prompts_file: str | Path | None = None, limit: int | None = None) -> list[ExpertExample]:
    """Examples with demonstrations, restricted to the prompts of `prompts_file` when given (matched by key or prompt)."""
    examples = [
        example
        for line, row in enumerate(read_jsonl(expert_file), 1)
        if (example := parse_row(row, f"{expert_file}:{line}")) is not None
    ]
    if prompts_file is not None:
        wanted = [_prompt_key(row, f"{prompts_file}:{line}") for line, row in enumerate(read_jsonl(prompts_file), 1)]
        by_key = {example.key: example for example in examples}
        examples = [by_key[key] for key in dict.fromkeys(wanted) if key in by_key]
    if limit is not None:
        examples = examples[:limit]
    if not examples:
        source = f"{expert_file}" + (f" matching the prompts of {prompts_file}" if prompts_file else "")
        raise DataError(f"{source}: no rows with an expert demonstration to analyze")
    return examples
