"""`uniapl compare`: train each (algorithm, seed) from one config, evaluate, analyze, and report; resumable."""

from __future__ import annotations

import argparse

from uniapl.cli import add_dtype_argument, add_engine_argument, add_smoothing_argument, require_at_least
from uniapl.errors import UniaplError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train, evaluate and analyze several algorithms and seeds, then write a side-by-side report",
        description="Train every (algorithm, seed) from CONFIG with everything else equal, run IFEval and the "
        "analysis on each, and write report.md and report.html with mean and standard error across seeds. "
        "Finished steps are skipped, so rerunning the same command resumes.",
    )
    p.add_argument("config", help="the training config (YAML) shared by every run")
    p.add_argument("--algorithms", default="sft,grpo,sft_then_grpo,uniapl", help="comma-separated (default: %(default)s)")
    p.add_argument("--seeds", type=_int_list, default=(1, 2, 3), help="comma-separated (default: 1,2,3)")
    p.add_argument("--out", default="runs/compare", help="runs go to OUT/<algorithm>-seed<seed>, the report to OUT/report")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="a config override for every run")
    p.add_argument("--expert", default="data/if_heldout.jsonl", help="held-out prompts with expert demonstrations, for the analysis")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on the first N IFEval prompts")
    p.add_argument("--eval-max-new-tokens", type=int, default=1280, help="for IFEval and the analysis")
    p.add_argument("--eval-batch-size", type=int, default=16)
    p.add_argument("--analysis-prompts", type=int, default=None, help="analyze on the first N expert prompts")
    p.add_argument("--analysis-reward", default="ifeval_strict", help="verifier for the analysis pass rate ('none' for none)")
    p.add_argument("--heldout", default=None, help="held-out constraint prompts (e.g. data/if_heldout.jsonl) to evaluate each run on, "
                   "greedily, into final/heldout: what tuning may look at")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out: heldout, ifeval, ifbench, analyze (tuning runs skip ifeval), "
                   "discriminators, report (when several compare commands fill one --out side by side, so they do not overwrite "
                   "each other's report)")
    add_dtype_argument(p)  # for evaluation and analysis
    add_engine_argument(p, "--eval-engine")
    p.add_argument("--ifbench", action="store_true", help="also IFBench's 300 prompts, greedy, responses only (its checkers are not "
                   "on PyPI), into final/ifbench")
    p.add_argument("--discriminator", dest="discriminators", action="append", default=[], metavar="FOLDER",
                   help="an AAPA discriminator folder (repeatable) that scores every run's analysis samples, AAPA run or not, into "
                   "final/analysis/discriminators.json: the report's \"Discriminator variants\"")
    add_smoothing_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uniapl.compare import CompareSettings, compare
    from uniapl.io import check_output_folder

    algorithms = tuple(a.strip() for a in args.algorithms.split(",") if a.strip())
    if not algorithms:
        raise UniaplError("--algorithms is empty")
    require_at_least(args, eval_limit=1, eval_max_new_tokens=1, eval_batch_size=1, analysis_prompts=1, smooth=1)
    check_output_folder(args.out, "--out")
    settings = CompareSettings(
        algorithms=algorithms,
        seeds=args.seeds,
        overrides=tuple(args.overrides),
        expert=args.expert,
        eval_limit=args.eval_limit,
        eval_max_new_tokens=args.eval_max_new_tokens,
        eval_batch_size=args.eval_batch_size,
        analysis_prompts=args.analysis_prompts,
        analysis_reward=None if args.analysis_reward == "none" else args.analysis_reward,
        dtype=args.dtype,
        heldout=args.heldout,
        skip=tuple(step.strip() for step in args.skip.split(",") if step.strip()),
        smoothing_window=args.smooth,
        eval_engine=args.eval_engine,
        ifbench=args.ifbench,
        discriminators=tuple(args.discriminators),
    )
    compare(args.config, args.out, settings)
    return 0
