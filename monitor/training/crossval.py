"""How good the training recipe is, from grouped k-fold cross-validation: the mean and spread over the folds.

A plant's dataset has tens of clips per action from a few cameras and people. Early stopping on one
validation split of 15% (a clip or two per class) stopped after a chance bad epoch, so the seed decided
the held-out accuracy. Cross-validation did not pick a better epoch count either: on the real set of
bench/small_datasets.py (one to four sources per class) the folds' mean validation loss was lowest after
the first epoch for all five seeds (a fold that loses one of a class's two sources seems to generalize worse
the longer it trains), while the final head, which sees every source, did best with the full schedule.
So the schedule is fixed (--epochs, the last weights kept) and the head averages several members; the
folds, each validated on sources its model never saw, say how well that recipe generalizes, and how
unevenly: pessimistic when a class has two or three sources, optimistic when groups share a camera.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from monitor.ops.logs import kv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CrossValidation:
    epochs: int
    per_fold: tuple[float, ...]  # each fold's validation accuracy after the full schedule
    validation_clips: tuple[int, ...]  # per fold
    mean_history: dict  # per epoch, averaged over the folds

    def record(self) -> dict:
        """For model.yaml: the folds' validation accuracy, mean and spread."""
        acc = np.array(self.per_fold)
        return {"folds": len(acc), "accuracy_mean": round(float(acc.mean()), 4), "accuracy_std": round(float(acc.std()), 4),
                "accuracy_min": round(float(acc.min()), 4), "accuracy_max": round(float(acc.max()), 4),
                "per_fold": [round(float(a), 4) for a in acc], "validation_clips": list(self.validation_clips)}

    def describe(self) -> str:
        r = self.record()
        return (f"cross-validation over {r['folds']} folds (each validated on sources its model never saw): accuracy "
                f"{r['accuracy_mean']:.2f} ± {r['accuracy_std']:.2f} (folds {r['accuracy_min']:.2f}-{r['accuracy_max']:.2f})")


def accuracy_key(history: dict) -> str:
    return "val_action_accuracy" if "val_action_accuracy" in history else "val_accuracy"


def cross_validate(fit_fold: Callable[[int, list[int]], dict], folds: list[list[int]], epochs: int) -> CrossValidation:
    """`fit_fold(fold number, validation indices)` trains on the other clips for `epochs` and returns the Keras history."""
    histories = []
    for n, held_out in enumerate(folds, start=1):
        history = fit_fold(n, held_out)
        histories.append(history)
        log.info(kv(event="fold_trained", fold=f"{n}/{len(folds)}", validation_clips=len(held_out),
                    val_accuracy=round(history[accuracy_key(history)][-1], 4)))
    per_fold = tuple(h[accuracy_key(h)][-1] for h in histories)
    mean = {k: [float(v) for v in np.mean([h[k] for h in histories], axis=0)] for k in histories[0]}
    cv = CrossValidation(epochs, per_fold, tuple(len(f) for f in folds), mean)
    r = cv.record()
    log.info(kv(event="cross_validated", folds=r["folds"], epochs=epochs, accuracy_mean=r["accuracy_mean"],
                accuracy_std=r["accuracy_std"], accuracy_min=r["accuracy_min"], accuracy_max=r["accuracy_max"]))
    return cv
