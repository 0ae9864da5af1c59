#!/usr/bin/env python3
"""The admin dashboard in headless Chromium, driven over the DevTools
protocol with `websockets` (the CDP client, Chromium discovery and venv of
e2e/oauth/browser.py, imported from there):

  1. signs in through the form (a wrong token first), checks the session
     cookie (HttpOnly, SameSite=Strict) and that a reload keeps the session;
  2. opens every page and saves a screenshot of each to --out (<page>.png,
     plus a narrow window and the dark scheme); a page whose endpoint
     answers 404 must be hidden from the navigation, and only such a page;
  3. writes a new ProxyTarget into --manifests and measures, from the write,
     when the API lists it and when the sites page shows it: the page must
     follow the API within a poll (1 s) plus --ui-slack-ms;
  4. sends requests to --site (urllib) and filters the request log by host
     and status in the UI (the filters live in the URL hash);
  5. turns on the live tail and sees one request with a unique path arrive;
  6. with --proxy-user: holds a CONNECT open through the forward proxy,
     sees it on the users page and cuts it with the Disconnect button;
     with --tunnel: disconnects the tunnel's agent from the tunnels page;
     a narrow window and the dark scheme; a rejected Route and a refused
     manifests folder on the overview (both files removed again);
  7. checks CSRF (a cookie POST without the header is refused); rotates
     the admin token in its file (the open page drops to the login form,
     the new token signs in); logs out; signs in with the read-only token
     (403 on actions, no Disconnect buttons) and out;
  8. without cookie or token, calls every operation of
     /api/v1/openapi.json (path parameters filled) and expects 401, except
     those the document marks public (`security: []`).

Prints ONE JSON object on stdout; exit 0 when every check passed, 1 otherwise.
"""

import argparse
import asyncio
import base64
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid
from types import SimpleNamespace
from urllib.parse import urlencode, urlsplit

sys.dont_write_bytecode = True  # no __pycache__ left in e2e/oauth by the import below
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oauth"))
from browser import CDP, Chromium, Failure, Page, ws_connect  # noqa: E402 - the shared CDP client

POLL_MS = 1000  # the dashboard's polling period (app.js POLL_MS)
OPS = ("get", "post", "put", "patch", "delete")


# --- plain HTTP (no browser) ----------------------------------------------------

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


NO_REDIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}), NoRedirect())


def http(url, method="GET", headers=None, body=None, timeout=10, follow=True):
    """(status, headers, body) of one request; *.localhost is dialled on
    loopback with the name in Host, as Chromium does."""
    p = urlsplit(url)
    hdrs = dict(headers or {})
    netloc = p.netloc
    if p.hostname and (p.hostname == "localhost" or p.hostname.endswith(".localhost")):
        hdrs["Host"] = p.netloc
        netloc = f"127.0.0.1:{p.port or (443 if p.scheme == 'https' else 80)}"
    target = f"{p.scheme}://{netloc}{p.path or '/'}" + (f"?{p.query}" if p.query else "")
    data = body.encode() if isinstance(body, str) else body
    req = urllib.request.Request(target, method=method, headers=hdrs, data=data)
    opener = NO_PROXY if follow else NO_REDIRECT
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


class Api:
    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, path, method="GET", token=None):
        auth = {"Authorization": f"Bearer {token or self.token}"}
        return http(self.base + path, method, auth)

    def json(self, path):
        status, _, body = self.call(path)
        if status != 200:
            raise Failure(f"GET {path} answered {status}: {body[:200]!r}")
        return json.loads(body)


def read_token(path):
    with open(path) as f:
        token = f.read().strip()
    if not token:
        raise Failure(f"{path} is empty")
    return token


# --- the page -------------------------------------------------------------------


class Dash:
    """The dashboard tab: waits on DOM conditions, fills and clicks."""

    def __init__(self, page, args):
        self.page = page
        self.args = args
        self.shots = {}

    async def js(self, expr):
        return await self.page.eval(expr)

    async def wait(self, expr, what, timeout=None, every=0.025):
        limit = timeout or self.args.step_timeout
        deadline = time.monotonic() + limit
        while True:
            value = await self.js(expr)
            if value:
                return value
            if time.monotonic() > deadline:
                body = await self.page.text(600)
                raise Failure(f"timed out after {limit}s waiting for {what}; page says: {body!r}")
            await asyncio.sleep(every)

    async def fill(self, selector, text):
        sel = json.dumps(selector)
        ok = await self.js(f"(() => {{ const e = document.querySelector({sel}); if (!e) return false;"
                           f" e.focus(); e.select && e.select(); e.value = ''; return true; }})()")
        if not ok:
            raise Failure(f"no input {selector}")
        if text:
            await self.page.cdp.send("Input.insertText", {"text": text}, self.page.session)

    async def click(self, selector):
        sel = json.dumps(selector)
        if not await self.js(f"(() => {{ const e = document.querySelector({sel}); if (!e) return false;"
                             f" e.click(); return true; }})()"):
            raise Failure(f"nothing matches {selector}")

    async def confirm_click(self, button):
        """A destructive button: the first click arms it, the second acts;
        returns the toast that reports the result."""
        await self.click(button)
        await self.wait(f"document.querySelector({json.dumps(button)})?.dataset.armed === 'true'", "the armed button", 3)
        await self.click(button)
        return await self.wait(
            "(() => { const t = document.getElementById('toast'); return !t.hidden && t.textContent; })()",
            f"the result of {button}")

    async def goto(self, page):
        await self.js(f"location.hash = {json.dumps('#/' + page)}")
        await self.loaded(page)

    async def loaded(self, page):
        await self.wait(f"document.body.dataset.page === {json.dumps(page)} && "
                        f"document.getElementById('page-{page}')?.dataset.loaded === 'true'", f"the {page} page")
        error = await self.js(f"(() => {{ const e = document.getElementById('{page}-error');"
                              f" return e && !e.hidden ? e.textContent : null; }})()")
        if error:
            raise Failure(f"the {page} page shows an error: {error}")

    async def reload(self):
        self.page.loaded.clear()
        await self.page.cdp.send("Page.reload", {}, self.page.session)
        await self.page.wait_load("reload")

    async def screenshot(self, name):
        path = os.path.join(self.args.out, f"{name}.png")
        await self.page.screenshot(path)
        self.shots[name] = path

    async def visible(self, selector):
        sel = json.dumps(selector)
        return await self.js(f"(() => {{ const e = document.querySelector({sel});"
                             f" return !!e && e.getClientRects().length > 0; }})()")

    async def fetch_status(self, path, method="GET", headers=None):
        """A call from the page's own origin, with its cookies."""
        h = json.dumps(headers or {})
        return await self.page.cdp.send("Runtime.evaluate", {
            "expression": f"fetch({json.dumps(path)}, {{method: {json.dumps(method)}, headers: {h},"
                          f" credentials: 'same-origin'}}).then(async r => [r.status, await r.text()])",
            "awaitPromise": True, "returnByValue": True}, self.page.session)

    async def page_fetch(self, path, method="GET", headers=None):
        r = await self.fetch_status(path, method, headers)
        if "exceptionDetails" in r:
            raise Failure(f"fetch {path} failed in the page: {r['exceptionDetails'].get('text')}")
        return r["result"]["value"]


# --- steps ----------------------------------------------------------------------


async def login(d, token, report, key):
    await d.wait("!document.getElementById('page-login').hidden", "the login form")
    await d.fill("#login-token", token)
    await d.click("#login-submit")
    await d.loaded("overview")
    report[key] = await d.js("document.getElementById('role').dataset.role")


async def sign_in(d, args, admin_token, report):
    await d.page.navigate(args.admin.rstrip("/") + "/ui/")
    await d.wait("!document.getElementById('page-login').hidden", "the login form")
    await d.screenshot("login")
    await d.fill("#login-token", "not-the-token")
    await d.click("#login-submit")
    report["wrong_token_message"] = await d.wait(
        "(() => { const e = document.getElementById('login-error'); return !e.hidden && e.textContent; })()",
        "the wrong-token message")
    await login(d, admin_token, report, "role")
    if report["role"] != "admin":
        raise Failure(f"the admin token signed in as {report['role']!r}")
    cookies = await d.page.cdp.send("Network.getCookies", {"urls": [args.admin]}, d.page.session)
    ours = [c for c in cookies.get("cookies", []) if c["name"] == "postern-admin"]
    if not ours:
        raise Failure("no postern-admin cookie after login")
    c = ours[0]
    report["cookie"] = {k: c.get(k) for k in ("name", "path", "httpOnly", "sameSite", "secure")}
    if not (c.get("httpOnly") and c.get("sameSite") == "Strict" and c.get("path") == "/"):
        raise Failure(f"the session cookie has the wrong attributes: {report['cookie']}")
    if "postern-admin" in await d.js("document.cookie"):
        raise Failure("the session cookie is readable from script")
    stored = await d.js("JSON.stringify([Object.keys(localStorage), Object.keys(sessionStorage)])")
    if stored != "[[],[]]":
        raise Failure(f"the dashboard stores something in web storage: {stored}")
    # A reload keeps the session: the csrf comes back from GET /api/v1/session.
    await d.reload()
    await d.loaded("overview")


async def every_page(d, api, report):
    """Visits every page of the navigation; a page is hidden exactly when its endpoint is 404."""
    links = await d.js("[...document.querySelectorAll('#nav a')].map(a => [a.dataset.page, a.hidden])")
    endpoints = {"overview": "/api/v1/overview", "sites": "/api/v1/sites", "users": "/api/v1/users",
                 "tunnels": "/api/v1/tunnels", "certificates": "/api/v1/certificates",
                 "requests": "/api/v1/requests?limit=1", "dataplanes": "/api/v1/dataplanes"}
    pages, hidden = [], []
    for name, is_hidden in links:
        status = api.call(endpoints[name])[0]
        if is_hidden != (status == 404):
            raise Failure(f"nav {name}: hidden={is_hidden} but {endpoints[name]} answers {status}")
        (hidden if is_hidden else pages).append(name)
    report["pages"], report["hidden_pages"] = pages, hidden
    for name in pages:
        await d.goto(name)
        await d.screenshot(name)
    return pages


async def certificates(d, args, report):
    """--expect-expiry HOST=red|amber|ok: the row's highlight."""
    want = dict(pair.split("=", 1) for pair in args.expect_expiry.split(","))
    await d.goto("certificates")
    got = await d.js("Object.fromEntries([...document.querySelectorAll('#certs-table tr[data-test=cert-row]')]"
                     ".map(tr => [tr.cells[0].textContent, [tr.dataset.expiry, getComputedStyle(tr.cells[0])"
                     ".backgroundColor]]))")
    report["certificates"] = got
    for host, expiry in want.items():
        row = next((v for k, v in got.items() if host in k.split(", ")), None)
        if row is None or row[0] != expiry:
            raise Failure(f"certificate {host}: expected {expiry}, the page shows {row}")
    shades = {row[0]: row[1] for row in got.values()}
    if len(set(shades.values())) < len(shades):
        raise Failure(f"different expiries look the same: {shades}")


async def add_site(d, api, args, report):
    """A new ProxyTarget: the time from the write to the API, and to the page."""
    await d.goto("sites")
    tag = uuid.uuid4().hex[:8]
    name, host = f"dash-{tag}", f"dash-{tag}.localhost"
    site_id = f"default/{name}"
    yaml = (f"apiVersion: postern.io/v1alpha1\nkind: ProxyTarget\nmetadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  hostnames: [{host}]\n  backend: {{url: \"{args.backend}\"}}\n  auth: {{type: none}}\n")
    write_manifest(args.manifests, f"{name}.yaml", yaml)
    written = time.monotonic()

    async def api_sees():
        while True:
            items = (await asyncio.to_thread(api.json, "/api/v1/sites")).get("items", [])
            if any(s.get("id") == site_id for s in items):
                return time.monotonic()
            await asyncio.sleep(0.02)

    async def page_shows():
        sel = json.dumps(f'[data-test=site][data-site-id="{site_id}"]')
        while not await d.js(f"!!document.querySelector({sel})"):
            await asyncio.sleep(0.02)
        return time.monotonic()

    limit = args.step_timeout
    try:
        api_at, ui_at = await asyncio.wait_for(asyncio.gather(api_sees(), page_shows()), limit)
    except asyncio.TimeoutError:
        raise Failure(f"{site_id} did not appear in the API and on the sites page within {limit}s of its manifest")
    hosts = await d.js(f"document.querySelector('[data-site-id=\"{site_id}\"] .site-hosts').textContent")
    report["new_site"] = {
        "id": site_id, "host": host,
        "api_ms_after_write": round((api_at - written) * 1000),
        "page_ms_after_write": round((ui_at - written) * 1000),
        "page_ms_after_api": round((ui_at - api_at) * 1000),
        "page_hosts": hosts,
    }
    if host not in hosts:
        raise Failure(f"the site card shows {hosts!r}, not {host}")
    if (ui_at - api_at) * 1000 > POLL_MS + args.ui_slack_ms:
        raise Failure(f"the sites page showed {site_id} {report['new_site']['page_ms_after_api']} ms after the API "
                      f"listed it (bound {POLL_MS} + {args.ui_slack_ms} ms)")
    await d.screenshot("sites")


async def rows(d):
    return await d.js("[...document.querySelectorAll('#requests-rows tr[data-request-id]')].map(tr => ({"
                      "id: tr.dataset.requestId, host: tr.dataset.host, status: tr.dataset.status,"
                      "source: tr.dataset.source, path: tr.querySelector('[data-col=path]').textContent}))")


FILTERS = ("host", "ip", "user", "status", "since")


async def apply_filters(d, values, ok=True):
    """Fills the filter form, applies it, and waits until the table shows
    that query's answer (or, with ok=False, its error)."""
    for key in FILTERS:
        await d.fill(f"#filter-{key}", values.get(key, ""))
    await d.click("#filter-apply")
    query = urlencode([(k, values[k]) for k in FILTERS if values.get(k)] + [("limit", "100")])
    path = json.dumps(f"/api/v1/requests?{query}")
    state = "'true'" if ok else "'error'"
    await d.wait(f"(() => {{ const s = document.getElementById('page-requests').dataset;"
                 f" return s.path === {path} && s.loaded === {state}; }})()", f"the table for {query}")


async def filter_requests(d, api, args, report):
    site = urlsplit(args.site)
    host = site.hostname
    tag = uuid.uuid4().hex[:8]
    ok_paths = [f"/dash-ok-{tag}/{i}" for i in range(3)]
    sent = []
    for path in ok_paths:
        sent.append((path, http(f"{site.scheme}://{site.netloc}{path}")[0]))
    err_paths = []
    if args.error_path:
        err_paths = [f"{args.error_path.rstrip('/')}/dash-err-{tag}/{i}" for i in range(2)]
        for path in err_paths:
            sent.append((path, http(f"{site.scheme}://{site.netloc}{path}")[0]))
    report["sent"] = sent
    if any(s != 200 for p, s in sent if p in ok_paths):
        raise Failure(f"the site did not answer 200: {sent}")
    err_status = {s for p, s in sent if p in err_paths}
    if err_paths and not all(500 <= s < 600 for s in err_status):
        raise Failure(f"--error-path did not answer 5xx: {sent}")

    def logged():
        items = api.json("/api/v1/requests?" + urlencode({"host": host, "limit": 1000}))["items"]
        return {r.get("path") for r in items}

    deadline = time.monotonic() + args.step_timeout
    while not set(ok_paths + err_paths) <= await asyncio.to_thread(logged):
        if time.monotonic() > deadline:
            raise Failure(f"the request log API did not list {ok_paths + err_paths} for {host}")
        await asyncio.sleep(0.1)

    await d.goto("requests")
    checks = {}
    for label, status, want_paths, accept in (
            ("200", "200", ok_paths, lambda s: s == "200"),
            ("5xx", "5xx", err_paths, lambda s: s.startswith("5"))):
        if not want_paths:
            continue
        await apply_filters(d, {"host": host, "status": status})
        hash_now = await d.js("location.hash")
        if f"host={host}" not in hash_now or f"status={status}" not in hash_now:
            raise Failure(f"the filters are not in the URL: {hash_now}")
        paths = json.dumps(want_paths)
        await d.wait(f"(() => {{ const seen = [...document.querySelectorAll('#requests-rows [data-col=path]')]"
                     f".map(e => e.textContent); return {paths}.every(p => seen.includes(p)); }})()",
                     f"rows of {want_paths}")
        got = await rows(d)
        wrong = [r for r in got if r["host"] != host or not accept(r["status"])]
        if wrong:
            raise Failure(f"filter host={host} status={status} shows other rows: {wrong[:3]}")
        newest_first = [r["path"] for r in got if r["path"] in want_paths]
        if newest_first != list(reversed(want_paths)):
            raise Failure(f"rows not newest first: {newest_first}")
        checks[label] = {"rows": len(got), "hash": hash_now}
    await d.screenshot("requests")
    # The URL is the state: a reload shows the same filters.
    await d.reload()
    await d.loaded("requests")
    restored = await d.js("({host: document.getElementById('filter-host').value,"
                          " status: document.getElementById('filter-status').value})")
    last = "5xx" if err_paths else "200"
    if restored != {"host": host, "status": last}:
        raise Failure(f"after a reload the filters are {restored}")
    checks["after_reload"] = restored
    # A bad parameter: the API's 400 is shown, not swallowed.
    await apply_filters(d, {"status": "banana"}, ok=False)
    checks["bad_status_message"] = await d.wait(
        "(() => { const e = document.getElementById('requests-error'); return !e.hidden && e.textContent; })()",
        "the 400 message")
    report["filters"] = checks


async def live_tail(d, args, report):
    host = urlsplit(args.site).hostname
    await apply_filters(d, {"host": host})
    await d.click("#live-toggle")
    await d.wait("document.getElementById('live-state').dataset.state === 'open'", "the live stream to open")
    path = f"/live-{uuid.uuid4().hex}"
    site = urlsplit(args.site)
    sent_at = time.monotonic()
    status = http(f"{site.scheme}://{site.netloc}{path}")[0]
    sel = json.dumps("#requests-rows tr[data-source=live]")
    await d.wait(f"[...document.querySelectorAll({sel})]"
                 f".some(tr => tr.querySelector('[data-col=path]').textContent === {json.dumps(path)})",
                 f"the live row for {path}")
    first = await d.js("document.querySelector('#requests-rows tr[data-request-id] [data-col=path]').textContent")
    report["live"] = {"path": path, "status": status, "ms_after_request": round((time.monotonic() - sent_at) * 1000),
                      "first_row_path": first, "hash": await d.js("location.hash")}
    if first != path:
        raise Failure(f"the live row is not on top (top row {first!r})")
    await d.screenshot("requests-live")
    await d.click("#live-toggle")
    await d.wait("document.getElementById('live-state').dataset.state === 'off'", "live off")


def open_proxy_connection(args):
    """A CONNECT through the forward proxy, as --proxy-user, kept open."""
    p = urlsplit(args.proxy)
    sock = socket.create_connection((p.hostname, p.port), timeout=10)
    cred = base64.b64encode(args.proxy_user.encode()).decode()
    sock.sendall(f"CONNECT {args.proxy_target} HTTP/1.1\r\nHost: {args.proxy_target}\r\n"
                 f"Proxy-Authorization: Basic {cred}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise Failure(f"the proxy closed the CONNECT: {head!r}")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise Failure(f"CONNECT refused: {head.splitlines()[0]!r}")
    sock.sendall(b"ping")
    if sock.recv(16) != b"ping":
        raise Failure("the CONNECT target does not echo")
    return sock


def closed_within(sock, seconds):
    sock.settimeout(seconds)
    try:
        return sock.recv(16) == b""
    except (socket.timeout, TimeoutError):
        return False
    except OSError:
        return True


async def disconnect_user(d, args, report):
    user = args.proxy_user.split(":", 1)[0]
    sock = await asyncio.to_thread(open_proxy_connection, args)
    try:
        await d.goto("users")
        row = f"#users-table tr[data-user={json.dumps(user)}]"
        await d.wait(f"(() => {{ const c = document.querySelector({json.dumps(row + ' [data-test=user-connections]')});"
                     f" return c && Number(c.textContent) >= 1; }})()", f"{user} with a live connection")
        await d.screenshot("users")
        toast = await d.confirm_click(f"{row} [data-test=disconnect-user]")
        cut = await asyncio.to_thread(closed_within, sock, 5)
        report["disconnect"] = {"user": user, "toast": toast, "connection_closed": cut}
        if not cut:
            raise Failure("Disconnect did not close the user's connection")
        if "Cut 1" not in toast:
            raise Failure(f"Disconnect says {toast!r}")
        await d.wait(f"document.querySelector({json.dumps(row + ' [data-test=user-connections]')})?.textContent === '0'",
                     "0 connections after Disconnect")
        await d.click("#toast")
    finally:
        sock.close()


async def disconnect_tunnel(d, args, report):
    """--tunnel NS/NAME has a connected agent: Disconnect closes its session
    (the agent then dials again, with a new session)."""
    await d.goto("tunnels")
    card = f'[data-test=tunnel][data-tunnel-id="{args.tunnel}"]'
    sessions = (f"[...document.querySelectorAll({json.dumps(card + ' [data-test=agent-row]')})]"
                f".map(r => r.cells[0].textContent)")
    before = await d.wait(f"(() => {{ const s = {sessions}; return s.length ? s : null; }})()",
                          f"an agent of {args.tunnel}")
    await d.screenshot("tunnels")
    toast = await d.confirm_click(f"{card} [data-test=disconnect-tunnel]")
    await d.wait(f"!{sessions}.some(s => {json.dumps(before)}.includes(s))", "the old agent session to go")
    report["tunnel_disconnect"] = {"tunnel": args.tunnel, "sessions_before": before, "toast": toast,
                                   "sessions_after": await d.js(sessions)}
    if f"Disconnected {len(before)} agent" not in toast:
        raise Failure(f"tunnel Disconnect says {toast!r}")
    await d.click("#toast")


async def csrf_checks(d, report):
    """Cookie POSTs from the page: without or with a wrong X-CSRF-Token they are refused."""
    path = "/api/v1/users/nobody/disconnect"
    missing = await d.page_fetch(path, "POST")
    wrong = await d.page_fetch(path, "POST", {"X-CSRF-Token": "wrong"})
    session = json.loads((await d.page_fetch("/api/v1/session"))[1])
    right = await d.page_fetch(path, "POST", {"X-CSRF-Token": session.get("csrf") or ""})
    report["csrf"] = {"missing": missing[0], "wrong": wrong[0], "right": right[0], "session_via": session.get("via")}
    if (missing[0], wrong[0], right[0]) != (403, 403, 200):
        raise Failure(f"CSRF checks: without {missing}, wrong {wrong}, right {right}")


async def rotate(d, api, args, report):
    """A new admin token in the file: the open session is refused at its
    next poll (401 → the login form), the old token no longer works, the
    new one signs in. No restart."""
    new_token = f"rotated-{uuid.uuid4().hex}"
    tmp = args.token_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(new_token + "\n")
    rotated = time.monotonic()
    os.rename(tmp, args.token_file)
    await d.wait("!document.getElementById('page-login').hidden", "the login form after the token changed")
    out = {"login_form_ms_after_rotation": round((time.monotonic() - rotated) * 1000)}
    out["old_token_status"] = api.call("/api/v1/overview")[0]
    if out["old_token_status"] != 401:
        raise Failure(f"the old admin token still answers {out['old_token_status']}")
    api.token = new_token
    await login(d, new_token, out, "role")
    report["rotation"] = out


def write_manifest(folder, name, text):
    tmp = os.path.join(folder, f".{name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, os.path.join(folder, name))


async def refusals(d, args, report):
    """The overview shows a rejected object with its reason, then a refused
    folder with its message; both files are removed afterwards."""
    tag = uuid.uuid4().hex[:8]
    orphan, broken = f"orphan-{tag}.yaml", f"broken-{tag}.yaml"
    await d.goto("overview")
    write_manifest(args.manifests, orphan,
                   f"apiVersion: postern.io/v1alpha1\nkind: Route\nmetadata: {{name: orphan-{tag}, namespace: default}}\n"
                   f"spec:\n  targetRef: {{name: missing-{tag}}}\n  match: {{path: {{type: Prefix, value: /x/}}}}\n")
    out = {"rejected": await d.wait(
        f"[...document.querySelectorAll('#rejected-table tr[data-test=rejected-row]')].map(r => r.textContent)"
        f".find(t => t.includes('orphan-{tag}'))", "the rejected Route on the overview")}
    write_manifest(args.manifests, broken, "apiVersion: postern.io/v1alpha1\nkind: Route\nmetadata: {name: r}\n")
    out["refused"] = await d.wait(
        f"(() => {{ const e = document.getElementById('last-refused'); return e && e.textContent.includes('{broken}')"
        f" && e.textContent; }})()", "the refused folder on the overview")
    await d.screenshot("overview-refused")
    os.remove(os.path.join(args.manifests, broken))
    os.remove(os.path.join(args.manifests, orphan))
    await d.wait(f"!document.querySelector('#rejected-table')?.textContent.includes('orphan-{tag}')",
                 "the rejected Route to go once removed")
    report["refusals"] = out


async def logout(d, report, key):
    await d.click("#logout")
    await d.wait("!document.getElementById('page-login').hidden", "the login form after logout")
    after = await d.page_fetch("/api/v1/overview")
    report[key] = {"overview_status": after[0], "hash": await d.js("location.hash")}
    if after[0] != 401:
        raise Failure(f"after logout /api/v1/overview answers {after[0]} from the page")


async def read_only(d, api, args, report):
    token = read_token(args.read_token_file)
    out = {}
    for path in ("/api/v1/users/nobody/disconnect", "/api/v1/tunnels/default/nobody/disconnect"):
        status, _, body = api.call(path, "POST", token=token)
        out[path] = {"status": status, "body": body.decode("utf-8", "replace")[:200]}
        if status != 403:
            raise Failure(f"read token POST {path} answered {status}")
    await login(d, token, out, "role")
    if out["role"] != "read":
        raise Failure(f"the read token signed in as {out['role']!r}")
    out["role_badge"] = await d.js("document.getElementById('role').textContent")
    await d.goto("users")
    out["disconnect_buttons"] = await d.js("document.querySelectorAll('[data-test^=disconnect]').length")
    if out["disconnect_buttons"]:
        raise Failure("the read-only role sees Disconnect buttons")
    session = json.loads((await d.page_fetch("/api/v1/session"))[1])
    post = await d.page_fetch("/api/v1/users/nobody/disconnect", "POST", {"X-CSRF-Token": session.get("csrf") or ""})
    out["cookie_post"] = post[0]
    if post[0] != 403:
        raise Failure(f"a read-only session's POST answered {post[0]}")
    report["read_only"] = out
    await logout(d, report, "read_logout")


async def narrow_and_dark(d, pages, report):
    """A phone-sized window: no page scrolls sideways (tables scroll in their box)."""
    cdp, session = d.page.cdp, d.page.session
    await cdp.send("Emulation.setDeviceMetricsOverride",
                   {"width": 390, "height": 844, "deviceScaleFactor": 1, "mobile": True}, session)
    overflow = {}
    try:
        for name in pages:
            await d.goto(name)
            overflow[name] = await d.js("document.documentElement.scrollWidth - window.innerWidth")
        await d.goto("requests")
        await d.screenshot("requests-narrow")
        await d.goto("overview")
        await d.click("#nav-toggle")
        await d.wait("document.getElementById('nav').getClientRects().length > 0 && "
                     "document.getElementById('nav-sites').getClientRects().length > 0", "the menu")
        await d.screenshot("overview-narrow")
        await d.click("#nav-toggle")
    finally:
        await cdp.send("Emulation.clearDeviceMetricsOverride", {}, session)
    report["narrow_overflow_px"] = overflow
    bad = {k: v for k, v in overflow.items() if v > 0}
    if bad:
        raise Failure(f"pages wider than a 390 px window: {bad}")
    await cdp.send("Emulation.setEmulatedMedia",
                   {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}, session)
    try:
        await d.goto("overview")
        await d.screenshot("overview-dark")
    finally:
        await cdp.send("Emulation.setEmulatedMedia", {"features": []}, session)


def sweep(args):
    """Every documented operation without credentials: 401 unless public."""
    base = args.admin.rstrip("/")
    status, _, body = http(base + "/api/v1/openapi.json")
    if status != 200:
        raise Failure(f"/api/v1/openapi.json answered {status}")
    doc = json.loads(body)
    default = doc.get("security", [])
    fill = {"namespace": "default", "name": "nobody"}
    results, wrong = [], []
    for path, item in doc.get("paths", {}).items():
        for method in OPS:
            op = item.get(method)
            if op is None:
                continue
            public = op.get("security", default) == []
            url = path
            for part in [p[1:-1] for p in path.split("/") if p.startswith("{") and p.endswith("}")]:
                url = url.replace("{" + part + "}", fill.get(part, "x"))
            got, headers, _ = http(base + url, method.upper(), follow=False, timeout=5)
            entry = {"method": method.upper(), "path": url, "status": got, "public": public}
            results.append(entry)
            if public and got == 401:
                wrong.append(entry)
            elif not public:
                challenge = headers.get("www-authenticate", "")
                entry["www_authenticate"] = challenge
                if got != 401 or not challenge.lower().startswith("bearer"):
                    wrong.append(entry)
    protected = [r for r in results if not r["public"]]
    api_paths = [r for r in results if r["path"].startswith("/api/v1/") and r["path"] != "/api/v1/openapi.json"]
    # The contract: everything under /api/v1/ but the document itself needs credentials.
    if any(r["public"] for r in api_paths):
        wrong.extend(r for r in api_paths if r["public"])
    extra = {}
    for path, want in (("/ui/", 200), ("/ui/assets/app.js", 200), ("/ui/assets/app.css", 200), ("/", 302)):
        extra[path] = http(base + path, follow=False)[0]
        if extra[path] != want:
            wrong.append({"path": path, "status": extra[path], "want": want})
    login = http(base + "/ui/login", "POST", {"Content-Type": "application/json"}, json.dumps({"token": "nope"}))[0]
    extra["POST /ui/login (wrong token)"] = login
    if login != 401:
        wrong.append({"path": "/ui/login", "status": login, "want": 401})
    return {"operations": len(results), "protected": len(protected), "results": results, "static": extra,
            "wrong": wrong}


async def scenario(args, report):
    admin_token = read_token(args.token_file)
    api = Api(args.admin, admin_token)
    os.makedirs(args.out, exist_ok=True)
    stale = os.path.join(args.out, "failure.png")
    if os.path.exists(stale):
        os.remove(stale)
    browser = Chromium(SimpleNamespace(chromium=args.chromium, ca=None, insecure=False))
    try:
        ws_url = await browser.start()
        async with ws_connect(ws_url, max_size=None, open_timeout=20) as ws:
            cdp = CDP(ws)
            report["chromium_version"] = (await cdp.send("Browser.getVersion")).get("product")
            target = await cdp.send("Target.createTarget", {"url": "about:blank"})
            attached = await cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
            page = Page(cdp, attached["sessionId"], SimpleNamespace(login=None, step_timeout=args.step_timeout))
            await page.setup()
            d = Dash(page, args)
            report["step"] = "sign in"
            try:
                await sign_in(d, args, admin_token, report)
                report["step"] = "pages"
                pages = await every_page(d, api, report)
                if args.expect_expiry:
                    report["step"] = "certificates"
                    await certificates(d, args, report)
                report["step"] = "new site"
                await add_site(d, api, args, report)
                report["step"] = "request log filters"
                await filter_requests(d, api, args, report)
                report["step"] = "live tail"
                await live_tail(d, args, report)
                if args.proxy_user:
                    report["step"] = "disconnect"
                    await disconnect_user(d, args, report)
                if args.tunnel:
                    report["step"] = "tunnel disconnect"
                    await disconnect_tunnel(d, args, report)
                report["step"] = "narrow window"
                await narrow_and_dark(d, pages, report)
                await d.goto("overview")
                await d.screenshot("overview")
                report["step"] = "refusals"
                await refusals(d, args, report)
                report["step"] = "csrf"
                await csrf_checks(d, report)
                report["step"] = "token rotation"
                await rotate(d, api, args, report)
                report["step"] = "logout"
                await logout(d, report, "logout")
                if args.read_token_file:
                    report["step"] = "read-only"
                    await read_only(d, api, args, report)
            except Failure:
                try:
                    await d.screenshot("failure")
                except Exception:  # noqa: BLE001 - best effort on the way out
                    pass
                raise
            finally:
                report["screenshots"] = d.shots
                try:
                    await cdp.send("Browser.close", timeout=5)
                except Exception:  # noqa: BLE001
                    pass
    finally:
        browser.stop()
    report["step"] = "unauthenticated sweep"
    report["sweep"] = await asyncio.to_thread(sweep, args)
    if report["sweep"]["wrong"]:
        raise Failure(f"unauthenticated calls answered wrongly: {report['sweep']['wrong']}")
    report["step"] = "done"


def main():
    ap = argparse.ArgumentParser(description="The Postern admin dashboard in headless Chromium (DevTools protocol).")
    ap.add_argument("--admin", required=True, help="admin base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--token-file", required=True, help="the admin token (--admin-token-file)")
    ap.add_argument("--read-token-file", help="the read-only token (--admin-read-token-file): role checks")
    ap.add_argument("--manifests", required=True, help="the standalone manifests folder (a site is added there)")
    ap.add_argument("--site", required=True, help="a site on the traffic port, e.g. http://web.localhost:8080/")
    ap.add_argument("--backend", required=True, help="backend URL for the added site")
    ap.add_argument("--error-path", help="a path of --site that answers 5xx (for the status filter)")
    ap.add_argument("--proxy", help="forward proxy URL (http://127.0.0.1:PORT) for the Disconnect check")
    ap.add_argument("--proxy-user", help="USER:PASSWORD of a proxy user (with --proxy)")
    ap.add_argument("--proxy-target", help="HOST:PORT an echo server the user may CONNECT to (with --proxy)")
    ap.add_argument("--tunnel", help="NAMESPACE/NAME of a tunnel with a connected agent, for its Disconnect")
    ap.add_argument("--expect-expiry", help="HOST=red|amber|ok,... : the certificates page's highlight per host")
    ap.add_argument("--out", default="target/dashboard", help="screenshots folder")
    ap.add_argument("--chromium", help="Chromium binary (default $CHROMIUM, /usr/lib/chromium/chromium, chromium)")
    ap.add_argument("--ui-slack-ms", type=int, default=500,
                    help="allowed lag of the sites page behind the API beyond one poll (fetch and render)")
    ap.add_argument("--step-timeout", type=float, default=15.0, help="seconds per wait")
    ap.add_argument("--timeout", type=float, default=150.0, help="overall limit in seconds")
    args = ap.parse_args()
    if args.proxy_user and not (args.proxy and args.proxy_target):
        ap.error("--proxy-user needs --proxy and --proxy-target")

    report = {"ok": False, "admin": args.admin, "error": None}
    started = time.monotonic()
    try:
        asyncio.run(asyncio.wait_for(scenario(args, report), args.timeout))
        report["ok"] = True
    except (Failure, asyncio.TimeoutError, OSError, ValueError) as exc:
        report["error"] = {"type": type(exc).__name__, "message": str(exc) or "timed out"}
    report["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    print(json.dumps(report, indent=2), flush=True)
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
