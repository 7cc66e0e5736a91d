"""`uniapl teach`: expert demonstrations, best-of-K from a teacher (or rule-assisted rewrites of its complete
drafts), verified and quality-filtered."""

from __future__ import annotations

import argparse

from uniapl.cli import add_dtype_argument, require_at_least


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "teach", help="write expert demonstrations: best-of-K teacher samples that pass the verifier and quality filters",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--prompts", required=True, help="prompts JSONL from `uniapl data build-if`")
    parser.add_argument("--teacher", required=True, help="a local model folder or alias, or an OpenAI-compatible URL (http://host:port/v1)")
    parser.add_argument("--out", required=True, help="output JSONL (a rerun continues it)")
    sampling = parser.add_argument_group("best-of-K sampling")
    sampling.add_argument("--samples", type=int, default=8, help="K: the most samples drawn for one prompt")
    sampling.add_argument("--round-size", type=int, default=4, help="samples drawn per prompt and round")
    sampling.add_argument("--enough", type=int, default=2, help="a prompt stops once this many samples pass every filter")
    sampling.add_argument("--max-new-tokens", type=int, default=384,
                          help="length budget; prompts that ask for at least N words get 1.6 tokens a word + 64")
    sampling.add_argument("--temperature", type=float, default=1.0)
    sampling.add_argument("--top-p", type=float, default=1.0)
    sampling.add_argument("--seed", type=int, default=0)
    filters = parser.add_argument_group("quality filters")
    filters.add_argument("--max-repeated-ngrams", type=float, default=0.2,
                         help="a loop: more than this share of the word 4-grams repeat an earlier one")
    filters.add_argument("--min-words", type=int, default=15, help="least content, unless an instruction caps the length lower")
    assisted = parser.add_argument_group("rule-assisted teacher")
    assisted.add_argument("--rule-assisted", action="store_true",
                          help="where a sample does not pass as it is, rewrite each complete draft (ended, no loop, no echo, "
                          "--min-words words) by rule to follow its instructions; keep a rewrite only if it passes strict and every filter")
    assisted.add_argument("--draft-prompt", choices=["full", "task"], default="full",
                          help="draft from the full prompt, or from the prompt without its instruction text")
    parser.add_argument("--limit", type=int, default=None, help="only N prompts (the first N after --start)")
    parser.add_argument("--start", type=int, default=0,
                        help="skip the first START prompts; seeds follow each prompt's position in the file, so runs over "
                        "disjoint ranges into separate --out files draw what one run would (attach-demos takes them all)")
    local = parser.add_argument_group("local teacher")
    add_dtype_argument(local)
    local.add_argument("--batch-size", type=int, default=64)
    endpoint = parser.add_argument_group("endpoint teacher")
    endpoint.add_argument("--teacher-model", default=None, help="model name to request (default: the first one the server lists)")
    endpoint.add_argument("--timeout", type=float, default=120.0, help="deadline in seconds for each request's whole answer")
    endpoint.add_argument("--retries", type=int, default=3)
    endpoint.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.set_defaults(func=run)


def run(args) -> int:
    from uniapl.datatools.quality import FUNNEL, QualityRules
    from uniapl.datatools.teach import Sampling, make_teacher, teach
    from uniapl.errors import UniaplError
    from uniapl.generation import SamplingParams
    from uniapl.io import check_output_file

    require_at_least(args, samples=1, round_size=1, enough=1, max_new_tokens=1, min_words=0, retries=0, concurrency=1,
                     batch_size=1, limit=1, start=0)
    if args.temperature <= 0 or not 0 < args.top_p <= 1 or args.timeout <= 0 or not 0 <= args.max_repeated_ngrams <= 1:
        raise UniaplError("--temperature and --timeout must be > 0, --top-p in (0, 1], --max-repeated-ngrams in [0, 1]")
    check_output_file(args.out, "--out")
    sampling = Sampling(args.samples, args.round_size, args.enough, args.seed,
                        SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p))
    rules = QualityRules(max_repeated_ngrams=args.max_repeated_ngrams, min_words=args.min_words)
    teacher = make_teacher(args.teacher, sampling, args.dtype, args.batch_size, args.teacher_model, args.timeout, args.retries, args.concurrency, rules)
    stats = teach(args.prompts, args.out, teacher, sampling, rules, rule_assisted=args.rule_assisted, draft_prompt=args.draft_prompt,
                  limit=args.limit, start=args.start)
    print(f"{stats['prompts']} prompts: {stats['sampled'] + stats['repaired']} with a demonstration ({stats['solved_rate']:.1%}): "
          f"{stats['sampled']} sampled, {stats['repaired']} repaired; {stats['dropped']} dropped, {stats['failed']} refused by the endpoint")
    if args.rule_assisted:
        print(f"samples that passed or were complete drafts {stats['complete_drafts']} (prompts with one: {stats['prompts_with_complete_draft']}); "
              "rules in the kept rewrites: " + ", ".join(f"{rule} {n}" for rule, n in stats["rules"].items()))
    print(f"funnel over {stats['samples']} samples (prompts with at least one): "
          + ", ".join(f"{stage} {stats['funnel_samples'][stage]} ({stats['funnel_prompts'][stage]})" for stage in FUNNEL))
    print(f"  {'instruction':<48} {'raw':>6} {'demos':>6} {'n':>5}")
    for inst, s in stats["per_instruction"].items():
        print(f"  {inst:<48} {s['raw_pass_rate']:6.1%} {s['demonstrations']:>6} {s['n']:>5}")
    print(f"wrote {args.out}, {args.out}.status.jsonl and {args.out}.stats.json")
    return 0
