#!/usr/bin/env python3
"""A browser login in headless Chromium, driven over the DevTools protocol
(CDP) with the `websockets` library.

  1. opens --url (a protected page, e.g. https://site.localhost:PORT/);
  2. lets Chromium follow the login redirects (Postern → GitHub stand-in or
     OIDC provider → Postern) and clicks the consent page's decision=approve
     button (or deny);
  3. checks it lands back on --url with the backend's page (HTTP 200,
     optionally --expect-text) and that a __Host- cookie was set (Secure,
     Path=/, host-only);
  4. visits /_postern/logout, then opens --url again and checks the page is
     protected again (its first answer is a redirect or a 401/403, not the page).

TLS: with --ca, the CA is trusted explicitly: it goes into a throwaway NSS
database ($HOME/.pki/nssdb, HOME pointed at a temporary directory for
Chromium only) with certutil (Debian libnss3-tools), which is where Chromium
on Linux reads extra trust anchors. --ignore-certificate-errors is used only
when --insecure is given instead. Chromium resolves *.localhost to loopback
by itself.

Prints ONE JSON object on stdout; exit 0 when every check passed, 1 otherwise.
--just-load opens --url, screenshots it and stops (a smoke test of Chromium).
"""

import argparse
import asyncio
import base64
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from urllib.parse import urlencode, urlsplit, urlunsplit

try:  # websockets >= 13 (the venv)
    from websockets.asyncio.client import connect as ws_connect
except ImportError:  # Debian bookworm's python3-websockets 10.4
    from websockets import connect as ws_connect


class Failure(Exception):
    pass


def strip_query(url):
    p = urlsplit(url)
    return urlunsplit((p.scheme, p.netloc, p.path, "", ""))


def same_page(a, b):
    pa, pb = urlsplit(a), urlsplit(b)
    return (pa.scheme, pa.netloc, pa.path or "/") == (pb.scheme, pb.netloc, pb.path or "/")


# --- a minimal CDP client -------------------------------------------------------


class CDP:
    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending = {}
        self.listeners = []
        self.reader = asyncio.create_task(self._read())

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if "id" in msg:
                    fut = self.pending.pop(msg["id"], None)
                    if fut and not fut.done():
                        fut.set_result(msg)
                else:
                    for listener in list(self.listeners):
                        listener(msg)
        except Exception:  # noqa: BLE001 - a closed connection fails what is pending
            pass
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(Failure("DevTools connection closed"))

    async def send(self, method, params=None, session=None, timeout=30):
        mid = next(self.ids)
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        fut = asyncio.get_running_loop().create_future()
        self.pending[mid] = fut
        await self.ws.send(json.dumps(msg))
        reply = await asyncio.wait_for(fut, timeout)
        if "error" in reply:
            raise Failure(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})


class Page:
    """One tab: navigation, load waits, the document hops of each navigation."""

    def __init__(self, cdp, session, args):
        self.cdp = cdp
        self.session = session
        self.args = args
        self.loaded = asyncio.Event()
        self.hops = []           # document requests of the main frame, in order
        self.by_request = {}
        self.as_host = None
        self.main_frame = None
        cdp.listeners.append(self._on_event)

    def _on_event(self, msg):
        if msg.get("sessionId") != self.session:
            return
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Page.loadEventFired":
            self.loaded.set()
        elif method == "Network.requestWillBeSent" and p.get("type") == "Document":
            if self.main_frame and p.get("frameId") != self.main_frame:
                return
            prev = self.by_request.get(p["requestId"])
            if prev is not None and p.get("redirectResponse"):
                prev["status"] = p["redirectResponse"]["status"]
                prev["location"] = strip_query(p["request"]["url"])
            hop = {"method": p["request"]["method"], "url": strip_query(p["request"]["url"]), "status": None}
            self.hops.append(hop)
            self.by_request[p["requestId"]] = hop
        elif method == "Network.responseReceived" and p.get("type") == "Document":
            hop = self.by_request.get(p["requestId"])
            if hop is not None:
                hop["status"] = p["response"]["status"]
                headers = {k.lower(): v for k, v in p["response"].get("headers", {}).items()}
                for h in ("content-security-policy", "x-frame-options"):
                    if h in headers:
                        hop[h] = headers[h]
        elif method == "Fetch.requestPaused":
            asyncio.ensure_future(self._continue(p))

    def _login_url(self, url):
        """The IdP authorize URL with the chosen user (--login)."""
        p = urlsplit(url)
        if p.path.endswith("/login/oauth/authorize"):
            extra = {"login": self.args.login}
        elif p.path.endswith("/authorize"):
            if self.as_host is None or self.as_host == p.netloc:
                self.as_host = p.netloc  # the first /authorize is the authorization server's own
                return url
            extra = {"login_hint": self.args.login}
        else:
            return url
        return urlunsplit((p.scheme, p.netloc, p.path, p.query + ("&" if p.query else "") + urlencode(extra), ""))

    async def _continue(self, p):
        params = {"requestId": p["requestId"]}
        new_url = self._login_url(p["request"]["url"])
        if new_url != p["request"]["url"]:
            params["url"] = new_url
        try:
            await self.cdp.send("Fetch.continueRequest", params, self.session)
        except Failure:
            pass

    async def setup(self):
        for domain in ("Page", "Network", "Runtime"):
            await self.cdp.send(domain + ".enable", {}, self.session)
        tree = await self.cdp.send("Page.getFrameTree", {}, self.session)
        self.main_frame = tree["frameTree"]["frame"]["id"]
        if self.args.login:
            await self.cdp.send("Fetch.enable", {"patterns": [
                {"urlPattern": "*", "resourceType": "Document", "requestStage": "Request"}]}, self.session)

    async def eval(self, expression):
        r = await self.cdp.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, self.session)
        if "exceptionDetails" in r:
            raise Failure(f"script failed: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    async def wait_load(self, what):
        try:
            await asyncio.wait_for(self.loaded.wait(), self.args.step_timeout)
        except asyncio.TimeoutError:
            raise Failure(f"timed out after {self.args.step_timeout}s waiting for the page to load ({what})")
        await asyncio.sleep(0.05)

    async def navigate(self, url):
        self.loaded.clear()
        r = await self.cdp.send("Page.navigate", {"url": url}, self.session)
        if r.get("errorText"):
            raise Failure(f"navigation to {strip_query(url)} failed: {r['errorText']}")
        await self.wait_load(strip_query(url))

    async def click(self, selector):
        self.loaded.clear()
        clicked = await self.eval(f"(() => {{ const b = document.querySelector({json.dumps(selector)});"
                                  f" if (!b) return false; b.click(); return true; }})()")
        if not clicked:
            raise Failure(f"nothing matches {selector}")
        await self.wait_load("after clicking " + selector)

    async def location(self):
        return await self.eval("location.href")

    async def text(self, limit=2000):
        return (await self.eval("document.body ? document.body.innerText : ''") or "")[:limit]

    async def screenshot(self, path):
        r = await self.cdp.send("Page.captureScreenshot", {"format": "png"}, self.session, timeout=60)
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))

    async def cookies(self, url):
        r = await self.cdp.send("Network.getCookies", {"urls": [url]}, self.session)
        return [{k: c.get(k) for k in ("name", "domain", "path", "secure", "httpOnly", "sameSite", "session")}
                for c in r.get("cookies", [])]


# --- Chromium -------------------------------------------------------------------


def chromium_binary(arg):
    for cand in (arg, os.environ.get("CHROMIUM"), "/usr/lib/chromium/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and os.access(cand, os.X_OK):
            return cand
    raise Failure("no Chromium found (install Debian's chromium, or pass --chromium)")


class Chromium:
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="postern-chromium-")
        self.proc = None

    def trust_ca(self):
        nssdb = os.path.join(self.tmp, ".pki", "nssdb")
        os.makedirs(nssdb)
        certutil = shutil.which("certutil")
        if certutil is None:
            raise Failure("certutil not found (Debian libnss3-tools): cannot trust --ca; or use --insecure")
        for cmd in ([certutil, "-d", "sql:" + nssdb, "-N", "--empty-password"],
                    [certutil, "-d", "sql:" + nssdb, "-A", "-t", "C,,", "-n", "postern-e2e-ca", "-i", self.args.ca]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise Failure(f"{' '.join(cmd[:2])} failed: {r.stderr.strip()}")

    async def start(self):
        binary = chromium_binary(self.args.chromium)
        if self.args.ca:
            self.trust_ca()
        flags = [
            "--headless=new", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
            "--disable-extensions", "--disable-background-networking", "--disable-sync",
            "--disable-component-update", "--disable-dev-shm-usage", "--password-store=basic",
            "--use-mock-keychain", "--window-size=1280,900", "--remote-debugging-port=0",
            "--user-data-dir=" + os.path.join(self.tmp, "profile"),
        ]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to run as root with its sandbox
        if self.args.insecure:
            flags.append("--ignore-certificate-errors")
        env = dict(os.environ, HOME=self.tmp)
        self.log = open(os.path.join(self.tmp, "chromium.log"), "wb")
        self.proc = subprocess.Popen([binary, *flags, "about:blank"], stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log, env=env, start_new_session=True)
        port_file = os.path.join(self.tmp, "profile", "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise Failure(f"Chromium exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with open(port_file) as f:
                    port, path = f.read().split()[:2]
                break
            except (FileNotFoundError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise Failure("Chromium did not open its DevTools port in 30 s: " + self.log_tail())
            await asyncio.sleep(0.05)
        return f"ws://127.0.0.1:{port}{path}"

    def log_tail(self):
        try:
            with open(os.path.join(self.tmp, "chromium.log"), "rb") as f:
                return f.read()[-1500:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is not None:
            # The process group is the one this script started for Chromium:
            # TERM it, give the browser 5 s, then KILL what is left (helpers too).
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(self.proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    pass
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- the scenario ---------------------------------------------------------------


CONSENT = "button[name=decision][value={v}], input[name=decision][value={v}]"


async def login_flow(page, args, report):
    await page.navigate(args.url)
    for _ in range(args.max_pages):
        here = await page.location()
        if same_page(here, args.url) and not await page.eval(
                f"!!document.querySelector({json.dumps(CONSENT.format(v='approve'))})"):
            break
        if await page.eval(f"!!document.querySelector({json.dumps(CONSENT.format(v=args.decision))})"):
            hop = page.hops[-1] if page.hops else {}
            report["consent"] = {"url": strip_query(here), "decision": args.decision,
                                 "has_csrf_field": await page.eval("!!document.querySelector('input[name=csrf]')"),
                                 "content_security_policy": hop.get("content-security-policy"),
                                 "x_frame_options": hop.get("x-frame-options")}
            await page.click(CONSENT.format(v=args.decision))
            continue
        raise Failure(f"login stopped on {strip_query(here)} (HTTP {page.hops[-1]['status'] if page.hops else '?'}): "
                      f"{(await page.text(300))!r}")
    else:
        raise Failure(f"did not get back to {args.url} within {args.max_pages} pages")
    report["login_hops"] = list(page.hops)
    report["landed_url"] = strip_query(await page.location())
    report["landed_status"] = page.hops[-1]["status"] if page.hops else None
    report["title"] = await page.eval("document.title")
    body = await page.text()
    report["body_excerpt"] = body[:500]
    if args.screenshot:
        await page.screenshot(args.screenshot)
        report["screenshot"] = args.screenshot
    if report["landed_status"] != 200:
        raise Failure(f"the page answered {report['landed_status']} after login")
    if args.expect_text is not None:
        report["expect_text_found"] = args.expect_text in body
        if not report["expect_text_found"]:
            raise Failure(f"{args.expect_text!r} not on the page after login")
    cookies = await page.cookies(args.url)
    report["cookies"] = cookies
    host = urlsplit(args.url).hostname
    host_cookies = [c for c in cookies if c["name"].startswith("__Host-")]
    report["host_cookie"] = host_cookies[0] if host_cookies else None
    if not host_cookies:
        raise Failure("no __Host- cookie after login")
    c = host_cookies[0]
    if not (c["secure"] and c["path"] == "/" and c["domain"] == host):
        raise Failure(f"__Host- cookie has the wrong attributes: {c}")


async def logout_flow(page, args, report):
    parts = urlsplit(args.url)
    logout_url = urlunsplit((parts.scheme, parts.netloc, args.logout_path, "", ""))
    page.hops.clear()
    await page.navigate(logout_url)
    report["logout"] = {"url": logout_url, "hops": list(page.hops),
                        "final_url": strip_query(await page.location()),
                        "body_excerpt": (await page.text(300)),
                        "cookies_after": await page.cookies(args.url)}
    if any(c["name"] == report["host_cookie"]["name"] for c in report["logout"]["cookies_after"]):
        report["logout"]["cookie_still_set"] = True
    page.hops.clear()
    await page.navigate(args.url)
    first = page.hops[0] if page.hops else {}
    status = first.get("status")
    report["protected_again"] = {
        "first_status": status,
        "redirected_to": first.get("location"),
        "final_url": strip_query(await page.location()),
        "hops": list(page.hops),
    }
    if status is None or not (300 <= status < 400 or status in (401, 403)):
        raise Failure(f"after logout {args.url} answered {status}: still signed in?")


async def scenario(args, report):
    browser = Chromium(args)
    try:
        ws_url = await browser.start()
        async with ws_connect(ws_url, max_size=None, open_timeout=20) as ws:
            cdp = CDP(ws)
            version = await cdp.send("Browser.getVersion")
            report["chromium_version"] = version.get("product")
            target = await cdp.send("Target.createTarget", {"url": "about:blank"})
            attached = await cdp.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
            page = Page(cdp, attached["sessionId"], args)
            await page.setup()
            try:
                if args.just_load:
                    await page.navigate(args.url)
                    report["landed_url"] = strip_query(await page.location())
                    report["landed_status"] = page.hops[-1]["status"] if page.hops else None
                    report["title"] = await page.eval("document.title")
                    report["body_excerpt"] = await page.text(500)
                    if args.screenshot:
                        await page.screenshot(args.screenshot)
                        report["screenshot"] = args.screenshot
                    return
                await login_flow(page, args, report)
                if not args.no_logout:
                    await logout_flow(page, args, report)
            except Failure:
                report.setdefault("login_hops", list(page.hops))
                if args.screenshot and "screenshot" not in report:
                    try:
                        await page.screenshot(args.screenshot)
                        report["screenshot"] = args.screenshot
                    except Exception:  # noqa: BLE001 - best effort on the way out
                        pass
                raise
            finally:
                try:
                    await cdp.send("Browser.close", timeout=5)
                except Exception:  # noqa: BLE001
                    pass
    finally:
        if args.chromium_log:
            report["chromium_log_tail"] = browser.log_tail()
        browser.stop()


def main():
    ap = argparse.ArgumentParser(description="Headless Chromium login through Postern (DevTools protocol).")
    ap.add_argument("--url", required=True, help="the protected page, e.g. https://site.localhost:PORT/")
    ap.add_argument("--ca", help="CA file (PEM) Chromium should trust (via a throwaway NSS database)")
    ap.add_argument("--insecure", action="store_true", help="--ignore-certificate-errors instead of --ca")
    ap.add_argument("--login", help="user: GitHub's `login` parameter, or login_hint for an OIDC provider")
    ap.add_argument("--decision", choices=["approve", "deny"], default="approve")
    ap.add_argument("--expect-text", help="text the backend's page must contain after login")
    ap.add_argument("--logout-path", default="/_postern/logout")
    ap.add_argument("--no-logout", action="store_true", help="stop after the login checks")
    ap.add_argument("--screenshot", metavar="FILE", help="PNG of the page after login (or where it failed)")
    ap.add_argument("--just-load", action="store_true", help="only open --url and screenshot it")
    ap.add_argument("--chromium", help="Chromium binary (default $CHROMIUM, /usr/lib/chromium/chromium, chromium)")
    ap.add_argument("--chromium-log", action="store_true", help="add the end of Chromium's log to the report")
    ap.add_argument("--max-pages", type=int, default=10)
    ap.add_argument("--step-timeout", type=float, default=20.0, help="seconds per page load")
    ap.add_argument("--timeout", type=float, default=90.0, help="overall limit in seconds")
    args = ap.parse_args()
    if args.ca and args.insecure:
        ap.error("--ca and --insecure exclude each other")

    report = {"ok": False, "url": args.url, "login": args.login, "error": None}
    started = time.monotonic()

    async def bounded():
        await asyncio.wait_for(scenario(args, report), args.timeout)

    try:
        asyncio.run(bounded())
        report["ok"] = True
    except (Failure, asyncio.TimeoutError, OSError) as exc:
        report["error"] = {"type": type(exc).__name__, "message": str(exc) or "timed out"}
    report["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
