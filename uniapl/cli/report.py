"""`uniapl report`: runs side by side in report.md and a self-contained report.html."""

from __future__ import annotations

import argparse

from uniapl.cli import add_smoothing_argument, require_at_least


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "report",
        help="compare runs side by side: IFEval, analysis, training curves, config differences",
        description="Write report.md (with PNGs) and a self-contained report.html comparing the given run folders.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training output folders (or model folders)")
    p.add_argument("--out", required=True, help="folder for report.md, report.html and the PNGs")
    add_smoothing_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from uniapl.analysis.report import write_report
    from uniapl.io import check_output_folder

    require_at_least(args, smooth=1)
    check_output_folder(args.out, "--out")
    runs = write_report(args.runs, args.out, args.smooth)
    print(f"reported {len(runs)} runs -> {args.out}/report.md, {args.out}/report.html")
    return 0
