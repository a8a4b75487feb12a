"""The QA console: a web application over the violation record, in a process of its own.

Starlette serves server-rendered pages (Jinja2) and the app's own CSS and JavaScript (no CDN, no
outside font: plant networks are air-gapped). The record is read with monitor.record's tables and
written only through its functions (audit events, signatures, users), so the console follows the
same rules as the `violations` and `users` commands: hash chains, Part 11 signatures, an audit
event for every change, and here also for every page view of a violation, every export and every
sign-in.

Roles, enforced on the server for every request: a viewer reads; a reviewer also signs; an admin
also manages users.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from monitor.console.auth import COOKIE, LoginThrottle, Session, SessionStore, same_token
from monitor.console.evidence import EvidenceFiles
from monitor.console.queries import Scope
from monitor.console.ruletext import RuleTexts
from monitor.console.tryclip import Predictor
from monitor.ops.logs import kv
from monitor.record.db import create_engine, shown_url, write_retrying
from monitor.record.ledger import audit
from monitor.record.tables import users

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
ROLE_RANK = {"viewer": 0, "reviewer": 1, "admin": 2}
SECURITY_HEADERS = {
    # everything from this origin; images also as data: URIs (try-a-clip frames); no inline script or style
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


@dataclass(frozen=True)
class Settings:
    database_url: str
    evidence_dir: Path | None
    scope: Scope
    cameras: list[tuple[str, str, bool]] = field(default_factory=list)  # (id, its zone(s), network camera?)
    metrics_url: str | None = None
    bundles: dict[str, Path] = field(default_factory=dict)
    site_name: str = ""
    idle_seconds: float = 15 * 60
    absolute_seconds: float = 8 * 3600
    lockout_after: int = 5  # wrong passwords in a row that lock an account (site.yaml qa.lockout_after)
    login_limit: int = 5  # failed password checks per client ...
    login_window: float = 15 * 60  # ... within this many seconds
    max_upload_bytes: int = 50 << 20


@dataclass(frozen=True)
class User:
    name: str
    printed_name: str
    role: str

    def may(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


class NotSignedInError(Exception):
    """No live session: a page redirects to the sign-in page, a file or a form gets 401."""


class Console:
    """The application's state: settings, the database, sessions, and the helpers every page uses."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.scope = settings.scope
        self.engine = create_engine(settings.database_url)
        self.sessions = SessionStore(settings.idle_seconds, settings.absolute_seconds)
        self.throttle = LoginThrottle(settings.login_limit, settings.login_window)
        self.evidence = EvidenceFiles(settings.evidence_dir)
        self.rule_texts = RuleTexts()
        self.predictor = Predictor(settings.bundles)
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.globals["site_name"] = settings.site_name or "har-monitor"
        self.templates.env.filters["change"] = shown_change

    # -- who is asking ----------------------------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    async def user(self, request: Request, role: str = "viewer") -> User:
        """The signed-in user, with at least `role`; NotSignedInError or 403 otherwise. Their row is read
        on every request, so a disabled account or a changed role counts at once."""
        session = self.session(request)
        if session is None or session.user is None:
            raise NotSignedInError
        row = await run_in_threadpool(self.user_row, session.user)
        if row is None or row.disabled:
            self.sessions.drop_user(session.user)
            raise NotSignedInError
        user = User(row.name, row.printed_name, row.role if row.role in ROLE_RANK else "viewer")
        request.state.session, request.state.user = session, user
        if not user.may(role):
            raise HTTPException(403, f"This needs the {role} role; {user.name} is a {user.role}.")
        return user

    def user_row(self, name: str) -> sa.Row | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(users).where(users.c.name == name)).first()

    async def form(self, request: Request, session: Session | None = None, **limits: Any) -> FormData:
        """The posted form, refused (403) unless it carries this session's CSRF token."""
        form = await request.form(**limits)
        session = session or getattr(request.state, "session", None)
        if session is None or not same_token(form.get("csrf"), session.csrf):  # type: ignore[arg-type]
            raise HTTPException(403, "This form's security token is missing or out of date: reload the page and try again.")
        return form

    @staticmethod
    def client(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    # -- the record -------------------------------------------------------------------------------
    def read(self, action):
        with self.engine.connect() as conn:
            return action(conn)

    def write(self, action):
        return write_retrying(self.engine, action)

    def audit(self, actor: str, what: str, new: dict, why: str, violation_id: str | None = None) -> None:
        """An audit event of the console's (a view, an export, a sign-in ...), hash-chained like every other."""
        self.write(lambda conn: audit(conn, f"console:{what}:{uuid.uuid4()}", violation_id, actor[:64], what,
                                      {}, new, why))

    # -- pages ------------------------------------------------------------------------------------
    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        session = getattr(request.state, "session", None) or self.session(request)
        flash = session.flash if session else None
        if session:
            session.flash = None
        context.update(request=request, user=getattr(request.state, "user", None), flash=flash,
                       csrf=session.csrf if session else "", path=request.url.path)
        return self.templates.TemplateResponse(request, template, context, status_code=status)

    def set_cookie(self, request: Request, response: Response, session: Session) -> None:
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")


def shown_change(text: str) -> str:
    """An audit event's JSON as a page shows it: a confidence trace is summed up, not listed point by point."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, dict) and isinstance(value.get("trace"), list):
        value["trace"] = f"{len(value['trace'])} points (the timeline above)"
    return json.dumps(value, sort_keys=True)


def _static_path(request: Request) -> bool:
    return request.url.path.startswith("/static/")


class _Headers(BaseHTTPMiddleware):
    """Security headers on every response; pages are not cached (they show who saw what)."""

    async def dispatch(self, request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not _static_path(request):
            response.headers.setdefault("Cache-Control", "no-store")
        user = getattr(request.state, "user", None)
        log.info(kv(event="console_request", method=request.method, path=request.url.path, status=response.status_code,
                    user=user.name if user else "-", seconds=round(time.perf_counter() - started, 4)))
        return response


def _wants_page(request: Request) -> bool:
    return request.method == "GET" and "text/html" in request.headers.get("accept", "")


async def _not_signed_in(request: Request, exc: Exception) -> Response:
    if _wants_page(request):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    return PlainTextResponse("Sign in first.", status_code=401)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    console: Console = request.app.state.console
    if _wants_page(request) or request.method == "POST":
        return console.render(request, "error.html", status=exc.status_code, status_code=exc.status_code,
                              message=exc.detail)
    return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)


def create_app(settings: Settings) -> Starlette:
    from monitor.console import pages

    console = Console(settings)
    routes = [
        Route("/login", pages.login, methods=["GET", "POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/", pages.inbox),
        Route("/violations/{vid}", pages.violation),
        Route("/violations/{vid}/sign", pages.sign, methods=["POST"]),
        Route("/violations/{vid}/{kind:str}", pages.evidence_file),
        Route("/audit", pages.audit_trail),
        Route("/verify", pages.verify, methods=["GET", "POST"]),
        Route("/export.csv", pages.export_csv),
        Route("/report", pages.report),
        Route("/cameras", pages.cameras),
        Route("/cameras/{camera}/latest.jpg", pages.latest_frame),
        Route("/trends", pages.trends),
        Route("/try", pages.try_clip, methods=["GET", "POST"]),
        Route("/users", pages.user_list, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Headers)],
                    exception_handlers={NotSignedInError: _not_signed_in, HTTPException: _http_error})
    app.state.console = console
    log.info(kv(event="console_ready", database=shown_url(settings.database_url),
                evidence=str(settings.evidence_dir or "-"), site=settings.scope.site or "*"))
    return app
