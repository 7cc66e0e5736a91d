"""Small verifiable rewards that need no extra data: for smoke tests, benchmarks and toy tasks."""

from __future__ import annotations

from uniapl.rewards import register_reward


def completion_text(completion) -> str:
    """TRL passes conversational completions as [{'role': 'assistant', 'content': ...}]."""
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion)


@register_reward("no_commas")
def no_commas(prompts, completions, **kwargs) -> list[float]:
    """1 when the response has no comma (IFEval's punctuation:no_comma), else 0."""
    return [float("," not in completion_text(c)) for c in completions]


@register_reward("contains_keyword")
def contains_keyword(prompts, completions, keyword=None, **kwargs) -> list[float | None]:
    """1 when the row's `keyword` column appears in the response (case-insensitive)."""
    if keyword is None:
        return [None] * len(completions)
    return [float(k.lower() in completion_text(c).lower()) if k else None for c, k in zip(completions, keyword)]


@register_reward("length_under")
def length_under(prompts, completions, max_words=None, **kwargs) -> list[float | None]:
    """1 when the response has at most `max_words` words (a per-row column), else 0."""
    if max_words is None:
        return [None] * len(completions)
    return [float(len(completion_text(c).split()) <= int(m)) for c, m in zip(completions, max_words)]
