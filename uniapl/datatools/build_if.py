"""IFEval-style training prompts: a base task plus 1 to 3 verifiable instructions.

The instruction text comes from the reference instruction classes (`build_description`, which also
picks random arguments), so the training constraints read exactly like IFEval's, and the row keeps
the `instruction_id_list` and `kwargs` that the same classes check. Instructions that IFEval's own
conflict table pairs are never combined. A prompt that shares a word 8-gram with any IFEval prompt is
dropped (decontamination), and base tasks are never reused, so the held-out split is disjoint.

Decontamination ("outside-instructions", the default) leaves out the 8-grams that lie wholly inside
a reference instruction description: IFEval's prompts were written from those same templates ("Your
answer must contain a title, wrapped in double angular brackets..."), so no prompt that asks what
IFEval asks could avoid them. Every other 8-gram (the base task, and the joins between task and
instructions) must be new. "strict" drops every prompt that shares any 8-gram with IFEval, which
leaves out the instruction types whose fixed wording IFEval uses.
"""

from __future__ import annotations

import random
from collections import Counter

from uniapl.errors import UniaplError
from uniapl.textstats import ngrams, words

DECONTAMINATION_N = 8
# which shared 8-grams drop a prompt: any ("strict"), or those not wholly inside an instruction's description
DECONTAMINATION_MODES = ("outside-instructions", "strict")
REPEAT_PROMPT = "combination:repeat_prompt"
CONSTRAINED_RESPONSE = "detectable_format:constrained_response"
# how many instructions a prompt gets: 1, 2 or 3
INSTRUCTION_COUNT_WEIGHTS = {1: 0.4, 2: 0.4, 3: 0.2}


def word_ngrams(text: str, n: int = DECONTAMINATION_N) -> set[tuple[str, ...]]:
    return set(ngrams(words(text), n))


def ifeval_ngrams(docs: list[dict], n: int = DECONTAMINATION_N) -> set[tuple[str, ...]]:
    """Every word n-gram of IFEval's prompts: the set a training prompt must not touch."""
    grams: set[tuple[str, ...]] = set()
    for doc in docs:
        grams |= word_ngrams(doc["prompt"], n)
    return grams


def conflicts(a: str, b: str, table: dict[str, set[str]]) -> bool:
    """IFEval's conflict table, read both ways (lm-eval does not make it symmetric)."""
    return a == b or b in table.get(a, set()) or a in table.get(b, set())


def choose_instructions(rng: random.Random, registry) -> list[str]:
    """1 to 3 instruction ids, no two of which conflict."""
    count = rng.choices(list(INSTRUCTION_COUNT_WEIGHTS), weights=list(INSTRUCTION_COUNT_WEIGHTS.values()))[0]
    available = sorted(registry.INSTRUCTION_DICT)
    chosen: list[str] = []
    while len(chosen) < count:
        candidates = [i for i in available if not any(conflicts(i, c, registry.INSTRUCTION_CONFLICTS) for c in chosen)]
        if not candidates:
            break
        chosen.append(rng.choice(candidates))
    return chosen


def contaminated_ngrams(text: str, descriptions: list[str], ifeval_grams: set, mode: str = "outside-instructions") -> set[tuple[str, ...]]:
    """The prompt's 8-grams shared with IFEval; in the default mode, other than those inside an instruction's description."""
    template_grams: set[tuple[str, ...]] = set()
    if mode == "outside-instructions":
        for description in descriptions:
            template_grams |= word_ngrams(description)
    return (word_ngrams(text) - template_grams) & ifeval_grams


def checkable_as_asked(instruction_id: str, kwargs: dict, description: str, registry) -> bool:
    """Whether the checker, given the row's kwargs the way lm-eval passes them, asks what the prompt asks.

    The reference classes sometimes draw arguments they reject when given back (paragraph 6 of 5);
    the checker then redraws them at random, so such an instruction cannot be scored. A redraw is
    seen exactly: the global random state moves.
    """
    checker = registry.INSTRUCTION_DICT[instruction_id](instruction_id)
    state = random.getstate()
    rebuilt = checker.build_description(**{k: v for k, v in kwargs.items() if v})
    return random.getstate() == state and rebuilt == description


def render_instructions(task: str, instruction_ids: list[str], seed: int, registry) -> tuple[str, list[dict], list[str]]:
    """The prompt text, one kwargs dict per instruction and the descriptions, all from the reference classes.

    repeat_prompt goes last: it asks to repeat the request before it, which is its `prompt_to_repeat`.
    """
    ordered = [i for i in instruction_ids if i != REPEAT_PROMPT] + [i for i in instruction_ids if i == REPEAT_PROMPT]
    request = task
    kwargs_by_id, description_by_id = {}, {}
    from uniapl.ifeval.reference import seeded_global_random

    with seeded_global_random(seed):
        for instruction_id in ordered:
            checker = registry.INSTRUCTION_DICT[instruction_id](instruction_id)
            if instruction_id == REPEAT_PROMPT:
                description = checker.build_description(prompt_to_repeat=request)
                request = f"{request}\n{description}"
            else:
                description = checker.build_description()
                request = f"{request} {description}"
            kwargs_by_id[instruction_id] = checker.get_instruction_args() or {}
            description_by_id[instruction_id] = description
    return request, [kwargs_by_id[i] for i in instruction_ids], [description_by_id[i] for i in instruction_ids]


def required_text(instruction_id: str, kwargs: dict) -> tuple[str, bool] | None:
    """The least text a response must contain to follow the instruction, and whether its checker
    matches that text case-sensitively; None where no fixed text is required."""
    if instruction_id == "keywords:existence":
        return " ".join(kwargs["keywords"]), False
    if instruction_id == "keywords:frequency" and kwargs["relation"] == "at least":
        return " ".join([kwargs["keyword"]] * kwargs["frequency"]), False
    if instruction_id == "keywords:letter_frequency" and kwargs["let_relation"] == "at least":
        return kwargs["letter"] * kwargs["let_frequency"], False
    if instruction_id == "startend:end_checker":
        return kwargs["end_phrase"], False
    if instruction_id == "detectable_content:postscript":
        return kwargs["postscript_marker"], False
    if instruction_id == "detectable_format:multiple_sections":
        return "\n".join(f"{kwargs['section_spliter']} {i}" for i in range(1, kwargs["num_sections"] + 1)), True
    if instruction_id == "length_constraints:nth_paragraph_first_word":
        return kwargs["first_word"], False
    if instruction_id == REPEAT_PROMPT:
        return kwargs["prompt_to_repeat"], False
    return None


# instructions that a response fails by containing something (the frequency ones under "less than"):
# once the text another instruction requires fails one of them, every response does
ALWAYS_FORBIDDING = ("punctuation:no_comma", "keywords:forbidden_words")
UPPER_BOUNDS = {"keywords:frequency": "relation", "keywords:letter_frequency": "let_relation",
                "change_case:capital_word_frequency": "capital_relation"}


def forbids(instruction_id: str, kwargs: dict) -> bool:
    relation = UPPER_BOUNDS.get(instruction_id)
    return instruction_id in ALWAYS_FORBIDDING or (relation is not None and kwargs[relation] == "less than")


CASES = {"change_case:english_lowercase": str.lower, "change_case:english_capital": str.upper}


def unsatisfiable(instruction_ids: list[str], kwargs: list[dict], registry) -> str | None:
    """Why no response can follow every instruction of a prompt, or None.

    Each instruction's required text (`required_text`) is put in the case the prompt asks for, where
    its checker ignores case, and then run through the checkers of the other instructions that a
    response fails by containing something (`forbids`, and the case instructions for text matched
    case-sensitively). These checks only get worse as text is added, so a failure here is final.
    """
    case = next((CASES[i] for i in instruction_ids if i in CASES), None)
    for source, source_kwargs in zip(instruction_ids, kwargs):
        required = required_text(source, source_kwargs)
        if required is None:
            continue
        text, case_sensitive = required
        if case is not None:
            if case_sensitive and case(text) != text:
                return f"{source} needs '{text.splitlines()[0]}', which the case instruction forbids"
            text = case(text)
        for other, other_kwargs in zip(instruction_ids, kwargs):
            if other == source or not forbids(other, other_kwargs):
                continue
            checker = registry.INSTRUCTION_DICT[other](other)
            checker.build_description(**{k: v for k, v in other_kwargs.items() if v})
            if not checker.check_following(text):
                return f"the text {source} requires breaks {other}"
    return None


def build_if_rows(n: int, seed: int, heldout: int = 0, key_prefix: str = "if",
                  decontamination: str = "outside-instructions") -> tuple[list[dict], list[dict], Counter]:
    """`n` training rows and `heldout` held-out rows, and why candidates were dropped.

    The two splits draw their base tasks from disjoint frames (`tasks.SPLITS`); a prompt with the
    yes/no/maybe answer format always gets a yes/no question.
    """
    from uniapl.datatools.tasks import base_task
    from uniapl.ifeval.prompts import load_ifeval
    from uniapl.ifeval.reference import reference_registry

    if n < 1 or heldout < 0:
        raise UniaplError(f"--n must be at least 1 and --heldout at least 0, got {n} and {heldout}")
    if decontamination not in DECONTAMINATION_MODES:
        raise UniaplError(f"--decontaminate must be one of {', '.join(DECONTAMINATION_MODES)}, got '{decontamination}'")
    registry = reference_registry()
    contaminated = ifeval_ngrams(load_ifeval())
    rng = random.Random(seed)
    used_tasks: set[str] = set()
    rows: list[dict] = []
    dropped: Counter = Counter()
    for split, count in (("train", n), ("heldout", heldout)):
        target, attempts = len(rows) + count, 0
        while len(rows) < target:
            attempts += 1
            if attempts > 50 * count:
                raise UniaplError(f"could only build {len(rows) - target + count} distinct clean {split} prompts of {count}; ask for fewer")
            instruction_ids = choose_instructions(rng, registry)
            task = base_task(rng, split, yes_no=CONSTRAINED_RESPONSE in instruction_ids)
            if task in used_tasks:
                dropped["repeated base task"] += 1
                continue
            text, kwargs, descriptions = render_instructions(task, instruction_ids, rng.getrandbits(63), registry)
            if not all(checkable_as_asked(i, k, d, registry) for i, k, d in zip(instruction_ids, kwargs, descriptions)):
                dropped["reference drew arguments its checker redraws"] += 1
                continue
            reason = unsatisfiable(instruction_ids, kwargs, registry)
            if reason:
                dropped[f"no response can satisfy it: {reason}"] += 1
                continue
            if contaminated_ngrams(text, descriptions, contaminated, decontamination):
                dropped[f"shares a {DECONTAMINATION_N}-gram with IFEval"] += 1
                continue
            used_tasks.add(task)
            rows.append({
                "key": f"{key_prefix}-{seed}-{len(rows):05d}",
                "prompt": [{"role": "user", "content": text}],
                "instruction_id_list": instruction_ids,
                "kwargs": kwargs,
            })
    return rows[:n], rows[n:], dropped
