"""The console served for real: `python -m monitor console --cameras site.yaml` in its own process
(uvicorn on 127.0.0.1) over a real record on SQLite and PostgreSQL (support.console fills it), a real
metrics endpoint for the cameras page, and Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest
import yaml

from support.console import (
    CAM_SECRET,
    CAMERAS,
    CHROMIUM,
    DB_SECRET,
    RULES,
    Console,
    Record,
    add_users,
    evidence_of,
    fill_record,
    free_port,
)
from support.waiting import wait_until


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def record(request, tmp_path_factory, tiny_bundle) -> Record:
    from monitor.record.db import upgrade

    root = tmp_path_factory.mktemp(f"console-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'violations.db'}"
    else:
        import psycopg

        from support.databases import PG_HOST, PG_PORT, pg_url

        user, dbname = request.getfixturevalue("pg_database")
        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = pg_url(user, PG_PORT, dbname, schema).set(password=DB_SECRET).render_as_string(hide_password=False)
    upgrade(url)
    rules_file = root / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(RULES, sort_keys=False))
    evidence = root / "evidence"
    site = root / "site.yaml"
    cameras = [{"id": cam, "url": f"clips/{cam}.mp4", "zone": zone} for cam, zone in CAMERAS.items()]
    cameras.append({"id": "dock-door", "url": "rtsp://admin:${CAM_PASS}@127.0.0.1:1/stream1", "zone": "dock"})
    site.write_text(yaml.safe_dump({
        "site": "plant-7", "model": str(tiny_bundle), "rules": [str(rules_file)],
        "storage": {"url": url, "evidence_dir": str(evidence)},
        "metrics": {"host": "127.0.0.1", "port": 0}, "cameras": cameras}, sort_keys=False))
    rec = Record(request.param, url, site, evidence)
    fill_record(rec, rules_file)
    rec.altered_id, rec.missing_id = rec.ids["line-2"][:2]
    with (evidence / evidence_of(rec, rec.altered_id)["clip"]["path"]).open("ab") as clip:
        clip.write(b"a frame nobody recorded")
    (evidence / evidence_of(rec, rec.missing_id)["snapshot"]["path"]).unlink()
    return rec


@pytest.fixture(scope="module")
def metrics():
    """A real metrics endpoint as the daemon serves it: line-1 up and delivering, line-2 down."""
    from monitor.ops.metrics import Metrics

    m = Metrics()
    m.init_cameras(list(CAMERAS))
    m.camera_up.labels("line-1").set(1)
    m.last_frame.labels("line-1").set(time.time())
    m.frames_sampled.labels("line-1").inc(1200)
    m.frames_dropped.labels("line-1").inc(3)
    m.reconnects.labels("line-2").inc(4)
    port = m.serve("127.0.0.1", 0)
    yield port
    m.close()


@pytest.fixture(scope="module")
def console(record, metrics) -> Console:
    """`har-monitor console --cameras site.yaml` in its own process, as a QA office would run it."""
    add_users(record.url)
    data = yaml.safe_load(record.site.read_text())
    data["metrics"]["port"] = metrics
    record.site.write_text(yaml.safe_dump(data, sort_keys=False))
    port = free_port()
    log = record.site.parent / "console.log"
    env = dict(os.environ, CAM_PASS=CAM_SECRET, FORWARDED_ALLOW_IPS="127.0.0.1")
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "console", "--cameras", str(record.site),
                                 "--port", str(port)], stdout=err, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError("the console exited:\n" + log.read_text())
        try:
            return urllib.request.urlopen(f"{base}/login", timeout=2).status == 200
        except OSError:
            return False

    wait_until(up, 60, "the console to serve its sign-in page")
    yield Console(base, proc, log)
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium, headless (Playwright's own browser download does not work here)."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing (Debian package chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--autoplay-policy=no-user-gesture-required"])
        yield p, b
        b.close()
