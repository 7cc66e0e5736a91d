"""The figures of data/DATACARD.md, from the teacher's status files and the bundled data.

Prints markdown: outcomes, the funnel over samples and over prompts, coverage per instruction type,
demonstration lengths against the student's own greedy answers, and five random demonstrations.

    python scripts/datacard.py --status data/teach/if_train.status.jsonl data/teach/if_heldout.status.jsonl \
        --data data/if_train.jsonl data/if_heldout.jsonl \
        --greedy docs/baselines/smollm2-135m-instruct-fp32-384/ifeval_responses.jsonl
"""

from __future__ import annotations

import argparse
import random
import statistics
from collections import Counter
from pathlib import Path

from uniapl.datatools.quality import FUNNEL
from uniapl.datatools.teach import summarize
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
    args = parser.parse_args()

    names = [Path(p).name.split(".")[0] for p in args.data]
    stats = [summarize(read_jsonl(p)) for p in args.status]
    out = ["## Outcomes", "", "| split | prompts | with a demonstration | without | samples drawn | samples per prompt |", "|---|---|---|---|---|---|"]
    for name, s in zip(names, stats):
        out.append(f"| {name} | {s['prompts']} | {percent(s['sampled'] + s['repaired'], s['prompts'])} | {s['dropped'] + s['failed']} | "
                   f"{s['samples']} | {s['samples'] / max(s['prompts'], 1):.2f} |")
    out += ["", "## Funnel", ""] + funnel_table(names, stats)
    out += ["", "## Coverage per instruction type", ""] + coverage_table(names, stats)
    out += ["", f"### Types with fewer than {args.min_demos} demonstrations in {names[0]}: where their prompts lose the samples", "",
            "Prompts with at least one sample past each stage, in funnel order; the last stage is what is kept.", ""]
    out += short_types_funnel(read_jsonl(args.status[0]), args.min_demos)
    rows = {name: read_jsonl(path) for name, path in zip(names, args.data)}
    demos = {name: [r for r in split if "completion" in r] for name, split in rows.items()}
    out += ["", "## Length (words)", "", "| responses | n | median | p10 | p90 | mean |", "|---|---|---|---|---|---|"]
    for name in names:
        out.append(length_line(f"demonstrations, {name}", [r["completion"][0]["content"] for r in demos[name]]))
    for path in args.greedy:
        out.append(length_line(f"student greedy, {path}", [r["response"] for r in read_jsonl(path)]))
    per_demo = Counter(len(r["instruction_id_list"]) for split in demos.values() for r in split)
    out += ["", "Instructions per demonstrated prompt: " + ", ".join(f"{k}: {v}" for k, v in sorted(per_demo.items()))]
    rng = random.Random(args.seed)
    picked = rng.sample([r for split in demos.values() for r in split], min(args.examples, sum(map(len, demos.values()))))
    out += ["", f"## {len(picked)} random demonstrations (seed {args.seed}), verbatim", ""]
    for row in picked:
        out += [f"**{row['key']}** ({', '.join(row['instruction_id_list'])})", "", "Prompt:", "", "```text", row["prompt"][0]["content"], "```",
                "", "Demonstration:", "", "```text", row["completion"][0]["content"], "```", ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
