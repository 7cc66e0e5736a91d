"""`uniapl analyze`: a model's response lengths and log-probs against the expert's, and signs of reward hacking."""

from __future__ import annotations

import argparse

from uniapl.cli import add_dtype_argument, add_engine_argument, require_at_least


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="compare a model's samples with expert demonstrations (lengths, log-probs, degeneration)",
        description="Sample the model on held-out prompts that have expert demonstrations; write analysis.json "
        "and overlaid length and log-prob histograms (PNG).",
    )
    p.add_argument("--model", required=True, help="a local model folder, an alias or a hub id")
    p.add_argument("--expert", required=True, help="JSONL with expert demonstrations (rows without one are skipped)")
    p.add_argument("--prompts", default=None, help="held-out prompts (JSONL): analyze only these, matched by key or prompt")
    p.add_argument("--out", default=None, help="output folder (default: <model folder>/analysis, or ./analysis/<alias>)")
    p.add_argument("--limit", type=int, default=None, help="analyze the first N prompts")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    add_dtype_argument(p, default="fp32")  # log-probabilities are compared: fp32 unless asked
    add_engine_argument(p)
    p.add_argument("--reward", default=None, help="a verifier for the pass rate, e.g. ifeval_strict")
    p.add_argument("--discriminator", dest="discriminators", action="append", default=[], metavar="FOLDER",
                   help="an AAPA discriminator folder (repeatable): its held-out AUC, and its scores on the expert's, the start "
                   "policy's and this model's responses, into discriminators.json and a histogram each")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uniapl.analysis.analyze import AnalysisSettings, analyze_model, default_out_dir, saved_analysis
    from uniapl.analysis.report import format_number
    from uniapl.errors import UniaplError
    from uniapl.generation import SamplingParams
    from uniapl.io import check_output_folder

    require_at_least(args, limit=1, batch_size=1, max_new_tokens=1)
    if not args.temperature > 0:
        raise UniaplError(f"--temperature must be > 0, got {args.temperature}")
    if not 0 < args.top_p <= 1:
        raise UniaplError(f"--top-p must be in (0, 1], got {args.top_p}")

    settings = AnalysisSettings(
        sampling=SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p),
        seed=args.seed,
        batch_size=args.batch_size,
        dtype=args.dtype,
        limit=args.limit,
        reward=args.reward,
        engine=args.engine,
    )
    out = check_output_folder(args.out or default_out_dir(args.model), "--out")
    saved = saved_analysis(args.model, args.expert, out, args.prompts, settings)
    result = saved or analyze_model(args.model, args.expert, out, args.prompts, settings)
    length, logprob = result["length_tokens"], result["mean_token_logprob"]
    if saved:
        print(f"{out} already holds this analysis (same model, data and settings): not redone; delete it to analyze again")
    print(f"analyzed {result['n_prompts']} prompts -> {out}")
    print(f"  length   policy mean {format_number(length['policy']['mean'])}, expert mean {format_number(length['expert']['mean'])}, "
          f"W1 {format_number(length['distance']['wasserstein_1'])}, KS {format_number(length['distance']['ks_statistic'])}")
    print(f"  logprob  policy mean {format_number(logprob['policy']['mean'])}, expert mean {format_number(logprob['expert']['mean'])}, "
          f"W1 {format_number(logprob['distance']['wasserstein_1'])}, KS {format_number(logprob['distance']['ks_statistic'])}")
    if args.discriminators:
        from uniapl.analysis.discriminators import analyze_discriminators

        scored = analyze_discriminators(out, args.discriminators, args.expert, args.prompts, args.limit)
        for name, d in scored.items():
            means = ", ".join(f"{side.replace('_', ' ')} {format_number(d['scores'][side]['mean'])}" for side in ("expert", "start_policy", "policy"))
            print(f"  discriminator {name} ({d['variant']}): held-out AUC {format_number(d['heldout_auc'])}; mean logit {means}")
    return 0
