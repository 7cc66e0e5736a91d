"""The figures of data/DATACARD.md, from the teacher's status files and the bundled data.

Prints markdown: outcomes, the funnel over samples and over prompts, coverage per instruction type,
demonstration lengths against the student's own greedy answers, and five random demonstrations.

    python scripts/datacard.py --status data/teach/if_train.status.jsonl data/teach/if_heldout.status.jsonl \
        --data data/if_train.jsonl data/if_heldout.jsonl \
        --greedy docs/baselines/smollm2-135m-instruct-fp32-384/ifeval_responses.jsonl

With --rule-assisted (the set of `uniapl teach --rule-assisted`), the outcomes and funnel are those of the
rule-assisted teacher: drafts drawn, complete drafts, passed as sampled, repaired and passed, dropped, per
split and per instruction type; the rules that made the kept rewrites and why the others failed; the
stock-text check (the most frequent sentence a rule added, and its share of the demonstrations); and
every demonstration checked again (strict and every quality filter).
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import Counter
from pathlib import Path

from uniapl.datatools.quality import FUNNEL, QualityRules, judge, passes
from uniapl.datatools.repair import split_sentences
from uniapl.datatools.teach import DROPPED, REPAIRED, SAMPLED, summarize
from uniapl.io import read_jsonl
from uniapl.textstats import words

STAGE_NAMES = {
    "ended": "ended on its own (EOS)",
    "strict": "... and passes every instruction (strict)",
    "no_loop": "... and no loop",
    "no_echo": "... and no echo of the prompt",
    "content": "... and enough content",
    "language": "... and the asked-for language",
}


def percent(part: int, whole: int) -> str:
    return f"{part} ({100 * part / whole:.1f}%)" if whole else "0"


def funnel_table(names: list[str], stats: list[dict]) -> list[str]:
    lines = ["| stage | " + " | ".join(f"{n}: samples | {n}: prompts with one" for n in names) + " |",
             "|---|" + "---|---|" * len(names),
             "| drawn | " + " | ".join(f"{s['samples']} | {s['prompts']}" for s in stats) + " |"]
    for stage in FUNNEL:
        cells = [f"{percent(s['funnel_samples'][stage], s['samples'])} | {percent(s['funnel_prompts'][stage], s['prompts'])}" for s in stats]
        lines.append(f"| {STAGE_NAMES[stage]} | " + " | ".join(cells) + " |")
    return lines


def coverage_table(names: list[str], stats: list[dict]) -> list[str]:
    types = sorted({t for s in stats for t in s["per_instruction"]})
    lines = ["| instruction | " + " | ".join(f"{n}: prompts | {n}: best sample passes it | {n}: demonstrations" for n in names) + " |",
             "|---|" + "---|---|---|" * len(names)]
    for t in types:
        cells = []
        for s in stats:
            row = s["per_instruction"].get(t)
            cells.append(f"{row['n']} | {100 * row['raw_pass_rate']:.0f}% | {row['demonstrations']}" if row else "0 | - | 0")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines


def short_types_funnel(outcomes: list[dict], fewer_than: int) -> list[str]:
    """Where the prompts of each under-covered instruction type lose their samples: prompts with at least
    one sample past each funnel stage (strict is over all of a prompt's instructions)."""
    by_type: dict[str, list[dict]] = {}
    for o in outcomes:
        for t in o["instruction_id_list"]:
            by_type.setdefault(t, []).append(o)
    short = {t: os for t, os in sorted(by_type.items()) if sum(o["outcome"] == "sampled" for o in os) < fewer_than}
    lines = ["| instruction | prompts | " + " | ".join(FUNNEL) + " |", "|---|---|" + "---|" * len(FUNNEL)]
    for t, os in short.items():
        lines.append(f"| {t} | {len(os)} | " + " | ".join(str(sum(o.get("funnel", {}).get(stage, 0) > 0 for o in os)) for stage in FUNNEL) + " |")
    return lines


STOCK_TEXT_LIMIT = 0.02  # issue 26: no single added sentence in more than 2% of the demonstrations
COVERAGE_TARGET = 0.85  # issue 26: a demonstration for at least 85% of the prompts of each split


def rule_assisted_outcomes(names: list[str], stats: list[dict]) -> list[str]:
    lines = ["| split | prompts | with a demonstration | sampled | repaired | dropped | drafts drawn | passing or complete | drafts per prompt |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in zip(names, stats):
        lines.append(f"| {name} | {s['prompts']} | {percent(s[SAMPLED] + s[REPAIRED], s['prompts'])} | {s[SAMPLED]} | {s[REPAIRED]} | "
                     f"{s[DROPPED] + s['failed']} | {s['samples']} | {percent(s['complete_drafts'], s['samples'])} | "
                     f"{s['samples'] / max(s['prompts'], 1):.2f} |")
    lines += ["", "| prompts | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    stages = [("drafts drawn", lambda s: s["prompts"]), ("with a passing sample or a complete draft (ended, no loop, no echo, 15+ words)",
              lambda s: s["prompts_with_complete_draft"]), ("passed as sampled", lambda s: s[SAMPLED]),
              ("repaired and passed", lambda s: s[REPAIRED]), ("dropped", lambda s: s[DROPPED] + s["failed"])]
    for label, count in stages:
        lines.append(f"| {label} | " + " | ".join(percent(count(s), s["prompts"]) for s in stats) + " |")
    lines += ["", "Against the target of issue 26 (a demonstration for at least 85% of each split's prompts): " + "; ".join(
        f"{name} {'met' if (s[SAMPLED] + s[REPAIRED]) >= COVERAGE_TARGET * s['prompts'] else 'missed'}" for name, s in zip(names, stats))]
    return lines


def rule_assisted_types(outcomes: list[dict]) -> list[str]:
    """Per instruction type: its prompts down the funnel, and the most frequent reason its drafts' rewrites failed."""
    lines = ["| instruction | prompts | with a passing sample or a complete draft | sampled | repaired | dropped | most frequent reason a rewrite failed |",
             "|---|---|---|---|---|---|---|"]
    by_type: dict[str, list[dict]] = {}
    for o in outcomes:
        for t in o["instruction_id_list"]:
            by_type.setdefault(t, []).append(o)
    for t, os in sorted(by_type.items()):
        reasons = sum((Counter(o.get("refusals", {})) for o in os if o["outcome"] != SAMPLED and o["outcome"] != REPAIRED), Counter())
        reason = f"{reasons.most_common(1)[0][0]} ({reasons.most_common(1)[0][1]})" if reasons else "-"
        counts = Counter(o["outcome"] for o in os)
        lines.append(f"| {t} | {len(os)} | {sum(o.get('complete', 0) > 0 for o in os)} | {counts[SAMPLED]} | {counts[REPAIRED]} | "
                     f"{counts[DROPPED] + counts['failed']} | {reason.replace('|', '/')} |")
    return lines


def counts_table(label: str, names: list[str], counters: list[dict], top: int) -> list[str]:
    keys = sorted({k for c in counters for k in c}, key=lambda k: -sum(c.get(k, 0) for c in counters))[:top]
    lines = [f"| {label} | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    return lines + [f"| {k.replace('|', '/')} | " + " | ".join(str(c.get(k, 0)) for c in counters) + " |" for k in keys]


def stock_text_check(names: list[str], outcomes: list[list[dict]], rows: dict[str, list[dict]]) -> list[str]:
    """The most frequent sentence the rules added, and the most frequent sentence of any origin, each as a share of
    the demonstrations (a sentence counts once per demonstration)."""
    lines = ["| split | demonstrations | most frequent added sentence | in | share | most frequent sentence of any origin | in | share |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    for name, split in zip(names, outcomes):
        demos = [r["completion"][0]["content"] for r in rows[name] if "completion" in r]
        added = Counter(s for o in split if o["outcome"] == REPAIRED for s in {x for a in o.get("added", []) for x in split_sentences(a)})
        anywhere = Counter(s for text in demos for s in set(split_sentences(text)))
        cells = []
        for counter in (added, anywhere):
            sentence, count = counter.most_common(1)[0] if counter else ("-", 0)
            cells.append(f"{sentence.replace('|', '/')[:80]} | {count} | {100 * count / max(len(demos), 1):.1f}%")
        lines.append(f"| {name} | {len(demos)} | " + " | ".join(cells) + " |")
        share = (added.most_common(1)[0][1] / max(len(demos), 1)) if added else 0.0
        verdicts.append(f"{name} {'met' if share <= STOCK_TEXT_LIMIT else 'missed'}")
    return lines + ["", "Against the target (no added sentence in more than 2% of the demonstrations): " + "; ".join(verdicts)]


def recheck(names: list[str], outcomes: list[list[dict]], rows: dict[str, list[dict]]) -> list[str]:
    """Every demonstration judged again: strict, every quality filter, and recorded as sampled or repaired."""
    lines = ["| split | demonstrations | pass strict and every filter now | recorded as sampled or repaired |", "|---|---|---|---|"]
    for name, split in zip(names, outcomes):
        kept = {o["key"] for o in split if o["outcome"] in (SAMPLED, REPAIRED)}
        demos = [r for r in rows[name] if "completion" in r]
        passing = sum(passes(judge(r, r["completion"][0]["content"], True, QualityRules())[0]) for r in demos)
        lines.append(f"| {name} | {len(demos)} | {passing} | {sum(r['key'] in kept for r in demos)} |")
    return lines


def length_line(label: str, texts: list[str]) -> str:
    counts = sorted(len(words(t)) for t in texts)
    q = statistics.quantiles(counts, n=10) if len(counts) > 1 else counts * 9
    return f"| {label} | {len(counts)} | {statistics.median(counts):.0f} | {q[0]:.0f} | {q[-1]:.0f} | {statistics.mean(counts):.1f} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--status", nargs="+", required=True, help="teach status files, one per split")
    parser.add_argument("--data", nargs="+", required=True, help="the bundled files, in the same order")
    parser.add_argument("--greedy", nargs="*", default=[], help="the student's greedy responses (ifeval_responses.jsonl files)")
    parser.add_argument("--examples", type=int, default=5)
    parser.add_argument("--min-demos", type=int, default=10, help="list the funnel of types with fewer demonstrations than this")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rule-assisted", action="store_true", help="the tables of a `uniapl teach --rule-assisted` set")
    parser.add_argument("--heading", default="##", help="markdown heading level of the sections")
    args = parser.parse_args()

    h = args.heading
    names = [Path(p).name.split(".")[0] for p in args.data]
    outcomes = [read_jsonl(p) for p in args.status]
    stats = [summarize(o) for o in outcomes]
    rows = {name: read_jsonl(path) for name, path in zip(names, args.data)}
    if args.rule_assisted:
        out = [f"{h} Outcomes", ""] + rule_assisted_outcomes(names, stats)
        for name, split in zip(names, outcomes):
            out += ["", f"{h}# Funnel per instruction type, {name}", ""] + rule_assisted_types(split)
        out += ["", f"{h} Rules that made the kept rewrites (demonstrations each rule changed)", ""]
        out += counts_table("rule", names, [s["rules"] for s in stats], top=40)
        out += ["", f"{h} Why rewrites of complete drafts failed (drafts, top 15)", ""]
        out += counts_table("reason", names, [s["refusals"] for s in stats], top=15)
        out += ["", f"{h} Stock-text check", ""] + stock_text_check(names, outcomes, rows)
        out += ["", f"{h} Every demonstration checked again", ""] + recheck(names, outcomes, rows)
    else:
        out = [f"{h} Outcomes", "", "| split | prompts | with a demonstration | without | samples drawn | samples per prompt |",
               "|---|---|---|---|---|---|"]
        for name, s in zip(names, stats):
            out.append(f"| {name} | {s['prompts']} | {percent(s['sampled'] + s['repaired'], s['prompts'])} | {s['dropped'] + s['failed']} | "
                       f"{s['samples']} | {s['samples'] / max(s['prompts'], 1):.2f} |")
        out += ["", f"{h} Funnel", ""] + funnel_table(names, stats)
        out += ["", f"{h} Coverage per instruction type", ""] + coverage_table(names, stats)
        out += ["", f"{h}# Types with fewer than {args.min_demos} demonstrations in {names[0]}: where their prompts lose the samples", "",
                "Prompts with at least one sample past each stage, in funnel order; the last stage is what is kept.", ""]
        out += short_types_funnel(outcomes[0], args.min_demos)
    demos = {name: [r for r in split if "completion" in r] for name, split in rows.items()}
    out += ["", f"{h} Length (words)", "", "| responses | n | median | p10 | p90 | mean |", "|---|---|---|---|---|---|"]
    for name in names:
        out.append(length_line(f"demonstrations, {name}", [r["completion"][0]["content"] for r in demos[name]]))
    for path in args.greedy:
        out.append(length_line(f"student greedy, {path}", [r["response"] for r in read_jsonl(path)]))
    per_demo = Counter(len(r["instruction_id_list"]) for split in demos.values() for r in split)
    out += ["", "Instructions per demonstrated prompt: " + ", ".join(f"{k}: {v}" for k, v in sorted(per_demo.items()))]
    rng = random.Random(args.seed)
    picked = rng.sample([r for split in demos.values() for r in split], min(args.examples, sum(map(len, demos.values()))))
    out += ["", f"{h} {len(picked)} random demonstrations (seed {args.seed}), verbatim", ""]
    for row in picked:
        out += [f"**{row['key']}** ({', '.join(row['instruction_id_list'])})", "", "Prompt:", "", "```text", row["prompt"][0]["content"], "```",
                "", "Demonstration:", "", "```text", row["completion"][0]["content"], "```", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
