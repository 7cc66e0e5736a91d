"""The rule-assisted teacher's rewriting: a complete student draft made into a text that follows its row's instructions.

No instruction model stronger than the student installs offline here (issue 26). The student can write a
whole answer but rarely its format, so format is enforced by rule on a complete draft (ended on its own,
no loop, no echo, enough words: `quality.is_complete_draft`), never on a cut-off one. `rewrite` runs the
rules in an order where a later one does not undo an earlier one:

1. the body: its paragraphs and lines parsed, markdown rules and `***` runs removed;
2. structure: bullets (list items kept, else the last sentences), highlights (whole sentences in
   `**`), placeholders (names, numbers and the task's own words put in brackets); required keywords
   the draft lacks named in one closing line ("Keywords: ..."), the instruction's own words; then the
   body regrouped into the asked-for paragraphs or sections, a paragraph started with its required word;
3. additions, drawn from the draft or the task: a title (the draft's own heading, else the task's
   first clause), a postscript (the draft sentence that shares most words with the task, moved), the
   required end phrase, answer option or repeated request, a second complete draft as the second of
   two responses;
4. wrappers and characters: quotation marks, commas removed, case, words put in capitals, JSON;
5. upper limits (sentences, words, a letter, a keyword, forbidden words): body sentences removed,
   from the end or where the offending word is, until the limits hold.

A rule that cannot honestly do its part (a response language, a letter the draft lacks, a draft too
short for "at least N words") leaves the instruction to the draft, and the caller's strict check drops
the rewrite. The caller keeps a rewrite only if lm-eval's strict checker and every quality filter pass it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from uniapl.datatools.quality import answer_body
from uniapl.ifeval.prompts import prompt_text
from uniapl.ifeval.scoring import follows_instructions
from uniapl.textstats import words

SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|(?<=[.!?][\"')\]])\s+")
LIST_MARKER = re.compile(r"^\s*(?:[-*\u2022+]|\d{1,2}[.)])\s+")
RULE_LINE = re.compile(r"^\s*[*_=#~-]{2,}\s*$")
HEADING_MARKER = re.compile(r"^\s*#{1,6}\s*")
TWO_RESPONSES_SEPARATOR = "******"
MAX_TITLE_WORDS = 12  # a draft's first line this short, without a full stop, is its heading
MAX_TASK_TITLE_WORDS = 16
# imperative openings of a task, dropped when its first clause becomes a title
TASK_VERBS = {"write", "tell", "describe", "explain", "plan", "give", "compare", "list", "create", "draft", "compose",
              "summarize", "suggest", "share", "outline", "prepare", "make", "design", "imagine", "offer", "propose"}
LAYOUT = ("length_constraints:number_paragraphs", "length_constraints:nth_paragraph_first_word", "detectable_format:multiple_sections")
CONSTRAINED_OPTIONS = {"yes": "My answer is yes.", "no": "My answer is no.", "maybe": "My answer is maybe."}


@dataclass(frozen=True)
class Rewrite:
    text: str
    rules: tuple[str, ...]  # the instructions whose rule changed the draft, in the order they ran
    added: tuple[str, ...]  # text a rule chose (a title, a postscript, named keywords): what the stock-text check reads


@dataclass(frozen=True)
class NoRewrite:
    reason: str


@dataclass
class Body:
    """A draft as paragraphs of lines; a line holds one or more sentences."""

    paragraphs: list[list[str]]

    @classmethod
    def parse(cls, text: str) -> Body:
        """Markdown rules (`---`, `***`, a `******` separator) and heading marks removed; other `*` runs of three or
        more made bold, so that no `***` is left to count as a paragraph divider."""
        paragraphs = []
        for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").strip()):
            lines = [line for line in block.split("\n") if not RULE_LINE.match(line)]
            lines = [re.sub(r"\*{3,}", "**", HEADING_MARKER.sub("", line)).strip() for line in lines]
            if any(lines):
                paragraphs.append([line for line in lines if line])
        return cls(paragraphs)

    def copy(self) -> Body:
        return Body([list(p) for p in self.paragraphs])

    def sentences(self) -> list[tuple[int, int, int, str]]:
        """(paragraph, line, sentence, text) of every sentence, in reading order."""
        return [(p, l, s, sentence) for p, para in enumerate(self.paragraphs) for l, line in enumerate(para)
                for s, sentence in enumerate(split_sentences(line))]

    def remove_sentence(self, p: int, l: int, s: int) -> None:
        parts = split_sentences(self.paragraphs[p][l])
        del parts[s]
        self.paragraphs[p][l] = " ".join(parts)
        self.paragraphs = [[line for line in para if line] for para in self.paragraphs]
        self.paragraphs = [para for para in self.paragraphs if para]

    def text(self) -> str:
        return "\n\n".join("\n".join(p) for p in self.paragraphs)


# what the reference checkers count (lm_eval.tasks.ifeval.instructions)
def count_bullets(text: str) -> int:
    return len(re.findall(r"^\s*\*[^\*].*$", text, flags=re.MULTILINE)) + len(re.findall(r"^\s*-.*$", text, flags=re.MULTILINE))


def count_highlights(text: str) -> int:
    single = [h for h in re.findall(r"\*[^\n\*]*\*", text) if h.strip("*").strip()]
    double = [h for h in re.findall(r"\*\*[^\n\*]*\*\*", text) if h.removeprefix("**").removesuffix("**").strip()]
    return len(single) + len(double)


def count_placeholders(text: str) -> int:
    return len(re.findall(r"\[.*?\]", text))


def split_sentences(line: str) -> list[str]:
    return [s for s in SENTENCE_BREAK.split(line.strip()) if s]


def task_text(row: dict) -> str | None:
    """The prompt without its instruction descriptions (rebuilt by the reference classes from the row's
    kwargs): the request the student drafts an answer to. None where a description is not in the prompt."""
    from uniapl.ifeval.reference import reference_registry, seeded_global_random

    registry = reference_registry()
    text = prompt_text(row["prompt"])
    for instruction, kwargs in zip(row["instruction_id_list"], row["kwargs"]):
        checker = registry.INSTRUCTION_DICT[instruction](instruction)
        with seeded_global_random(0):
            description = checker.build_description(**{k: v for k, v in kwargs.items() if v})
        if description not in text:
            return None
        text = text.replace(description, " ")
    return " ".join(text.split()) or None


def _content_words(text: str) -> set[str]:
    return {w for w in words(text) if len(w) > 3}


class _Rewriter:
    """One row's instructions, applied to one draft."""

    def __init__(self, row: dict, others: list[str]):
        self.row = row
        self.spec = dict(zip(row["instruction_id_list"], row["kwargs"]))
        self.task = task_text(row) or prompt_text(row["prompt"])
        self.task_words = _content_words(self.task)
        self.others = others
        self.fired: list[str] = []
        self.added: list[str] = []

    def fire(self, rule: str) -> None:
        if rule not in self.fired:
            self.fired.append(rule)

    # 1. the body ---------------------------------------------------------------------------------
    def title_from_draft(self, body: Body) -> str | None:
        """The draft's own heading: a short first line without a full stop, with more text after it, and not a
        copy of the prompt's example ("<<poem of joy>>")."""
        first = body.paragraphs[0][0]
        plain = first.strip("*_ ").removeprefix("Title:").strip("*_ <>").strip()
        if (len(body.sentences()) > 1 and plain and len(plain.split()) <= MAX_TITLE_WORDS and not plain.endswith((".", "!", "?", ":"))
                and plain.lower() not in prompt_text(self.row["prompt"]).lower()):
            return plain
        return None

    def title_from_task(self) -> str:
        """The task's first clause without its opening verb; a long one keeps its end, where the subject is."""
        clause = re.split(r"[,:;?!.]", self.task)[0].split() or self.task.split()
        if len(clause) > 1 and clause[0].lower() in TASK_VERBS:
            clause = clause[1:]
        title = " ".join(clause[-MAX_TASK_TITLE_WORDS:])
        return title[:1].upper() + title[1:]

    def missing_keywords(self, text: str) -> list[str]:
        missing = [k for k in self.spec.get("keywords:existence", {}).get("keywords", []) if not re.search(k, text, re.IGNORECASE)]
        frequency = self.spec.get("keywords:frequency")
        if frequency and frequency["relation"] == "at least":
            count = len(re.findall(frequency["keyword"], text, re.IGNORECASE))
            if count == frequency["frequency"] - 1 and frequency["keyword"] not in missing:
                missing.append(frequency["keyword"])
        return missing

    # 2. structure --------------------------------------------------------------------------------
    def bullets(self, body: Body, count: int) -> Body | None:
        """Exactly `count` lines marked `* `: the draft's first list items, else its last sentences."""
        items = [(p, l) for p, para in enumerate(body.paragraphs) for l, line in enumerate(para) if LIST_MARKER.match(line)]
        out = body.copy()
        for p, l in items:
            out.paragraphs[p][l] = LIST_MARKER.sub("", out.paragraphs[p][l])
        if len(items) >= count:
            for p, l in items[:count]:
                out.paragraphs[p][l] = "* " + out.paragraphs[p][l]
            return out
        sentences = out.sentences()
        if len(sentences) < count + 1:
            return None
        chosen = {(p, l, s) for p, l, s, _ in sentences[-count:]}
        paragraphs = []
        for p, para in enumerate(out.paragraphs):
            lines: list[str] = []
            for l, line in enumerate(para):
                plain: list[str] = []
                for s, sentence in enumerate(split_sentences(line)):
                    if (p, l, s) in chosen:
                        if plain:
                            lines.append(" ".join(plain))
                            plain = []
                        lines.append("* " + sentence)
                    else:
                        plain.append(sentence)
                if plain:
                    lines.append(" ".join(plain))
            paragraphs.append(lines)
        return Body(paragraphs)

    def highlights(self, body: Body, count: int) -> Body | None:
        """`count` more sentences in `**`, spread over the text."""
        candidates = [(p, l, s, t) for p, l, s, t in body.sentences() if "*" not in t.lstrip("* ") and len(t.split()) >= 2]
        if len(candidates) < count:
            return None
        step = len(candidates) / count
        chosen = {candidates[int(i * step)][:3] for i in range(count)}
        out = body.copy()
        for p, para in enumerate(out.paragraphs):
            for l, line in enumerate(para):
                marker = "* " if line.startswith("* ") else ""
                parts = split_sentences(line[len(marker):])
                parts = [f"**{t}**" if (p, l, s) in chosen else t for s, t in enumerate(parts)]
                para[l] = marker + " ".join(parts)
        return out

    def placeholders(self, body: Body, count: int) -> Body | None:
        """`count` more words in brackets: names and numbers first, then the words the task uses, then long words."""
        first_words = {t.split()[0].strip("*\"'") for _, _, _, t in body.sentences() if t.split()}
        seen: list[str] = []
        for token in re.findall(r"(?<![\[\w])([A-Za-z][\w'-]*|\d[\d:./]*\d|\d)(?![\w\]])", body.text()):
            name = token[0].isdigit() or (token[0].isupper() and token not in first_words)
            if token not in seen and (name or len(token) >= 4):
                seen.append(token)

        def preference(token: str) -> tuple:
            name = token[0].isdigit() or (token[0].isupper() and token not in first_words)
            return (not name, token.lower() not in self.task_words, -len(token))

        chosen = sorted(seen, key=preference)[:count]
        if len(chosen) < count:
            return None
        out = body.copy()
        for token in chosen:
            pattern = re.compile(rf"(?<![\[\w]){re.escape(token)}(?![\w\]])")
            for para in out.paragraphs:
                hit = next((i for i, line in enumerate(para) if pattern.search(line)), None)
                if hit is not None:
                    para[hit] = pattern.sub(f"[{token}]", para[hit], count=1)
                    break
        return out

    def regroup(self, body: Body, parts: int) -> list[str] | None:
        """The body in `parts` consecutive groups: of paragraphs where there are enough, else of lines, else of sentences."""
        units: list[tuple[str, str]] = [("\n\n", "\n".join(p)) for p in body.paragraphs]
        if len(units) < parts:
            units = [("\n", line) for para in body.paragraphs for line in para]
        if len(units) < parts:
            units = [(" ", s) for _, _, _, s in body.sentences()]
        if parts < 1 or len(units) < parts:
            return None
        size, extra = divmod(len(units), parts)
        groups, start = [], 0
        for i in range(parts):
            end = start + size + (i < extra)
            chunk = units[start:end]
            groups.append("".join(unit if not j else joiner + unit for j, (joiner, unit) in enumerate(chunk)))
            start = end
        return groups

    # the whole text ------------------------------------------------------------------------------
    def compose(self, body: Body) -> str | NoRewrite:
        """The text for this body: structure, additions, wrappers and characters (steps 2 to 4)."""
        spec = self.spec
        body = body.copy()
        title = None
        if "detectable_format:title" in spec:
            title = self.title_from_draft(body)
            if title is not None:
                body.paragraphs[0] = body.paragraphs[0][1:]
                body.paragraphs = [p for p in body.paragraphs if p]
            else:
                title = self.title_from_task()
        postscript = None
        if "detectable_content:postscript" in spec:
            postscript = self.postscript(body)
            if postscript is None:
                return NoRewrite("detectable_content:postscript: no draft sentence to move into a postscript")
        for instruction, argument, present, fix in (
            ("detectable_format:number_bullet_lists", "num_bullets", None, self.bullets),  # exactly N: all are redone
            ("detectable_format:number_highlighted_sections", "num_highlights", count_highlights, self.highlights),
            ("detectable_content:number_placeholders", "num_placeholders", count_placeholders, self.placeholders),
        ):
            if instruction not in spec:
                continue
            text = body.text()
            wanted = spec[instruction][argument]
            if instruction == "detectable_format:number_bullet_lists" and count_bullets(text) == wanted:
                continue
            missing_count = wanted - (present(text) if present else 0)
            if missing_count > 0:
                fixed = fix(body, missing_count)
                if fixed is None:
                    return NoRewrite(f"{instruction}: the draft has too few sentences")
                body = fixed
                self.fire(instruction)
        missing = self.missing_keywords(body.text())
        if missing:
            line = "Keywords: " + (", ".join(missing[:-1]) + " and " + missing[-1] if len(missing) > 1 else missing[0]) + "."
            body.paragraphs[-1].append(line)
            self.fire("keywords:existence" if "keywords:existence" in spec else "keywords:frequency")
            self.added.append(line)
        text = self.layout(body)
        if isinstance(text, NoRewrite):
            return text
        if title is not None:
            text = f"<<{title}>>\n{text}"
            self.fire("detectable_format:title")
            self.added.append(title)
        tail_joiner = "\n" if "length_constraints:nth_paragraph_first_word" in spec else "\n\n"
        if postscript is not None:
            text = f"{text}{tail_joiner}{postscript}"
        if "startend:end_checker" in spec and not text.strip().lower().endswith(spec["startend:end_checker"]["end_phrase"].lower()):
            text = f"{text}{tail_joiner}{spec['startend:end_checker']['end_phrase']}"
            self.fire("startend:end_checker")
        if "detectable_format:constrained_response" in spec and not any(o in text for o in CONSTRAINED_OPTIONS.values()):
            stance = next((w for w in words(text)[:3] if w in CONSTRAINED_OPTIONS), "maybe")
            text = f"{CONSTRAINED_OPTIONS[stance]}\n\n{text}"
            self.fire("detectable_format:constrained_response")
        if "combination:two_responses" in spec:
            second = self.second_response(text)
            if second is None:
                return NoRewrite("combination:two_responses: no second complete draft")
            text = f"{text}\n\n{TWO_RESPONSES_SEPARATOR}\n\n{second}"
            self.fire("combination:two_responses")
        if "combination:repeat_prompt" in spec:
            text = f"{spec['combination:repeat_prompt']['prompt_to_repeat'].strip()}\n\n{text}"
            self.fire("combination:repeat_prompt")
        if "startend:quotation" in spec and not (len(text.strip()) > 1 and text.strip()[0] == text.strip()[-1] == '"'):
            text = f'"{text.strip()}"'
            self.fire("startend:quotation")
        if "punctuation:no_comma" in spec and "," in text:
            text = re.sub(r"(?<=\d),(?=\d{3})", "", text)
            text = re.sub(r" +\n", "\n", re.sub(r",[ \t]*", " ", text)).replace(" .", ".")
            self.fire("punctuation:no_comma")
        if "change_case:english_lowercase" in spec and text != text.lower():
            text = text.lower()
            self.fire("change_case:english_lowercase")
        if "change_case:english_capital" in spec and text != text.upper():
            text = text.upper()
            self.fire("change_case:english_capital")
        if "change_case:capital_word_frequency" in spec:
            text = self.capital_words(text, spec["change_case:capital_word_frequency"])
        if "detectable_format:json_format" in spec:
            text = json.dumps({"response": text.strip()}, ensure_ascii=False)
            self.fire("detectable_format:json_format")
        return text

    def postscript(self, body: Body) -> str | None:
        """The marker and the draft sentence that shares most words with the task, moved out of the body."""
        sentences = body.sentences()
        candidates = [(p, l, s, t) for i, (p, l, s, t) in enumerate(sentences)
                      if i and 4 <= len(t.split()) <= 40 and t.endswith((".", "!", "?")) and not re.search(r"[*\[<]", t)]
        if len(sentences) < 3 or not candidates:
            return None
        p, l, s, sentence = max(candidates, key=lambda c: (len(_content_words(c[3]) & self.task_words), c[:3]))
        body.remove_sentence(p, l, s)
        self.fire("detectable_content:postscript")
        self.added.append(sentence)
        return f"{self.spec['detectable_content:postscript']['postscript_marker']} {sentence}"

    def layout(self, body: Body) -> str | NoRewrite:
        """Paragraphs (`***` or blank lines), sections, and the paragraph that must start with a given word."""
        spec = self.spec
        separator = "\n\n"
        parts = None
        if "length_constraints:number_paragraphs" in spec:
            parts, separator = spec["length_constraints:number_paragraphs"]["num_paragraphs"], "\n\n***\n\n"
        nth = spec.get("length_constraints:nth_paragraph_first_word")
        if nth:
            parts = nth["num_paragraphs"]
        sections = spec.get("detectable_format:multiple_sections")
        if sections:
            if parts is None:
                parts = sections["num_sections"]
            elif parts < sections["num_sections"]:
                return NoRewrite("detectable_format:multiple_sections: more sections than the paragraphs asked for")
        if parts is None:
            return body.text()
        groups = self.regroup(body, parts)
        if groups is None:
            return NoRewrite(f"the draft has fewer than {parts} sentences for {parts} paragraphs")
        groups = [re.sub(r"\n\s*\n", "\n", g) for g in groups] if nth else groups
        if nth:
            index = nth["nth_paragraph"] - 1
            word = nth["first_word"]
            if words(groups[index])[:1] != [word]:
                groups[index] = f"{word.capitalize()}\n{groups[index]}"
        if sections:
            groups = [f"{sections['section_spliter']} {i}\n{g}" for i, g in enumerate(groups, 1)]
        text = separator.join(groups)
        if text != body.text():
            for instruction in LAYOUT:
                if instruction in spec:
                    self.fire(instruction)
        return text

    def second_response(self, first: str) -> str | None:
        """Another complete draft of the same prompt: the one least like the first."""
        first_words = set(words(first))
        others = [o.strip() for o in self.others if o.strip() and o.strip() != first.strip()]
        if not others:
            return None
        other = min(others, key=lambda o: len(set(words(o)) & first_words) / max(len(set(words(o))), 1))
        return Body.parse(other).text()

    def capital_words(self, text: str, kwargs: dict) -> str:
        """Words put in capitals for emphasis (the task's words first, then long ones) until there are enough,
        or capitals turned back to capitalized words until there are few enough."""
        from uniapl.ifeval.reference import reference_utils

        reference_utils()  # punkt in place before the checker's own tokenizer is imported
        from lm_eval.tasks.ifeval.instructions_util import nltk

        tokenize = nltk.word_tokenize
        count = sum(w.isupper() for w in tokenize(text))
        target = kwargs["capital_frequency"]
        if kwargs["capital_relation"] == "less than":
            if count < target:
                return text
            keep = {self.spec.get("detectable_format:multiple_sections", {}).get("section_spliter")}
            text = re.sub(r"\b[A-Z]{2,}\b", lambda m: m.group(0) if m.group(0) in keep else m.group(0).capitalize(), text)
            self.fire("change_case:capital_word_frequency")
            return text
        candidates = []
        for token in re.findall(r"\b[A-Za-z]{4,}\b", text):
            if not token.isupper() and token.lower() not in {c.lower() for c in candidates}:
                candidates.append(token)
        candidates.sort(key=lambda w: (w.lower() not in self.task_words, -len(w)))
        for word in candidates:
            if count >= target:
                break
            text, hits = re.subn(rf"\b{word}\b", word.upper(), text, count=target - count)
            count += hits
            self.fire("change_case:capital_word_frequency")
        return text

    # 5. upper limits -----------------------------------------------------------------------------
    def offending_sentence(self, body: Body, instruction: str) -> tuple[int, int, int] | None:
        """The body sentence to remove for a failing upper limit; None where the limit is not the body's doing."""
        sentences = body.sentences()
        if not sentences:
            return None
        kwargs = self.spec[instruction]
        if instruction == "keywords:forbidden_words":
            hits = [c for c in sentences if any(re.search(rf"\b{w}\b", c[3], re.IGNORECASE) for w in kwargs["forbidden_words"])]
        elif instruction == "keywords:frequency":
            hits = [c for c in sentences if re.search(kwargs["keyword"], c[3], re.IGNORECASE)]
        elif instruction == "keywords:letter_frequency":
            hits = sorted((c for c in sentences if kwargs["letter"] in c[3].lower()), key=lambda c: -c[3].lower().count(kwargs["letter"]))
        else:
            hits = sentences[::-1]
        return hits[0][:3] if hits else None


UPPER_LIMITS = {
    "keywords:forbidden_words": None,
    "keywords:frequency": "relation",
    "keywords:letter_frequency": "let_relation",
    "length_constraints:number_sentences": "relation",
    "length_constraints:number_words": "relation",
}


def _limits(row: dict) -> list[int]:
    """Indices of the row's instructions that a shorter body can satisfy."""
    return [i for i, (inst, kwargs) in enumerate(zip(row["instruction_id_list"], row["kwargs"]))
            if inst in UPPER_LIMITS and (UPPER_LIMITS[inst] is None or kwargs[UPPER_LIMITS[inst]] == "less than")]


def rewrite(row: dict, draft: str, others: list[str] = ()) -> Rewrite | NoRewrite:
    """`draft` rewritten to follow every instruction of `row` that a rule can enforce; `others` are other
    complete drafts of the same prompt (the second of two responses). NoRewrite says why not."""
    body = Body.parse(answer_body(row, draft))  # a request the draft already repeated is put back once, by its rule
    if not body.paragraphs:
        return NoRewrite("empty draft")
    limits = _limits(row)
    trimmed: list[str] = []  # the upper limits that removed body sentences
    while True:
        rewriter = _Rewriter(row, list(others))
        text = rewriter.compose(body)
        if isinstance(text, NoRewrite):
            return text
        verdicts = follows_instructions(row["prompt"], row["instruction_id_list"], row["kwargs"], text)
        failing = [row["instruction_id_list"][i] for i in limits if not verdicts[i]]
        if not failing:
            break
        target = rewriter.offending_sentence(body, failing[0])
        if target is None:
            return NoRewrite(f"{failing[0]}: the text the other rules add breaks it")
        body = body.copy()
        body.remove_sentence(*target)
        if not body.paragraphs:
            return NoRewrite(f"{failing[0]}: nothing left of the draft")
        if failing[0] not in trimmed:
            trimmed.append(failing[0])
    failing_now = [inst for inst, ok in zip(row["instruction_id_list"], verdicts) if not ok]
    if failing_now:
        return NoRewrite("strict: " + ", ".join(failing_now))
    rules = rewriter.fired + [t for t in trimmed if t not in rewriter.fired]
    return Rewrite(text, tuple(rules), tuple(rewriter.added))
