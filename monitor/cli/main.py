"""`har-monitor COMMAND ...`: parse, dispatch, and turn a user's mistake into one line per problem and exit 2."""

from __future__ import annotations

import argparse
import sys

from monitor.cli import config, console, record, rules, run, training, zones
from monitor.errors import UserError
from monitor.ops.logs import setup_logging

EXIT_USER_ERROR = 2


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="har-monitor",
                                  description="Camera compliance monitor for regulated manufacturing floors.")
    top.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = top.add_subparsers(dest="command", required=True)
    for group in (run, training, rules, record, zones, console, config):
        group.add_parsers(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return int(args.func(args))
    except UserError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130
