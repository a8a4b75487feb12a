"""Command line: `har-monitor run | check | demo`.

A user's mistake prints one line per problem and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from monitor.errors import UserError
from monitor.logs import setup_logging

EXIT_USER_ERROR = 2


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="har-monitor", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the monitoring daemon")
    run.add_argument("--cameras", required=True, type=Path, metavar="SITE_YAML", help="the site configuration")
    run.add_argument("--duration", type=_positive, metavar="SECONDS", help="stop after this long (default: until SIGTERM/Ctrl-C)")

    check = sub.add_parser("check", help="validate site.yaml, the model bundle and the rules without running")
    check.add_argument("--cameras", required=True, type=Path, metavar="SITE_YAML")
    check.add_argument("--probe", action="store_true", help="also connect to every network camera")

    demo = sub.add_parser("demo", help="build a self-contained demo site (synthetic clips, trained model) and run it")
    demo.add_argument("--dir", type=Path, default=Path("har-demo"), help="where to build it (default ./har-demo)")
    demo.add_argument("--duration", type=_positive, metavar="SECONDS", help="run this long (default: until Ctrl-C)")
    demo.add_argument("--rebuild", action="store_true", help="rebuild the clips and model even if present")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.check import check_site
    from monitor.daemon import Daemon

    daemon = Daemon(check_site(args.cameras))
    summary = daemon.run(_stop_on_signals(), args.duration)
    print(f"violations this run: {dict(summary.violations) or 'none'}")
    print(f"metrics: {summary.metrics_url}  database: {summary.database}")
    return 1 if summary.unflushed else 0


def cmd_check(args: argparse.Namespace) -> int:
    from monitor.check import check_site
    from monitor.classifier import Classifier

    checked = check_site(args.cameras, probe_network=args.probe)
    backbone = checked.bundle.build_backbone()
    window = checked.bundle.manifest.window
    Classifier(checked.bundle.head_file, checked.bundle.labels, window.frames, backbone.dim)
    print(f"ok: {args.cameras}: site {checked.site.config.site}, {len(checked.site.cameras)} cameras, "
          f"model {checked.bundle.hash} ({len(checked.bundle.labels)} actions), "
          f"{len(checked.rules.rules)} rules ({checked.rules.hash})")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.demo import run_demo

    return run_demo(args.dir, args.duration, rebuild=args.rebuild, stop=_stop_on_signals())


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return {"run": cmd_run, "check": cmd_check, "demo": cmd_demo}[args.command](args)
    except UserError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
