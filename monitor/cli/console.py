"""`har-monitor console`: the QA review console, a web application over the violation record.

It runs apart from the daemon (the QA office is not the camera box), over the same store:
`--cameras site.yaml` (the store, evidence, cameras, metrics endpoint and model bundles named
there) or `--db URL [--evidence-dir DIR]`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from monitor.errors import UserError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="the QA review console (a web application)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--cameras", type=Path, metavar="SITE_YAML", help="the site: its store, evidence, cameras and model")
    where.add_argument("--db", metavar="URL", help="a database URL (sqlite:///PATH, postgresql://...)")
    p.add_argument("--evidence-dir", type=Path, metavar="DIR", help="the evidence folder (default: the site's)")
    p.add_argument("--models", type=Path, action="append", default=[], metavar="DIR",
                   help="model bundles for 'try a clip' (a bundle, or a folder of bundles; default: the site's model's folder)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; put a TLS reverse proxy in front)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--idle-timeout", default="15m", metavar="DURATION", help="sign out after this long without a request")
    p.add_argument("--session-lifetime", default="8h", metavar="DURATION", help="sign out this long after signing in")
    p.add_argument("--max-upload-mb", type=int, default=50, help="largest file 'try a clip' accepts")
    p.set_defaults(func=cmd_console)


def _duration(text: str, option: str) -> float:
    from monitor.durations import parse_duration

    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UserError(f"{option}: {exc}") from None
    if seconds <= 0:
        raise UserError(f"{option}: must be longer than 0 (e.g. 15m)")
    return seconds


def settings(args: argparse.Namespace):
    from monitor.console.app import Settings
    from monitor.console.queries import Scope
    from monitor.console.tryclip import find_bundles

    common = {"idle_seconds": _duration(args.idle_timeout, "--idle-timeout"),
              "absolute_seconds": _duration(args.session_lifetime, "--session-lifetime"),
              "max_upload_bytes": max(1, args.max_upload_mb) << 20}
    if args.db:
        return Settings(args.db, args.evidence_dir, Scope(None, {}), bundles=find_bundles(args.models), **common)
    from monitor.site.config import load_site

    site = load_site(args.cameras)
    cfg = site.config
    zones = {c.id: (c.zone,) if c.zone else tuple(z.name for z in c.zones) for c in site.cameras}
    host = "127.0.0.1" if cfg.metrics.host in ("0.0.0.0", "", "::") else cfg.metrics.host  # nosec B104  # compares, binds nothing
    return Settings(site.database_url, args.evidence_dir or site.resolve(cfg.storage.evidence_dir),
                    Scope(cfg.site, zones),
                    cameras=[(c.id, ", ".join(zones[c.id]), c.is_network) for c in site.cameras],
                    metrics_url=f"http://{host}:{cfg.metrics.port}/metrics" if cfg.metrics.port else None,
                    bundles=find_bundles([site.model_dir.parent, *args.models]), site_name=cfg.site,
                    lockout_after=cfg.qa.lockout_after, **common)


def cmd_console(args: argparse.Namespace) -> int:
    import uvicorn

    from monitor.console.app import create_app
    from monitor.record.db import SchemaOutdated, check_schema, create_engine

    config = settings(args)
    engine = create_engine(config.database_url)
    command = f"har-monitor db upgrade {'--db URL' if args.db else f'--cameras {args.cameras}'}"
    try:
        check_schema(engine, command)
    except SchemaOutdated as exc:
        raise UserError(str(exc)) from None
    finally:
        engine.dispose()
    if args.evidence_dir is not None and not args.evidence_dir.is_dir():  # a site's may not exist yet: no evidence so far
        raise UserError(f"--evidence-dir: {args.evidence_dir} is not a folder")
    app = create_app(config)
    print(f"QA console on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_config=None, access_log=False, server_header=False,
                proxy_headers=True)  # trusts X-Forwarded-Proto/For from FORWARDED_ALLOW_IPS (default: this host)
    return 0
