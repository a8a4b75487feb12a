"""`har-monitor models compare OLD NEW DATA`: two bundles on the same labelled clips, before switching.

Both models decide every clip; what matters is where they decide differently. McNemar's test asks
whether the clips only the new model gets right outnumber those only the old one gets right by
more than chance: on a few dozen clips, a higher accuracy alone often is chance.

DATA may hold a class only one of the models knows (a candidate trained on `dataset from-reviews` output
has the negative class `other`, the model in service does not): the other model cannot predict it, so
its clips count as wrong for that model, and the comparison says so.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from monitor.errors import UserError
from monitor.model.bundle import load_bundle
from monitor.training.dataset import video_folder
from monitor.training.evaluation import bootstrap_ci, mcnemar
from monitor.training.infer import Scored, score

ALPHA = 0.05


def compare(old_dir: Path, new_dir: Path, data_path: Path, out: Path | None = None, cache_dir: Path | None = None) -> dict:
    """Score both bundles on DATA, print per-class deltas, the clips they disagree on, McNemar's test and a verdict."""
    _refuse_classes_neither_knows(old_dir, new_dir, data_path)
    old, new = (score(d, data_path, cache_dir, unknown_ok=True) for d in (old_dir, new_dir))
    clips = [p for p in _decisions(old) if p in _decisions(new)]  # readable by both
    if not clips:
        raise UserError(f"{data_path}: no clip readable by both models")
    truth = {s.path: old.data.labels[s.label] for s in old.samples}
    groups = [next(s.group for s in old.samples if s.path == p) for p in clips]
    a, b = _decisions(old), _decisions(new)
    result = {
        "old": _model(old_dir, old), "new": _model(new_dir, new), "data": str(data_path), "n_clips": len(clips),
        "accuracy": {k: _accuracy([d[p][0] == truth[p] for p in clips], groups) for k, d in (("old", a), ("new", b))},
        "per_class": _per_class(clips, truth, a, b),
        "unknown_classes": {k: _unknown(m, clips, truth) for k, m in (("old", old), ("new", new))},
        "disagreements": [{"clip": str(p), "truth": truth[p], "old": a[p][0], "old_p": a[p][1],
                           "new": b[p][0], "new_p": b[p][1]} for p in clips if a[p][0] != b[p][0]],
        "mcnemar": mcnemar([a[p][0] == truth[p] for p in clips], [b[p][0] == truth[p] for p in clips]),
    }
    result["verdict"] = verdict(result)
    print(format_comparison(result))
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result


def _refuse_classes_neither_knows(old_dir: Path, new_dir: Path, data_path: Path) -> None:
    """A class folder neither model has a label for cannot tell them apart: most likely a misnamed folder.
    (An image CSV is checked row by row when scored.)"""
    if not data_path.is_dir():
        return
    known = set(load_bundle(old_dir).labels) | set(load_bundle(new_dir).labels)
    neither = [name for name in video_folder(data_path).labels if name not in known]
    if neither:
        raise UserError([f"{data_path / name}: class '{name}' is not a label of either model "
                         f"(OLD {old_dir}, NEW {new_dir}: {', '.join(sorted(known))})" for name in neither])


def _unknown(scored: Scored, clips: list[Path], truth: dict[Path, str]) -> dict[str, int]:
    """The true classes a model has no label for, with their clip counts: it can only get those clips wrong."""
    lacking = [truth[p] for p in clips if truth[p] not in scored.bundle.labels]
    return {name: lacking.count(name) for name in sorted(set(lacking))}


def _decisions(scored: Scored) -> dict[Path, tuple[str, float]]:
    """Each clip's top action and its probability (the action output)."""
    probs = scored.probs[0]
    return {s.path: (scored.bundle.labels[int(p.argmax())], round(float(p.max()), 4)) for s, p in zip(scored.samples, probs, strict=True)}


def _model(path: Path, scored: Scored) -> dict:
    return {"path": str(path), "hash": scored.bundle.hash}


def _accuracy(right: list[bool], groups: list[str]) -> dict:
    # right or wrong as a two-class problem: its accuracy is the model's
    ci = bootstrap_ci([0] * len(right), [0 if r else 1 for r in right], 2, groups)["accuracy"]
    return {"value": round(float(np.mean(right)), 4), "ci95": ci}


def _per_class(clips: list[Path], truth: dict, a: dict, b: dict) -> dict:
    """Recall per true class for each model, and the change."""
    rows = {}
    for name in sorted({truth[p] for p in clips}):
        mine = [p for p in clips if truth[p] == name]
        old = sum(a[p][0] == name for p in mine) / len(mine)
        new = sum(b[p][0] == name for p in mine) / len(mine)
        rows[name] = {"clips": len(mine), "old_recall": round(old, 4), "new_recall": round(new, 4),
                      "delta": round(new - old, 4)}
    return rows


def verdict(result: dict) -> str:
    test, old, new = result["mcnemar"], result["accuracy"]["old"]["value"], result["accuracy"]["new"]["value"]
    evidence = (f"accuracy {old:.4f} -> {new:.4f} ({new - old:+.4f}); right only with new {test['new_only']}, "
                f"only with old {test['old_only']}; McNemar p={test['p_value']:.3g}")
    evidence += "".join(f"; {k.upper()} cannot predict {_counts(lacks)}"
                        for k, lacks in result["unknown_classes"].items() if lacks)
    if test["p_value"] < ALPHA and test["new_only"] > test["old_only"]:
        return f"NEW is better: {evidence}"
    if test["p_value"] < ALPHA:
        return f"NEW is worse: keep OLD: {evidence}"
    if not test["old_only"] + test["new_only"]:
        return f"no difference: right and wrong on the same clips: {evidence}"
    return (f"no significant difference at the {ALPHA:.0%} level on {result['n_clips']} clips: {evidence}; "
            "more clips are needed to tell these models apart")


def _counts(classes: dict[str, int]) -> str:
    return ", ".join(f"{name} ({n} clip{'s' * (n != 1)})" for name, n in classes.items())


def format_comparison(result: dict) -> str:
    old, new = result["old"], result["new"]
    title = f"{old['path']} ({old['hash']}) -> {new['path']} ({new['hash']}) on {result['data']} ({result['n_clips']} clips)"
    width = max([len("accuracy"), *map(len, result["per_class"])])
    lines = [title, "=" * len(title)]
    lines += [f"{k.upper()} has no label for {_counts(lacks)}: counted as wrong for {k.upper()}"
              for k, lacks in result["unknown_classes"].items() if lacks]
    lines.append(f"{'class':<{width}}  {'clips':>5}  {'old recall':>10}  {'new recall':>10}  {'delta':>7}")
    for name, row in result["per_class"].items():
        lines.append(f"{name:<{width}}  {row['clips']:>5d}  {row['old_recall']:>10.4f}  {row['new_recall']:>10.4f}  "
                     f"{row['delta']:>+7.4f}")
    acc = result["accuracy"]
    lines.append(f"{'accuracy':<{width}}  {result['n_clips']:>5d}  {acc['old']['value']:>10.4f}  {acc['new']['value']:>10.4f}  "
                 f"{acc['new']['value'] - acc['old']['value']:>+7.4f}")
    lines.append(f"{'95% CI':<{width}}  {'':>5}  {'{:.2f}-{:.2f}'.format(*acc['old']['ci95']):>10}  "
                 f"{'{:.2f}-{:.2f}'.format(*acc['new']['ci95']):>10}")
    lines += ["", f"clips where they disagree ({len(result['disagreements'])}):"]
    for d in result["disagreements"]:
        right = "new right" if d["new"] == d["truth"] else "old right" if d["old"] == d["truth"] else "both wrong"
        lines.append(f"  {d['clip']}: truth {d['truth']}, old {d['old']} {d['old_p']:.2f}, new {d['new']} {d['new_p']:.2f} ({right})")
    test = result["mcnemar"]
    lines += ["", f"McNemar ({'exact binomial' if test['test'] == 'exact' else 'chi-square, continuity corrected'}): "
                  f"right only with old {test['old_only']}, only with new {test['new_only']}, p={test['p_value']:.3g}",
              f"verdict: {result['verdict']}"]
    return "\n".join(lines) + "\n"
