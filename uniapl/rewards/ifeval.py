"""IFEval rewards for training: lm-eval's reference checkers on each row's `instruction_id_list` and `kwargs`.

ifeval_strict is 1 when every instruction passes the strict check; ifeval_loose the same with IFEval's
loose variants of the response (first or last line removed, asterisks dropped); ifeval_partial is the
fraction of instructions that pass strictly, a denser signal. Rows without instructions score None.
"""

from __future__ import annotations

from uniapl.rewards import register_reward
from uniapl.rewards.builtin import completion_text


def _ifeval_scores(prompts, completions, instruction_id_list, kwargs, score, loose: bool = False) -> list[float | None]:
    """score maps the per-instruction booleans of one response to its reward."""
    from uniapl.ifeval.scoring import follows_instructions

    if instruction_id_list is None:
        return [None] * len(completions)
    if kwargs is None:
        kwargs = [None] * len(completions)
    scores: list[float | None] = []
    for prompt, completion, ids, row_kwargs in zip(prompts, completions, instruction_id_list, kwargs):
        if not ids:
            scores.append(None)
            continue
        passed = follows_instructions(prompt, list(ids), _row_kwargs(ids, row_kwargs), completion_text(completion), loose)
        scores.append(float(score(passed)))
    return scores


def _row_kwargs(ids, row_kwargs) -> list[dict]:
    """One dict per instruction; a datasets column may hold None where a row has no arguments."""
    if not row_kwargs:
        return [{} for _ in ids]
    return [dict(k) if k else {} for k in row_kwargs]


@register_reward("ifeval_strict")
def ifeval_strict(prompts, completions, instruction_id_list=None, kwargs=None, **other_columns) -> list[float | None]:
    """1 if every instruction passes IFEval's strict check, else 0."""
    return _ifeval_scores(prompts, completions, instruction_id_list, kwargs, all)


@register_reward("ifeval_loose")
def ifeval_loose(prompts, completions, instruction_id_list=None, kwargs=None, **other_columns) -> list[float | None]:
    """1 if every instruction passes IFEval's loose check, else 0."""
    return _ifeval_scores(prompts, completions, instruction_id_list, kwargs, all, loose=True)


@register_reward("ifeval_partial")
def ifeval_partial(prompts, completions, instruction_id_list=None, kwargs=None, **other_columns) -> list[float | None]:
    """The fraction of instructions that pass IFEval's strict check."""
    return _ifeval_scores(prompts, completions, instruction_id_list, kwargs, lambda passed: sum(passed) / len(passed))
