"""ifeval_strict / ifeval_loose / ifeval_partial through the reward registry, against the reference scorer."""

from __future__ import annotations

import pytest

from uniapl.ifeval import score_responses
from uniapl.ifeval.prompts import load_ifeval
from uniapl.rewards import resolve_reward

LOWERCASE_NO_COMMA = {
    "instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"],
    "kwargs": [{}, {}],
}
PROMPT = [{"role": "user", "content": "Describe the sea in lowercase letters and without commas."}]


def call(name, completions, rows):
    return resolve_reward(name)(
        prompts=[PROMPT] * len(completions),
        completions=completions,
        instruction_id_list=[r["instruction_id_list"] if r else None for r in rows],
        kwargs=[r["kwargs"] if r else None for r in rows],
    )


def test_strict_loose_and_partial_on_known_responses():
    completions = [
        "the sea is wide and grey and it never sleeps.",  # both pass
        "The sea is wide and grey and it never sleeps.",  # capital T: lowercase fails
        "The sea, wide, grey.",  # both fail
        [{"role": "assistant", "content": "Sure!\nthe sea is wide and grey."}],  # loose drops the first line
    ]
    rows = [LOWERCASE_NO_COMMA] * 4
    assert call("ifeval_strict", completions, rows) == [1.0, 0.0, 0.0, 0.0]
    assert call("ifeval_partial", completions, rows) == [1.0, 0.5, 0.0, 0.5]
    assert call("ifeval_loose", completions, rows) == [1.0, 0.0, 0.0, 1.0]


def test_rows_without_instructions_score_none():
    assert call("ifeval_strict", ["anything"], [None]) == [None]
    assert resolve_reward("ifeval_partial")(prompts=["p"], completions=["c"]) == [None]


def test_dataset_style_kwargs_with_null_fields_match_the_reference():
    """A datasets column fills every kwargs struct with all keys, None where unused; the checkers drop falsy values."""
    padded = [{"num_words": None, "relation": None, "postscript_marker": "P.S."}]
    scores = resolve_reward("ifeval_strict")(
        prompts=["Write a note."], completions=["Hello.\nP.S. bye"],
        instruction_id_list=[["detectable_content:postscript"]], kwargs=[padded],
    )
    assert scores == [1.0]


@pytest.mark.parametrize("name,metric", [("ifeval_strict", "prompt_level_strict_acc"), ("ifeval_loose", "prompt_level_loose_acc"),
                                         ("ifeval_partial", None)])
def test_mean_reward_on_ifeval_equals_the_benchmark_metric(name, metric):
    docs = load_ifeval(limit=40)
    responses = [d["prompt"] if i % 2 else d["prompt"].lower() for i, d in enumerate(docs)]
    rewards = resolve_reward(name)(
        prompts=[d["prompt"] for d in docs], completions=responses,
        instruction_id_list=[d["instruction_id_list"] for d in docs], kwargs=[d["kwargs"] for d in docs],
    )
    scores = score_responses([{"key": d["key"], "response": r} for d, r in zip(docs, responses)], docs)
    if metric:
        assert sum(rewards) / len(rewards) == pytest.approx(scores[metric])
    else:  # partial: instruction passes summed over prompts equal the instruction-level strict count
        passed = sum(r * len(d["instruction_id_list"]) for r, d in zip(rewards, docs))
        total = sum(len(d["instruction_id_list"]) for d in docs)
        assert passed / total == pytest.approx(scores["inst_level_strict_acc"])
