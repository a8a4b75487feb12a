"""`har-monitor train | evaluate | predict | models compare | models optimize`: the ML engineer's commands."""

from __future__ import annotations

import argparse
from pathlib import Path

from monitor.cli.run import positive
from monitor.model.backbones import backbone_choices
from monitor.model.engines import MIN_AGREEMENT as MIN_AGREEMENT_DEFAULT
from monitor.ops.logs import import_tensorflow


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = sub.add_parser("train", help="train a classifier on labelled clips and write a model bundle")
    train.add_argument("data", type=Path, help="a folder with one subfolder of videos per class (or a CSV path,action[,action_class] for --head image)")
    train.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR")
    train.add_argument("--backbone", help=f"{backbone_choices()} (default: inception_v3; raw for --head conv3d)")
    train.add_argument("--weights", default="imagenet", help="imagenet (default) | PATH | none")
    train.add_argument("--input-size", type=int, metavar="PIXELS", help="square backbone input (default: the backbone's own)")
    train.add_argument("--head", default="linear", help="linear (default: a convex fit, the same head whatever the seed) | "
                                                        "gru | lstm | bilstm | conv3d | image")
    train.add_argument("--frames", type=int, default=16, help="frames per window T (default 16)")
    train.add_argument("--sample-fps", type=positive, help="sample clips at this rate (default: --frames spread evenly over each clip)")
    train.add_argument("--stride", type=int, help="classify every S new frames at run time (default T/4)")
    train.add_argument("--epochs", type=int, default=40, help="epochs of every fit of a neural head; the last epoch's weights "
                                                              "are kept (default 40)")
    train.add_argument("--folds", type=int, default=5, help="grouped cross-validation folds reporting how well the recipe "
                                                            "generalizes (default 5; 1: none)")
    train.add_argument("--members", type=int, default=10, help="neural heads: models trained on all training clips (seeds "
                                                               "differ) and averaged in the head (default 10)")
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--units", type=int, default=32, help="recurrent / dense units of each member of the head (default 32)")
    train.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True, help="flip, crop and speed jitter of training clips")
    train.add_argument("--balance", action="store_true", help="down-sample classes to the smallest instead of weighting them")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--test", type=Path, metavar="DATA2", help="a separate test set (default: 15%% of DATA's groups)")
    train.add_argument("--group-regex", help="regex whose first group names a clip's source (default: UCF101 _gNN_, HMDB51 source name)")
    train.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "har-monitor" / "features")

    train.set_defaults(func=cmd_train)

    evaluate = sub.add_parser("evaluate", help="score a model bundle on labelled clips")
    evaluate.add_argument("model", type=Path, metavar="MODEL_DIR")
    evaluate.add_argument("data", type=Path, metavar="DATA")
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="where to write metrics.json and the PNGs (default MODEL_DIR/evaluations/DATA_NAME)")
    evaluate.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "har-monitor" / "features")

    evaluate.set_defaults(func=cmd_evaluate)

    predict = sub.add_parser("predict", help="top actions of videos or images")
    predict.add_argument("model", type=Path, metavar="MODEL_DIR")
    predict.add_argument("paths", type=Path, nargs="+", metavar="PATH")
    predict.add_argument("--csv", type=Path, metavar="FILE")
    predict.add_argument("--top-k", type=int, default=3)
    predict.set_defaults(func=cmd_predict)

    models = sub.add_parser("models", help="work with model bundles")
    commands = models.add_subparsers(dest="models_command", required=True)
    compare = commands.add_parser("compare", help="two bundles on the same labelled clips: per-class deltas, the clips "
                                                  "they disagree on, McNemar's test and a verdict")
    compare.add_argument("old", type=Path, metavar="OLD")
    compare.add_argument("new", type=Path, metavar="NEW")
    compare.add_argument("data", type=Path, metavar="DATA", help="labelled clips (as for evaluate); clips of a class only one model knows "
                                                                      "count as wrong for the other")
    compare.add_argument("--out", type=Path, metavar="DIR", help="also write compare.json there")
    compare.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "har-monitor" / "features")
    compare.set_defaults(func=cmd_compare)

    optimize = commands.add_parser("optimize", help="convert the bundle's backbone to a faster engine, check its "
                                                    "decisions against TensorFlow's and store it beside the bundle")
    optimize.add_argument("model", type=Path, metavar="MODEL_DIR")
    optimize.add_argument("--engine", default="openvino", choices=["openvino", "onnxruntime"],
                          help="openvino (default; onnxruntime is not built yet)")
    optimize.add_argument("--precision", default="int8", choices=["fp32", "bf16", "int8"],
                          help="int8 (default: NNCF post-training quantization) | bf16 | fp32")
    optimize.add_argument("--calibration", type=Path, metavar="CLIPS_DIR",
                          help="the site's clips: int8 calibrates on half of them, the check runs on the others "
                               "(default: the bundle's data.csv, training clips calibrate, test clips check)")
    optimize.add_argument("--min-agreement", type=float, default=MIN_AGREEMENT_DEFAULT, metavar="SHARE",
                          help=f"top-1 agreement with TensorFlow's decisions a conversion needs (default {MIN_AGREEMENT_DEFAULT})")
    optimize.add_argument("--force", action="store_true", help="store a conversion that fails the check; the record "
                                                               "and every violation it decides say it was forced")
    optimize.set_defaults(func=cmd_optimize)


def cmd_train(args: argparse.Namespace) -> int:
    from monitor.training.train import TrainOptions, train

    import_tensorflow()
    size = (args.input_size, args.input_size) if args.input_size else None
    opts = TrainOptions(data=args.data, out=args.out, backbone=args.backbone, weights=args.weights, head=args.head,
                        frames=args.frames, sample_fps=args.sample_fps, stride=args.stride, input_size=size,
                        epochs=args.epochs, folds=args.folds, members=args.members, batch_size=args.batch_size,
                        units=args.units, augment=args.augment,
                        balance=args.balance, seed=args.seed, test=args.test, group_regex=args.group_regex,
                        cache_dir=args.cache_dir)
    result = train(opts)
    from monitor.training.evaluation import format_report

    print(format_report(result.report, title=f"test set ({result.report['n_clips']} clips)"))
    if result.report2:
        print(format_report(result.report2, title="action class"))
    if result.cv:
        print(result.cv.describe())
    if result.epochs is None:
        print(f"head: {args.head}, fitted to convergence on all training clips (a convex problem: no epochs, no seed)")
    else:
        print(f"head: {result.members} model(s) trained on all training clips for {result.epochs} epochs (the last "
              f"epoch's weights kept), averaged")
    print(f"bundle: {result.bundle}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from monitor.training.infer import evaluate

    import_tensorflow()
    evaluate(args.model, args.data, args.out, args.cache_dir)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from monitor.training.infer import predict

    import_tensorflow()
    predict(args.model, args.paths, args.top_k, args.csv)
    return 0


def cmd_optimize(args: argparse.Namespace) -> int:
    from monitor.errors import UserError
    from monitor.training.optimize import OptimizeOptions, format_check, optimize

    import_tensorflow()
    result = optimize(OptimizeOptions(args.model, args.engine, args.precision, args.calibration, args.force,
                                      args.min_agreement))
    print(format_check(result))
    if not result.stored:
        check = result.record.check
        raise UserError(f"{args.model}: {args.engine} {args.precision} refused: top-1 agreement "
                        f"{check.top1_agreement:.4f} is under {check.threshold:.2f}; nothing stored "
                        "(--force stores it, recorded as forced in every violation it decides)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from monitor.training.compare import compare

    compare(args.old, args.new, args.data, args.out, args.cache_dir)
    return 0
