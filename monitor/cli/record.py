"""`har-monitor db | users | violations`: the violation record's schema, its users and QA's review.

Every command that reads the store takes `--cameras site.yaml` (the store named there) or `--db URL`.
"""

from __future__ import annotations

import argparse
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
    store_args(add)
    add.set_defaults(func=cmd_users)
    disable = users.add_parser("disable", help="disable a user (users are never deleted)")
    disable.add_argument("name")
    disable.add_argument("--reason", required=True)
    store_args(disable)
    disable.set_defaults(func=cmd_users)

    v = sub.add_parser("violations", help="review the violation record").add_subparsers(dest="violations_command", required=True)
    listing = v.add_parser("list", help="list violations")
    listing.add_argument("--since", help="e.g. 24h, 7d, or an ISO date")
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
    verify = v.add_parser("verify", help="recompute the hash chains and evidence hashes; exit 1 if anything was altered")
    store_args(verify)
    for command in (listing, show, review, export, verify):
        command.set_defaults(func=cmd_violations)


def _database(args: argparse.Namespace) -> tuple[str, Path | None]:
    """The database URL and the evidence directory."""
    if args.db:
        return args.db, None
    from monitor.site.config import load_site

    site = load_site(args.cameras)
    return site.database_url, site.resolve(site.config.storage.evidence_dir)


def _engine(args: argparse.Namespace, check: bool = True):
    from monitor.record.db import SchemaOutdated, check_schema, create_engine

    url, _ = _database(args)
    engine = create_engine(url)
    if check:
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
    if not text:
        return None
    units = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(timezone.utc) - timedelta(seconds=float(text[:-1]) * units[text[-1]])
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise UserError(f"--since: '{text}' is not a duration (24h, 7d) or an ISO date") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def cmd_db(args: argparse.Namespace) -> int:
    from monitor.record.db import shown_url, upgrade

    url, _ = _database(args)
    before, after = upgrade(url)
    print(f"{shown_url(url)}: schema {before or 'none'} -> {after}")
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    from monitor.record import review

    engine = _engine(args)
    if args.users_command == "add":
        password = _password(args, f"password for {args.name}: ")
        if not args.password_stdin and getpass.getpass("again: ") != password:
            raise UserError("the passwords differ")
        _write(engine, lambda conn: review.add_user(conn, args.name, args.role, password, args.printed_name))
        print(f"user {args.name} added ({args.role})")
    else:
        _write(engine, lambda conn: review.disable_user(conn, args.name, args.reason))
        print(f"user {args.name} disabled")
    return 0


def cmd_violations(args: argparse.Namespace) -> int:
    from monitor.record import ledger, review

    engine = _engine(args)
    command = args.violations_command
    if command == "review":
        password = _password(args, f"password for {args.user} (signing): ")
        try:
            signature = _write(engine, lambda conn: review.sign_review(conn, args.id, args.user, password,
                                                                        args.disposition, args.reason))
        except review.AuthError as exc:
            print(f"refused: {exc}", file=sys.stderr)
            return 1
        print(f"signed: {args.disposition} by {signature['printed_name']} at {signature['signed_at'].isoformat()} "
              f"(signature {signature['row_hash'][:16]})")
        return 0
    with engine.connect() as conn:
        if command == "verify":
            _, evidence_dir = _database(args)
            problems = ledger.verify(conn, evidence_dir)
            for problem in problems:
                print(f"ALTERED: {problem}")
            print("verify: " + (f"{len(problems)} problem(s)" if problems else "ok, every chain and evidence file is intact"))
            return 1 if problems else 0
        if command == "show":
            _show(review.query(conn, violation_id=args.id)[0])
            return 0
        views = review.query(conn, since=parse_since(args.since), camera=getattr(args, "camera", None),
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
