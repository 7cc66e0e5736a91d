"""`uniapl` command line: one subcommand per module in this package, each adding its own parser.

A user's mistake (bad config, data, paths, models, reward functions) and the environment's (a full disk, a
read-only folder) print one line naming the problem and exit 2; `--debug` adds the traceback, including
that of the user's own code (a reward function that raised).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
import warnings

from uniapl.errors import UniaplError, UniaplWarning

# subcommand modules, in the order `uniapl --help` lists them
COMMANDS = ["train", "discriminator", "eval", "data", "teach", "analyze", "report", "compare"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="uniapl", description="Unified Adversarial Preference Learning: train, evaluate, analyze."
    )
    parser.add_argument("--debug", action="store_true", help="on an error, also print its traceback")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"uniapl.cli.{name}").add_parser(subparsers)
    for leaf in _leaf_parsers(parser):  # `uniapl train x.yaml --debug` works as well as `uniapl --debug train x.yaml`
        leaf.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="on an error, also print its traceback")
    return parser


def _leaf_parsers(parser: argparse.ArgumentParser):
    """The parsers of the commands that run (e.g. `eval ifeval`), below every level of subcommands."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not groups:
        yield parser
    for group in groups:
        for child in dict.fromkeys(group.choices.values()):  # an alias lists a parser twice
            yield from _leaf_parsers(child)


def add_dtype_argument(parser, default: str = "auto") -> None:
    """The same --dtype everywhere: bf16 is emulated (and slower than fp32) on CPUs without BF16 instructions."""
    parser.add_argument("--dtype", default=default, choices=["auto", "bf16", "fp32", "fp16"],
                        help="auto: bf16 where the hardware runs it natively, else fp32 (default: %(default)s)")


def add_engine_argument(parser, flag: str = "--engine") -> None:
    """The decode loop of evaluation and analysis: greedy, each gives the same tokens up to rounding; sampled, the same
    distribution with other noise. vllm needs .venv-vllm."""
    parser.add_argument(flag, default="plain", choices=["plain", "compiled", "vllm"],
                        help="the decode loop: plain (CPUs), compiled (GPUs) or vllm (in .venv-vllm: docs/vllm.md) (default: %(default)s)")


def add_smoothing_argument(parser) -> None:
    """The same --smooth for every report."""
    from uniapl.analysis import DEFAULT_SMOOTHING_WINDOW

    parser.add_argument("--smooth", type=int, default=DEFAULT_SMOOTHING_WINDOW, metavar="STEPS",
                        help="draw training curves as trailing means over this many steps, 1 for as logged; the training-dynamics "
                        "table averages the first and last this many steps (default: %(default)s)")


def require_at_least(args, **minimums: int) -> None:
    """Each option `--name` that is set must be at least its minimum."""
    for name, least in minimums.items():
        value = getattr(args, name)
        if value is not None and value < least:
            raise UniaplError(f"--{name.replace('_', '-')} must be at least {least}, got {value}")


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
    except (UniaplError, OSError) as exc:  # OSError: the environment's (a full disk, a folder that vanished)
        print(f"uniapl {args.command}: error: {exc}", file=sys.stderr)
        if args.debug:
            traceback.print_exception(exc)
        elif exc.__cause__ is not None:
            print(f"uniapl {args.command}: --debug shows the traceback of the {type(exc.__cause__).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"uniapl {args.command}: interrupted", file=sys.stderr)
        return 130
