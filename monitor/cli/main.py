"""Command line: `har-monitor run | check | demo | train | evaluate | predict | rules | db | users | violations`.

A user's mistake prints one line per problem and exits 2, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from monitor.errors import UserError
from monitor import records_cli
from monitor.logs import setup_logging
from monitor.rules import cli as rules_cli

EXIT_USER_ERROR = 2


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="har-monitor", description="Camera compliance monitor for regulated manufacturing floors.")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the monitoring daemon")
    run.add_argument("--cameras", required=True, type=Path, metavar="SITE_YAML", help="the site configuration")
    run.add_argument("--duration", type=_positive, metavar="SECONDS", help="stop after this long (default: until SIGTERM/Ctrl-C)")
    run.add_argument("--shard", metavar="INDEX/COUNT", help="watch only this shard's cameras (by a stable hash of their ids)")

    check = sub.add_parser("check", help="validate site.yaml, the model bundle and the rules without running")
    check.add_argument("--cameras", required=True, type=Path, metavar="SITE_YAML")
    check.add_argument("--probe", action="store_true", help="also connect to every network camera")

    demo = sub.add_parser("demo", help="build a self-contained demo site (synthetic clips, trained model) and run it")
    demo.add_argument("--dir", type=Path, default=Path("har-demo"), help="where to build it (default ./har-demo)")
    demo.add_argument("--duration", type=_positive, metavar="SECONDS", help="run this long (default: until Ctrl-C)")
    demo.add_argument("--rebuild", action="store_true", help="rebuild the clips and model even if present")
    _add_training(sub)
    rules_cli.add_parser(sub)
    records_cli.add_parsers(sub)
    return parser


def _add_training(sub) -> None:
    train = sub.add_parser("train", help="train a classifier on labelled clips and write a model bundle")
    train.add_argument("data", type=Path, help="a folder with one subfolder of videos per class (or a CSV path,action[,action_class] for --head image)")
    train.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR")
    train.add_argument("--backbone", help="inception_v3 (default) | mobilenet_v2 | resnet50 | vgg16 | raw (conv3d) | tflite:PATH")
    train.add_argument("--weights", default="imagenet", help="imagenet (default) | PATH | none")
    train.add_argument("--input-size", type=int, metavar="PIXELS", help="square backbone input (default: the backbone's own)")
    train.add_argument("--head", default="gru", help="gru (default) | lstm | bilstm | conv3d | image")
    train.add_argument("--frames", type=int, default=16, help="frames per window T (default 16)")
    train.add_argument("--sample-fps", type=_positive, help="sample clips at this rate (default: --frames spread evenly over each clip)")
    train.add_argument("--stride", type=int, help="classify every S new frames at run time (default T/4)")
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--units", type=int, default=128, help="recurrent / dense units of the head")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True, help="flip, crop and speed jitter of training clips")
    train.add_argument("--balance", action="store_true", help="down-sample classes to the smallest instead of weighting them")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--test", type=Path, metavar="DATA2", help="a separate test set (then DATA is split 85/15 into train/validation)")
    train.add_argument("--group-regex", help="regex whose first group names a clip's source (default: UCF101 _gNN_, HMDB51 source name)")
    train.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "har-monitor" / "features")

    evaluate = sub.add_parser("evaluate", help="score a model bundle on labelled clips")
    evaluate.add_argument("model", type=Path, metavar="MODEL_DIR")
    evaluate.add_argument("data", type=Path, metavar="DATA")
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="where to write metrics.json and the PNGs (default MODEL_DIR/evaluation)")
    evaluate.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "har-monitor" / "features")

    predict = sub.add_parser("predict", help="top actions of videos or images")
    predict.add_argument("model", type=Path, metavar="MODEL_DIR")
    predict.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    predict.add_argument("--csv", type=Path, metavar="FILE")
    predict.add_argument("--top-k", type=int, default=3)


def cmd_train(args: argparse.Namespace) -> int:
    from monitor.training.train import TrainOptions, train

    size = (args.input_size, args.input_size) if args.input_size else None
    opts = TrainOptions(data=args.data, out=args.out, backbone=args.backbone, weights=args.weights, head=args.head,
                        frames=args.frames, sample_fps=args.sample_fps, stride=args.stride, input_size=size,
                        epochs=args.epochs, batch_size=args.batch_size, units=args.units, augment=args.augment,
                        balance=args.balance, seed=args.seed, test=args.test, group_regex=args.group_regex,
                        cache_dir=args.cache_dir)
    result = train(opts)
    from monitor.evaluation import format_report

    print(format_report(result.report, title=f"test set ({result.report['n_clips']} clips)"))
    if result.report2:
        print(format_report(result.report2, title="action class"))
    print(f"bundle: {result.bundle}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from monitor.training.infer import evaluate

    evaluate(args.model, args.data, args.out, args.cache_dir)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from monitor.training.infer import predict

    predict(args.model, args.paths, args.top_k, args.csv)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from monitor.check import check_site
    from monitor.daemon import Daemon

    from monitor.config import parse_shard

    daemon = Daemon(check_site(args.cameras), parse_shard(args.shard) if args.shard else None)
    signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload())  # handlers belong to the main thread
    summary = daemon.run(_stop_on_signals(), args.duration)
    print(f"violations this run: {dict(summary.violations) or 'none'}")
    print(f"metrics: {summary.metrics_url}  database: {summary.database}")
    if summary.unflushed:
        print(f"{summary.unflushed} violation events wait in the spool for the database (replayed at the next start)")
    return 0


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
        commands = {"run": cmd_run, "check": cmd_check, "demo": cmd_demo,
                    "train": cmd_train, "evaluate": cmd_evaluate, "predict": cmd_predict,
                    "rules": rules_cli.cmd_rules, "db": records_cli.cmd_db, "users": records_cli.cmd_users,
                    "violations": records_cli.cmd_violations}
        return commands[args.command](args)
    except UserError as err:
        for problem in err.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
