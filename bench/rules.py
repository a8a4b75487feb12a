#!/usr/bin/env python
"""Benchmark of the rule engine (not a test): what do the rules cost next to the classifier?

    python bench/rules.py [--rules 100] [--cameras 50] [--windows 240] [--repeat 5]

What it measures, in one run:
1. The engine: R rules of every kind (forbidden, sequence, duration min and max, absence; a third
   with schedules in three time zones, one of them overnight; some on action groups) and C cameras
   each sending W predictions 0.5 s apart over 16 labels, in which a dominant action changes every
   5 s to 2 min, so that episodes open, update and close. Twice: every rule applying to every
   camera (the worst case), then each rule scoped to one of 5 zones, as a site would write them.
   Predictions/s and rule evaluations/s (best of --repeat, a fresh engine each time); the
   predictions are built before the clock starts.
2. Baseline: the classifier, `build_head('gru', 16, 2048, 10, 256)` called through a compiled
   tf.function on batches of 50 windows (as the daemon batches across cameras): seconds per window
   (median of 20 calls after warm-up).
The last line printed is `ratio: X` = the engine's cost per prediction in the worst case / the
classifier's per window.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from monitor.messages import Prediction
from monitor.rules import RuleEngine, RuleSet, parse_rule

LABELS = [f"action_{i:02d}" for i in range(16)]
GROUPS = {"group_a": LABELS[:3], "group_b": LABELS[3:6]}
SCHEDULES = [{"days": ["mon", "tue", "wed", "thu", "fri"], "between": ["06:00", "22:00"], "tz": "Europe/Copenhagen"},
             {"between": ["22:00", "06:00"], "tz": "America/New_York"},
             {"between": [["00:00", "12:00"], ["13:00", "23:00"]], "tz": "Asia/Tokyo"}]
KINDS = ["forbidden"] * 8 + ["sequence"] * 4 + ["duration-min"] * 2 + ["duration-max"] * 2 + ["absence"] * 4


def make_rules(n: int, rng: random.Random, zones: int = 0) -> RuleSet:
    """`zones` > 0: rule i applies to zone i % zones only."""
    actions = LABELS + list(GROUPS)
    rules = []
    for i in range(n):
        common = {"id": f"rule-{i:03d}", "min_confidence": rng.choice([0.5, 0.6, 0.8]),
                  "for_windows": rng.randint(1, 3), "release_windows": rng.randint(1, 3),
                  "cooldown": rng.choice([0, 10, 60])}
        if i % 3 == 0:
            common["schedule"] = SCHEDULES[i % len(SCHEDULES)]
        if zones:
            common["applies_to"] = {"zones": [f"zone-{i % zones}"]}
        a, b = rng.sample(actions, 2)
        kind = KINDS[i % len(KINDS)]
        rules.append(common | {
            "forbidden": {"action": a},
            "sequence": {"kind": "sequence", "require": a, "before": b, "within": "60s"},
            "duration-min": {"kind": "duration", "action": a, "min": "20s"},
            "duration-max": {"kind": "duration", "action": a, "max": "1m"},
            "absence": {"kind": "absence", "action": a, "every": rng.choice(["30s", "5m"])},
        }[kind])
    groups = {label: (label,) for label in LABELS} | {g: tuple(m) for g, m in GROUPS.items()}
    return RuleSet(tuple(parse_rule(r) for r in rules), groups, "bench")


def make_predictions(cameras: int, windows: int, rng: random.Random) -> list[Prediction]:
    """Interleaved by time across cameras, as the classifier hands them to the engine."""
    start = 1_714_975_200.0  # a Monday, 06:00 UTC
    streams = []
    for c in range(cameras):
        preds, dominant, until = [], LABELS[0], start
        for k in range(windows):
            t = start + 0.5 * k
            if t >= until:
                dominant, until = rng.choice(LABELS), t + rng.uniform(5, 120)
            weights = {label: rng.random() * 0.1 for label in LABELS}
            weights[dominant] += rng.uniform(0.4, 1.5)
            total = sum(weights.values())
            preds.append(Prediction(f"cam-{c:02d}", t - 4.0, t, t, {k: v / total for k, v in weights.items()}))
        streams.append(preds)
    return [p for step in zip(*streams, strict=True) for p in step]


def bench_engine(ruleset: RuleSet, predictions: list[Prediction], repeat: int, zones: int = 1) -> tuple[float, int]:
    """Best seconds for the whole stream, and the episodes opened."""
    cameras = sorted({p.camera for p in predictions})
    zones = {c: f"zone-{i % zones}" for i, c in enumerate(cameras)}
    best, opened = float("inf"), 0
    for _ in range(repeat):
        engine = RuleEngine(ruleset, zones)
        began = time.perf_counter()
        events = [e for p in predictions for e in engine.observe(p)]
        best = min(best, time.perf_counter() - began)
        opened = sum(e.kind == "opened" for e in events)
    return best, opened


def bench_classifier(batch: int = 50, calls: int = 20) -> float:
    """Median seconds per window of the GRU head, compiled, on batches of `batch` windows."""
    import numpy as np
    import tensorflow as tf

    from monitor.model.heads import build_head

    head = build_head("gru", 16, 2048, 10, 256)
    run = tf.function(lambda x: head(x, training=False), input_signature=[tf.TensorSpec([None, 16, 2048], tf.float32)])
    x = np.random.default_rng(0).standard_normal((batch, 16, 2048)).astype(np.float32)
    for _ in range(3):
        run(x).numpy()
    times = []
    for _ in range(calls):
        began = time.perf_counter()
        run(x).numpy()
        times.append(time.perf_counter() - began)
    return statistics.median(times) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--rules", type=int, default=100)
    parser.add_argument("--cameras", type=int, default=50)
    parser.add_argument("--windows", type=int, default=240, help="predictions per camera (0.5 s apart)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    predictions = make_predictions(args.cameras, args.windows, random.Random(7))
    worst = bench_engine(make_rules(args.rules, random.Random(8)), predictions, args.repeat)
    report(f"engine, every rule on every camera: {args.rules} rules x {args.cameras} cameras", worst, predictions,
           args.rules)
    zoned = bench_engine(make_rules(args.rules, random.Random(8), zones=5), predictions, args.repeat, zones=5)
    report(f"engine, each rule on one of 5 zones: {args.rules // 5} rules x {args.cameras} cameras", zoned,
           predictions, args.rules // 5)
    per_window = bench_classifier()
    print(f"classifier: GRU head (16 x 2048 -> 256 units -> 10), batches of 50: {per_window * 1e6:.0f} us per window")
    print(f"zoned ratio: {zoned[0] / len(predictions) / per_window:.3f}")
    print(f"ratio: {worst[0] / len(predictions) / per_window:.3f}")


def report(what: str, result: tuple[float, int], predictions: list[Prediction], rules_per_camera: int) -> None:
    seconds, opened = result
    n = len(predictions)
    print(f"{what}, {n} predictions in {seconds:.3f} s: {n / seconds:,.0f} predictions/s, "
          f"{n * rules_per_camera / seconds:,.0f} rule evaluations/s, {seconds / n * 1e6:.0f} us per prediction; "
          f"{opened} episodes opened")


if __name__ == "__main__":
    main()
