"""Rule-based repairs for constraints a program can satisfy without understanding the text.

No offline teacher here is stronger than the student, so a demonstration that misses only a
mechanical constraint (case, commas, a postscript, a title, quotes, JSON wrapping, section or
paragraph markers, a start or end phrase) is fixed by rule. Only the instructions the response fails
are repaired, in an order where later fixes do not undo earlier ones (structure, then additions at the
start and end, then wrappers, then character-level rewrites). The caller keeps a repaired response
only if the reference verifier passes it.
"""

from __future__ import annotations

import json
import re
from typing import Callable

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _split_into(text: str, parts: int) -> list[str] | None:
    """The text in `parts` consecutive, non-empty groups of paragraphs (or of sentences, when there are
    too few paragraphs); None when there are fewer sentences than parts."""
    units = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    if len(units) < parts:
        units = [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    if parts < 1 or len(units) < parts:
        return None
    size, extra = divmod(len(units), parts)
    groups, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        groups.append(" ".join(units[start:end]))
        start = end
    return groups


def _sections(text: str, kwargs: dict) -> str:
    spliter = kwargs.get("section_spliter") or "Section"
    groups = _split_into(text, int(kwargs.get("num_sections") or 1))
    if groups is None:
        return text
    return "\n\n".join(f"{spliter} {i}\n{group}" for i, group in enumerate(groups, 1))


def _paragraphs(text: str, kwargs: dict) -> str:
    groups = _split_into(text, int(kwargs.get("num_paragraphs") or 1))
    return text if groups is None else "\n***\n".join(groups)


def _title(text: str, kwargs: dict) -> str:
    first_words = re.findall(r"[A-Za-z]+", text)[:4] or ["Answer"]
    return f"<<{' '.join(first_words).title()}>>\n{text}"


def _postscript(text: str, kwargs: dict) -> str:
    marker = kwargs.get("postscript_marker") or "P.S."
    return f"{text.rstrip()}\n\n{marker} Thank you for reading."


def _repeat_prompt(text: str, kwargs: dict) -> str:
    request = kwargs.get("prompt_to_repeat") or ""
    return f"{request}\n{text}" if request else text


def _end_phrase(text: str, kwargs: dict) -> str:
    phrase = kwargs.get("end_phrase") or ""
    return f"{text.rstrip()} {phrase}" if phrase else text


def _quotation(text: str, kwargs: dict) -> str:
    return f'"{text.strip()}"'


def _json(text: str, kwargs: dict) -> str:
    return json.dumps({"response": text.strip()}, ensure_ascii=False)


def _lowercase(text: str, kwargs: dict) -> str:
    return text.lower()


def _uppercase(text: str, kwargs: dict) -> str:
    return text.upper()


def _no_comma(text: str, kwargs: dict) -> str:
    return re.sub(r",\s*", " ", text).replace(",", "")


# instruction id -> fix, in the order fixes are applied
REPAIRS: dict[str, Callable[[str, dict], str]] = {
    "detectable_format:multiple_sections": _sections,
    "length_constraints:number_paragraphs": _paragraphs,
    "detectable_format:title": _title,
    "combination:repeat_prompt": _repeat_prompt,
    "detectable_content:postscript": _postscript,
    "startend:end_checker": _end_phrase,
    "startend:quotation": _quotation,
    "detectable_format:json_format": _json,
    "change_case:english_lowercase": _lowercase,
    "change_case:english_capital": _uppercase,
    "punctuation:no_comma": _no_comma,
}


def repair(response: str, instruction_id_list: list[str], kwargs: list[dict], failing: list[bool]) -> str | None:
    """The response with every failing, mechanically fixable instruction fixed; None if one is not fixable.

    `failing[i]` says whether instruction i fails now. Passing instructions are left alone, so a
    postscript or title is never added twice.
    """
    to_fix = {inst: kw for inst, kw, fails in zip(instruction_id_list, kwargs, failing) if fails}
    if not to_fix or any(inst not in REPAIRS for inst in to_fix):
        return None
    for inst, fix in REPAIRS.items():
        if inst in to_fix:
            response = fix(response, to_fix[inst])
    return response
