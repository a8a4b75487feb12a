"""Bad input gets one clear line per problem naming the file and field, and exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from monitor.cli import main
from monitor.errors import UserError
from monitor.pipeline.factory import source_settings
from monitor.site.check import check_site
from monitor.site.config import load_site
from support.examples import examples
from support.secrets import assert_only_redacted, passwords
from support.sites import ALWAYS_RULES, write_site


@pytest.fixture
def site(tmp_path, tiny_bundle, clip) -> Path:
    return write_site(tmp_path, tiny_bundle, [{"id": "cam-1", "url": str(clip), "loop": True}])


def edit(path: Path, change) -> Path:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def check(path: Path, capsys) -> tuple[int, list[str]]:
    code = main(["check", "--cameras", str(path)])
    err = capsys.readouterr().err
    return code, [line for line in err.splitlines() if line.startswith("error: ")]


def test_valid_site_checks_ok(site, capsys):
    assert main(["check", "--cameras", str(site)]) == 0
    out = capsys.readouterr().out
    assert "ok:" in out and "1 cameras" in out and "1 rules" in out


def test_env_substitution_and_missing_variable(site, monkeypatch, capsys):
    edit(site, lambda d: d["cameras"].append({"id": "door", "url": "rtsp://${CAM_USER}:${CAM_PASS}@10.0.0.21/stream1"}))
    monkeypatch.setenv("CAM_USER", "viewer")
    monkeypatch.setenv("CAM_PASS", "s3cret")
    assert load_site(site).config.cameras[1].url == "rtsp://viewer:s3cret@10.0.0.21/stream1"
    monkeypatch.delenv("CAM_PASS")
    code, errors = check(site, capsys)
    assert code == 2
    assert errors == [f"error: {site}: cameras[1].url: environment variable CAM_PASS is not set"]


@pytest.mark.parametrize("change, expected", [
    (lambda d: d.update(camras=[]), "camras: unknown key"),
    (lambda d: d["cameras"][0].update(sample_fps=-1), "cameras[0].sample_fps: Input should be greater than 0"),
    (lambda d: d["cameras"][0].update(url="rtp://10.0.0.1/x"), "cameras[0].url: unsupported scheme 'rtp://'"),
    (lambda d: d["cameras"][0].update(url="rtsp:///nohost"), "cameras[0].url: URL has no host"),
    (lambda d: d["cameras"].append(dict(d["cameras"][0])), "cameras: camera id 'cam-1' is used twice"),
    (lambda d: d["cameras"][0].update(id="bad id!"), "cameras[0].id: String should match pattern"),
    (lambda d: d.pop("site"), "site: Field required"),
    (lambda d: d["inference"].update(max_batch="lots"), "inference.max_batch: Input should be a valid integer"),
    (lambda d: d["cameras"][0].update(decode_threads=-1), "cameras[0].decode_threads: Input should be greater than or equal to 0"),
    (lambda d: d["cameras"][0].update(stall_seconds=1e9), "cameras[0].stall_seconds: Input should be less than or equal to 3600"),
    (lambda d: d["reconnect"].update(initial_seconds=30, max_seconds=10), "reconnect: initial_seconds (30) must not exceed max_seconds (10)"),
])
def test_schema_errors_name_line_and_field(site, capsys, change, expected):
    code, errors = check(edit(site, change), capsys)
    assert code == 2
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"error: {site}:") and expected in errors[0]
    assert errors[0].split(":")[2].strip().isdigit(), "the line number is given"


def test_decode_threads_one_for_cameras_ffmpegs_choice_for_bulk_files(site):
    """One decoder thread costs the least CPU (the cores are inference's); bulk reads want speed."""
    def add(d):
        url = d["cameras"][0]["url"]
        d["cameras"] += [{"id": "bulk", "url": url, "realtime": False},
                         {"id": "rtsp", "url": "rtsp://10.0.0.9/main"},
                         {"id": "4k", "url": "rtsp://10.0.0.9/4k", "decode_threads": 0}]
    checked = check_site(edit(site, add))
    threads = {c.id: source_settings(checked.site, c, checked.bundle, (75, 75)).decode_threads
               for c in checked.site.config.cameras}
    assert threads == {"cam-1": 1, "bulk": 0, "rtsp": 1, "4k": 0}


def test_malformed_yaml_names_line_and_column(site, capsys):
    site.write_text("site: x\ncameras: [\n  {id: a, url: b\n")
    code, errors = check(site, capsys)
    assert code == 2 and len(errors) == 1
    assert errors[0].startswith(f"error: {site}:4:1: invalid YAML: expected ',' or '}}'")


def test_missing_files_are_reported_together(site, tmp_path, capsys):
    edit(site, lambda d: (d["cameras"].append({"id": "cam-2", "url": "nowhere/missing.mp4"}),
                          d.update(model=str(tmp_path / "no-model"))))
    code, errors = check(site, capsys)
    assert code == 2
    assert any("model:" in e and "no-model: model bundle not found" in e for e in errors)
    assert any("cameras[1].url: file not found:" in e and "missing.mp4" in e for e in errors)
    assert check(tmp_path / "absent.yaml", capsys) == (2, [f"error: {tmp_path / 'absent.yaml'}: file not found"])


def test_corrupt_video_is_refused(site, tmp_path, capsys):
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40)
    edit(site, lambda d: d["cameras"][0].update(url=str(bad)))
    code, errors = check(site, capsys)
    assert code == 2 and len(errors) == 1
    assert "cameras[0].url" in errors[0] and "corrupt.mp4" in errors[0] and "cannot read video" in errors[0]


@pytest.mark.parametrize("width, height", [(1, 1), (160, 8)])
def test_a_video_too_small_for_the_model_is_refused(site, tmp_path, capsys, width, height):
    """It would pass as a camera and then show the model nothing: refused up front, naming the url field."""
    from support.videos import write_tiny_video

    tiny = write_tiny_video(tmp_path / "tiny.mp4", width, height)
    edit(site, lambda d: d["cameras"][0].update(url=str(tiny)))
    code, errors = check(site, capsys)
    assert code == 2
    assert errors == [f"error: {site}: cameras[0].url: video too small for the model: {width}x{height} "
                      "(at least 32x32 pixels)"]


def test_an_audio_only_file_is_no_camera(site, tmp_path, capsys):
    from support.videos import write_audio_only

    edit(site, lambda d: d["cameras"][0].update(url=str(write_audio_only(tmp_path / "meeting.mp4"))))
    assert check(site, capsys) == (2, [f"error: {site}: cameras[0].url: no video stream"])


@pytest.mark.slow  # two child interpreters; the parser's refusal is in the fast tier (tests/test_yamlfile.py)
def test_an_alias_bomb_is_refused_at_its_line_in_little_memory(tmp_path):
    """A few hundred bytes that expand to 387 million strings: one located error, exit 2, little memory."""
    from support.memory import alias_bomb, assert_bomb_refused

    plain = tmp_path / "plain.yaml"
    plain.write_text("site: x\nmodel: m\ncameras: [{id: a, url: a.mp4}]\nextra: [1, 2, 3]\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(plain.read_text() + alias_bomb(9))
    assert len(bomb.read_bytes()) < 800
    assert_bomb_refused(["check", "--cameras"], plain, bomb)


def test_unknown_rule_action_and_bad_db_url(site, capsys):
    rules = yaml.safe_load(Path(site.parent / "rules.yaml").read_text())
    rules["rules"].append({"id": "smoking", "action": "smoking"})
    (site.parent / "rules.yaml").write_text(yaml.safe_dump(rules))
    edit(site, lambda d: d["storage"].update(url="postgresql://u:hunter2@:::"))
    code, errors = check(site, capsys)
    assert code == 2
    assert any("rules[1].action: unknown action 'smoking'" in e for e in errors)
    assert any("storage.url" in e for e in errors)
    assert not any("hunter2" in e for e in errors), "the password never appears"


def test_wrong_model_files(site, tiny_bundle, tmp_path, capsys):
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    edit(site, lambda d: d.update(model=str(bundle)))
    (bundle / "head.keras").write_bytes(b"not a model")
    code, errors = check(site, capsys)
    assert code == 2 and "head.keras: not a Keras head model" in errors[0]

    shutil.copy(tiny_bundle / "head.keras", bundle / "head.keras")
    edit(bundle / "model.yaml", lambda d: d["backbone"].update(name="tflite", weights="backbone.tflite"))
    (bundle / "backbone.tflite").write_bytes(b"garbage")
    code, errors = check(site, capsys)
    assert code == 2 and "backbone.weights" in errors[0] and "is not a TFLite model" in errors[0]

    edit(bundle / "model.yaml", lambda d: d["backbone"].update(name="resnet9000"))
    code, errors = check(site, capsys)
    assert code == 2 and "backbone.name" in errors[0]


def test_head_that_does_not_fit_the_backbone(site, tmp_path, capsys):
    from support.sites import write_tiny_bundle

    bundle = write_tiny_bundle(tmp_path / "b", frames=4)
    edit(bundle / "model.yaml", lambda d: d["window"].update(frames=6))
    edit(site, lambda d: d.update(model=str(bundle)))
    code, errors = check(site, capsys)
    assert code == 2 and "the bundle needs [6, 2048]" in errors[0]


def test_cli_prints_no_traceback(tmp_path):
    """The real console script: a broken site exits 2 with messages, never a traceback."""
    broken = tmp_path / "site.yaml"
    broken.write_text("site: x\nmodel: nowhere\ncameras:\n  - {id: a, url: missing.mp4, colour: red}\n")
    result = subprocess.run([sys.executable, "-m", "monitor", "run", "--cameras", str(broken)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"error: {broken}:4: cameras[0].colour: unknown key" in result.stderr


def test_numbers_that_would_overflow_at_run_time_are_refused_by_check(site):
    """Issue 10: these passed `check`, then killed the retention thread and a camera's reconnect loop."""
    edit(site, lambda d: (d.update(evidence={"retention_days": 1e300}), d["reconnect"].update(initial_seconds=1e308)))
    result = subprocess.run([sys.executable, "-m", "monitor", "check", "--cameras", str(site)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = result.stderr.splitlines()
    line = {key: n for n, text in enumerate(site.read_text().splitlines(), 1) for key in ("retention_days", "initial_seconds")
            if text.strip().startswith(key)}
    assert f"error: {site}:{line['retention_days']}: evidence.retention_days: Input should be less than or equal to 36525" in errors
    assert f"error: {site}:{line['initial_seconds']}: reconnect.initial_seconds: Input should be less than or equal to 3600" in errors


def test_rules_hash_changes_with_content(tiny_bundle, tmp_path):
    from monitor.rules import load_rules

    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(ALWAYS_RULES))
    first = load_rules([path], ["a", "b"], {"anything": ["a", "b"]}).hash
    path.write_text(yaml.safe_dump({"rules": [{**ALWAYS_RULES["rules"][0], "severity": "critical"}]}))
    assert load_rules([path], ["a", "b"], {"anything": ["a", "b"]}).hash != first
    with pytest.raises(UserError, match="duplicate rule id 'always'"):
        load_rules([path, path], ["a", "b"], {"anything": ["a", "b"]})


@pytest.fixture
def rtsp_site(tmp_path, tiny_bundle) -> Path:
    """A site whose camera's password comes from the environment (CAM_PASS), as a real site's does."""
    return write_site(tmp_path, tiny_bundle, [{"id": "door", "url": "rtsp://viewer:${CAM_PASS}@127.0.0.1:1/stream",
                                               "open_timeout_seconds": 2}])


@settings(max_examples=examples(25), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=passwords(env=True))
def test_check_probe_never_shows_a_camera_password(rtsp_site, monkeypatch, capfd, password):
    """`check --probe` on a camera that cannot be reached: its error names the camera, never the password."""
    monkeypatch.setenv("CAM_PASS", password)
    capfd.readouterr()
    assert main(["check", "--probe", "--cameras", str(rtsp_site)]) == 2
    out, err = capfd.readouterr()
    assert f"error: {rtsp_site}:" in err and "cameras[0].url" in err
    assert_only_redacted(out + err, "rtsp://viewer:***@127.0.0.1:1/stream")


def test_anchoring_without_its_key_is_refused_by_check(site, monkeypatch, capsys):
    """The daemon would refuse to start without the key that signs the record's anchors: check says so first."""
    edit(site, lambda d: d["storage"].update(anchor={"log": "anchors.jsonl", "key_env": "HAR_TEST_ANCHOR_KEY"}))
    monkeypatch.delenv("HAR_TEST_ANCHOR_KEY", raising=False)
    code, errors = check(site, capsys)
    assert code == 2 and errors == [f"error: {site}: storage.anchor: no key: set $HAR_TEST_ANCHOR_KEY, "
                                    "or storage.anchor.key_file"]
    monkeypatch.setenv("HAR_TEST_ANCHOR_KEY", "0123456789abcdef0123456789abcdef-a-key")
    assert check(site, capsys)[0] == 0


@pytest.mark.parametrize("password", ["pa[ss]word", "p@ss/w#rd?", "x]y"])
def test_camera_passwords_with_any_character_are_accepted_and_never_shown(site, password, monkeypatch, capsys):
    """Brackets made Python's URL parser call the URL an invalid IPv6 address: the host is found after the last @."""
    edit(site, lambda d: d["cameras"].append({"id": "door", "url": "rtsp://viewer:${DOOR_PASS}@10.0.0.21/stream1"}))
    monkeypatch.setenv("DOOR_PASS", password)
    assert main(["check", "--cameras", str(site)]) == 0
    out = capsys.readouterr()
    assert password not in out.out + out.err
