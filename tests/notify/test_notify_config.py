"""site.yaml's notify section and rules' `notify:` targets, checked up front with file:line (exit 2)."""

from __future__ import annotations

import pytest
import yaml

from monitor.cli.main import main
from support.assets import asset
from support.sites import write_site

HOOK = {"url": "https://hooks.example/har", "secret": "${HAR_TEST_SECRET}"}


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("HAR_TEST_SECRET", "sixteen-chars-or-more")


def check(capsys, path) -> tuple[int, str]:
    status = main(["check", "--cameras", str(path)])
    return status, capsys.readouterr().err


def test_a_rule_naming_an_unknown_target_is_refused_at_its_line(tiny_bundle, tmp_path, capsys):
    rules = {"rules": [{"id": "r1", "action": "fall"}, {"id": "r2", "action": "fall", "notify": ["mqtt", "pagers"]}]}
    path = write_site(tmp_path, tiny_bundle, [{"id": "cam", "url": str(tmp_path / "x.mp4")}], rules,
                      notify={"webhooks": {"shift-leads": HOOK}})
    status, err = check(capsys, path)
    assert status == 2
    rules_file = tmp_path / "rules.yaml"
    line = next(i for i, text in enumerate(rules_file.read_text().splitlines(), 1) if "notify" in text)
    assert f"{rules_file}:{line}:" in err and "unknown notify target 'mqtt' (site.yaml defines: shift-leads)" in err
    assert "unknown notify target 'pagers'" in err


@pytest.mark.parametrize("notify, problem", [
    ({"webhooks": {"mqtt": HOOK}}, "'mqtt' names the MQTT broker"),
    ({"webhooks": {"leads": HOOK}, "by_severity": {"critical": ["pagers"]}}, "by_severity.critical: unknown target 'pagers'"),
    ({"webhooks": {"leads": {"url": "https://h.example", "secret": "short"}}}, "at least 16 characters"),
    ({"webhooks": {"leads": {"url": "ftp://h.example", "secret": "${HAR_TEST_SECRET}"}}}, "http:// or https://"),
    ({"mqtt": {"host": "b", "ca_file": "ca.pem"}}, "need `tls: true`"),
    ({}, "notify needs `mqtt`, `webhooks` or both"),
])
def test_bad_notify_settings_name_the_field(tiny_bundle, tmp_path, capsys, notify, problem):
    path = write_site(tmp_path, tiny_bundle, [{"id": "cam", "url": str(tmp_path / "x.mp4")}], notify=notify)
    status, err = check(capsys, path)
    assert status == 2 and problem in err, err
    assert f"{path}:" in err and "notify" in err


def test_the_person_detector_must_be_a_movenet_model(tiny_bundle, tmp_path, capsys):
    embedder = asset("weights", "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite")
    path = write_site(tmp_path, tiny_bundle, [{"id": "cam", "url": str(tmp_path / "x.mp4"),
                                               "zones": [{"name": "a", "rect": [0, 0, 1, 1], "person_gate": True}]}],
                      person_detector={"model": str(embedder)})
    status, err = check(capsys, path)
    assert status == 2 and "person_detector.model:" in err and "is not a MoveNet single-pose model" in err


def test_a_secret_in_the_environment_never_reaches_the_output(tiny_bundle, tmp_path, capsys):
    path = write_site(tmp_path, tiny_bundle, [{"id": "cam", "url": str(tmp_path / "x.mp4")}],
                      notify={"webhooks": {"leads": {**HOOK, "url": "not a url"}}})
    status, err = check(capsys, path)
    assert status == 2 and "sixteen-chars-or-more" not in err
    assert yaml.safe_load(path.read_text())["notify"]["webhooks"]["leads"]["secret"] == "${HAR_TEST_SECRET}"
