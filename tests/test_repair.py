"""Each rule-based repair makes the reference checker pass, and touches only failing instructions."""

from __future__ import annotations

import pytest

from uniapl.datatools.repair import REPAIRS, repair
from uniapl.ifeval import check_response

TEXT = ("The harbor wakes early, and the boats go out. Gulls follow them, crying over the water.\n\n"
        "By noon the nets are full. The fishermen sing on the way back, and the town comes down to meet them.")
PROMPT = "Write about a harbor."

CASES = [
    ("change_case:english_lowercase", {}),
    ("change_case:english_capital", {}),
    ("punctuation:no_comma", {}),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}),
    ("detectable_format:title", {}),
    ("startend:quotation", {}),
    ("detectable_format:json_format", {}),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 3}),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 3}),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}),
    ("combination:repeat_prompt", {"prompt_to_repeat": PROMPT}),
]


def strict(ids, kwargs, response):
    return check_response(PROMPT, ids, kwargs, response)["inst_level_strict_acc"]


def test_every_repair_has_a_case():
    assert {inst for inst, _ in CASES} == set(REPAIRS)


@pytest.mark.parametrize("inst,kwargs", CASES)
def test_repair_makes_the_checker_pass(inst, kwargs):
    assert strict([inst], [kwargs], TEXT) == [False]
    fixed = repair(TEXT, [inst], [kwargs], [True])
    assert strict([inst], [kwargs], fixed) == [True]


def test_combined_repairs_pass_together_and_passing_ones_are_left_alone():
    ids = ["detectable_format:title", "detectable_content:postscript", "change_case:english_lowercase", "punctuation:no_comma"]
    kwargs = [{}, {"postscript_marker": "P.S."}, {}, {}]
    already_titled = "<<Harbor>>\n" + TEXT
    failing = [not ok for ok in strict(ids, kwargs, already_titled)]
    assert failing == [False, True, True, True]
    fixed = repair(already_titled, ids, kwargs, failing)
    assert all(strict(ids, kwargs, fixed))
    assert fixed.count("<<") == 1


def test_unfixable_constraints_return_none():
    assert repair(TEXT, ["keywords:existence"], [{"keywords": ["zebra"]}], [True]) is None
    assert repair(TEXT, ["punctuation:no_comma"], [{}], [False]) is None  # nothing to fix
    # too little text to split into 5 sections
    assert strict(["detectable_format:multiple_sections"], [{"section_spliter": "Section", "num_sections": 5}],
                  repair("One line.", ["detectable_format:multiple_sections"], [{"section_spliter": "Section", "num_sections": 5}], [True])) == [False]
