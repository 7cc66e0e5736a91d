"""The rule-assisted teacher's rewriting: a complete draft becomes a text that lm-eval's strict checker and
every quality filter pass; incomplete drafts are not rewritten; the text the rules add varies with the draft."""

from __future__ import annotations

from collections import Counter

import pytest

from uniapl.datatools.build_if import build_if_rows
from uniapl.datatools.quality import QualityRules, is_complete_draft, judge, passes
from uniapl.datatools.repair import NoRewrite, Rewrite, rewrite, task_text
from uniapl.ifeval.scoring import follows_instructions

RULES = QualityRules()
TASK = "Write a thank-you note to a neighbor for a dinner."
DRAFT = ("Dear Maria, thank you for the lovely dinner at the harbor last Saturday. The lentil soup was the best I have had in "
         "years, and your garden looked wonderful in the evening light.\n\n"
         "I have been thinking about your idea of a community market. It could bring the whole town together every Sunday. "
         "We would need a few tables, some volunteers and a permit from the council.\n\n"
         "Let me know when you are free to talk about it. I can bring coffee and the notes I made. Warm wishes to you and Tom.")
SECOND_DRAFT = ("Maria, I wanted to say how much I enjoyed our evening together. The food was simple and warm. Your plan for a "
                "weekend market sounds exciting, and I would like to help with the stalls.")

# (instruction, kwargs): every type a rule enforces, with arguments the draft fails as it is
CASES = [
    ("change_case:english_lowercase", {}),
    ("change_case:english_capital", {}),
    ("change_case:capital_word_frequency", {"capital_frequency": 8, "capital_relation": "at least"}),
    ("punctuation:no_comma", {}),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}),
    ("detectable_content:number_placeholders", {"num_placeholders": 4}),
    ("detectable_format:title", {}),
    ("detectable_format:json_format", {}),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 5}),
    ("detectable_format:number_bullet_lists", {"num_bullets": 3}),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 4}),
    ("detectable_format:constrained_response", {}),
    ("startend:quotation", {}),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}),
    ("combination:repeat_prompt", {"prompt_to_repeat": TASK}),
    ("combination:two_responses", {}),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 5}),
    ("length_constraints:nth_paragraph_first_word", {"num_paragraphs": 4, "nth_paragraph": 2, "first_word": "resolution"}),
    ("length_constraints:number_sentences", {"num_sentences": 4, "relation": "less than"}),
    ("length_constraints:number_words", {"num_words": 40, "relation": "less than"}),
    ("keywords:forbidden_words", {"forbidden_words": ["soup", "market"]}),
    ("keywords:existence", {"keywords": ["game", "note"]}),
    ("keywords:frequency", {"keyword": "bridge", "frequency": 1, "relation": "at least"}),
    ("keywords:frequency", {"keyword": "the", "frequency": 3, "relation": "less than"}),
    ("keywords:letter_frequency", {"letter": "k", "let_frequency": 3, "let_relation": "less than"}),
]


def row_for(ids: list[str], kwargs: list[dict], task: str = TASK) -> dict:
    """A row whose prompt is the task followed by the reference descriptions of its instructions."""
    from uniapl.ifeval.reference import reference_registry, seeded_global_random

    registry = reference_registry()
    descriptions = []
    for inst, kw in zip(ids, kwargs):
        with seeded_global_random(0):
            descriptions.append(registry.INSTRUCTION_DICT[inst](inst).build_description(**{k: v for k, v in kw.items() if v}))
    return {"key": "k", "prompt": [{"role": "user", "content": " ".join([task] + descriptions)}], "instruction_id_list": ids, "kwargs": kwargs}


def strict(row: dict, text: str) -> list[bool]:
    return follows_instructions(row["prompt"], row["instruction_id_list"], row["kwargs"], text)


@pytest.mark.parametrize("inst,kwargs", CASES, ids=[f"{i}-{n}" for n, (i, _) in enumerate(CASES)])
def test_a_complete_draft_is_rewritten_into_a_text_that_passes_strict_and_every_filter(inst, kwargs):
    row = row_for([inst], [kwargs])
    assert strict(row, DRAFT) == [False]
    result = rewrite(row, DRAFT, [SECOND_DRAFT])
    assert isinstance(result, Rewrite), result
    assert strict(row, result.text) == [True]
    verdicts, _ = judge(row, result.text, True, RULES)
    assert passes(verdicts), verdicts
    assert inst in result.rules


@pytest.mark.parametrize("inst,kwargs", [("length_constraints:number_sentences", {"num_sentences": 3, "relation": "at least"}),
                                         ("length_constraints:number_paragraphs", {"num_paragraphs": 1}),
                                         ("keywords:existence", {"keywords": ["lentil", "harbor"]})])
def test_a_draft_that_already_passes_is_left_as_it_is(inst, kwargs):
    result = rewrite(row_for([inst], [kwargs]), DRAFT)
    assert isinstance(result, Rewrite) and result.rules == () and result.added == ()
    assert result.text == DRAFT


def test_several_instructions_are_enforced_together_in_one_text():
    ids = ["detectable_format:title", "detectable_content:postscript", "change_case:english_lowercase", "punctuation:no_comma",
           "detectable_format:number_bullet_lists", "startend:end_checker", "keywords:forbidden_words"]
    kwargs = [{}, {"postscript_marker": "P.S."}, {}, {}, {"num_bullets": 2}, {"end_phrase": "Is there anything else I can help with?"},
              {"forbidden_words": ["coffee"]}]
    row = row_for(ids, kwargs)
    result = rewrite(row, DRAFT)
    assert isinstance(result, Rewrite), result
    assert all(strict(row, result.text))
    assert set(result.rules) == set(ids)
    assert result.text.count("<<") == 1 and "coffee" not in result.text.lower()


def test_the_added_text_comes_from_the_draft_or_the_task():
    row = row_for(["detectable_format:title", "detectable_content:postscript"], [{}, {"postscript_marker": "P.S."}])
    result = rewrite(row, DRAFT)
    title = "A thank-you note to a neighbor for a dinner"  # the task's first clause, its verb dropped
    (postscript,) = set(result.added) - {title}
    assert title in result.added and result.text.startswith(f"<<{title}>>\n")
    assert postscript in DRAFT and postscript not in result.text.split("P.S.")[0]  # a draft sentence, moved
    headed = rewrite(row, "Market Day Plans\n" + DRAFT)
    assert "Market Day Plans" in headed.added  # the draft's own heading comes first
    assert headed.text.startswith("<<Market Day Plans>>\n")
    copied = rewrite(row, "<<Poem of Joy>>\n" + DRAFT)  # but not the example the instruction gives
    assert copied.text.startswith(f"<<{title}>>\n") and "Poem of Joy" not in copied.added


def test_no_single_added_sentence_dominates_the_rewrites_of_many_prompts():
    """Rewrites of 40 different tasks and drafts (no draft sentence repeats): no added title, postscript or keyword
    line repeats (the issue allows at most 2% of demonstrations; one fixed sentence would be in all of them)."""
    rows, _, _ = build_if_rows(40, seed=5)
    subjects = ["harbor", "orchard", "library", "bakery", "bridge", "glacier", "museum", "festival"]
    added = Counter()
    rewritten = 0
    for n, base in enumerate(rows):
        task = task_text(base)
        subject = subjects[n % len(subjects)]
        draft = (f"The {subject} opened early on day {n}. People came from far away to see it. "
                 f"Everyone agreed that the {subject} number {n} had never looked better. "
                 f"A guide explained its history to visitors {n + 1} times. The day ended with music near the {subject} at {n} o'clock.")
        row = row_for(["detectable_format:title", "detectable_content:postscript", "keywords:existence"],
                      [{}, {"postscript_marker": "P.S."}, {"keywords": [subjects[(n + 3) % len(subjects)], f"idea{n}"]}], task)
        result = rewrite(row, draft)
        assert isinstance(result, Rewrite), result
        rewritten += 1
        added.update(set(result.added))
    assert rewritten == 40
    sentence, count = added.most_common(1)[0]
    assert count / rewritten <= 0.02 or count == 1, (sentence, count)


@pytest.mark.parametrize("inst,kwargs,draft,reason", [
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Thanks for dinner. It was lovely.", "postscript"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 4}, "Thanks for dinner. It was lovely.", "too few sentences"),
    ("combination:two_responses", {}, DRAFT, "second complete draft"),
    ("language:response_language", {"language": "fr"}, DRAFT, "strict: language:response_language"),
    ("keywords:letter_frequency", {"letter": "q", "let_frequency": 5, "let_relation": "at least"}, DRAFT, "strict"),
    ("length_constraints:number_words", {"num_words": 300, "relation": "at least"}, DRAFT, "strict"),
])
def test_what_no_rule_can_honestly_do_is_refused_with_its_reason(inst, kwargs, draft, reason):
    result = rewrite(row_for([inst], [kwargs]), draft)
    assert isinstance(result, NoRewrite) and reason in result.reason


def test_only_complete_drafts_are_rewritten():
    row = row_for(["detectable_format:title"], [{}])
    assert is_complete_draft(row, DRAFT, True, RULES)
    assert not is_complete_draft(row, DRAFT, False, RULES)  # cut off at the length cap
    assert not is_complete_draft(row, "Thanks for the dinner, Maria.", True, RULES)  # under 15 words
    assert not is_complete_draft(row, "The soup was good and the bread was warm. " * 10, True, RULES)  # a loop
    assert not is_complete_draft(row, row["prompt"][0]["content"] + " Sure.", True, RULES)  # an echo of the prompt


def test_task_text_is_the_prompt_without_its_instructions():
    rows, _, _ = build_if_rows(20, seed=7)
    for row in rows:
        task = task_text(row)
        assert task and task in row["prompt"][0]["content"] and len(task) < len(row["prompt"][0]["content"])
    assert task_text(row_for(["punctuation:no_comma"], [{}])) == TASK
    assert task_text({**row_for(["punctuation:no_comma"], [{}]), "prompt": [{"role": "user", "content": "Other words."}]}) is None


def test_the_drafts_own_markdown_and_repeated_request_do_not_count_twice():
    marked = DRAFT.replace("\n\n", "\n\n***\n\n", 1).replace("\n\nLet me", "\n\n------\n\nLet me") + "\n******\nOne more ***bold*** idea."
    paragraphs = row_for(["length_constraints:number_paragraphs"], [{"num_paragraphs": 2}])
    result = rewrite(paragraphs, marked)
    assert strict(paragraphs, result.text) == [True] and result.text.count("***") == 1
    repeat = row_for(["combination:repeat_prompt"], [{"prompt_to_repeat": TASK}])
    result = rewrite(repeat, f"{TASK}\n{DRAFT}")
    assert strict(repeat, result.text) == [True] and result.text.count(TASK) == 1
