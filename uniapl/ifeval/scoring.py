"""Scores with the reference checkers: lm-eval's process_results per prompt and its aggregation."""

from __future__ import annotations

from collections import defaultdict

from uniapl.errors import DataError
from uniapl.ifeval.prompts import prompt_text

METRICS = ("prompt_level_strict_acc", "inst_level_strict_acc", "prompt_level_loose_acc", "inst_level_loose_acc")


# The reference classes draw a random argument where a kwarg is missing or invalid (IFEval's key 1122
# asks for the letter '#', which becomes a random letter); a fixed seed per check makes that reproducible.
CHECK_SEED = 0


def check_response(prompt, instruction_id_list: list[str], kwargs: list[dict], response: str) -> dict:
    """lm-eval's per-prompt result: prompt-level booleans and one boolean per instruction, strict and loose."""
    from uniapl.ifeval.reference import reference_utils, seeded_global_random

    doc = {"key": 0, "prompt": prompt_text(prompt), "instruction_id_list": instruction_id_list, "kwargs": kwargs}
    utils = reference_utils()
    with seeded_global_random(CHECK_SEED):
        return utils.process_results(doc, [response])


def follows_instructions(prompt, instruction_id_list: list[str], kwargs: list[dict], response: str, loose: bool = False) -> list[bool]:
    """One boolean per instruction, strict (the reference's strict test alone) or loose.

    process_results runs both tests, and the loose one tries up to 8 rewrites of the response per
    failed instruction; a strict reward needs only the first, which is about 3x faster. The loose
    result comes from process_results itself: the strict test's random draws (for missing arguments)
    come first there, and the loose test must see the same random state to score the same.
    """
    from uniapl.ifeval.reference import reference_utils, seeded_global_random

    if loose:
        return check_response(prompt, instruction_id_list, kwargs, response)["inst_level_loose_acc"]
    utils = reference_utils()
    example = utils.InputExample(key=0, instruction_id_list=instruction_id_list, prompt=prompt_text(prompt), kwargs=kwargs)
    with seeded_global_random(CHECK_SEED):
        return utils.test_instruction_following_strict(example, response).follow_instruction_list


def aggregate(results: list[dict], instruction_lists: list[list[str]]) -> dict:
    """The 4 IFEval metrics the way lm-eval aggregates them, and the accuracy of each instruction type."""
    from uniapl.ifeval.reference import reference_utils

    utils = reference_utils()
    n = len(results)
    scores = {
        "prompt_level_strict_acc": sum(r["prompt_level_strict_acc"] for r in results) / n,
        "inst_level_strict_acc": utils.agg_inst_level_acc([r["inst_level_strict_acc"] for r in results]),
        "prompt_level_loose_acc": sum(r["prompt_level_loose_acc"] for r in results) / n,
        "inst_level_loose_acc": utils.agg_inst_level_acc([r["inst_level_loose_acc"] for r in results]),
        # what the ifeval_partial reward averages to: the share of its instructions a response follows
        # (strict), per prompt, then over prompts
        "mean_partial_reward": sum(sum(r["inst_level_strict_acc"]) / len(r["inst_level_strict_acc"]) for r in results) / n,
    }
    tally = defaultdict(lambda: {"strict": 0, "loose": 0, "n": 0})
    for result, ids in zip(results, instruction_lists):
        for inst, strict, loose in zip(ids, result["inst_level_strict_acc"], result["inst_level_loose_acc"]):
            tally[inst]["strict"] += strict
            tally[inst]["loose"] += loose
            tally[inst]["n"] += 1
    scores["per_instruction"] = {
        inst: {"strict": t["strict"] / t["n"], "loose": t["loose"] / t["n"], "n": t["n"]} for inst, t in sorted(tally.items())
    }
    scores["n_prompts"] = n
    return scores


def score_responses(rows: list[dict], docs: list[dict], source: str = "responses") -> dict:
    """Score {key, response} rows against the IFEval docs with the same keys; every doc needs a response."""
    responses = {}
    for index, row in enumerate(rows, 1):
        if "key" not in row or not isinstance(row.get("response"), str):
            raise DataError(f"{source}: row {index}: needs a 'key' and a string 'response'")
        responses[row["key"]] = row["response"]
    missing = [d["key"] for d in docs if d["key"] not in responses]
    if missing:
        raise DataError(f"{source}: no response for {len(missing)} of {len(docs)} prompts (first keys {missing[:5]}); pass the --limit the responses were made with")
    results = [check_response(d["prompt"], d["instruction_id_list"], d["kwargs"], responses[d["key"]]) for d in docs]
    return aggregate(results, [d["instruction_id_list"] for d in docs])
