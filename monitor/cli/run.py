"""`har-monitor run | check | demo`: the daemon, a site's validation, and the self-contained demo."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

from monitor.errors import UserError
from monitor.ops.logs import import_tensorflow


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="run the monitoring daemon")
    run.add_argument("--cameras", required=True, type=Path, metavar="SITE_YAML", help="the site configuration")
    run.add_argument("--duration", type=positive, metavar="SECONDS",
                     help="stop after this long (default: until SIGTERM/Ctrl-C)")
    run.add_argument("--shard", metavar="INDEX/COUNT", help="watch only this shard's cameras (by a stable hash of their ids)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check", help="validate site.yaml, the model bundle and the rules without running")
    check.add_argument("--cameras", required=True, type=Path, metavar="SITE_YAML")
    check.add_argument("--probe", action="store_true", help="also connect to every network camera")
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser("demo", help="build a self-contained demo site (synthetic clips, trained model) and run it")
    demo.add_argument("--dir", type=Path, default=Path("har-demo"), help="where to build it (default ./har-demo)")
    demo.add_argument("--duration", type=positive, metavar="SECONDS", help="run this long (default: until Ctrl-C)")
    demo.add_argument("--rebuild", action="store_true", help="rebuild the clips and model even if present")
    demo.set_defaults(func=cmd_demo)


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.pipeline.daemon import Daemon
    from monitor.site.check import check_site
    from monitor.site.config import parse_shard

    checked, shard = check_site(args.cameras), parse_shard(args.shard) if args.shard else None
    import_tensorflow()
    daemon = Daemon.for_site(checked, shard)
    signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload())  # handlers belong to the main thread
    summary = daemon.run(stop_on_signals(), args.duration)
    print(f"violations this run: {dict(summary.violations) or 'none'}")
    print(f"metrics: {summary.metrics_url}  database: {summary.database}")
    if summary.unflushed:
        print(f"{summary.unflushed} violation events wait in the spool for the database (replayed at the next start)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from monitor.model.engines import build_engine
    from monitor.pipeline.classifier import Classifier
    from monitor.site.check import check_site

    checked = check_site(args.cameras, probe_network=args.probe)
    import_tensorflow()
    backbone = build_engine(checked.bundle, checked.engine)
    window = checked.bundle.manifest.window
    Classifier(checked.bundle.head_file, checked.bundle.labels, window.frames, backbone.dim)
    shadow = checked.shadow
    if shadow is not None:  # its head must read the live embeddings
        try:
            Classifier(shadow.head_file, shadow.labels, shadow.manifest.window.frames, backbone.dim)
        except UserError as err:
            raise UserError([f"{args.cameras}: shadow_model: {p}" for p in err.problems]) from None
    print(f"ok: {args.cameras}: site {checked.site.config.site}, {len(checked.site.cameras)} cameras, "
          f"model {checked.bundle.hash} ({len(checked.bundle.labels)} actions), "
          f"{len(checked.rules.rules)} rules ({checked.rules.hash}), "
          f"engine {checked.engine.describe()}: {checked.engine.why}"
          + (f", shadow model {shadow.hash} ({len(shadow.labels)} actions)" if shadow else ""))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from monitor.demo.demo import run_demo

    import_tensorflow()
    return run_demo(args.dir, args.duration, rebuild=args.rebuild, stop=stop_on_signals())


def stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    return stop
