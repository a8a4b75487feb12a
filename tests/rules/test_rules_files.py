"""Rule files through the command line: `har-monitor rules check` and `rules test`.

The example rule sets in rules/ and their rule tests run here, so CI checks them.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
import yaml

from monitor.cli import main
from monitor.rules.ruletest import MAX_WINDOWS
from support.assets import REPO

RULE_FILES = sorted((REPO / "rules").glob("*.yaml"))
RULE_TESTS = sorted((REPO / "rules" / "tests").glob("*.yaml"))


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def gmp_bundle(directory: Path) -> Path:
    """A bundle with the labels the example rule tests use (rules check only reads model.yaml)."""
    from monitor.model.bundle import BackboneSpec, HeadSpec, ModelManifest, WindowSpec, write_manifest

    labels = yaml.safe_load(RULE_TESTS[0].read_text())["labels"]
    manifest = ModelManifest(name="gmp", backbone=BackboneSpec(name="inception_v3", weights="none"),
                             window=WindowSpec(frames=16, sample_fps=4, stride=4), labels=labels,
                             head=HeadSpec(kind="gru", file="head.keras"))
    write_manifest(directory, manifest)
    (directory / "head.keras").write_bytes(b"not read by rules check")
    return directory


def run(capsys, *argv: str) -> tuple[int, str, list[str]]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err.splitlines()


def test_example_rule_sets_check_and_their_rule_tests_pass(capsys, tmp_path):
    assert len(RULE_FILES) >= 3 and len(RULE_TESTS) == len(RULE_FILES)
    code, out, err = run(capsys, "rules", "check", *map(str, RULE_FILES))
    assert code == 0 and err == [], err
    assert "note: actions were not checked" in out and re.search(r"ok: 3 files, \d+ enabled rules, hash \w+", out)

    code, out, err = run(capsys, "rules", "check", "--model", str(gmp_bundle(tmp_path / "gmp")), *map(str, RULE_FILES))
    assert code == 0 and err == [] and "note:" not in out

    code, out, _ = run(capsys, "rules", "test", *map(str, RULE_TESTS))
    assert code == 0, out
    assert re.search(r"=+ \d+ passed in [\d.]+s =+", out) and "F" not in out.split("=")[0]


def test_unknown_actions_are_errors_only_with_a_model(capsys, tmp_path):
    rules = write(tmp_path / "r.yaml", """
        groups: {ppe_breach: [no_gloves, no_gwon]}
        rules:
          - id: no-vaping
            action: vaping
          - {id: no-running, when: {action: running, for_windows: 2}}   # the short form
        """)
    assert run(capsys, "rules", "check", str(rules))[0] == 0
    code, _, err = run(capsys, "rules", "check", "--model", str(gmp_bundle(tmp_path / "gmp")), str(rules))
    assert code == 2
    assert err[0].startswith(f"error: {rules}:1:10: groups.ppe_breach: unknown label 'no_gwon' (the model knows: idle,")
    assert err[1].startswith(f"error: {rules}:4:5: rules[0].action: unknown action 'vaping' (the model knows: ")
    assert err[2].startswith(f"error: {rules}:5:29: rules[1].when.action: unknown action 'running'")


@pytest.mark.parametrize("text, where, message", [
    ("""
     rules:
       - {id: no-smoking, action: smoking}
       - id: no-smoking
         action: eating
     """, "3:5", "rules[1].id: duplicate rule id 'no-smoking' (also at {path}:2:6)"),
    ("""
     rules:
       - {id: x, kind: sequence, require: a, before: b, within: 0s}
     """, "2:52", "rules[0].within: must be a duration longer than 0 (e.g. 60s)"),
    ("""
     rules:
       - {id: x, kind: absence, action: a, every: -5}
     """, "2:39", "rules[0].every: must be a duration longer than 0 (e.g. 60s)"),
    ("""
     rules:
       - id: x
         action: a
         schedule: {days: []}
     """, "4:16", "rules[0].schedule.days: empty schedule: no day selected (omit `days` for every day)"),
    ("""
     rules:
       - id: x
         action: a
         schedule:
           between: ["08:00", "08:00"]
     """, "5:7", "rules[0].schedule.between: empty time range 08:00-08:00 (omit `between` for all day)"),
    ("""
     rules:
       - id: x
         action: a
         schedule: {between: ["06:00", 22:00]}
     """, "4:26", "rules[0].schedule.between[0][1]: write times as quoted strings, e.g. \"22:00\" (got 1320)"),
    ("""
     rules:
       - id: x
         action: a
         schedule: {tz: Europe/Kobenhavn}
     """, "4:16", "rules[0].schedule.tz: unknown time zone 'Europe/Kobenhavn'"),
    ("""
     rules:
       - id: x
         kind: forbiden
     """, "3:5", "rules[0].kind: unknown rule kind 'forbiden' (expected one of forbidden, sequence, duration, "
                 "absence)"),
    ("""
     rules:
       - id: x
         action: a
         min_confidense: 0.9
     """, "4:5", "rules[0].min_confidense: unknown key"),
    ("""
     rules:
       - {id: x, kind: duration, action: a}
     """, "2:5", "rules[0]: a duration rule needs min, max or both"),
    ("""
     rules:
       - {id: x, kind: duration, action: a, min: 10m, max: 5m}
     """, "2:5", "rules[0]: min (10m) must be shorter than max (5m)"),
    ("""
     rules:
       - {id: x, action: a, when: {action: b}}
     """, "2:5", "rules[0]: action given both in the rule and in its `when`"),
    ("""
     rules:
       - {id: x, when: {action: a, cooldown: 5s}}
     """, "2:5", "rules[0]: `when` takes a mapping of action, min_confidence and for_windows"),
    ("""
     rules:
       - {id: x, action: a, cooldown: soon}
     """, "2:24", "rules[0].cooldown: 'soon' is not a duration (expected e.g. 30s, 10m, 1h)"),
])
def test_each_problem_has_its_message_and_location(capsys, tmp_path, text, where, message):
    path = write(tmp_path / "rules.yaml", textwrap.dedent(text))
    code, _, err = run(capsys, "rules", "check", str(path))
    errors = [line for line in err if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith(f"error: {path}:{where}: {message.format(path=path)}"), errors[0]


def test_ids_may_not_repeat_across_files(capsys, tmp_path):
    first = write(tmp_path / "a.yaml", "rules:\n  - {id: no-smoking, action: smoking}\n")
    second = write(tmp_path / "b.yaml", "rules:\n  - {id: fall, action: fall}\n  - {id: no-smoking, action: smoking}\n")
    code, _, err = run(capsys, "rules", "check", str(first), str(second))
    assert code == 2
    assert err == [f"error: {second}:3:6: rules[1].id: duplicate rule id 'no-smoking' (also at {first}:2:6)"]


def test_suspicious_settings_are_warnings_not_errors(capsys, tmp_path):
    path = write(tmp_path / "rules.yaml", """
        rules:
          - id: fall
            severity: critical
            action: fall
          - {id: gowning, kind: duration, action: gowning, min: 30s, enabled: false}
        """)
    code, out, err = run(capsys, "rules", "check", str(path))
    assert code == 0 and "ok:" in out and "1 enabled rules" in out and "3 warnings" in out
    assert err == [
        f"warning: {path}:2:5: rules[0].for_windows: for_windows: 1 on a critical rule: one misclassified window "
        "opens an episode (use 2 or more)",
        f"warning: {path}:5:62: rules[1].enabled: rule 'gowning' is disabled: it is checked but never runs",
        f"warning: {path}:5:5: rules[1].release_windows: release_windows: 1 with min: one missed window cuts the "
        "action short and reports it as too short (use 2 or more)"]


RULES = """
rules:
  - {id: no-smoking, action: smoking, min_confidence: 0.8, for_windows: 2}
"""


def test_a_failing_rule_test_shows_expected_and_got_and_exits_1(capsys, tmp_path):
    write(tmp_path / "rules.yaml", RULES)
    tests = write(tmp_path / "tests.yaml", """
        rules: [rules.yaml]
        labels: [idle, smoking]
        tests:
          - name: passes
            camera: {id: cam}
            start: 2024-05-06T10:00:00Z
            predictions:
              - {at: 0s, until: 10s, every: 1s, probs: {smoking: 0.9}}
            expect:
              - {rule: no-smoking, opened: 0s, closed: open}
          - name: wrong close time
            camera: {id: cam, zone: gmp-1}
            start: 2024-05-06T10:00:00+02:00
            predictions:
              - {at: 5s, until: 1m, every: 5s, probs: {smoking: 0.9}}
              - {at: 1m, probs: {idle: 0.9}}
            expect:
              - {rule: no-smoking, opened: 5s, closed: 1m30s}
        """)
    code, out, _ = run(capsys, "rules", "test", str(tests))
    assert code == 1
    lines = out.splitlines()
    assert lines[0] == f"{tests} .F"
    assert "FAILURES" in lines[1] and f"{tests}::wrong close time" in lines[2]
    assert lines[3:6] == ["(- expected, + got)", "  - no-smoking  opened 5s  closed 1m30s",
                          "  + no-smoking  opened 5s  closed 1m"]
    assert re.fullmatch(r"=+ 1 failed, 1 passed in [\d.]+s =+", lines[-1])


def test_bad_rule_test_files_are_located(capsys, tmp_path):
    write(tmp_path / "rules.yaml", RULES)
    tests = write(tmp_path / "tests.yaml", """
        rules: [rules.yaml]
        labels: [idle, smoking]
        tests:
          - name: typos
            camera: {id: cam}
            start: 2024-05-06T10:00:00Z
            predictions:
              - {at: 0s, probs: {smokin: 0.9}}
              - {at: 1s, until: 5s, probs: {idle: 1}}
            expect:
              - {rule: no-smoke, opened: 0s, closed: open}
        """)
    code, _, err = run(capsys, "rules", "test", str(tests))
    assert code == 2
    assert err == [f"error: {tests}:9:9: tests[0].predictions[1]: until and every go together "
                   "(one window every `every` until `until`)"]
    text = tests.read_text().replace("until: 5s, probs", "until: 5s, every: 1s, probs")
    tests.write_text(text)
    code, _, err = run(capsys, "rules", "test", str(tests))
    assert code == 2
    assert err == [f"error: {tests}:8:26: tests[0].predictions[0].probs: unknown label 'smokin' "
                   "(labels: idle, smoking)",
                   f"error: {tests}:11:10: tests[0].expect[0].rule: no enabled rule 'no-smoke' in rules.yaml"]


@pytest.mark.slow  # two child interpreters; the parser's refusal is in the fast tier (tests/test_yamlfile.py)
def test_a_rule_file_alias_bomb_is_refused_at_its_line_in_little_memory(tmp_path):
    from support.memory import alias_bomb, assert_bomb_refused

    plain = write(tmp_path / "plain.yaml", RULES + "extra: 1\n")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(RULES + alias_bomb(7, key="x"))
    assert len(bomb.read_bytes()) < 600
    assert_bomb_refused(["rules", "check"], plain, bomb)


# (a duration past 366d, 1e300 or .inf is refused by its own bound: tests/test_config_numbers.py)
@pytest.mark.parametrize("until, every", [("366d", "1ms"), ("12d", "1s")])
def test_a_rule_test_generating_too_many_windows_is_refused_before_it_runs(tmp_path, until, every):
    """Windows are generated as the test runs, and a test is bounded: not days of work, not gigabytes."""
    from support.memory import run_capped

    write(tmp_path / "rules.yaml", RULES)
    tests = write(tmp_path / "tests.yaml", f"""
        rules: [rules.yaml]
        labels: [idle, smoking]
        tests:
          - name: forever
            camera: {{id: cam}}
            start: 2024-05-06T10:00:00Z
            predictions:
              - {{at: 0s, probs: {{idle: 1}}}}
              - {{at: 1s, until: {until}, every: {every}, probs: {{smoking: 0.9}}}}
            expect: []
        """)
    code, err, _ = run_capped(["rules", "test", str(tests)])
    assert code == 2, err[-2000:]
    assert err.startswith(f"error: {tests}:9:9: tests[0].predictions[1]: the test would generate ")
    assert f"more than the {MAX_WINDOWS} a test may" in err and len(err.splitlines()) == 1
