"""What a teacher sample must be, beyond passing the verifier, to count as an expert demonstration.

A verifiable reward only checks the constraints, so a sample can pass while it loops, echoes the
prompt, says almost nothing, or switches language. Each filter here rejects one of those; `judge`
runs them in funnel order, so the teach statistics show where candidates are lost.
"""

from __future__ import annotations

from dataclasses import dataclass

from uniapl.ifeval.prompts import prompt_text
from uniapl.ifeval.scoring import follows_instructions
from uniapl.textstats import is_echo, ngrams, words

REPEAT_PROMPT = "combination:repeat_prompt"
TWO_RESPONSES = "combination:two_responses"
RESPONSE_LANGUAGE = "language:response_language"
NUMBER_WORDS = "length_constraints:number_words"
CONSTRAINED_RESPONSE = "detectable_format:constrained_response"


@dataclass(frozen=True)
class QualityRules:
    loop_ngram: int = 4  # word n-grams counted for the loop filter
    max_repeated_ngrams: float = 0.2  # a loop: more than this share of the n-grams repeat an earlier one
    min_words: int = 15  # unless an instruction caps the length lower, or asks for a yes/no answer format
    echo_threshold: float = 0.5  # share of the prompt's 8-grams that make a response an echo


MIN_WORDS_FOR_LANGUAGE = 8
WORDS_PER_TOKEN = 2  # a generous bound: a subword token rarely adds even one whole word
# the funnel, in order: a candidate is kept only if it passes every stage
FUNNEL = ("ended", "strict", "no_loop", "no_echo", "content", "language")


def repeated_ngram_rate(text: str, n: int) -> float:
    """Share of the word n-grams that already occurred earlier in the text (0 = no repetition)."""
    grams = ngrams(words(text), n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def answer_body(row: dict, response: str) -> str:
    """The response without the request it was asked to repeat: the part the teacher wrote itself."""
    if REPEAT_PROMPT in row["instruction_id_list"]:
        repeated = row["kwargs"][row["instruction_id_list"].index(REPEAT_PROMPT)]["prompt_to_repeat"].strip()
        stripped = response.strip()
        if stripped.lower().startswith(repeated.lower()):
            return stripped[len(repeated):]
    return response


def min_words(row: dict, rules: QualityRules) -> int:
    """The minimum of content, lowered where an instruction caps the length or fixes the answer's words."""
    if CONSTRAINED_RESPONSE in row["instruction_id_list"]:
        return 4  # "My answer is yes." is a whole answer to a yes/no question
    floor = rules.min_words
    for instruction, kwargs in zip(row["instruction_id_list"], row["kwargs"]):
        if instruction == NUMBER_WORDS and kwargs.get("relation") == "less than":
            floor = min(floor, kwargs["num_words"] - 1)
    return floor


def expected_language(row: dict) -> str:
    for instruction, kwargs in zip(row["instruction_id_list"], row["kwargs"]):
        if instruction == RESPONSE_LANGUAGE:
            return kwargs["language"]
    return "en"


def detected_language(text: str) -> str | None:
    """langdetect's answer (seeded by the reference scorer's import), or None where it cannot tell."""
    import langdetect

    try:
        return langdetect.detect(text)
    except langdetect.LangDetectException:
        return None


def is_loop(row: dict, body: str, rules: QualityRules) -> bool:
    """Any part of the answer (each of two responses on its own) over the repeated n-gram threshold."""
    parts = body.split("******") if TWO_RESPONSES in row["instruction_id_list"] else [body]
    return any(repeated_ngram_rate(part, rules.loop_ngram) > rules.max_repeated_ngrams for part in parts)


def loop_is_certain(row: dict, text: str, tokens_left: int, rules: QualityRules) -> bool:
    """Whether a sample still being generated can no longer pass the loop filter, however it goes on.

    Repeated n-grams never stop counting as repeated, and each further token adds at most
    `WORDS_PER_TOKEN` words (so at most that many new n-grams): if even that many new, all-distinct
    n-grams would leave the rate over the threshold, the sample is lost. Prompts whose loop filter
    looks at parts of the answer (a repeated request, two responses) are never judged early.
    """
    if REPEAT_PROMPT in row["instruction_id_list"] or TWO_RESPONSES in row["instruction_id_list"]:
        return False
    grams = ngrams(words(text), rules.loop_ngram)
    repeated = len(grams) - len(set(grams))
    return repeated > rules.max_repeated_ngrams * (len(grams) + WORDS_PER_TOKEN * tokens_left)


def judge(row: dict, response: str, ended: bool, rules: QualityRules) -> tuple[dict[str, bool], list[bool]]:
    """Each funnel stage's verdict on one sample, and the strict verdict of each instruction."""
    per_instruction = follows_instructions(row["prompt"], row["instruction_id_list"], row["kwargs"], response)
    body = answer_body(row, response)
    # langdetect guesses at random on a few words, so a short answer is not judged on its language
    language = detected_language(body) if len(words(body)) >= MIN_WORDS_FOR_LANGUAGE else None
    verdicts = {
        "ended": ended,
        "strict": all(per_instruction),
        "no_loop": not is_loop(row, body, rules),
        "no_echo": not is_echo(prompt_text(row["prompt"]), body, rules.echo_threshold),
        "content": len(words(body)) >= min_words(row, rules),
        "language": language is None or language == expected_language(row),
    }
    return verdicts, per_instruction


def is_complete_draft(row: dict, text: str, ended: bool, rules: QualityRules) -> bool:
    """Whether the rule-assisted teacher may rewrite a sample: ended on its own, no loop, no echo of the
    prompt, at least `rules.min_words` words. Rules fix format, never a cut-off or degenerate answer."""
    body = answer_body(row, text)
    return (ended and not is_loop(row, body, rules) and not is_echo(prompt_text(row["prompt"]), body, rules.echo_threshold)
            and len(words(body)) >= rules.min_words)


def passes(verdicts: dict[str, bool]) -> bool:
    return all(verdicts[stage] for stage in FUNNEL)
