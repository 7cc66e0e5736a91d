"""Signs that a response games a verifiable reward instead of answering: echo, repetition, truncation."""

from __future__ import annotations

import re
from typing import Sequence

_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def is_echo(prompt: str, response: str, threshold: float = 0.5) -> bool:
    """True when at least `threshold` of the prompt's word 8-grams (or its words, if shorter) recur in the response."""
    p, r = words(prompt), words(response)
    if not p or not r:
        return False
    n = min(8, len(p))
    prompt_grams = set(ngrams(p, n))
    response_grams = set(ngrams(r, n))
    return len(prompt_grams & response_grams) / len(prompt_grams) >= threshold


def distinct_n(text: str, n: int = 2) -> float:
    """Distinct word n-grams over all word n-grams of one response; 1.0 means no repetition."""
    grams = ngrams(words(text), n)
    return len(set(grams)) / len(grams) if grams else 1.0


def is_repetitive(text: str, n: int = 2, threshold: float = 0.5) -> bool:
    """A response whose distinct-n falls below `threshold` is mostly loops."""
    return distinct_n(text, n) < threshold


def degeneration_summary(prompts: Sequence[str], responses: Sequence[str], truncated: Sequence[bool]) -> dict:
    """Echo, repetition, truncation and empty rates, plus mean distinct-2, over a set of responses."""
    total = len(responses)
    if total == 0:
        return {"n": 0}
    return {
        "n": total,
        "echo_rate": sum(is_echo(p, r) for p, r in zip(prompts, responses)) / total,
        "repetition_rate": sum(is_repetitive(r) for r in responses) / total,
        "distinct_2": sum(distinct_n(r, 2) for r in responses) / total,
        "truncation_rate": sum(bool(t) for t in truncated) / total,
        "empty_rate": sum(not r.strip() for r in responses) / total,
    }
