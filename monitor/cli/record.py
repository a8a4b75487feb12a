"""`har-monitor db | users | violations`: the violation record's schema, its users and QA's review.

Every command that reads the store takes `--cameras site.yaml` (the store named there) or `--db URL`.
A database that cannot be reached, hangs, or is not one is a message and exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import functools
import getpass
import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from monitor.errors import UserError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    def store_args(p: argparse.ArgumentParser) -> None:
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--cameras", type=Path, metavar="SITE_YAML", help="use the store named in this site.yaml")
        where.add_argument("--db", metavar="URL", help="a database URL (sqlite:///PATH, postgresql://...)")

    def anchor_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--anchors", type=Path, metavar="FILE", help="the anchor log (default: storage.anchor.log)")
        p.add_argument("--anchor-key-file", type=Path, metavar="FILE",
                       help="the anchor key (default: storage.anchor's key, or $HAR_ANCHOR_KEY)")

    db = sub.add_parser("db", help="the record's database schema").add_subparsers(dest="db_command", required=True)
    upgrade = db.add_parser("upgrade", help="create or migrate the schema to this version's (Alembic)")
    store_args(upgrade)
    upgrade.set_defaults(func=cmd_db)

    users = sub.add_parser("users", help="people who review violations").add_subparsers(dest="users_command", required=True)
    add = users.add_parser("add", help="add a user (password prompted, or --password-stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["viewer", "reviewer", "admin"])
    add.add_argument("--printed-name", help="the name shown on signatures (default: NAME)")
    add.add_argument("--password-stdin", action="store_true")
    disable = users.add_parser("disable", help="disable a user (users are never deleted)")
    unlock = users.add_parser("unlock", help="unlock a user locked out by wrong passwords (audited)")
    for command in (disable, unlock):
        command.add_argument("name")
        command.add_argument("--reason", required=True)
    for command in (add, disable, unlock):
        store_args(command)
        command.set_defaults(func=cmd_users)

    v = sub.add_parser("violations", help="review the violation record").add_subparsers(dest="violations_command", required=True)
    listing = v.add_parser("list", help="list violations")
    listing.add_argument("--since", help="e.g. 24h, 7d, 1h30m, or an ISO date")
    listing.add_argument("--camera")
    listing.add_argument("--rule")
    listing.add_argument("--severity", choices=["info", "minor", "major", "critical"])
    listing.add_argument("--status", choices=["open", "reviewed", "needs_follow_up"])
    listing.add_argument("--format", choices=["table", "json", "csv"], default="table")
    store_args(listing)
    show = v.add_parser("show", help="one violation with its audit trail, signatures and evidence")
    show.add_argument("id", help="the violation id (or a unique prefix)")
    store_args(show)
    review = v.add_parser("review", help="sign a review (electronic signature)")
    review.add_argument("id")
    review.add_argument("--disposition", required=True, choices=["confirmed", "false_positive", "needs_follow_up"])
    review.add_argument("--reason", required=True)
    review.add_argument("--user", required=True)
    review.add_argument("--password-stdin", action="store_true")
    store_args(review)
    export = v.add_parser("export", help="export violations with audit trail and evidence hashes (CSV)")
    export.add_argument("--since")
    export.add_argument("--out", required=True, type=Path, metavar="FILE.csv")
    store_args(export)
    verify = v.add_parser("verify", help="recompute the hash chains, check them against the anchors and the "
                                         "evidence files; exit 1 if anything was altered or is missing")
    verify.add_argument("--evidence-dir", type=Path, metavar="DIR",
                        help="where the evidence files are (default with --cameras: storage.evidence_dir)")
    anchor_args(verify)
    store_args(verify)
    anchor = v.add_parser("anchor", help="write a signed checkpoint of the chains to the anchor log now")
    anchor_args(anchor)
    store_args(anchor)
    shadow = v.add_parser("shadow-report", help="where the live and the shadow model (shadow_model) disagreed: "
                                                "episodes only one of them opened, per rule and camera, and a verdict")
    shadow.add_argument("--since", default="7d", help="e.g. 24h, 7d (default), or an ISO date")
    shadow.add_argument("--camera")
    store_args(shadow)
    for command in (listing, show, review, export, verify, anchor, shadow):
        command.set_defaults(func=cmd_violations)


    dataset = sub.add_parser("dataset", help="training data from the record").add_subparsers(dest="dataset_command",
                                                                                          required=True)
    harvest = dataset.add_parser("from-reviews", help="the evidence clips of reviewed violations as a training folder "
                                                      "(confirmed: under the action; false positive: under the "
                                                      "negative class), each with a sidecar JSON")
    harvest.add_argument("--since", default="30d", help="violations that started since (default 30d; 24h, 7d, an ISO date)")
    harvest.add_argument("--out", required=True, type=Path, metavar="DATA_DIR")
    harvest.add_argument("--negative-class", default="other", metavar="NAME",
                         help="the folder of false positives (default: other)")
    harvest.add_argument("--camera")
    harvest.add_argument("--evidence-dir", type=Path, metavar="DIR",
                         help="where the evidence files are (default with --cameras: storage.evidence_dir)")
    store_args(harvest)
    harvest.set_defaults(func=cmd_dataset)


def _site(args: argparse.Namespace):
    """The site.yaml of --cameras (loaded once), or None with --db."""
    from monitor.site.config import load_site

    if args.cameras and not hasattr(args, "loaded_site"):
        args.loaded_site = load_site(args.cameras)
    return getattr(args, "loaded_site", None)


def _url(args: argparse.Namespace) -> str:
    site = _site(args)
    return site.database_url if site else args.db


def _named(args: argparse.Namespace) -> str:
    """Where the user gave the database, for messages."""
    return f"{args.cameras}: storage.url" if args.cameras else "--db"


def _store_command(func):
    """Database errors (unreachable, hung, not a database, refused) become one message and exit 2."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        import sqlite3

        import psycopg
        from sqlalchemy.exc import DBAPIError

        from monitor.record.db import describe_error, shown_url
        try:
            return func(args)
        except (DBAPIError, sqlite3.Error, psycopg.Error) as exc:
            raise UserError(f"{_named(args)}: {shown_url(_url(args))}: {describe_error(exc)}") from None
    return run


def _engine(args: argparse.Namespace, creating: bool = False):
    from monitor.record.db import SchemaOutdated, check_schema, create_engine, normalize_url

    url = _url(args)
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.parent.is_dir():
            raise UserError(f"{_named(args)}: {url}: the directory {path.parent} does not exist")
        if not creating and not path.exists():
            raise UserError(f"{_named(args)}: {url}: no such database file (`har-monitor db upgrade` creates one)")
    engine = create_engine(url)
    if not creating:
        command = f"har-monitor db upgrade {'--db URL' if args.db else f'--cameras {args.cameras}'}"
        try:
            check_schema(engine, command)
        except SchemaOutdated as exc:
            raise UserError(str(exc)) from None
    return engine


def _write(engine, action):
    from monitor.record.db import write_retrying

    return write_retrying(engine, action)


def _password(args: argparse.Namespace, prompt: str) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    return getpass.getpass(prompt)


def parse_since(text: str | None) -> datetime | None:
    """A duration back from now (the units of rules: 90s, 10m, 24h, 7d, 2w, 1h30m) or an ISO date."""
    from monitor.durations import parse_duration

    if not text:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise UserError(f"--since: '{text}' is not a duration (24h, 7d, 1h30m) or an ISO date") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    try:
        return datetime.now(timezone.utc) - timedelta(seconds=seconds)
    except OverflowError:
        raise UserError(f"--since: '{text}' reaches back before the year 1") from None


def _anchor_log(args: argparse.Namespace, site=None):
    """The anchor log and key from --anchors/--anchor-key-file, else from site.yaml; None when there is none."""
    from monitor.record.anchor import AnchorLog, load_key

    configured = site.anchor_log() if site else None
    path = getattr(args, "anchors", None) or (configured.path if configured else None)
    if path is None:
        return None
    if getattr(args, "anchor_key_file", None):
        key = load_key(None, args.anchor_key_file)
    else:
        key = configured.key if configured else load_key()
    return AnchorLog(path, key, configured.ship_to if configured else None)


def _anchor_after_write(args: argparse.Namespace, engine) -> None:
    """A QA command that wrote to the record anchors it, when it has the key (else the daemon will)."""
    site = _site(args)
    log = _anchor_log(args, site) if site else None
    if log is None or log.key is None:
        return
    from monitor.record.review import os_actor

    try:
        with engine.connect() as conn:
            log.write(conn, f"qa:{os_actor()}")
    except OSError as exc:
        print(f"note: anchor not written to {log.path}: {exc.strerror or exc}", file=sys.stderr)


@_store_command
def cmd_db(args: argparse.Namespace) -> int:
    from monitor.record.db import shown_url, upgrade

    _engine(args, creating=True).dispose()  # the same checks of the URL as every command
    before, after = upgrade(_url(args))
    print(f"{shown_url(_url(args))}: schema {before or 'none'} -> {after}")
    return 0


@_store_command
def cmd_users(args: argparse.Namespace) -> int:
    from monitor.record import review

    engine = _engine(args)
    if args.users_command == "add":
        password = _password(args, f"password for {args.name}: ")
        if not args.password_stdin and getpass.getpass("again: ") != password:
            raise UserError("the passwords differ")
        _write(engine, lambda conn: review.add_user(conn, args.name, args.role, password, args.printed_name))
        print(f"user {args.name} added ({args.role})")
    elif args.users_command == "disable":
        _write(engine, lambda conn: review.disable_user(conn, args.name, args.reason))
        print(f"user {args.name} disabled")
    else:
        _write(engine, lambda conn: review.unlock_user(conn, args.name, args.reason))
        print(f"user {args.name} unlocked")
    _anchor_after_write(args, engine)
    return 0


@_store_command
def cmd_violations(args: argparse.Namespace) -> int:
    from monitor.record import review

    engine = _engine(args)
    command = args.violations_command
    if command == "review":
        return _review(args, engine)
    if command == "verify":
        return _verify(args, engine)
    if command == "anchor":
        return _anchor(args, engine)
    if command == "shadow-report":
        return _shadow_report(args, engine)
    since = parse_since(getattr(args, "since", None))
    with engine.connect() as conn:
        if command == "show":
            _show(review.query(conn, violation_id=args.id)[0])
            return 0
        views = review.query(conn, since=since, camera=getattr(args, "camera", None),
                             rule=getattr(args, "rule", None), severity=getattr(args, "severity", None),
                             status=getattr(args, "status", None))
    if command == "export":
        review.write_csv(views, args.out, sys.stdout)
        print(f"{len(views)} violations -> {args.out}")
    elif args.format == "json":
        print(json.dumps([v.flat() for v in views], indent=1))
    elif args.format == "csv":
        review.write_csv(views, None, sys.stdout)
    else:
        _table(views)
    return 0


def _review(args: argparse.Namespace, engine) -> int:
    from monitor.record import review

    site = _site(args)
    lockout_after = site.config.qa.lockout_after if site else review.LOCKOUT_AFTER
    password = _password(args, f"password for {args.user} (signing): ")
    outcome = _write(engine, lambda conn: review.sign_or_refuse(conn, args.id, args.user, password, args.disposition,
                                                                args.reason, lockout_after))
    if isinstance(outcome, review.AuthError):  # committed: the refusal is in the audit trail
        print(f"refused: {outcome}", file=sys.stderr)
        return 1
    print(f"signed: {args.disposition} by {outcome['printed_name']} at {outcome['signed_at'].isoformat()} "
          f"(signature {outcome['row_hash'][:16]})")
    _anchor_after_write(args, engine)
    return 0


def _verify(args: argparse.Namespace, engine) -> int:
    from monitor.record import anchor, ledger

    site = _site(args)
    evidence_dir = args.evidence_dir or (site.resolve(site.config.storage.evidence_dir) if site else None)
    log = _anchor_log(args, site)
    notes = []
    with engine.connect() as conn:
        problems = ledger.verify(conn, evidence_dir)
        if log is None:
            notes.append("anchors not checked (give --anchors, or set storage.anchor in site.yaml): "
                         "without them a shortened or emptied chain cannot be told from a whole one")
        else:
            anchor_problems, notes = anchor.verify(conn, log)
            problems += anchor_problems
    if evidence_dir is None:
        notes.append("evidence files not checked (give --evidence-dir)")
    for problem in problems:
        print(f"{problem.kind}: {problem}")
    for note in notes:
        print(f"note: {note}")
    print("verify: " + (f"{len(problems)} problem(s)" if problems else "ok"))
    return 1 if problems else 0


def _anchor(args: argparse.Namespace, engine) -> int:
    from monitor.record.review import os_actor

    log = _anchor_log(args, _site(args))
    if log is None or log.key is None:
        raise UserError("violations anchor: needs an anchor log and its key (--anchors and $HAR_ANCHOR_KEY or "
                        "--anchor-key-file, or storage.anchor in site.yaml)")
    try:
        with engine.connect() as conn:
            written = log.write(conn, f"qa:{os_actor()}")
    except OSError as exc:
        raise UserError(f"--anchors: cannot write {log.path}: {exc.strerror or exc}") from None
    print(f"anchored -> {log.path}: " + ", ".join(f"{name} {h.rows} row(s) up to seq {h.seq}"
                                                  for name, h in written.chains.items()))
    return 0


@_store_command
def cmd_dataset(args: argparse.Namespace) -> int:
    from monitor.record.review import os_actor
    from monitor.record.reviewset import from_reviews

    engine = _engine(args)
    site = _site(args)
    evidence_dir = args.evidence_dir or (site.resolve(site.config.storage.evidence_dir) if site else None)
    if evidence_dir is None:
        raise UserError("dataset from-reviews: give --evidence-dir (or --cameras site.yaml)")
    label_of = _label_of(site)
    with engine.connect() as conn:
        result = from_reviews(conn, evidence_dir, args.out, parse_since(args.since), args.negative_class,
                              args.camera, label_of)
    for skipped in result.skipped:
        print(f"skipped {skipped.violation_id[:8]}: {skipped.why}")
    counts = result.counts()
    summary = {"format": "training_dataset", "out": str(args.out.resolve()), "since": args.since,
               "written": len(result.written), "unchanged": len(result.unchanged), "skipped": len(result.skipped),
               "clips": counts, "violations": sorted(v for v, _ in result.written + result.unchanged)}
    _write(engine, lambda conn: _audit_export(conn, os_actor(), summary))
    _anchor_after_write(args, engine)
    print(", ".join(f"{label}: {n}" for label, n in sorted(counts.items())) or "no reviewed clips")
    print(f"{len(result.written)} written, {len(result.unchanged)} already there, {len(result.skipped)} skipped -> {args.out}")
    return 0


def _audit_export(conn, actor: str, summary: dict) -> None:
    import uuid

    from monitor.record.ledger import audit

    audit(conn, f"exported:{uuid.uuid4()}", None, actor, "exported", {}, summary, "dataset from-reviews")


def _label_of(site):
    """The class of a rule's action: the action, or the one label of a group of one (with --cameras: the model's
    labels and groups; None: it names no single label)."""
    if site is None:
        return lambda action: action
    from monitor.model.bundle import load_bundle

    bundle = load_bundle(site.model_dir)
    groups, labels = bundle.manifest.groups, set(bundle.labels)

    def label_of(action: str) -> str | None:
        if action in labels:
            return action
        members = groups.get(action, [])
        return members[0] if len(members) == 1 else None

    return label_of


def _shadow_report(args: argparse.Namespace, engine) -> int:
    from rich.console import Console
    from rich.table import Table

    from monitor.record.shadow import shadow_report

    with engine.connect() as conn:
        report = shadow_report(conn, parse_since(args.since), args.camera)
    for period in report.periods:
        print(f"shadow run {period.start.isoformat()[:19]} .. {period.end.isoformat()[:19] if period.end else 'now'}: "
              f"site {period.site}, model {period.model_hash[:12]}, shadow {period.shadow_hash[:12]}")
    if report.tallies:
        table = Table("rule", "camera", "both", "live only", "of which confirmed", "of which false positive", "shadow only")
        for (rule, camera), t in sorted(report.tallies.items()):
            table.add_row(rule, camera, str(t.both), str(t.live_only), str(t.live_only_confirmed),
                          str(t.live_only_false_positive), str(t.shadow_only))
        Console(width=140).print(table)
    for ep in report.live_only:
        print(f"live only:   {ep.id[:8]} {ep.started_at.isoformat()[:19]} {ep.camera} {ep.rule} "
              f"{ep.disposition or 'unreviewed'}")
    for ep in report.shadow_only:
        print(f"shadow only: {ep.id[:8]} {ep.started_at.isoformat()[:19]} {ep.camera} {ep.rule}")
    print(report.verdict())
    return 0


def _table(views) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("id", "started (UTC)", "camera", "rule", "severity", "conf.", "ended", "status")
    for v in views:
        f = v.flat()
        table.add_row(f["id"][:8], f["started_at"][:19], f["camera"], f["rule"], f["severity"], f"{f['confidence']:.2f}",
                      f["ended_at"][:19] or "ongoing", f["status"])
    Console(width=140).print(table)
    print(f"{len(views)} violations")


def _show(view) -> None:
    for key, value in view.flat().items():
        if key not in ("audit_trail", "dispositions"):
            print(f"{key:>16}: {value}")
    print("signatures:" if view.reviews else "signatures: none")
    for r in view.reviews:
        print(f"  {r['signed_at']} {r['printed_name']} ({r['user']}): {r['meaning']}: {r['reason']} "
              f"[binds {r['violation_hash'][:16]}]")
    print("audit trail:")
    for a in view.trail:
        print(f"  {a['at']} {a['actor']} {a['what']}: {a['old']} -> {a['new']} ({a['why']})")
