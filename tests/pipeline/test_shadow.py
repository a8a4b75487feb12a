"""Shadow mode in the daemon: a candidate head on the live embeddings, judged by the same rules, whose episodes go to
shadow_events and the model-labelled metrics only (no violation, evidence or notification); an incompatible
candidate is refused; promoting it (a config change) is an audit event."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from monitor.cli import main
from monitor.errors import UserError
from monitor.model.bundle import load_bundle
from monitor.rules import RuleEngine
from monitor.site.check import check_site
from support.daemon import RunningDaemon
from support.sites import LABELS, write_site
from support.waiting import wait_until
from support.webhooks import WebhookReceiver

FALL_RULES = {"rules": [{"id": "person-fell", "severity": "critical",
                         "when": {"action": "fall", "min_confidence": 0.5, "for_windows": 1}}]}
SECRET = "shadow-test-hook-secret"


def fixed_bundle(out: Path, label: str, frames: int = 4, size: int = 75) -> Path:
    """A bundle like the tiny one whose head always answers `label` (a bias, whatever the features)."""
    import keras
    import numpy as np

    from monitor.model.bundle import BackboneSpec, ModelManifest, WindowSpec, write_bundle

    head = keras.Sequential([keras.Input((frames, 2048)), keras.layers.GlobalAveragePooling1D(),
                             keras.layers.Dense(len(LABELS), activation="softmax", kernel_initializer="zeros")])
    bias = np.zeros(len(LABELS), np.float32)
    bias[LABELS.index(label)] = 8.0
    head.layers[-1].bias.assign(bias)
    manifest = ModelManifest(name=f"always-{label}", backbone=BackboneSpec(name="inception_v3", weights="none",
                                                                            input_size=(size, size)),
                             window=WindowSpec(frames=frames, sample_fps=5.0, stride=2), labels=LABELS)
    write_bundle(out, manifest, head)
    return out


def edit_manifest(bundle: Path, out: Path, change) -> Path:
    shutil.copytree(bundle, out)
    data = yaml.safe_load((out / "model.yaml").read_text())
    change(data)
    (out / "model.yaml").write_text(yaml.safe_dump(data))
    return out


@pytest.mark.tf
def test_a_shadow_model_that_cannot_share_the_embeddings_or_the_rules_is_refused(tiny_bundle, clip, tmp_path, capsys):
    bigger = edit_manifest(tiny_bundle, tmp_path / "bigger", lambda d: d["backbone"].update(input_size=[99, 99]))
    longer = edit_manifest(tiny_bundle, tmp_path / "longer", lambda d: d["window"].update(frames=8))
    seeded = edit_manifest(tiny_bundle, tmp_path / "seeded", lambda d: d["backbone"].update(seed=7))
    renamed = edit_manifest(tiny_bundle, tmp_path / "renamed", lambda d: d.update(
        labels=[f"x{i}" for i in range(len(LABELS))], groups={}))
    cameras = [{"id": "cam-1", "url": str(clip)}]
    expected = {bigger: "backbone.input_size is (99, 99) (the model's is (75, 75))",
                longer: "window.frames is 8 (the model's is 4)",
                seeded: "backbone.seed is 7 (the model's is 0)",
                renamed: "the rules do not fit its labels"}
    for candidate, problem in expected.items():
        site = write_site(tmp_path / f"site-{candidate.name}", tiny_bundle, cameras, FALL_RULES,
                          shadow_model=str(candidate))
        with pytest.raises(UserError) as refused:
            check_site(site)
        assert any(p.startswith(f"{site}: shadow_model: {candidate}") and problem in p for p in refused.value.problems), \
            refused.value.problems
    missing = write_site(tmp_path / "site-missing", tiny_bundle, cameras, FALL_RULES, shadow_model="nowhere")
    with pytest.raises(UserError, match=r"shadow_model: .*nowhere: model bundle not found"):
        check_site(missing)
    same = write_site(tmp_path / "site-same", tiny_bundle, cameras, FALL_RULES,
                      shadow_model=str(edit_manifest(tiny_bundle, tmp_path / "renamed-only", lambda d: d.update(name="v2"))))
    assert check_site(same).shadow is not None, "a candidate with the same backbone and window runs"
    capsys.readouterr()
    assert main(["check", "--cameras", str(same)]) == 0
    assert f"shadow model {load_bundle(tmp_path / 'renamed-only').hash} (5 actions)" in capsys.readouterr().out


@pytest.mark.tf
def test_a_failing_shadow_head_is_counted_and_logged_and_the_live_path_goes_on(tmp_path, caplog):
    import numpy as np

    from monitor.messages import Window
    from monitor.ops.metrics import Metrics
    from monitor.pipeline.classifier import Classifier
    from monitor.pipeline.shadow import ShadowModel
    from monitor.rules import load_rules

    bundle = load_bundle(fixed_bundle(tmp_path / "fall", "fall"))
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(FALL_RULES))
    rules = load_rules([tmp_path / "rules.yaml"], bundle.labels)
    metrics, emitted = Metrics(), []
    shadow = ShadowModel(Classifier(bundle.head_file, bundle.labels, 4, 2048), RuleEngine(rules, {"cam": None}),
                         "cand", metrics, emitted.append)
    wrong = [Window("cam", 0.0, 1.0, 0.0, np.zeros((4, 1000), np.float32))]  # not what the head reads
    caplog.set_level("INFO")
    for _ in range(3):
        shadow.observe(wrong)  # raises nothing
    assert metrics.shadow_errors.labels("cand")._value.get() == 3
    assert sum("event=shadow_failed model=cand" in r.getMessage() for r in caplog.records) == 1, "logged once per fault"
    shadow.observe([Window("cam", 1.0, 2.0, 0.0, np.zeros((4, 2048), np.float32))])
    assert [e.kind for e in emitted] == ["opened"] and emitted[0].rule == "person-fell"
    assert metrics.shadow_violations.labels("cand", "cam", "person-fell")._value.get() == 1


def db_rows(db: Path, query: str) -> list:
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        found = conn.execute(sa.text(query)).all()
    engine.dispose()
    return found


@pytest.mark.slow
@pytest.mark.tf
def test_shadow_episodes_reach_their_table_and_metric_never_violations_evidence_or_notifications(clip, tmp_path,
                                                                                                monkeypatch):
    """The live head always says idle, the shadow's always fall: only the shadow would open person-fell."""
    monkeypatch.setenv("HAR_TEST_HOOK_SECRET", SECRET)
    live = fixed_bundle(tmp_path / "live", "idle")
    candidate = fixed_bundle(tmp_path / "candidate", "fall")
    model = load_bundle(candidate).hash[:12]
    db = tmp_path / "site" / "violations.db"
    with WebhookReceiver(SECRET) as hook:
        notify = {"webhooks": {"leads": {"url": hook.url, "secret": "${HAR_TEST_HOOK_SECRET}"}}}
        site = write_site(tmp_path / "site", live, [{"id": "cam-1", "url": str(clip), "loop": True}], FALL_RULES,
                          shadow_model=str(candidate), notify=notify,
                          evidence={"pre_roll_seconds": 0, "post_roll_seconds": 0.5})
        with RunningDaemon(site) as d:
            d.wait_for(lambda: d.value("har_monitor_shadow_violations_total", model=model, camera="cam-1",
                                       rule="person-fell") >= 1, 90, "the shadow's would-be violation")
            wait_until(lambda: db_rows(db, "SELECT id FROM shadow_events"), 30, "the shadow episode stored")
            renamed = {"rules": [{**FALL_RULES["rules"][0], "id": "person-down"}]}
            (tmp_path / "site" / "rules.yaml").write_text(yaml.safe_dump(renamed))
            d.daemon.request_reload()  # a reloaded rule set reaches the shadow's engine too
            d.wait_for(lambda: d.value("har_monitor_shadow_violations_total", model=model, camera="cam-1",
                                       rule="person-down") >= 1, 60, "the shadow judged by the reloaded rules")
            wait_until(lambda: len(db_rows(db, "SELECT id FROM shadow_events")) == 2, 30, "both shadow episodes stored")
            scraped = d.scrape()
        assert hook.calls == [], "no notification from the shadow"
    assert scraped[("har_monitor_violations_total", (("camera", "cam-1"), ("rule", "person-fell"),
                                                     ("severity", "critical")))] == 0
    assert sum(v for (name, labels), v in scraped.items() if name == "har_monitor_shadow_predictions_total"
               and ("action", "fall") in labels and ("model", model) in labels) >= 1
    assert sum(v for (name, _), v in scraped.items() if name == "har_monitor_predictions_total") >= 1
    assert db_rows(db, "SELECT count(*) FROM violations") == [(0,)]
    assert db_rows(db, "SELECT what FROM audit_events") == [], "nothing in the regulated record"
    assert not any((tmp_path / "site" / "evidence").rglob("*.mp4")), "no evidence clip"
    stored = db_rows(db, "SELECT rule, camera, model_hash, live_model_hash, ended_at FROM shadow_events ORDER BY seq")
    assert [tuple(r[:4]) for r in stored] == [
        (rule, "cam-1", load_bundle(candidate).hash, load_bundle(live).hash) for rule in ("person-fell", "person-down")]
    assert all(r[4] is not None for r in stored), "closed by the reload, and at shutdown, like live episodes"

    promoted = yaml.safe_load(site.read_text())
    promoted["model"] = promoted.pop("shadow_model")
    site.write_text(yaml.safe_dump(promoted))
    with RunningDaemon(site) as d:
        d.wait_for(lambda: d.value("har_monitor_violations_total", camera="cam-1", rule="person-down",
                                   severity="critical") >= 1, 90, "the promoted model's violation")
    [(actor, old, new)] = db_rows(db, "SELECT actor, old, new FROM audit_events WHERE what = 'model_changed'")
    assert actor == "system"
    assert json.loads(old)["model_hash"] == load_bundle(live).hash and json.loads(old)["shadow_hash"] == load_bundle(candidate).hash
    assert json.loads(new)["model_hash"] == load_bundle(candidate).hash and json.loads(new)["shadow_hash"] is None
    assert json.loads(new)["model_path"] == str(candidate.resolve())
