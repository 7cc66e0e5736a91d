"""`uniapl data build-if`: IFEval-style training prompts with 1 to 3 verifiable instructions each."""

from __future__ import annotations

import argparse

from uniapl.datatools.build_if import DECONTAMINATION_MODES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="build training data")
    tools = parser.add_subparsers(dest="tool", required=True, metavar="TOOL")
    build = tools.add_parser(
        "build-if",
        help="prompts with IFEval-type constraints (decontaminated against IFEval)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    build.add_argument("--n", type=int, required=True, help="number of training prompts")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--out", required=True, help="output JSONL")
    build.add_argument("--heldout", type=int, default=0, help="also build this many held-out prompts with other base tasks")
    build.add_argument("--heldout-out", default=None, help="output JSONL for the held-out prompts")
    build.add_argument("--decontaminate", default="outside-instructions", choices=DECONTAMINATION_MODES,
                       help="drop a prompt for any 8-gram it shares with IFEval (strict), or for one not wholly inside an "
                       "instruction's reference description, which IFEval's prompts share by design (default: %(default)s)")
    build.set_defaults(func=run)
    attach = tools.add_parser("attach-demos", help="all prompts, with the teacher's demonstrations where it solved them")
    attach.add_argument("--prompts", required=True, help="prompts JSONL from build-if")
    attach.add_argument("--demos", required=True, nargs="+",
                        help="outputs of `uniapl teach` (each may cover only part of the prompts)")
    attach.add_argument("--out", required=True, help="output JSONL")
    attach.set_defaults(func=run_attach)


def run(args) -> int:
    from collections import Counter

    from uniapl.datatools.build_if import build_if_rows
    from uniapl.errors import UniaplError
    from uniapl.io import check_output_file, write_jsonl_atomic

    if bool(args.heldout) != bool(args.heldout_out):
        raise UniaplError("--heldout N and --heldout-out FILE go together")
    check_output_file(args.out, "--out")
    if args.heldout_out:
        check_output_file(args.heldout_out, "--heldout-out")
    train, heldout, dropped = build_if_rows(args.n, args.seed, args.heldout, decontamination=args.decontaminate)
    write_jsonl_atomic(args.out, train)
    print(f"wrote {len(train)} prompts to {args.out}")
    if args.heldout_out:
        write_jsonl_atomic(args.heldout_out, heldout)
        print(f"wrote {len(heldout)} held-out prompts to {args.heldout_out}")
    for reason, count in dropped.most_common():
        print(f"  skipped {count} candidates: {reason}")
    types = Counter(i for row in train + heldout for i in row["instruction_id_list"])
    print(f"  {len(types)} instruction types; most common: " + ", ".join(f"{k} {v}" for k, v in types.most_common(5)))
    return 0


def run_attach(args) -> int:
    from uniapl.datatools.teach import attach_demonstrations
    from uniapl.errors import DataError
    from uniapl.examples import text_or_messages
    from uniapl.io import check_output_file, jsonl_rows, write_jsonl_atomic

    check_output_file(args.out, "--out")
    for path in args.demos:
        for where, row in jsonl_rows(path):  # what is attached must be a usable demonstration
            if "key" not in row:
                raise DataError(f"{where}: field 'key' is missing")
            if "completion" in row:
                text_or_messages(row["completion"], where, "completion")
    rows, solved = attach_demonstrations(args.prompts, args.demos)
    write_jsonl_atomic(args.out, rows)
    print(f"wrote {len(rows)} prompts to {args.out}, {solved} with a demonstration")
    return 0
