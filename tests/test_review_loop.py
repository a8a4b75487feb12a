"""The loop from QA's reviews back to the floor, on the demo site: the live model's violations are reviewed, the
reviewed clips become a training folder, a candidate is trained on it and compared with the live model, runs in
shadow beside it, and is promoted by a config change that the audit trail records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from monitor.cli import main
from support.daemon import RunningDaemon
from support.records import PASSWORD
from support.sites import copy_demo

pytestmark = [pytest.mark.slow, pytest.mark.tf]


def reviewable(db: Path) -> dict[str, list]:
    """The violations with an evidence clip, by rule."""
    from monitor.record.db import create_engine
    from monitor.record.review import query

    engine = create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            found: dict[str, list] = {}
            for v in query(conn):
                if v.evidence.get("clip"):
                    found.setdefault(v.row["rule"], []).append(v)
            return found
    finally:
        engine.dispose()


def set_models(site: Path, **models: str | None) -> None:
    data = yaml.safe_load(site.read_text())
    for key, value in models.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    site.write_text(yaml.safe_dump(data, sort_keys=False))


def shadow_predictions(d: RunningDaemon, model: str) -> float:
    return sum(v for (name, labels), v in d.scrape().items()
               if name == "har_monitor_shadow_predictions_total" and ("model", model) in labels)


def test_reviews_become_a_dataset_a_candidate_a_shadow_and_a_promotion(demo_build, tmp_path, capsys):
    from monitor.model.bundle import load_bundle
    from monitor.record.db import create_engine
    from monitor.record.review import add_user, sign_review
    from monitor.record.tables import audit_events, shadow_events, violations

    site = copy_demo(demo_build, tmp_path / "site", evidence={"pre_roll_seconds": 2, "post_roll_seconds": 2})
    db = site.parent / "violations.db"
    old = site.parent / "models" / "demo-actions"

    # the live model finds falls and a wave, with evidence
    with RunningDaemon(site) as d:
        d.wait_for(lambda: len(reviewable(db).get("person-fell", [])) >= 3
                   and reviewable(db).get("waving-in-cleanroom"), 120, "three falls and a wave with their clips")
    found = reviewable(db)
    (fell, *wrongly), wave = found["person-fell"][:3], found["waving-in-cleanroom"][0]

    # QA signs: two confirmed, two false positives (the record's review API, as the console does)
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        add_user(conn, "rita", "reviewer", PASSWORD, "Rita Reviewer", actor="test")
        sign_review(conn, fell.row["id"], "rita", PASSWORD, "confirmed", "she fell")
        sign_review(conn, wave.row["id"], "rita", PASSWORD, "confirmed", "waving over open product")
        for v in wrongly:
            sign_review(conn, v.row["id"], "rita", PASSWORD, "false_positive", "he was sitting down")
    engine.dispose()

    # the reviewed clips added to (a little of) the training data: false positives under `other`, a class
    # the live model never had (compare counts those clips as wrong for it); training wants 2 clips a class
    data = tmp_path / "data"
    for clip in sorted((site.parent / "train").glob("*/*_line-1_c0[01].mp4")):
        (data / clip.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(clip, data / clip.parent.name / clip.name)
    assert main(["dataset", "from-reviews", "--cameras", str(site), "--since", "1h", "--out", str(data)]) == 0
    reviewed = sorted(p.with_suffix("").relative_to(data).as_posix() for p in data.rglob("*.mp4.json"))
    assert [r.split("/")[0] for r in reviewed] == ["fall", "other", "other", "wave"], reviewed
    assert {json.loads(p.read_text())["violation_id"] for p in (data / "other").glob("*.json")} == {
        v.row["id"] for v in wrongly}
    clips = list(data.rglob("*.mp4"))
    assert len(clips) == 2 * 5 + 4

    # a tiny candidate on the live model's backbone and windows, compared with the live model
    new = tmp_path / "candidate"
    spec = load_bundle(old).manifest
    assert main(["train", str(data), "--out", str(new), "--test", str(data), "--backbone", spec.backbone.name,
                 "--weights", "none", "--input-size", str(spec.backbone.input_size[0]),
                 "--frames", str(spec.window.frames), "--sample-fps", str(spec.window.sample_fps),
                 "--stride", str(spec.window.stride), "--folds", "1", "--members", "1", "--epochs", "8",
                 "--units", "8", "--batch-size", "8", "--no-augment", "--cache-dir", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    # the features train cached (the candidate is on the live model's backbone): the comparison runs the heads only
    assert main(["models", "compare", str(old), str(new), str(data), "--out", str(tmp_path / "compare"),
                 "--cache-dir", str(tmp_path / "cache")]) == 0
    printed = capsys.readouterr().out
    assert "OLD has no label for other (2 clips): counted as wrong for OLD" in printed and "verdict" in printed
    compared = json.loads((tmp_path / "compare" / "compare.json").read_text())
    assert compared["n_clips"] == len(clips) and compared["new"]["hash"] == load_bundle(new).hash
    assert compared["unknown_classes"] == {"old": {"other": 2}, "new": {}} and compared["per_class"]["other"]["old_recall"] == 0

    # the candidate in shadow: it classifies every live window, its episodes stay out of the record
    candidate = load_bundle(new).hash
    set_models(site, shadow_model=str(new))
    with RunningDaemon(site) as d:
        d.wait_for(lambda: shadow_predictions(d, candidate[:12]) >= 20, 120, "the shadow classifying live windows")
    capsys.readouterr()
    assert main(["violations", "shadow-report", "--cameras", str(site), "--since", "1h"]) == 0
    report = capsys.readouterr().out.splitlines()
    assert any(line.startswith("shadow run ") and line.endswith(f"shadow {candidate[:12]}") for line in report)
    assert report[-1].startswith("verdict: ")
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(violations.c.model_hash == candidate)).scalar() == 0
        assert {r.model_hash for r in conn.execute(sa.select(shadow_events))} <= {candidate}
    engine.dispose()

    # promotion is a config change, recorded in the audit trail
    set_models(site, model=str(new), shadow_model=None)
    with RunningDaemon(site) as d:
        d.wait_for(lambda: sum(v for (name, _), v in d.scrape().items() if name == "har_monitor_predictions_total") >= 5,
                   120, "the promoted model classifying")
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        changes = [(json.loads(r.old), json.loads(r.new)) for r in conn.execute(
            sa.select(audit_events).where(audit_events.c.what == "model_changed").order_by(audit_events.c.seq))]
    engine.dispose()
    live = load_bundle(old).hash
    assert [(o["model_hash"], o["shadow_hash"], n["model_hash"], n["shadow_hash"]) for o, n in changes] == [
        (live, None, live, candidate), (live, candidate, candidate, None)], "the shadow added, then promoted"
    assert changes[1][1]["model_path"] == str(new.resolve())
    assert main(["violations", "verify", "--cameras", str(site)]) == 0
