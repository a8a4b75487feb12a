"""Shared fixtures: a small real model bundle, a video clip, real databases (SQLite files, PostgreSQL schemas)."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings

from support.clips import write_clip
from support.databases import PG_HOST, PG_PORT, Db, pg_admin, pg_url
from support.sites import write_tiny_bundle

# What a test needs, as markers (registered in pyproject.toml). `fast` is everything that needs none of
# HEAVY (no TensorFlow, no server, no browser, nothing slow): `python -m pytest -m fast` is the quick tier
# (README, "Development"); the SQLite twins of the PostgreSQL tests are in it.
HEAVY = ("tf", "rtsp", "postgres", "mqtt", "prometheus", "browser", "slow")

# Property tests run a quarter of their examples in the fast tier, all of them otherwise (CI's full run):
# a test asking for N examples gets `support.examples.examples(N)`. `--hypothesis-profile` still wins.
settings.register_profile("fast", max_examples=25)


def pytest_configure(config: pytest.Config) -> None:
    if config.option.markexpr == "fast" and not config.getoption("--hypothesis-profile"):
        settings.load_profile("fast")
    # One thread per TensorFlow pool, in the workers and the daemons they start: three workers share two cores
    # (README), and pools sized for the whole machine in each process only contend for them. On a 2-core EPYC
    # the suite took 10:48 instead of 12:10, and one worker's training tests 52 s instead of 58 s alone.
    for pool in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(pool, "1")


# On several workers (`-p xdist -n 3 --dist loadscope --no-loadscope-reorder`, README) each module runs on one
# worker, which builds its module-scoped fixtures once, and modules start in collection order: the ones on the
# demo site first (its build, a minute of training, and the daemons run on it are the longest chain), then the
# ones with module-scoped fixtures (conversions, consoles, trainings), then the rest, which fills in around them.
DEMO = {"demo_build", "demo_site"}


def start_order(item: pytest.Item) -> int:
    if DEMO & set(getattr(item, "fixturenames", ())):
        return 0
    info = getattr(item, "_fixtureinfo", None)  # the fixtures' definitions, for their scopes
    defs = info.name2fixturedefs.values() if info is not None else ()
    return 1 if any(d.scope == "module" for ds in defs for d in ds) else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    module_order: dict[Path, int] = {}  # a module starts as early as its earliest test: its tests stay together
    for item in items:
        module_order[item.path] = min(module_order.get(item.path, 2), start_order(item))
    items.sort(key=lambda item: module_order[item.path])
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if "tiny_bundle" in fixtures:  # a real Keras head
            item.add_marker("tf")
        if fixtures & {"pg_db", "pg_database"} or "postgresql" in params.values():
            item.add_marker("postgres")
        if "browser" in fixtures:  # Playwright driving Debian's chromium
            item.add_marker("browser")
        if not any(item.get_closest_marker(name) for name in HEAVY):
            item.add_marker("fast")


@pytest.fixture(scope="session", autouse=True)
def full_cost_hasher():
    """Passwords are hashed as argon2id at its lowest cost in tests: at the real cost (64 MiB, 3 passes) each
    hash and each sign-in takes 0.2 s of CPU, and tests make hundreds. Yields the real hasher, for the test
    that checks what the record stores (tests/record/test_qa_commands.py)."""
    from argon2 import PasswordHasher

    from monitor.record import review

    real = review._hasher
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(review, "_hasher", lambda: PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
        yield real


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny")


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory) -> Path:
    """The demo site as it ships (its model trains for a minute), built once and never run: copy it with
    `support.sites.copy_demo` before running it."""
    from filelock import FileLock

    from monitor.demo.demo import build_demo_site

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, shared by its workers: one builds, the others wait for it
    site_dir, done = root / "demo-build", root / "demo-build.done"  # the marker beside it: copies take the whole dir
    with FileLock(root / "demo-build.lock"):
        if not done.is_file():
            shutil.rmtree(site_dir, ignore_errors=True)  # a build interrupted by an earlier failure
            build_demo_site(site_dir)
            done.touch()
    return site_dir


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """Any test's camera: 2 s of a walking figure, 160x120 at 12 fps, H.264 with a keyframe a second."""
    return write_clip(tmp_path_factory.mktemp("clip") / "walk.mp4")


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
