"""`uniapl` command line: one subcommand per module in this package, each adding its own parser."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from uniapl.errors import UniaplError, UniaplWarning

# subcommand modules, in the order `uniapl --help` lists them
COMMANDS = ["train", "eval", "data", "teach", "analyze", "report", "compare"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uniapl", description="Unified Adversarial Preference Learning: train, evaluate, analyze."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"uniapl.cli.{name}").add_parser(subparsers)
    return parser


def add_dtype_argument(parser, default: str = "auto") -> None:
    """The same --dtype everywhere: bf16 is emulated (and slower than fp32) on CPUs without BF16 instructions."""
    parser.add_argument("--dtype", default=default, choices=["auto", "bf16", "fp32", "fp16"],
                        help="auto: bf16 where the hardware runs it natively, else fp32 (default: %(default)s)")


def _format_warnings(command: str) -> None:
    """Our warnings print like our errors, one line; other libraries' keep Python's format."""
    default = warnings.formatwarning

    def format_warning(message, category, filename, lineno, line=None):
        if issubclass(category, UniaplWarning):
            return f"uniapl {command}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    warnings.formatwarning = format_warning


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _format_warnings(args.command)
    try:
        return int(args.func(args) or 0)
    except UniaplError as exc:
        print(f"uniapl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"uniapl {args.command}: interrupted", file=sys.stderr)
        return 130
