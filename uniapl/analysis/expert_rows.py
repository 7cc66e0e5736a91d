"""Held-out prompts with expert demonstrations, in any row format `uniapl.examples` reads.

Rows without a demonstration (unsolved prompts) are left out, because there is nothing to compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from uniapl.errors import DataError
from uniapl.examples import Example, load_examples


@dataclass
class ExpertExample:
    key: str  # the row's `key`, else the prompt as JSON
    prompt: str | list[dict]  # what the chat template renders: a string or a list of messages
    expert_response: str
    columns: dict = field(default_factory=dict)  # e.g. instruction_id_list, kwargs, for a verifier
    prompt_key: str = ""  # the prompt as JSON, to match held-out rows that carry no key

    @property
    def prompt_text(self) -> str:
        """The user's words, which is what an echoing response repeats."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n".join(m["content"] for m in self.prompt if m["role"] == "user")


def example_key(example: Example) -> str:
    return str(example.columns["key"]) if "key" in example.columns else example.prompt_key()


def _matching(examples: list[ExpertExample], prompts_file: str | Path) -> list[ExpertExample]:
    """The demonstrations of the held-out prompts, in their order: by `key` where a row has one, else by prompt."""
    by_key = {e.key: e for e in examples}
    by_prompt = {e.prompt_key: e for e in examples}
    found = {}
    for row in load_examples(prompts_file):
        match = by_key.get(str(row.columns["key"])) if "key" in row.columns else by_prompt.get(row.prompt_key())
        if match is not None:
            found[match.key] = match
    return list(found.values())


def load_expert_examples(expert_file: str | Path, prompts_file: str | Path | None = None, limit: int | None = None) -> list[ExpertExample]:
    """Examples with demonstrations, restricted to the prompts of `prompts_file` when given, in its order."""
    examples = [
        ExpertExample(example_key(e), e.prompt, e.completion_text(), {k: v for k, v in e.columns.items() if k != "key"}, e.prompt_key())
        for e in load_examples(expert_file)
        if e.completion is not None
    ]
    if prompts_file is not None:
        examples = _matching(examples, prompts_file)
    if limit is not None:
        examples = examples[:limit]
    if not examples:
        source = f"{expert_file}" + (f" matching the prompts of {prompts_file}" if prompts_file else "")
        raise DataError(f"{source}: no rows with an expert demonstration to analyze")
    return examples
