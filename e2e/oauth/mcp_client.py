#!/usr/bin/env python3
"""A real MCP client (PyPI `mcp` SDK, OAuthClientProvider) that logs in with
no person: discovery from the 401, dynamic registration, PKCE, authorize,
token, tools/call, refresh, step-up.

The SDK hands the authorization URL to a redirect handler. Ours plays the
browser with its own cookie-keeping httpx2 client (not the OAuth-wrapped one,
which would deadlock on the provider's lock): it follows each 302 by hand,
through Postern's /authorize, the identity provider (GitHub stand-in or OIDC
provider) and Postern's consent page, whose form it parses and submits with
decision=approve (or deny), until a redirect reaches the loopback redirect
URI. It never connects there: it takes code, state and iss from that URL and
the callback handler returns them to the SDK.

*.localhost does not resolve in Python here (glibc), so this script maps
localhost and every *.localhost name to 127.0.0.1 itself. TLS is verified
against --ca (no insecure mode).

Prints ONE JSON object on stdout (schema in e2e/README.md, "OAuth test
clients"); exit status 0 when every step succeeded, 1 otherwise, 2 on bad
arguments. Logs go to stderr.
"""

import argparse
import base64
import hashlib
import json
import logging
import socket
import ssl
import sys
import time
import traceback
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import anyio
import httpx2
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

# --- name resolution: *.localhost → 127.0.0.1 (this process only) --------------

_getaddrinfo = socket.getaddrinfo


def _loopback_getaddrinfo(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if name and (name.lower() == "localhost" or name.lower().endswith(".localhost")):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_getaddrinfo


# --- helpers -------------------------------------------------------------------


def jwt_claims(token):
    """The payload of a JWT, unverified (for the report only), or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        pad = "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + pad))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def token_summary(token: OAuthToken, phase):
    return {
        "phase": phase,
        "time": time.time(),
        "token_type": token.token_type,
        "scope": token.scope,
        "expires_in": token.expires_in,
        "has_refresh_token": bool(token.refresh_token),
        "access_token_sha256": hashlib.sha256(token.access_token.encode()).hexdigest()[:16],
        "refresh_token_sha256": hashlib.sha256(token.refresh_token.encode()).hexdigest()[:16]
        if token.refresh_token else None,
        "access_token_claims": jwt_claims(token.access_token),
    }


def strip_query(url):
    p = urlsplit(str(url))
    return urlunsplit((p.scheme, p.netloc, p.path, "", ""))


def leaf_exception(exc):
    """The first leaf of an exception group (anyio task groups wrap errors)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class LoginError(Exception):
    def __init__(self, message, status=None, url=None, oauth_error=None):
        super().__init__(message)
        self.status = status
        self.url = url
        self.oauth_error = oauth_error


class FormParser(HTMLParser):
    """Collects forms: action, method, inputs and submit buttons."""

    def __init__(self):
        super().__init__()
        self.forms = []
        self._button = None

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get").upper(),
                               "fields": [], "buttons": []})
        elif not self.forms:
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("submit", "image"):
                if "name" in a:
                    self.forms[-1]["buttons"].append((a["name"], a.get("value", "")))
            elif kind in ("checkbox", "radio"):
                if "name" in a and "checked" in a:
                    self.forms[-1]["fields"].append((a["name"], a.get("value", "on")))
            elif "name" in a:
                self.forms[-1]["fields"].append((a["name"], a.get("value", "")))
        elif tag == "button":
            if a.get("type", "submit").lower() == "submit" and "name" in a:
                self._button = [a["name"], a.get("value"), ""]

    def handle_data(self, data):
        if self._button is not None:
            self._button[2] += data

    def handle_endtag(self, tag):
        if tag == "button" and self._button is not None and self.forms:
            name, value, text = self._button
            self.forms[-1]["buttons"].append((name, value if value is not None else text.strip()))
            self._button = None


def consent_form(html_text, decision):
    """(method, action, fields) of the consent form with the chosen button, or None."""
    parser = FormParser()
    parser.feed(html_text)
    for form in parser.forms:
        names = {n for n, _ in form["fields"]}
        buttons = [(n, v) for n, v in form["buttons"] if n == "decision"]
        if "csrf" not in names and not buttons:
            continue
        chosen = [(n, v) for n, v in buttons if v == decision]
        if buttons and not chosen:
            raise LoginError(f"consent form has no decision={decision} button (has {[v for _, v in buttons]})")
        return form["method"], form["action"], list(form["fields"]) + chosen
    return None


# --- the headless login --------------------------------------------------------


class HeadlessLogin:
    def __init__(self, args, ssl_ctx, report):
        self.args = args
        self.ssl_ctx = ssl_ctx
        self.report = report
        self.result = None
        self.error = None
        self.redirect_uri = args.redirect_uri
        self.browser = None

    def _is_redirect_uri(self, url):
        got, want = urlsplit(url), urlsplit(self.redirect_uri)
        # Loopback redirect URIs: any port (RFC 8252 §7.3, --authorize-port).
        return (got.scheme, got.hostname, got.path) == (want.scheme, want.hostname, want.path)

    def _with_login(self, url, hop_index):
        """Adds the user choice for the identity provider's authorize step."""
        if not self.args.login:
            return url
        p = urlsplit(url)
        if p.path.endswith("/login/oauth/authorize"):
            extra = {"login": self.args.login}  # GitHub's own parameter
        elif hop_index > 0 and p.path.endswith("/authorize") and "login_hint" not in p.query:
            extra = {"login_hint": self.args.login}  # OIDC; oidc_provider.mjs honours it
        else:
            return url
        query = p.query + ("&" if p.query else "") + urlencode(extra)
        return urlunsplit((p.scheme, p.netloc, p.path, query, p.fragment))

    async def redirect_handler(self, authorization_url):
        record = {
            "authorize_url": strip_query(authorization_url),
            "params": dict(parse_qsl(urlsplit(authorization_url).query, keep_blank_values=True)),
            "hops": [],
            "result": None,
        }
        self.report["authorizations"].append(record)
        self.result, self.error = None, None
        if self.browser is None:
            self.browser = httpx2.AsyncClient(verify=self.ssl_ctx, follow_redirects=False, trust_env=False,
                                              timeout=httpx2.Timeout(30.0),
                                              headers={"User-Agent": "postern-e2e-mcp-client (headless login)"})
        method, url, data = "GET", authorization_url, None
        for hop_index in range(self.args.max_hops):
            if self._is_redirect_uri(url):
                q = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
                record["result"] = {k: q.get(k) for k in ("state", "iss", "error", "error_description")}
                record["result"]["code_received"] = "code" in q
                record["result"]["redirect_uri"] = strip_query(url)
                if "error" in q:
                    self.error = LoginError(f"authorization error {q['error']}: {q.get('error_description', '')}",
                                            url=strip_query(url), oauth_error=q["error"])
                    raise self.error
                self.result = AuthorizationCodeResult(code=q.get("code", ""), state=q.get("state"), iss=q.get("iss"))
                return
            url = self._with_login(url, hop_index)
            if data is None:
                resp = await self.browser.request(method, url)
            else:
                resp = await self.browser.request(method, url, content=urlencode(data).encode(),
                                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
            hop = {"method": method, "url": strip_query(url), "status": resp.status_code}
            record["hops"].append(hop)
            if resp.is_redirect:
                method, url, data = "GET", urljoin(url, resp.headers["location"]), None
                continue
            body = resp.text
            if resp.status_code == 200:
                form = consent_form(body, self.args.decision)
                if form is not None:
                    form_method, action, fields = form
                    hop["consent"] = True
                    record["consent_page"] = {"url": strip_query(url),
                                              "csp": resp.headers.get("content-security-policy"),
                                              "x_frame_options": resp.headers.get("x-frame-options"),
                                              "fields": sorted({n for n, _ in fields})}
                    method, url = form_method, urljoin(url, action or url)
                    if method == "GET":
                        url, data = url.split("?")[0] + "?" + urlencode(fields), None
                    else:
                        data = fields
                    continue
            self.error = LoginError(f"login stopped at HTTP {resp.status_code} from {strip_query(url)}: "
                                    f"{body[:300]!r}", status=resp.status_code, url=strip_query(url))
            raise self.error
        self.error = LoginError(f"login did not reach the redirect URI in {self.args.max_hops} hops")
        raise self.error

    async def callback_handler(self):
        if self.result is None:
            raise self.error or LoginError("no authorization result")
        return self.result

    async def aclose(self):
        if self.browser is not None:
            await self.browser.aclose()


# --- token storage -------------------------------------------------------------


class Storage:
    """In memory, optionally loaded from and saved to --state FILE."""

    def __init__(self, path, report, on_client_info=None):
        self.path = path
        self.report = report
        self.on_client_info = on_client_info
        self.tokens = None
        self.client_info = None
        self.phase = "initial"
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    saved = json.load(f)
                if saved.get("tokens"):
                    self.tokens = OAuthToken.model_validate(saved["tokens"])
                if saved.get("client_info"):
                    self.client_info = OAuthClientInformationFull.model_validate(saved["client_info"])
                report["state_loaded"] = True
            except FileNotFoundError:
                pass

    def _save(self):
        if not self.path:
            return
        with open(self.path, "w", encoding="utf-8") as f:
            json.dump({
                "tokens": self.tokens.model_dump(mode="json") if self.tokens else None,
                "client_info": self.client_info.model_dump(mode="json") if self.client_info else None,
            }, f, indent=2)

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens
        self.report["tokens"].append(token_summary(tokens, self.phase))
        self._save()

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info
        self.report["client"] = {
            "client_id": client_info.client_id,
            "client_secret_issued": client_info.client_secret is not None,
            "token_endpoint_auth_method": client_info.token_endpoint_auth_method,
            "redirect_uris": [str(u) for u in client_info.redirect_uris or []],
            "grant_types": client_info.grant_types,
            "scope": client_info.scope,
        }
        if self.on_client_info:
            self.on_client_info(client_info)
        self._save()


# --- the HTTP trace ------------------------------------------------------------


class Trace:
    """event hooks of the OAuth-wrapped client: every request the SDK sends,
    including the ones its auth flow makes (discovery, register, token)."""

    def __init__(self, report, storage):
        self.report = report
        self.storage = storage
        self.pending = {}

    async def on_request(self, request):
        entry = {"phase": self.storage.phase, "method": request.method, "url": strip_query(request.url),
                 "has_bearer": request.headers.get("authorization", "").lower().startswith("bearer ")}
        for h in ("mcp-protocol-version", "mcp-method", "mcp-name", "mcp-session-id"):
            if h in request.headers:
                entry[h] = request.headers[h]
        ctype = request.headers.get("content-type", "")
        if request.method == "POST" and ctype.startswith("application/x-www-form-urlencoded"):
            try:
                form = dict(parse_qsl(request.content.decode()))
            except (httpx2.RequestNotRead, UnicodeDecodeError):
                form = {}
            if "grant_type" in form:
                entry["grant_type"] = form["grant_type"]
                entry["form_keys"] = sorted(form)
                entry["resource"] = form.get("resource")
                entry["client_auth"] = "basic" if request.headers.get("authorization", "").lower().startswith(
                    "basic ") else ("client_secret_post" if "client_secret" in form else "none")
        elif request.method == "POST" and "/register" in request.url.path:
            entry["registration"] = True
        self.pending[id(request)] = (request, entry)
        self.report["http"].append(entry)

    async def on_response(self, response):
        _, entry = self.pending.pop(id(response.request), (None, None))
        if entry is None:
            return
        entry["status"] = response.status_code
        www = response.headers.get("www-authenticate")
        if www:
            entry["www_authenticate"] = www
        if response.headers.get("mcp-session-id"):
            entry["response_session_id"] = True


# --- main ----------------------------------------------------------------------


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def summarise(report):
    http = report["http"]
    token_requests = [e for e in http if "grant_type" in e]
    refreshes = [e for e in token_requests if e["grant_type"] == "refresh_token"]
    report["counts"] = {
        "http_requests": len(http),
        "registrations": sum(1 for e in http if e.get("registration")),
        "authorizations": len(report["authorizations"]),
        "token_requests": len(token_requests),
        "code_exchanges": sum(1 for e in token_requests if e["grant_type"] == "authorization_code"),
        "refreshes": len(refreshes),
        "refreshes_ok": sum(1 for e in refreshes if e.get("status") == 200),
        "unauthorized_401": sum(1 for e in http if e.get("status") == 401),
        "forbidden_403": sum(1 for e in http if e.get("status") == 403),
    }
    statuses = [e for e in http if e.get("status", 0) >= 400]
    report["last_error_status"] = statuses[-1]["status"] if statuses else None
    for phase in ("after_wait", "after_forced_expiry"):
        if any(c["phase"] == phase for c in report["calls"]):
            report["refreshed_" + phase] = any(e["phase"] == phase and e.get("status") == 200 for e in refreshes)
    granted = [t["scope"] for t in report["tokens"] if t.get("scope")]
    report["scopes_granted"] = granted[-1].split() if granted else []


async def call(client, report, phase, args, storage):
    storage.phase = phase
    entry = {"phase": phase, "tool": args.tool, "arguments": args.arguments}
    report["calls"].append(entry)
    result = await client.call_tool(args.tool, args.arguments)
    entry["is_error"] = bool(result.is_error)
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    entry["text"] = texts
    parsed = None
    if result.structured_content is not None:
        parsed = result.structured_content
    elif len(texts) == 1:
        try:
            parsed = json.loads(texts[0])
        except ValueError:
            parsed = texts[0]
    entry["result"] = parsed
    entry["ok"] = not result.is_error
    return entry["ok"]


async def run(args, report):
    ssl_ctx = ssl.create_default_context(cafile=args.ca) if args.ca else ssl.create_default_context()
    login = HeadlessLogin(args, ssl_ctx, report)
    provider_box = {}

    def on_client_info(info):
        if args.authorize_port is not None and "provider" in provider_box:
            # Registered with one loopback port, authorize with another (RFC 8252 §7.3).
            p = urlsplit(args.redirect_uri)
            moved = urlunsplit((p.scheme, f"{p.hostname}:{args.authorize_port}", p.path, p.query, ""))
            provider_box["provider"].context.client_metadata.redirect_uris = [moved]
            report["authorize_redirect_uri"] = moved

    storage = Storage(args.state, report, on_client_info)
    metadata = OAuthClientMetadata(
        client_name=args.client_name,
        redirect_uris=[args.redirect_uri],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        scope=args.scope,
        token_endpoint_auth_method=args.token_endpoint_auth_method,
    )
    provider = OAuthClientProvider(
        server_url=args.url,
        client_metadata=metadata,
        storage=storage,
        redirect_handler=login.redirect_handler,
        callback_handler=login.callback_handler,
        client_metadata_url=args.client_metadata_url,
    )
    provider_box["provider"] = provider
    trace = Trace(report, storage)
    ok = True
    try:
        async with httpx2.AsyncClient(
            auth=provider, verify=ssl_ctx, trust_env=False,
            timeout=httpx2.Timeout(30.0, read=300.0),
            headers={"User-Agent": "postern-e2e-mcp-client"},
            event_hooks={"request": [trace.on_request], "response": [trace.on_response]},
        ) as http:
            async with Client(streamable_http_client(args.url, http_client=http), mode=args.protocol) as client:
                report["protocol_version"] = client.protocol_version
                report["server_info"] = client.server_info.model_dump(mode="json") if client.server_info else None
                storage.phase = "initial"
                tools = await client.list_tools()
                report["tools"] = [t.name for t in tools.tools]
                for _ in range(args.calls):
                    ok = await call(client, report, "initial", args, storage) and ok
                if args.wait_expiry is not None:
                    storage.phase = "waiting"
                    await anyio.sleep(args.wait_expiry)
                    ok = await call(client, report, "after_wait", args, storage) and ok
                if args.force_refresh:
                    # The SDK refreshes before a request once it believes the token expired.
                    provider.context.token_expiry_time = time.time() - 1
                    ok = await call(client, report, "after_forced_expiry", args, storage) and ok
                storage.phase = "closing"
    finally:
        await login.aclose()
        ctx = provider.context
        report["protected_resource_metadata"] = (
            ctx.protected_resource_metadata.model_dump(mode="json", exclude_none=True)
            if ctx.protected_resource_metadata else None)
        report["authorization_server_metadata"] = (
            ctx.oauth_metadata.model_dump(mode="json", exclude_none=True) if ctx.oauth_metadata else None)
        report["resource"] = ctx.get_resource_url()
    return ok


def main():
    ap = argparse.ArgumentParser(
        description="Headless MCP client with OAuth (mcp SDK). Prints one JSON object; exit 0 on success.")
    ap.add_argument("--url", required=True, help="the MCP endpoint, e.g. https://mcp.localhost:PORT/mcp")
    ap.add_argument("--ca", help="CA file (PEM) to verify TLS with; default: the system's")
    ap.add_argument("--login", help="user to sign in as: GitHub's `login` parameter, or login_hint for OIDC")
    ap.add_argument("--decision", choices=["approve", "deny"], default="approve", help="consent page button")
    ap.add_argument("--tool", default="whoami", help="tool to call (default whoami)")
    ap.add_argument("--arguments", type=json.loads, default={}, help="tool arguments as JSON (default {})")
    ap.add_argument("--calls", type=int, default=1, help="calls right after login (default 1)")
    ap.add_argument("--wait-expiry", type=float, metavar="SECONDS",
                    help="then sleep SECONDS (make it > expires_in) and call once more: the SDK refreshes first")
    ap.add_argument("--force-refresh", action="store_true",
                    help="then mark the access token expired in the SDK and call once more (refresh without waiting)")
    ap.add_argument("--scope", help="initial client scope (the SDK replaces it with the challenged/PRM scopes)")
    ap.add_argument("--redirect-uri", help="loopback redirect URI to register (default http://127.0.0.1:<free>/callback)")
    ap.add_argument("--authorize-port", type=int, help="after registering, authorize with this port instead")
    ap.add_argument("--token-endpoint-auth-method", choices=["none", "client_secret_post", "client_secret_basic"],
                    help="ask for it at registration (default: omitted, as the SDK does)")
    ap.add_argument("--client-name", default="postern-e2e mcp client")
    ap.add_argument("--client-metadata-url", help="https URL for a Client ID Metadata Document (CIMD)")
    ap.add_argument("--protocol", default="auto",
                    help="Client mode: auto (server/discover, then initialize), legacy, or a version like 2026-07-28")
    ap.add_argument("--state", help="JSON file to load and save tokens and client registration (reuse across runs)")
    ap.add_argument("--max-hops", type=int, default=20, help="redirect/consent hops allowed per login")
    ap.add_argument("--timeout", type=float, default=120.0, help="overall limit in seconds")
    ap.add_argument("--verbose", action="store_true", help="SDK debug logs on stderr")
    args = ap.parse_args()
    if not args.redirect_uri:
        args.redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.WARNING)
    if not args.verbose:
        # The SDK logs a traceback for every failed flow; the report has the error.
        logging.getLogger("mcp.client.auth.oauth2").setLevel(logging.CRITICAL)

    report = {
        "ok": False, "url": args.url, "redirect_uri": args.redirect_uri, "login": args.login,
        "client": None, "authorizations": [], "tokens": [], "tools": [], "calls": [], "http": [],
        "error": None,
    }
    started = time.monotonic()

    async def bounded():
        with anyio.fail_after(args.timeout):
            return await run(args, report)

    try:
        report["ok"] = anyio.run(bounded)
    except BaseException as exc:  # noqa: BLE001 - everything goes into the report
        leaf = leaf_exception(exc)
        if isinstance(leaf, KeyboardInterrupt):
            raise
        report["error"] = {
            "type": type(leaf).__name__,
            "message": str(leaf) or repr(leaf),
            "status": getattr(leaf, "status", None),
            "url": getattr(leaf, "url", None),
            "oauth_error": getattr(leaf, "oauth_error", None),
            "login_error": isinstance(leaf, LoginError),
        }
        if args.verbose:
            traceback.print_exception(exc, file=sys.stderr)
    summarise(report)
    if report["error"] and report["error"]["status"] is None and not report["error"]["login_error"]:
        report["error"]["status"] = report["last_error_status"]
    report["elapsed_ms"] = int((time.monotonic() - started) * 1000)
    json.dump(report, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
    sys.stdout.flush()
    sys.exit(0 if report["ok"] and not report["error"] else 1)


if __name__ == "__main__":
    main()
