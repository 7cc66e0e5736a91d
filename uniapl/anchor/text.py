"""What the discriminator reads of a response: the whole response, or each of its sentences, with or without the
prompt beside it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class Unit:
    """One text the discriminator scores: a response or a sentence of it, and the prompt's text when it reads it."""

    text: str
    context: str | None = None


def split_sentences(text: str) -> list[str]:
    """Sentences as IFEval's checkers count them (NLTK's Punkt, offline), each line of a list or heading its own."""
    import nltk

    from uniapl.ifeval.punkt_data import ensure_punkt_tab

    ensure_punkt_tab()
    sentences = [s.strip() for line in text.splitlines() if line.strip() for s in nltk.sent_tokenize(line)]
    return [s for s in sentences if s] or [text.strip()]


def units_of(prompts: Sequence[str], responses: Sequence[str], granularity: str, include_prompt: bool) -> tuple[list[Unit], list[int]]:
    """The units of each response and the index of the response each belongs to (every response has at least one)."""
    units, owners = [], []
    for owner, (prompt, response) in enumerate(zip(prompts, responses)):
        parts = split_sentences(response) if granularity == "sentence" else [response]
        units += [Unit(part, prompt if include_prompt else None) for part in parts]
        owners += [owner] * len(parts)
    return units, owners
