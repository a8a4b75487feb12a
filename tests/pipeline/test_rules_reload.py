"""Reloading the rules of a running daemon: a changed file or SIGHUP; open episodes of unchanged rules go on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from support.daemon import RunningDaemon
from support.sites import write_site
from support.waiting import wait_until

# "anything" covers every label: it fires on every window and its episode stays open
ALWAYS = {"id": "always", "action": "anything", "min_confidence": 0.5, "labels": {"team": "qa"}}
ALSO = {**ALWAYS, "id": "also"}


def write_rules(path: Path, *rules: dict) -> None:
    """Atomically, as editors and config management do: the watcher never sees half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump({"rules": list(rules)}))
    os.replace(tmp, path)


def build_rules_hash(d: RunningDaemon) -> str:
    return next(dict(labels)["rules"] for (name, labels) in d.scrape() if name == "har_monitor_build_info")


def rows(db: Path) -> list[dict]:
    """The record as QA sees it: each violation with the end time of its closing audit event."""
    from monitor.record.review import query

    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        result = [dict(v.row, ended_at=v.ended_at) for v in query(conn)]
    engine.dispose()
    return result


@pytest.mark.slow
def test_changed_rule_files_are_swapped_in_and_bad_ones_refused(tmp_path, tiny_bundle, clip):
    site = write_site(tmp_path, tiny_bundle, [{"id": "cam", "url": str(clip), "loop": True}], rules={"rules": [ALWAYS]})
    rules_file = tmp_path / "rules.yaml"
    with RunningDaemon(site) as d:
        violations = lambda rule, severity="major": d.value(
            "har_monitor_violations_total", camera="cam", rule=rule, severity=severity)
        reloads = lambda result: d.value("har_monitor_rules_reloads_total", result=result)
        d.wait_for(lambda: violations("always") == 1, 60, "the first episode")
        first = build_rules_hash(d)
        assert d.value("har_monitor_rule_info", rule="always", severity="major", kind="forbidden", label_team="qa") == 1

        write_rules(rules_file, ALWAYS, ALSO)  # the file watcher picks it up
        d.wait_for(lambda: violations("also") == 1, 30, "the added rule at work")
        second = build_rules_hash(d)
        assert second != first and reloads("ok") == 1
        assert violations("always") == 1, "the unchanged rule's episode went on: not closed and opened again"

        write_rules(rules_file, ALWAYS, {**ALSO, "action": "smoking"})  # not a label of the model
        d.wait_for(lambda: reloads("error") == 1, 30, "the bad set refused")
        assert d.daemon.pipeline.rules_watcher.reload() is False and reloads("error") == 2
        assert build_rules_hash(d) == second, "the old set keeps running"

        write_rules(rules_file, {**ALWAYS, "severity": "critical"})  # changed; `also` removed
        d.wait_for(lambda: violations("always", "critical") == 1, 30, "the changed rule's new episode")
        third = build_rules_hash(d)
        assert reloads("ok") == 2 and d.value("har_monitor_open_episodes") == 1
    by_rule = {(r["rule"], r["severity"]): r for r in rows(tmp_path / "violations.db")}
    assert set(by_rule) == {("always", "major"), ("also", "major"), ("always", "critical")}
    assert all(r["ended_at"] is not None and json.loads(r["labels"]) == {"team": "qa"} for r in by_rule.values())
    assert [by_rule[k]["rules_hash"] for k in (("always", "major"), ("also", "major"), ("always", "critical"))] == \
        [first, second, third], "each episode records the rule set that opened it"
    assert datetime.fromisoformat(by_rule["always", "major"]["ended_at"]) <= by_rule["always", "critical"]["started_at"]
    texts = lambda: rule_set_texts(tmp_path / "violations.db")
    wait_until(lambda: {first, second, third} <= set(texts()), 30, "each rule set in force stored by its hash")
    assert "severity: critical" in texts()[third] and "smoking" not in "".join(texts().values()), \
        "QA can read the rule text in force; the refused set was never in force"


def rule_set_texts(db: Path) -> dict[str, str]:
    from monitor.record.tables import rule_sets

    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        found = {r.hash: r.text for r in conn.execute(sa.select(rule_sets))}
    engine.dispose()
    return found


@pytest.mark.slow
def test_sighup_reloads_the_rules(tmp_path, tiny_bundle, clip):
    from monitor.record.db import upgrade

    site = write_site(tmp_path, tiny_bundle, [{"id": "cam", "url": str(clip), "loop": True}])
    upgrade(f"sqlite:///{tmp_path / 'violations.db'}")
    log = tmp_path / "stderr.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "--cameras", str(site)],
                                stdout=subprocess.DEVNULL, stderr=err)
    try:
        wait_for_line(log, "event=daemon_started", 90)
        proc.send_signal(signal.SIGHUP)  # the files did not change: only the signal asks for it
        wait_for_line(log, "event=rules_reloaded", 30)
        assert "event=rules_reload_accepted" in log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        proc.kill()


def wait_for_line(path: Path, text: str, timeout: float) -> None:
    wait_until(lambda: text in path.read_text(), timeout, f"'{text}' in the log", interval=0.2,
               describe=lambda: path.read_text()[-3000:])
