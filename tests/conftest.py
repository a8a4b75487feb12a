"""Shared fixtures: small real models, real clips, a demo site, metrics scraping."""

from __future__ import annotations

import sys
import threading
import time
import urllib.request
from pathlib import Path

import uuid

import pytest
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/support importable

from support.databases import PG_HOST, PG_PORT, Db, pg_admin, pg_url  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ASSETS = (REPO / ".." / "shared" / "assets").resolve()
LABELS = ["idle", "wave", "walk", "fall", "get_up"]


def asset(*parts: str) -> Path:
    """A file from ../shared/assets, or skip the test with the reason."""
    path = ASSETS.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared/assets holds the real clips and weights)")
    return path


def write_tiny_bundle(out: Path, frames: int = 4, sample_fps: float = 5.0, stride: int = 2,
                      size: int = 75, units: int = 8) -> Path:
    """A real bundle: InceptionV3 (random weights, 75x75) + an untrained GRU head."""
    from monitor.bundle import BackboneSpec, ModelManifest, WindowSpec, write_manifest
    from monitor.classifier import build_head

    manifest = ModelManifest(name="tiny", backbone=BackboneSpec(name="inception_v3", weights="none", input_size=(size, size)),
                             window=WindowSpec(frames=frames, sample_fps=sample_fps, stride=stride), labels=LABELS,
                             groups={"anything": LABELS})
    out.mkdir(parents=True, exist_ok=True)
    build_head("gru", frames, 2048, len(LABELS), units).save(out / "head.keras")
    write_manifest(out, manifest)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


ALWAYS_RULES = {"rules": [  # "anything" covers every label, so it fires on every window
    {"id": "always", "severity": "major", "when": {"action": "anything", "min_confidence": 0.5, "for_windows": 1}},
]}


def write_site(directory: Path, bundle: Path, cameras: list[dict], rules: dict | None = None, **extra) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rules_path = directory / "rules.yaml"
    rules_path.write_text(yaml.safe_dump(rules or ALWAYS_RULES))
    site = {"site": "test-site", "model": str(bundle), "rules": [str(rules_path)],
            "storage": {"url": f"sqlite:///{directory / 'violations.db'}"},
            "metrics": {"host": "127.0.0.1", "port": 0},
            "inference": {"max_batch": 8, "max_wait_ms": 20},
            "reconnect": {"initial_seconds": 0.5, "max_seconds": 2},
            "cameras": cameras, **extra}
    path = directory / "site.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


# -- real databases: SQLite files and PostgreSQL schemas ---------------------------------------

@pytest.fixture(scope="session")
def pg_database():
    """A fresh database for this test run: (user, dbname); dropped at the end."""
    import psycopg

    user, why = pg_admin()
    if user is None:
        pytest.skip(why)
    name = f"har_monitor_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield user, name
    finally:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # also ends leaked connections


@pytest.fixture
def pg_db(pg_database) -> Db:
    import psycopg

    user, dbname = pg_database
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=PG_HOST, port=PG_PORT, user=user, dbname=dbname, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return Db("postgresql", pg_url(user, PG_PORT, dbname, schema).render_as_string(hide_password=False),
              pg_url(user, PG_PORT, dbname, schema, "postgresql+psycopg"), schema, dbname, user)


@pytest.fixture
def sqlite_db(tmp_path) -> Db:
    path = tmp_path / "violations.db"
    return Db("sqlite", f"sqlite:///{path}", sa.make_url(f"sqlite:///{path}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request) -> Db:
    return request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "pg_db")



class RunningDaemon:
    """A real daemon in a thread of the test process, scraped over HTTP."""

    def __init__(self, site_path: Path, upgrade: bool = True, shard: tuple[int, int] | None = None):
        from monitor.check import check_site
        from monitor.daemon import Daemon
        from monitor.store import upgrade as upgrade_schema

        checked = check_site(site_path)
        if upgrade:
            upgrade_schema(checked.site.database_url)
        self.daemon = Daemon(checked, shard)
        self.stop = threading.Event()
        self.summary = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.summary = self.daemon.run(self.stop)

    def __enter__(self) -> "RunningDaemon":
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.daemon.summary.metrics_url and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(15)

    def scrape(self) -> dict[tuple[str, tuple], float]:
        """GET /metrics and parse it with prometheus_client's parser."""
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(self.daemon.summary.metrics_url, timeout=5).read().decode()
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def value(self, name: str, **labels: str) -> float:
        return self.scrape().get((name, tuple(sorted(labels.items()))), 0.0)

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout} s waiting for {what}; metrics: "
                             + str({k: v for k, v in self.scrape().items() if 'camera' in str(k)}))
