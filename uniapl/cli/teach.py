"""`uniapl teach`: expert demonstrations, best-of-K from a teacher, verified (and optionally repaired)."""

from __future__ import annotations

import argparse

from uniapl.cli import add_dtype_argument


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "teach", help="write expert demonstrations that pass the IFEval verifier", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--prompts", required=True, help="prompts JSONL from `uniapl data build-if`")
    parser.add_argument("--teacher", required=True, help="a local model folder or alias, or an OpenAI-compatible URL (http://host:port/v1)")
    parser.add_argument("--samples", type=int, default=2, help="K: samples per prompt; the best one is kept")
    parser.add_argument("--out", required=True, help="output JSONL (a rerun continues it)")
    parser.add_argument("--max-new-tokens", type=int, default=192)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-repair", dest="repair", action="store_false", help="do not try rule-based repairs")
    parser.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    local = parser.add_argument_group("local teacher")
    add_dtype_argument(local)
    local.add_argument("--batch-size", type=int, default=32)
    endpoint = parser.add_argument_group("endpoint teacher")
    endpoint.add_argument("--teacher-model", default=None, help="model name to request (default: the first one the server lists)")
    endpoint.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    endpoint.add_argument("--retries", type=int, default=3)
    endpoint.add_argument("--concurrency", type=int, default=4, help="requests in flight")
    parser.set_defaults(func=run)


def run(args) -> int:
    from uniapl.datatools.teach import Sampling, make_teacher, teach
    from uniapl.errors import UniaplError
    from uniapl.rollout import SamplingParams

    if args.samples < 1:
        raise UniaplError(f"--samples must be at least 1, got {args.samples}")
    sampling = Sampling(args.samples, args.seed, SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p))
    teacher = make_teacher(args.teacher, sampling, args.dtype, args.batch_size, args.teacher_model, args.timeout, args.retries, args.concurrency)
    stats = teach(args.prompts, args.out, teacher, use_repair=args.repair, limit=args.limit)
    print(f"{stats['prompts']} prompts: {stats['sampled']} solved by sampling, {stats['repaired']} by repair, {stats['dropped']} dropped "
          f"(solved {stats['solved_rate']:.1%})")
    print(f"  {'instruction':<48} {'raw':>6} {'final':>6} {'n':>5}")
    for inst, s in stats["per_instruction"].items():
        print(f"  {inst:<48} {s['raw_pass_rate']:6.1%} {s['final_pass_rate']:6.1%} {s['n']:>5}")
    print(f"wrote {args.out}, {args.out}.status.jsonl and {args.out}.stats.json")
    return 0
