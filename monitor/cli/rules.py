"""`har-monitor rules check FILE... [--model MODEL_DIR]` and `har-monitor rules test TESTFILE...`.

check: exit 0 when the files are valid (warnings are printed but do not fail), 2 on errors.
test: exit 0 when every rule test passes, 1 when one fails, 2 when a file is invalid.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.errors import UserError
from monitor.rules.ruleset import check_rules
from monitor.rules.ruletest import run_files


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rules = sub.add_parser("rules", help="lint and unit-test compliance rule files")
    commands = rules.add_subparsers(dest="rules_command", required=True)
    check = commands.add_parser("check", help="validate rule files; file:line:column for each problem")
    check.add_argument("files", nargs="+", type=Path, metavar="FILE")
    check.add_argument("--model", type=Path, metavar="MODEL_DIR",
                       help="also check the actions against this bundle's labels")
    check.set_defaults(func=cmd_check)
    test = commands.add_parser("test", help="run rule unit tests (YAML: predictions in, expected episodes out)")
    test.add_argument("files", nargs="+", type=Path, metavar="TESTFILE")
    test.set_defaults(func=cmd_test)


def cmd_check(args: argparse.Namespace) -> int:
    labels = groups = None
    if args.model is not None:
        from monitor.model.bundle import load_bundle

        bundle = load_bundle(args.model)
        labels, groups = bundle.labels, bundle.manifest.groups
    found = check_rules(args.files, labels, groups)
    for warning in found.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if found.errors:
        raise UserError(found.errors)
    assert found.ruleset is not None
    if labels is None:
        print("note: actions were not checked against a model's labels (give --model MODEL_DIR)")
    print(f"ok: {len(args.files)} files, {len(found.ruleset.rules)} enabled rules, hash {found.ruleset.hash}"
          f", {len(found.warnings)} warnings")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    return 0 if run_files(args.files) else 1
