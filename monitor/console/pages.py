"""The console's pages: one handler per route (monitor.console.app wires them).

Each handler checks who is asking first (Console.user), parses and checks the form's CSRF token
before any change, does its database work in a worker thread (the record is read and written
with blocking SQLAlchemy calls) and renders a template.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from monitor.console import charts, queries
from monitor.console.app import Console, User
from monitor.console.evidence import KINDS
from monitor.console.queries import BadFilterError
from monitor.console.tryclip import BadClipError
from monitor.errors import UserError
from monitor.fileio import sha256_file
from monitor.record import ledger, review
from monitor.record.tables import CHAINED, audit_events, users

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # episode ids and camera ids, as the record keeps them
REPORT_LIMIT = 2000


def _console(request: Request) -> Console:
    return request.app.state.console


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never //host or https://host) after signing in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or urlsplit(target).netloc:
        return "/"
    return target


# -- signing in and out ------------------------------------------------------------------------------

async def login(request: Request) -> Response:
    c = _console(request)
    session = c.session(request)
    if request.method == "GET":
        if session is not None and session.user is not None:
            return _redirect(_safe_next(request.query_params.get("next")))
        if session is None:
            session = c.sessions.new()
        request.state.session = session
        response = c.render(request, "login.html", next=_safe_next(request.query_params.get("next")))
        c.set_cookie(request, response, session)
        return response
    if session is None:  # the sign-in page's session expired, or the cookie was refused
        raise HTTPException(403, "This form's security token is missing or out of date: reload the page and try again.")
    form = await c.form(request, session)
    request.state.session = session
    name, password = str(form.get("user", "")).strip(), str(form.get("password", ""))
    target = _safe_next(str(form.get("next", "")))
    client = c.client(request)
    wait = c.throttle.retry_after(client)
    if wait > 0:
        return c.render(request, "login.html", status=429, next=target,
                        error=f"Too many failed sign-ins from this computer: try again in {wait / 60:.0f} min.")
    # the record's own check: a refusal is an audit event and counts towards the account's lockout
    row = await run_in_threadpool(c.write, lambda conn: review.authenticate_or_refuse(
        conn, name, password, c.settings.lockout_after, purpose="login"))
    if isinstance(row, review.AuthError):
        failures = c.throttle.failed(client)
        if failures == c.throttle.limit:
            await run_in_threadpool(c.audit, "system", "login_rate_limited", {"client": client, "failures": failures},
                                    f"{failures} failed sign-ins within {c.throttle.window / 60:g} min")
        locked = "locked" in str(row)
        return c.render(request, "login.html", status=401, next=target, user_name=name,
                        error="This account is locked after too many wrong passwords: an admin must unlock it."
                        if locked else "Wrong user name or password.")
    c.sessions.drop(session.id)  # a new id once signed in: an id seen before signing in is worth nothing
    signed = c.sessions.new(row.name)
    await run_in_threadpool(c.audit, row.name, "signed_in", {"client": client}, "console sign-in")
    response = _redirect(target)
    c.set_cookie(request, response, signed)
    return response


async def logout(request: Request) -> Response:
    c = _console(request)
    user = await c.user(request)
    await c.form(request)
    c.sessions.drop(request.state.session.id)
    await run_in_threadpool(c.audit, user.name, "signed_out", {}, "console sign-out")
    response = _redirect("/login")
    response.delete_cookie("har_console", path="/")
    return response


# -- the inbox --------------------------------------------------------------------------------------

def _filters(request: Request) -> queries.Filters:
    try:
        return queries.Filters.parse(request.query_params)
    except BadFilterError as exc:
        raise HTTPException(400, str(exc)) from None


async def inbox(request: Request) -> Response:
    c = _console(request)
    await c.user(request)
    filters = _filters(request)

    def read(conn: sa.Connection):
        return queries.inbox(conn, filters, c.scope), c.rule_texts.titles(conn)

    page, titles = await run_in_threadpool(c.read, read)
    zones = sorted({z for zones in c.scope.zones.values() for z in zones})
    return c.render(request, "inbox.html", page=page, f=filters, titles=titles, zones=zones,
                    severities=queries.SEVERITIES, statuses=queries.STATUSES, sorts=queries.SORTS,
                    dispositions=(*review.DISPOSITIONS, queries.UNSIGNED))


# -- one violation --------------------------------------------------------------------------------

def _vid(request: Request) -> str:
    vid = request.path_params["vid"]
    if not _ID.match(vid):
        raise HTTPException(404, "No such violation.")
    return vid


def _pruned(conn: sa.Connection, evidence: dict) -> set[str]:
    paths = [r.get("path") for r in (evidence.get("clip"), evidence.get("snapshot")) if isinstance(r, dict)]
    wanted = [json.dumps({"path": p}, sort_keys=True) for p in paths if p]
    found = conn.execute(sa.select(audit_events.c.new).where(audit_events.c.what == "evidence_pruned",
                                                             audit_events.c.new.in_(wanted)))
    return {json.loads(r.new)["path"] for r in found}


async def violation(request: Request) -> Response:
    c = _console(request)
    user = await c.user(request)
    vid = _vid(request)
    exists = await run_in_threadpool(c.read, lambda conn: queries.violation(conn, vid, c.scope))
    if exists is None:
        raise HTTPException(404, "No such violation.")
    # the view is recorded before the page is read, so the trail shown includes it
    await run_in_threadpool(c.audit, user.name, "viewed", {"via": "console"}, "violation page viewed", vid)

    def read(conn: sa.Connection):
        view = queries.violation(conn, vid, c.scope)
        rule = c.rule_texts.find(conn, view.row["rules_hash"], view.row["rule"])
        return view, rule, _pruned(conn, view.evidence)

    view, rule, pruned = await run_in_threadpool(c.read, read)
    files = await run_in_threadpool(lambda: {
        kind: c.evidence.of(view.evidence, kind, pruned=view.evidence.get(kind, {}).get("path") in pruned, fresh=True)
        for kind in KINDS})
    return c.render(request, "violation.html", v=view, row=view.row, rule=rule, files=files,
                    timeline=_timeline(view, rule), labels=json.loads(view.row["labels"] or "{}"),
                    zone=c.scope.zone_of(view.row["camera"], _closing_of(view).get("zone")),
                    dispositions=review.DISPOSITIONS,
                    may_sign=user.may("reviewer"), form=_take_sign_form(request.state.session))


def _take_sign_form(session) -> dict:
    form, session.sign_form = session.sign_form, {}
    return form


def _closing_of(view: review.ViolationView) -> dict:
    return next((json.loads(a["new"]) for a in view.trail if a["what"] == "closed"), {})


def _timeline(view: review.ViolationView, rule) -> object:
    trace = _closing_of(view).get("trace") or []
    if not trace:
        return None
    start = view.row["started_at"].timestamp()
    points = [(round(t - start, 2), c) for t, c in trace]
    return charts.line_chart([(view.row["action"], points)], "seconds from the episode's start", "confidence",
                             threshold=rule.min_confidence if rule else None, title="confidence over the episode")


async def sign(request: Request) -> Response:
    c = _console(request)
    user = await c.user(request, "reviewer")
    vid = _vid(request)
    form = await c.form(request)
    here = f"/violations/{vid}"
    exists = await run_in_threadpool(c.read, lambda conn: queries.violation(conn, vid, c.scope))
    if exists is None:
        raise HTTPException(404, "No such violation.")
    client = c.client(request)
    disposition, reason = str(form.get("disposition", "")), str(form.get("reason", ""))
    session = request.state.session
    session.sign_form = {"disposition": disposition, "reason": reason}  # kept for the page (never the password)
    wait = c.throttle.retry_after(client)
    if wait > 0:
        session.flash = f"Too many wrong passwords from this computer: try again in {wait / 60:.0f} min."
        return _redirect(here)
    try:
        signature = await run_in_threadpool(c.write, lambda conn: review.sign_or_refuse(
            conn, vid, user.name, str(form.get("password", "")), disposition, reason, c.settings.lockout_after))
    except UserError as exc:
        session.flash = f"Not signed: {'; '.join(exc.problems)}."
        return _redirect(here)
    if isinstance(signature, review.AuthError):  # recorded by the record as signature_refused
        c.throttle.failed(client)
        session.flash = f"Not signed: {signature}."
        return _redirect(here)
    session.sign_form = {}
    session.flash = (f"Signed: {signature['meaning'].replace('_', ' ')} by {signature['printed_name']} at "
                     f"{signature['signed_at']:%Y-%m-%d %H:%M:%S} UTC.")
    return _redirect(here)


async def evidence_file(request: Request) -> Response:
    c = _console(request)
    await c.user(request)
    vid, kind = _vid(request), request.path_params["kind"]
    if kind not in KINDS:
        raise HTTPException(404, "No such file.")

    def find():
        with c.engine.connect() as conn:
            view = queries.violation(conn, vid, c.scope)
            pruned = _pruned(conn, view.evidence) if view else set()
        if view is None:
            return None
        path = (view.evidence.get(kind) or {}).get("path")
        return c.evidence.of(view.evidence, kind, pruned=path in pruned)

    found = await run_in_threadpool(find)
    if found is None or found.state in ("missing", "outside", "pruned", "unchecked"):
        raise HTTPException(404, "No such file.")
    if found.state == "altered":
        raise HTTPException(409, "This evidence file was altered: its SHA-256 differs from the one recorded.")
    return FileResponse(found.path, media_type=KINDS[kind], headers={"Cache-Control": "private, no-store"})


# -- the audit trail and integrity ----------------------------------------------------------------------

async def audit_trail(request: Request) -> Response:
    c = _console(request)
    await c.user(request)
    try:
        filters = queries.AuditFilters.parse(request.query_params)
    except BadFilterError as exc:
        raise HTTPException(400, str(exc)) from None
    rows, total, kinds = await run_in_threadpool(c.read, lambda conn: queries.audit_trail(conn, filters, c.scope))
    return c.render(request, "audit.html", rows=rows, total=total, kinds=kinds, f=filters,
                    pages=max(1, -(-total // queries.AUDIT_PAGE_SIZE)))


async def verify(request: Request) -> Response:
    c = _console(request)
    user = await c.user(request)
    if request.method == "GET":
        return c.render(request, "verify.html", result=None)
    await c.form(request)
    started = datetime.now(timezone.utc)
    evidence = c.settings.evidence_dir

    def check(conn: sa.Connection) -> list:
        if evidence is None:  # the chains only: files cannot be found without their folder (no false alarms)
            return [p for table in CHAINED.values() for p in ledger.verify_chain(conn, table)]
        return ledger.verify(conn, evidence)

    problems = await run_in_threadpool(c.read, check)
    seconds = (datetime.now(timezone.utc) - started).total_seconds()
    await run_in_threadpool(c.audit, user.name, "verified", {"problems": len(problems)},
                            "integrity check from the console: hash chains and evidence files")
    return c.render(request, "verify.html", result=[str(p) for p in problems], seconds=seconds,
                    evidence_checked=c.settings.evidence_dir is not None)


# -- exports --------------------------------------------------------------------------------------------

async def export_csv(request: Request) -> Response:
    c = _console(request)
    user = await c.user(request)
    filters = _filters(request)
    found = await run_in_threadpool(c.read, lambda conn: queries.export(conn, filters, c.scope))
    out = io.StringIO()
    review.write_csv(found, None, out)
    await run_in_threadpool(c.audit, user.name, "exported", {"format": "csv", "rows": len(found),
                                                              "filters": filters.query(page=1)}, "CSV export")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",  # BOM: spreadsheets read UTF-8
                    headers={"Content-Disposition": f'attachment; filename="violations-{stamp}.csv"'})


async def report(request: Request) -> Response:
    c = _console(request)
    user = await c.user(request)
    filters = _filters(request)

    def read(conn: sa.Connection):
        return queries.export(conn, filters, c.scope, limit=REPORT_LIMIT + 1), c.rule_texts.titles(conn)

    found, titles = await run_in_threadpool(c.read, read)
    await run_in_threadpool(c.audit, user.name, "exported", {"format": "report", "rows": min(len(found), REPORT_LIMIT),
                                                              "filters": filters.query(page=1)}, "printable report")
    return c.render(request, "report.html", views=found[:REPORT_LIMIT], more=len(found) > REPORT_LIMIT, f=filters,
                    titles=titles, generated=datetime.now(timezone.utc), limit=REPORT_LIMIT)


# -- cameras and trends ---------------------------------------------------------------------------------

async def cameras(request: Request) -> Response:
    from monitor.console.cameras import scrape

    c = _console(request)
    await c.user(request)
    url = c.settings.metrics_url
    states, problem = await run_in_threadpool(scrape, url) if url else ({}, "no metrics endpoint is configured")
    rows = []
    for camera, zone, network in c.settings.cameras:
        latest = c.settings.evidence_dir / camera / "latest.jpg" if c.settings.evidence_dir else None
        age = (datetime.now(timezone.utc).timestamp() - latest.stat().st_mtime) if latest and latest.is_file() else None
        rows.append({"id": camera, "zone": zone, "network": network, "state": states.get(camera),
                     "latest_age": age})
    return c.render(request, "cameras.html", rows=rows, problem=problem, metrics_url=url,
                    now=datetime.now(timezone.utc).timestamp())


async def latest_frame(request: Request) -> Response:
    c = _console(request)
    await c.user(request)
    camera = request.path_params["camera"]
    known = {cam for cam, _, _ in c.settings.cameras}
    path = c.settings.evidence_dir / camera / "latest.jpg" if c.settings.evidence_dir else None
    if camera not in known or path is None or not path.is_file():
        raise HTTPException(404, "No recent frame of this camera.")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def trends(request: Request) -> Response:
    c = _console(request)
    await c.user(request)
    try:
        days = min(max(int(request.query_params.get("days", 30)), 1), 366)
    except ValueError:
        raise HTTPException(400, "days: a number of days (1 to 366)") from None

    def read(conn: sa.Connection):
        return queries.trends(conn, c.scope, days), c.rule_texts.titles(conn)

    t, titles = await run_in_threadpool(c.read, read)
    bars = {rule: charts.bar_chart(t.days, counts, title=f"{rule} per day") for rule, counts in t.per_rule_day.items()}
    rules = sorted(set(t.per_rule_day) | set(t.dispositions))
    return c.render(request, "trends.html", t=t, bars=bars, rules=rules, titles=titles, days=days)


# -- try a clip -------------------------------------------------------------------------------------------

async def try_clip(request: Request) -> Response:
    c = _console(request)
    user = await c.user(request)
    bundles = sorted(c.settings.bundles)
    if request.method == "GET":
        return c.render(request, "try.html", bundles=bundles, result=None, chart=None, keep_dir=c.settings.evidence_dir)
    length = int(request.headers.get("content-length") or 0)
    if length > c.settings.max_upload_bytes + 64 * 1024:
        raise HTTPException(413, f"The file is larger than {c.settings.max_upload_bytes >> 20} MB.")
    form = await c.form(request, max_files=1, max_fields=10)
    upload = form.get("clip")
    bundle, keep = str(form.get("bundle", "")), form.get("keep") == "yes"
    try:
        top_k = min(max(int(str(form.get("top_k", "3"))), 1), 10)
    except ValueError:
        top_k = 3
    error, result, kept = None, None, None
    if not isinstance(upload, UploadFile) or not upload.filename:
        error = "Choose a video or an image to try."
    else:
        suffix = Path(upload.filename).suffix.lower()[:8]
        with tempfile.TemporaryDirectory(prefix="har-console-try-") as tmp:  # gone afterwards, whatever happens
            path = Path(tmp) / f"clip{suffix}"
            try:
                await _save(upload, path, c.settings.max_upload_bytes)
                result = await run_in_threadpool(c.predictor.run, bundle, path, top_k)
                if keep:
                    kept = await run_in_threadpool(_keep, c, user, path, upload.filename, result)
            except BadClipError as exc:
                error = "; ".join(exc.problems)
    chart = charts.line_chart(result.series(), "seconds into the clip", "probability",
                              title="top actions over time") if result and len(result.times) > 1 else None
    return c.render(request, "try.html", status=400 if error else 200, bundles=bundles, result=result, chart=chart,
                    error=error, kept=kept, chosen=bundle, keep_dir=c.settings.evidence_dir)


async def _save(upload: UploadFile, path: Path, limit: int) -> None:
    size = 0
    with open(path, "wb") as out:
        while chunk := await upload.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise BadClipError(f"the file is larger than {limit >> 20} MB")
            out.write(chunk)


def _keep(c: Console, user: User, path: Path, name: str, result) -> str:
    """Keep a tried clip, as the user asked: under the evidence folder, with an audit event."""
    if c.settings.evidence_dir is None:
        raise BadClipError("no evidence folder is configured: the clip cannot be kept")
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    target = c.settings.evidence_dir / "_tried" / day / f"{uuid.uuid4()}{path.suffix}"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, target)
    os.chmod(target, 0o640)
    relative = str(target.relative_to(c.settings.evidence_dir))
    c.audit(user.name, "clip_kept", {"path": relative, "sha256": sha256_file(target), "name": name[:128],
                                     "bundle": result.bundle, "model_hash": result.bundle_hash, "top": result.top},
            "a tried clip kept at the user's request")
    return relative


# -- users (admins) ---------------------------------------------------------------------------------------

async def user_list(request: Request) -> Response:
    c = _console(request)
    admin = await c.user(request, "admin")
    error = None
    if request.method == "POST":
        form = await c.form(request)
        action, name = str(form.get("action", "")), str(form.get("name", "")).strip()
        try:
            if action == "add":
                await run_in_threadpool(c.write, lambda conn: review.add_user(
                    conn, name, str(form.get("role", "")), str(form.get("password", "")),
                    str(form.get("printed_name", "")).strip() or None, actor=admin.name))
                request.state.session.flash = f"User {name} added."
            elif action == "disable":
                await run_in_threadpool(c.write, lambda conn: review.disable_user(
                    conn, name, str(form.get("reason", "")).strip() or "disabled in the console", actor=admin.name))
                c.sessions.drop_user(name)
                request.state.session.flash = f"User {name} disabled."
            else:
                raise HTTPException(400, "Unknown action.")
            return _redirect("/users")
        except UserError as exc:
            error = "; ".join(exc.problems)
    rows = await run_in_threadpool(c.read, lambda conn: conn.execute(
        sa.select(users.c.name, users.c.printed_name, users.c.role, users.c.disabled, users.c.created_at)
        .order_by(users.c.name)).all())
    return c.render(request, "users.html", status=400 if error else 200, rows=rows, error=error,
                    roles=review.ROLES)
