"""build-if: reference instruction text, no conflicting pairs, decontaminated against IFEval, disjoint splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniapl.cli import main
from uniapl.datatools.build_if import build_if_rows, ifeval_ngrams, unsatisfiable, word_ngrams
from uniapl.datatools.tasks import TRAIN_YES_NO_FRAMES, HELDOUT_YES_NO_FRAMES, frame_of
from uniapl.ifeval.prompts import load_constraint_rows, load_ifeval
from uniapl.ifeval.reference import reference_registry


@pytest.fixture(scope="module")
def built():
    return build_if_rows(120, seed=7, heldout=30)


def descriptions(row):
    """Each instruction's text, rendered again from the row's kwargs by the reference classes."""
    registry = reference_registry()
    texts = []
    for inst, kwargs in zip(row["instruction_id_list"], row["kwargs"]):
        texts.append(registry.INSTRUCTION_DICT[inst](inst).build_description(**kwargs))
    return texts


def base_task(row):
    """The request before the first instruction text."""
    content = row["prompt"][0]["content"]
    return content[: min(content.index(text) for text in descriptions(row))].strip()


def test_rows_have_the_training_format_and_1_to_3_instructions(built):
    train, heldout, _ = built
    assert len(train) == 120 and len(heldout) == 30
    for row in train + heldout:
        assert set(row) == {"key", "prompt", "instruction_id_list", "kwargs"}
        assert row["prompt"][0]["role"] == "user" and len(row["prompt"]) == 1
        assert 1 <= len(row["instruction_id_list"]) <= 3
        assert len(row["kwargs"]) == len(row["instruction_id_list"])
    assert len({i for r in train + heldout for i in r["instruction_id_list"]}) >= 20


def test_instruction_text_is_the_reference_description(built):
    for row in built[0]:
        for text in descriptions(row):
            assert text in row["prompt"][0]["content"]


def test_no_conflicting_instructions_are_combined(built):
    conflicts = reference_registry().INSTRUCTION_CONFLICTS
    for row in built[0] + built[1]:
        ids = row["instruction_id_list"]
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                assert a != b and b not in conflicts[a] and a not in conflicts[b], (a, b)


def test_no_8gram_shared_with_ifeval_outside_the_reference_descriptions(built):
    ifeval = ifeval_ngrams(load_ifeval())
    for row in built[0] + built[1]:
        template = set().union(*(word_ngrams(t) for t in descriptions(row)))
        assert not (word_ngrams(row["prompt"][0]["content"]) - template) & ifeval
        assert not word_ngrams(base_task(row)) & ifeval


def test_strict_decontamination_shares_no_8gram_at_all_with_ifeval(capsys, tmp_path):
    train, _, dropped = build_if_rows(60, seed=3, decontamination="strict")
    ifeval = ifeval_ngrams(load_ifeval())
    assert len(train) == 60 and all(not word_ngrams(r["prompt"][0]["content"]) & ifeval for r in train)
    # IFEval's prompts use the fixed wording of the lowercase instruction, so strict mode never keeps it
    assert not any("change_case:english_lowercase" in r["instruction_id_list"] for r in train)
    assert dropped["shares a 8-gram with IFEval"] > 0
    with pytest.raises(SystemExit):
        main(["data", "build-if", "--n", "2", "--out", str(tmp_path / "x.jsonl"), "--decontaminate", "loose"])
    assert "invalid choice: 'loose'" in capsys.readouterr().err


def test_splits_use_disjoint_base_tasks_and_the_seed_repeats_them(built):
    train, heldout, _ = built
    assert not {base_task(r) for r in train} & {base_task(r) for r in heldout}
    # not only other slot fillers: the held-out requests come from frames training never saw
    assert not {frame_of(base_task(r)) for r in train} & {frame_of(base_task(r)) for r in heldout}
    assert len({base_task(r) for r in train}) == len(train)
    again, _, _ = build_if_rows(5, seed=7, heldout=0)
    assert again == train[:5]


def test_yes_no_answer_format_only_with_yes_no_questions(built):
    yes_no = set(TRAIN_YES_NO_FRAMES + HELDOUT_YES_NO_FRAMES)
    constrained = [r for r in built[0] + built[1] if "detectable_format:constrained_response" in r["instruction_id_list"]]
    assert constrained
    for row in constrained:
        assert frame_of(base_task(row)) in yes_no and base_task(row).endswith("?")


def test_the_unsatisfiable_combinations_are_rejected_and_never_built(built):
    registry = reference_registry()
    lowercase, capital = "change_case:english_lowercase", "change_case:english_capital"
    sections = "detectable_format:multiple_sections"
    # the checker matches the section marker case-sensitively
    assert unsatisfiable([lowercase, sections], [{}, {"section_spliter": "Section", "num_sections": 2}], registry)
    assert unsatisfiable([lowercase, sections], [{}, {"section_spliter": "SECTION", "num_sections": 2}], registry)
    assert unsatisfiable([capital, sections], [{}, {"section_spliter": "Section", "num_sections": 2}], registry)
    assert unsatisfiable([capital, sections], [{}, {"section_spliter": "SECTION", "num_sections": 2}], registry) is None
    # the repeated request carries a comma (here in the no-comma instruction's own text)
    repeat = {"prompt_to_repeat": "Write a poem. In your entire response, refrain from the use of any commas."}
    assert unsatisfiable(["punctuation:no_comma", "combination:repeat_prompt"], [{}, repeat], registry)
    assert unsatisfiable(["punctuation:no_comma", "combination:repeat_prompt"], [{}, {"prompt_to_repeat": "Write a poem."}], registry) is None
    # a keyword both required and forbidden, or required more often than allowed
    assert unsatisfiable(["keywords:existence", "keywords:forbidden_words"], [{"keywords": ["tide"]}, {"forbidden_words": ["tide"]}], registry)
    assert unsatisfiable(["startend:end_checker", "keywords:frequency"],
                         [{"end_phrase": "Any other questions?"}, {"keyword": "other", "frequency": 1, "relation": "less than"}], registry)
    for row in built[0] + built[1]:
        assert unsatisfiable(row["instruction_id_list"], row["kwargs"], registry) is None


def test_cli_writes_files_the_checkers_accept(tmp_path, capsys):
    out, held = tmp_path / "train.jsonl", tmp_path / "held.jsonl"
    assert main(["data", "build-if", "--n", "6", "--seed", "1", "--out", str(out), "--heldout", "2", "--heldout-out", str(held)]) == 0
    assert len(load_constraint_rows(out)) == 6 and len(load_constraint_rows(held)) == 2
    assert main(["data", "build-if", "--n", "6", "--out", str(out), "--heldout", "2"]) == 2
    assert "go together" in capsys.readouterr().err


BUNDLED = Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def bundled():
    return load_constraint_rows(BUNDLED / "if_train.jsonl"), load_constraint_rows(BUNDLED / "if_heldout.jsonl")


def test_bundled_prompts_are_what_build_if_makes_and_are_clean(bundled):
    train, heldout = bundled
    rebuilt_train, rebuilt_heldout, _ = build_if_rows(len(train), seed=2026, heldout=len(heldout))
    strip = lambda rows: [{k: v for k, v in r.items() if k != "completion"} for r in rows]  # noqa: E731
    assert strip(train) == rebuilt_train and strip(heldout) == rebuilt_heldout  # the data card's command, byte for byte
    ifeval = ifeval_ngrams(load_ifeval())
    registry = reference_registry()
    for row in train + heldout:
        template = set().union(*(word_ngrams(t) for t in descriptions(row)))
        assert not (word_ngrams(row["prompt"][0]["content"]) - template) & ifeval
        assert unsatisfiable(row["instruction_id_list"], row["kwargs"], registry) is None
    assert not {frame_of(base_task(r)) for r in train} & {frame_of(base_task(r)) for r in heldout}


def test_bundled_demonstrations_are_whole_verified_teacher_samples(bundled):
    """Every demonstration passes strict and the whole quality funnel, ended with EOS, and is a sample the
    status file records as sampled (never repaired)."""
    from uniapl.datatools.quality import QualityRules, judge, passes
    from uniapl.io import read_jsonl

    for split, rows in zip(("train", "heldout"), bundled):
        statuses = {s["key"]: s for s in read_jsonl(BUNDLED / "teach" / f"if_{split}.status.jsonl")}
        assert set(statuses) == {r["key"] for r in rows}
        demos = [r for r in rows if "completion" in r]
        assert len(demos) >= 0.3 * len(rows)
        for row in demos:
            status = statuses[row["key"]]
            assert status["outcome"] == "sampled" and status["funnel"]["language"] >= 1  # a sample ended and passed all
            verdicts, per_instruction = judge(row, row["completion"][0]["content"], ended=True, rules=QualityRules())
            assert all(per_instruction) and passes(verdicts), row["key"]
        assert all(statuses[r["key"]]["outcome"] != "sampled" for r in rows if "completion" not in r)
