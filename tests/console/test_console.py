"""The QA console in a real browser, over a real record on SQLite and PostgreSQL.

A reviewer signs in, filters the inbox, opens a violation with the keyboard, plays its clip, signs a
disposition, finds the signature and the audit entry, verifies integrity, exports. Then the server's
defences: sign-in everywhere, roles, CSRF, evidence by id only, the failed sign-in limit, cookie
flags, and no secret in any page, cookie or log line. Screenshots go to test-artifacts/console/.
"""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from monitor.record.db import create_engine
from monitor.record.tables import audit_events, reviews
from support.clips import write_clip
from support.console import ARTIFACTS, CAM_SECRET, DB_SECRET, PASSWORD, csrf_of, shot, sign_in

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reviewer(browser, console):
    """One signed-in browser context for the module (a tablet-sized window)."""
    _, b = browser
    context = b.new_context(viewport={"width": 1180, "height": 860}, accept_downloads=True)
    page = sign_in(context, console.base, "rita")
    yield context, page
    context.close()


def audit_rows(url: str, **where) -> list[dict]:
    engine = create_engine(url)
    with engine.connect() as conn:
        q = sa.select(audit_events).where(*(getattr(audit_events.c, k) == v for k, v in where.items()))
        rows = [dict(r) for r in conn.execute(q.order_by(audit_events.c.seq)).mappings()]
    engine.dispose()
    return rows


def test_review_a_violation_from_inbox_to_export(record, console, reviewer):
    _, page = reviewer
    base, backend = console.base, record.backend
    shot(page, "inbox", backend)
    rows = page.locator("#inbox tbody tr[data-href]")
    assert rows.count() == 6, "this site's six violations (the other site's stays hidden)"
    assert page.locator(".tabs a", has_text="Open").inner_text().endswith("6")

    page.select_option("select[name=camera]", "line-1")
    page.click("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r".*camera=line-1.*"))
    assert rows.count() == 3 and all(c == "line-1" for c in rows.locator("td:nth-child(2)").all_inner_texts())
    assert "(3)" in page.locator("select[name=camera] option[value=line-1]").inner_text(), "counts per filter"
    assert "cleanroom-a" in rows.first.inner_text() and "Arm waving near open product" in rows.first.inner_text()

    page.keyboard.press("j")  # the first row
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("Enter")
    newest = record.ids["line-1"][-1]  # open first, newest first
    page.wait_for_url(f"{base}/violations/{newest}")
    video = page.locator("video#clip")
    assert video.get_attribute("poster") == f"/violations/{newest}/snapshot"
    page.evaluate("() => { const v = document.querySelector('video#clip'); v.muted = true; return v.play(); }")
    page.wait_for_function("() => document.querySelector('video#clip').currentTime > 1", timeout=20_000)
    assert "intact (SHA-256 matches the record)" in page.locator("ul.files").inner_text()
    assert page.locator(".timeline svg polyline").count() == 1, "the confidence timeline"
    assert page.locator(".timeline svg line.threshold").count() == 1, "with the rule's threshold"
    facts = page.locator("section.facts").inner_text()
    assert "SOP-GMP-014" in facts and "cleanroom-a" in facts and "aaaaaaaaaaaa" in facts, "SOP, zone, model version"
    assert "min_confidence: 0.6" in page.locator("pre.rule").inner_text(), "the rule text in force"
    shot(page, "violation", backend)

    page.check("input[name=disposition][value=false_positive]")
    page.fill("textarea[name=reason]", "a shadow on the wall, not an arm")
    page.fill("input[name=password]", PASSWORD)
    page.click("form.sign button[type=submit]")
    page.wait_for_selector(".flash")
    assert "Signed: false positive by Rita Meyer at" in page.locator(".flash").inner_text()
    signature = page.locator("tr.signature").first.inner_text()
    assert "Rita Meyer" in signature and "false positive" in signature and "a shadow on the wall" in signature
    trail = page.locator("table.trail").inner_text()
    assert re.search(r"rita\s+reviewed", trail) and re.search(r"rita\s+viewed", trail)
    shot(page, "signed", backend)

    page.goto(f"{base}/audit?actor=rita")
    assert "reviewed" in page.locator("table.trail").inner_text() and "viewed" in page.locator("table.trail").inner_text()
    shot(page, "audit", backend)

    page.goto(f"{base}/verify")
    page.click("#verify-form button")
    result = page.locator("#verify-result").inner_text()
    assert "2 problems found" in result, result
    assert f"altered: SHA-256 differs (violation {record.altered_id})" in result
    assert f"missing (violation {record.missing_id})" in result
    shot(page, "verify", backend)

    page.goto(f"{base}/?camera=line-1")
    with page.expect_download() as download:
        page.click("text=Export CSV")
    exported = list(csv.DictReader(io.StringIO(download.value.path().read_text(encoding="utf-8-sig"))))
    assert sorted(r["id"] for r in exported) == sorted(record.ids["line-1"])
    signed = next(r for r in exported if r["id"] == newest)
    assert signed["status"] == "reviewed" and "false_positive by Rita Meyer" in signed["dispositions"]
    assert signed["clip_sha256"] and signed["row_hash"], "hashes for the auditor"
    assert any(e["actor"] == "rita" and '"rows": 3' in e["new"] for e in audit_rows(record.url, what="exported"))

    page.goto(f"{base}/report?camera=line-1")
    assert page.locator("article.report-item").count() == 3 and "Rita Meyer" in page.locator("main").inner_text()
    page.emulate_media(media="print")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.pdf(path=str(ARTIFACTS / f"report-{backend}.pdf"))
    page.emulate_media(media="screen")

    page.goto(f"{base}/trends")
    row = page.locator("table.trends tr", has_text="waving-in-cleanroom").inner_text()
    assert "100 %" in row, "one false positive out of one judged"
    shot(page, "trends", backend)


def test_a_tampered_or_missing_evidence_file_is_shown_as_such(record, console, reviewer):
    context, _ = reviewer
    page = context.new_page()
    page.goto(f"{console.base}/violations/{record.altered_id}")
    assert "ALTERED: its SHA-256 differs" in page.locator("ul.files").inner_text()
    assert page.locator("video").count() == 0, "an altered clip is not played as evidence"
    assert context.request.get(f"{console.base}/violations/{record.altered_id}/clip").status == 409
    page.goto(f"{console.base}/violations/{record.missing_id}")
    assert "MISSING" in page.locator("ul.files").inner_text()
    assert context.request.get(f"{console.base}/violations/{record.missing_id}/snapshot").status == 404
    page.close()


def test_cameras_show_the_daemons_state_and_latest_frames(record, console, reviewer):
    context, _ = reviewer
    page = context.new_page()
    page.goto(f"{console.base}/cameras")
    line1, line2 = page.locator("article.camera", has_text="line-1"), page.locator("article.camera", has_text="line-2")
    assert "up" in line1.locator(".badge").inner_text() and "1200" in line1.inner_text()
    assert "down" in line2.locator(".badge").inner_text()
    assert page.evaluate("() => document.querySelector('article.camera img').naturalWidth") == 160, "latest.jpg"
    assert "dock-door" in page.locator("main").inner_text()
    shot(page, "cameras", record.backend)
    page.close()


# -- the server's defences ------------------------------------------------------------------------------

def test_nothing_is_served_without_signing_in(browser, record, console):
    p, _ = browser
    anonymous = p.request.new_context(base_url=console.base, max_redirects=0)
    vid = record.ids["line-1"][0]
    for path in ["/", f"/violations/{vid}", f"/violations/{vid}/clip", f"/violations/{vid}/snapshot", "/audit",
                 "/verify", "/export.csv", "/report", "/cameras", "/cameras/line-1/latest.jpg", "/trends", "/try",
                 "/users"]:
        response = anonymous.get(path, headers={"Accept": "text/html"})
        assert response.status in (303, 401), path
        assert response.status == 401 or response.headers["location"].startswith("/login?next="), path
        response = anonymous.get(path, headers={"Accept": "*/*"})  # a player or a script asking for the file
        assert response.status in (303, 401) and len(response.body()) < 200, path
    assert anonymous.post(f"/violations/{vid}/sign", form={"disposition": "confirmed"}).status == 401
    anonymous.dispose()


def test_a_viewer_cannot_sign_and_forms_need_their_csrf_token(browser, record, console):
    _, b = browser
    context = b.new_context()
    page = sign_in(context, console.base, "vic")
    vid = record.ids["line-1"][0]
    page.goto(f"{console.base}/violations/{vid}")
    assert page.locator("form.sign").count() == 0 and "Viewers cannot sign" in page.locator("main").inner_text()
    refused = context.request.post(f"{console.base}/violations/{vid}/sign", form={
        "csrf": csrf_of(page), "disposition": "confirmed", "reason": "looks right", "password": PASSWORD})
    assert refused.status == 403, "the server refuses, whatever the page shows"
    assert context.request.get(f"{console.base}/users").status == 403, "admins manage users"
    context.close()

    context = b.new_context()
    page = sign_in(context, console.base, "ada")
    page.goto(f"{console.base}/violations/{vid}")
    form = {"disposition": "confirmed", "reason": "gloves off", "password": PASSWORD}
    assert context.request.post(f"{console.base}/violations/{vid}/sign", form=form).status == 403
    assert context.request.post(f"{console.base}/violations/{vid}/sign", form={**form, "csrf": "x" * 43}).status == 403
    assert context.request.post(f"{console.base}/logout", form={}).status == 403
    engine = create_engine(record.url)
    with engine.connect() as conn:
        assert conn.execute(sa.select(reviews).where(reviews.c.violation_id == vid)).first() is None
    engine.dispose()
    ok = context.request.post(f"{console.base}/violations/{vid}/sign", form={**form, "csrf": csrf_of(page)})
    assert ok.ok and "Signed: confirmed by Ada Admin" in ok.text(), "the same form with its token signs"
    context.close()


@pytest.mark.parametrize("path", [
    "/violations/..%2F..%2Fsite.yaml/clip", "/violations/%2Fetc%2Fpasswd/clip", "/violations/../../site.yaml",
    "/violations/%2E%2E/clip", "/violations/{other}/clip", "/violations/{other}", "/violations/{vid}/site.yaml",
    "/violations/{vid}/..%2F..%2F..%2Fsite.yaml", "/static/..%2F..%2Fsite.yaml", "/cameras/..%2Fsite.yaml/latest.jpg",
    "/cameras/line-9/latest.jpg"])
def test_evidence_only_by_the_id_of_a_violation_of_this_site(record, console, reviewer, path):
    context, _ = reviewer
    url = console.base + path.format(other=record.other_site_id, vid=record.ids["line-1"][0])
    response = context.request.get(url, max_redirects=0)
    assert response.status == 404, (path, response.status)
    assert b"site:" not in response.body()


def test_failed_sign_ins_are_limited_per_client_audited_and_lock_the_account(browser, record, console):
    from monitor.record.review import unlock_user

    p, _ = browser

    def attempt(client: str, password: str) -> int:
        api = p.request.new_context(base_url=console.base, extra_http_headers={"X-Forwarded-For": client})
        csrf = re.search(r'name="csrf" value="([^"]+)"', api.get("/login").text()).group(1)
        status = api.post("/login", form={"csrf": csrf, "user": "lena", "password": password}, max_redirects=0).status
        api.dispose()
        return status

    client = "192.0.2.7"  # as a reverse proxy on this host reports it (X-Forwarded-For; TEST-NET, never contacted)
    statuses = [attempt(client, "guess") for _ in range(7)]
    assert statuses == [401] * 5 + [429] * 2, "this computer waits after five failures"
    assert attempt(client, PASSWORD) == 429, "even the right password waits"
    refused = audit_rows(record.url, what="login_refused")
    assert len(refused) == 5 and all(e["actor"] == "lena" for e in refused), "each failure is in the audit trail"
    assert [e for e in audit_rows(record.url, what="login_rate_limited") if client in e["new"]]
    assert audit_rows(record.url, what="user_locked"), "five wrong passwords in a row lock the account (Part 11)"
    assert attempt("192.0.2.8", PASSWORD) == 401, "locked on every computer until an admin unlocks it"
    engine = create_engine(record.url)
    with engine.begin() as conn:
        unlock_user(conn, "lena", "verified by phone", actor="ada")
    engine.dispose()
    assert attempt("192.0.2.8", PASSWORD) == 303, "another computer signs in once the account is unlocked"


def test_session_cookies_are_httponly_samesite_and_secure_behind_https(browser, console, reviewer):
    context, _ = reviewer
    (cookie,) = [c for c in context.cookies() if c["name"] == "har_console"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    p, _ = browser
    behind_tls = p.request.new_context(base_url=console.base, extra_http_headers={"X-Forwarded-Proto": "https"})
    set_cookie = behind_tls.get("/login").headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    assert "Secure" in set_cookie
    behind_tls.dispose()


def test_no_secret_in_pages_cookies_or_logs(record, console, reviewer):
    context, _ = reviewer
    seen = []
    for path in ["/", f"/violations/{record.ids['line-2'][-1]}", "/audit", "/cameras", "/trends", "/verify",
                 "/report", "/try"]:
        seen.append(context.request.get(console.base + path).text())
    seen.append(context.request.get(console.base + "/export.csv").text())
    session_id = next(c["value"] for c in context.cookies() if c["name"] == "har_console")
    cookies = " ".join(f"{c['name']}={c['value']}" for c in context.cookies())
    text = "\n".join(seen)
    for secret in (PASSWORD, CAM_SECRET, DB_SECRET):
        assert secret not in text and secret not in cookies and secret not in console.log_text(), secret
    assert session_id not in text and session_id not in console.log_text()
    assert "event=console_request" in console.log_text(), "the log is there to look in"


def test_try_a_clip_shows_top_actions_over_time_and_keeps_only_what_is_asked(record, console, reviewer, tmp_path):
    import tempfile

    from monitor.demo import synthetic

    if record.backend != "sqlite":
        pytest.skip("the model does not depend on the store: tried on one")
    context, _ = reviewer
    page = context.new_page()
    clip, image = tmp_path / "wave.mp4", tmp_path / "still.png"
    write_clip(clip, "wave", 40, fps=10)  # 4 s
    import cv2

    cv2.imwrite(str(image), synthetic.render_clip("idle", 1, (120, 160), 2)[0])
    page.goto(f"{console.base}/try")
    page.set_input_files("input[name=clip]", str(clip))
    page.select_option("select[name=bundle]", "tiny")
    page.click("#try-form button[type=submit]")
    page.wait_for_selector("#try-result", timeout=180_000)  # the first try loads TensorFlow and the model
    assert page.locator("#try-result svg polyline").count() == 3, "the top 3 actions over time"
    assert page.locator("#try-result .frames img").count() >= 10 and "Kept as" not in page.locator("main").inner_text()
    shot(page, "try", record.backend)
    leftovers = list(Path(tempfile.gettempdir()).glob("har-console-try-*"))
    assert not leftovers and not (record.evidence / "_tried").exists(), "nothing kept unless asked"

    (tmp_path / "notes.mp4").write_text("not a video at all")
    for bad, says in ((tmp_path / "notes.mp4", "cannot be decoded"), (tmp_path / "rules.txt", "files are not accepted")):
        bad.touch()
        page.goto(f"{console.base}/try")
        page.set_input_files("input[name=clip]", str(bad))
        page.click("#try-form button[type=submit]")
        assert says in page.locator("p.error").inner_text()

    page.goto(f"{console.base}/try")
    page.set_input_files("input[name=clip]", str(image))
    page.check("input[name=keep]")
    page.click("#try-form button[type=submit]")
    page.wait_for_selector("#try-result")
    kept = re.search(r"Kept as (\S+)\.", page.locator("#try-result").inner_text()).group(1)
    assert (record.evidence / kept).read_bytes() == image.read_bytes()
    assert any(kept in e["new"] and e["actor"] == "rita" for e in audit_rows(record.url, what="clip_kept"))
    page.close()


def test_an_admin_adds_and_disables_users_with_an_audit_trail(browser, record, console):
    _, b = browser
    admin = b.new_context()
    page = sign_in(admin, console.base, "ada")
    page.goto(f"{console.base}/users")
    add = page.locator("form", has=page.locator("input[name=action][value=add]"))
    add.locator("input[name=name]").fill(f"otto-{record.backend}")
    add.locator("input[name=printed_name]").fill("Otto Operator")
    add.locator("select[name=role]").select_option("reviewer")
    add.locator("input[name=password]").fill(PASSWORD)
    add.locator("button").click()
    assert "User otto" in page.locator(".flash").inner_text()
    otto = b.new_context()
    sign_in(otto, console.base, f"otto-{record.backend}")
    row = page.locator("tr", has_text=f"otto-{record.backend}")
    row.locator("input[name=reason]").fill("left the company")
    row.locator("button").click()
    assert "disabled" in page.locator("tr", has_text=f"otto-{record.backend}").inner_text()
    assert otto.request.get(f"{console.base}/", max_redirects=0).status in (303, 401), "signed out at once"
    actors = {e["what"]: e["actor"] for e in audit_rows(record.url) if f"otto-{record.backend}" in e["new"]}
    assert actors == {"user_added": "ada", "user_disabled": "ada"}
    otto.close()
    admin.close()
