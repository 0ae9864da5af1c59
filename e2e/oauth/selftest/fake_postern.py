#!/usr/bin/env python3
"""A deliberately small fake of Postern's OAuth surface, only to test the test
clients (mcp_client.py, browser.py) without the Rust server. Not a model of
how Postern must work and not used by Postern's own tests.

One HTTPS port, three hosts told apart by Host:
  auth.localhost  RFC 8414 metadata, /register, /authorize (→ GitHub stand-in),
                  /login/callback, /consent (form: csrf + decision), /token
  mcp.localhost   RFC 9728 metadata; /mcp checks the bearer, then proxies to the
                  backend with Host rewritten, Authorization stripped and
                  X-Forwarded-User/-Email/-Groups added
  site.localhost  a page behind a cookie session: /, /_postern/callback,
                  /_postern/logout

Prints `listening on 127.0.0.1:PORT` when ready. Needs the venv (starlette,
uvicorn, httpx2 come with mcp).
"""

import argparse
import asyncio
import base64
import hashlib
import html
import json
import secrets
import socket
import time
from urllib.parse import urlencode, urlsplit

import httpx2
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route


def s256(verifier):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def loopback_match(registered, given):
    r, g = urlsplit(registered), urlsplit(given)
    if r.hostname in ("127.0.0.1", "localhost", "::1") and r.scheme == "http":
        return (r.scheme, r.hostname, r.path) == (g.scheme, g.hostname, g.path)
    return registered == given


class Fake:
    def __init__(self, args):
        self.a = args
        self.port = None
        self.clients = {}
        self.txns = {}       # our state towards GitHub → pending authorization
        self.codes = {}
        self.access = {}     # token → {user, scope, exp}
        self.refresh = {}
        self.sessions = {}   # site cookie → user
        self.site_logins = {}

    def origin(self, host):
        return f"https://{host}.localhost:{self.port}"

    # --- auth.localhost -------------------------------------------------------

    async def as_metadata(self, request):
        iss = self.origin("auth")
        return JSONResponse({
            "issuer": iss,
            "authorization_endpoint": iss + "/authorize",
            "token_endpoint": iss + "/token",
            "registration_endpoint": iss + "/register",
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": ["mcp", "admin"],
            "authorization_response_iss_parameter_supported": True,
        })

    async def register(self, request):
        body = await request.json()
        cid = "c_" + secrets.token_hex(6)
        rec = {
            "client_id": cid,
            "client_id_issued_at": int(time.time()),
            "client_name": body.get("client_name"),
            "redirect_uris": body.get("redirect_uris", []),
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
            "registration_client_uri": self.origin("auth") + "/register/" + cid,
        }
        self.clients[cid] = rec
        return JSONResponse(rec, status_code=201)

    async def authorize(self, request):
        q = request.query_params
        client = self.clients.get(q.get("client_id", ""))
        if client is None:
            return HTMLResponse("unknown client", status_code=400)
        if not any(loopback_match(r, q.get("redirect_uri", "")) for r in client["redirect_uris"]):
            return HTMLResponse("redirect_uri not registered", status_code=400)
        if q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
            return HTMLResponse("PKCE S256 required", status_code=400)
        txn = secrets.token_urlsafe(16)
        verifier = secrets.token_urlsafe(48)
        self.txns[txn] = {"params": dict(q), "verifier": verifier}
        gh = self.a.github_web + "/login/oauth/authorize?" + urlencode({
            "client_id": self.a.github_client_id,
            "redirect_uri": self.origin("auth") + "/login/callback",
            "scope": "read:org user:email",
            "state": txn,
            "code_challenge": s256(verifier),
            "code_challenge_method": "S256",
        })
        return RedirectResponse(gh, status_code=302)

    async def login_callback(self, request):
        txn = self.txns.get(request.query_params.get("state", ""))
        if txn is None or "code" not in request.query_params:
            return HTMLResponse("bad login state", status_code=400)
        async with httpx2.AsyncClient(trust_env=False) as http:
            tok = await http.post(self.a.github_web + "/login/oauth/access_token",
                                  data={"client_id": self.a.github_client_id,
                                        "client_secret": self.a.github_client_secret,
                                        "code": request.query_params["code"],
                                        "code_verifier": txn["verifier"]},
                                  headers={"Accept": "application/json"})
            gh_token = tok.json().get("access_token")
            if not gh_token:
                return HTMLResponse("github token error: " + tok.text, status_code=502)
            hdrs = {"Authorization": "Bearer " + gh_token, "User-Agent": "fake-postern"}
            user = (await http.get(self.a.github_api + "/user", headers=hdrs)).json()
            emails = (await http.get(self.a.github_api + "/user/emails", headers=hdrs)).json()
            orgs = (await http.get(self.a.github_api + "/user/orgs?per_page=100", headers=hdrs)).json()
        txn["user"] = {"login": user["login"],
                       "email": next((e["email"] for e in emails if e["primary"] and e["verified"]), None),
                       "groups": [o["login"] for o in orgs]}
        csrf = secrets.token_urlsafe(16)
        txn["csrf"] = csrf
        tid = request.query_params["state"]
        page = f"""<!DOCTYPE html><html><head><title>Authorize</title></head><body>
<h1>Allow {html.escape(self.clients[txn['params']['client_id']]['client_name'] or 'client')}?</h1>
<p>Signed in as {html.escape(user['login'])}</p>
<form method="post" action="/consent">
<input type="hidden" name="csrf" value="{csrf}">
<input type="hidden" name="txn" value="{tid}">
<button type="submit" name="decision" value="approve">Approve</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form></body></html>"""
        resp = HTMLResponse(page, headers={"Content-Security-Policy": "frame-ancestors 'none'"})
        resp.set_cookie("__Host-consent", csrf, path="/", secure=True, httponly=True, samesite="lax")
        return resp

    async def consent(self, request):
        form = await request.form()
        txn = self.txns.pop(form.get("txn", ""), None)
        if txn is None or form.get("csrf") != txn.get("csrf") or request.cookies.get("__Host-consent") != txn["csrf"]:
            return HTMLResponse("csrf check failed", status_code=403)
        p = txn["params"]
        back = {"state": p.get("state", ""), "iss": self.origin("auth")}
        if form.get("decision") != "approve":
            back.update(error="access_denied", error_description="the user declined")
        else:
            code = secrets.token_urlsafe(16)
            self.codes[code] = {"params": p, "user": txn["user"], "exp": time.time() + 600}
            back["code"] = code
        return RedirectResponse(p["redirect_uri"] + "?" + urlencode(back), status_code=303)

    def _issue(self, user, scope, client_id):
        at, rt = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        self.access[at] = {"user": user, "scope": scope, "exp": time.time() + self.a.token_ttl}
        self.refresh[rt] = {"user": user, "scope": scope, "client_id": client_id}
        return JSONResponse({"access_token": at, "token_type": "Bearer", "expires_in": self.a.token_ttl,
                             "refresh_token": rt, "scope": scope}, headers={"Cache-Control": "no-store"})

    async def token(self, request):
        f = await request.form()
        if f.get("grant_type") == "authorization_code":
            grant = self.codes.pop(f.get("code", ""), None)
            if grant is None or grant["exp"] < time.time():
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            p = grant["params"]
            if f.get("client_id") != p["client_id"] or f.get("redirect_uri") != p["redirect_uri"] \
                    or s256(f.get("code_verifier", "")) != p["code_challenge"]:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            scope = p.get("scope") or "mcp"
            return self._issue(grant["user"], scope, p["client_id"])
        if f.get("grant_type") == "refresh_token":
            rec = self.refresh.pop(f.get("refresh_token", ""), None)
            if rec is None or rec["client_id"] != f.get("client_id"):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return self._issue(rec["user"], rec["scope"], rec["client_id"])
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    # --- mcp.localhost --------------------------------------------------------

    async def prm(self, request):
        return JSONResponse({"resource": self.origin("mcp") + "/mcp",
                             "authorization_servers": [self.origin("auth")],
                             "scopes_supported": ["mcp"], "bearer_methods_supported": ["header"]})

    def _challenge(self, status, extra=""):
        meta = self.origin("mcp") + "/.well-known/oauth-protected-resource/mcp"
        return Response(status_code=status, headers={
            "WWW-Authenticate": f'Bearer {extra}resource_metadata="{meta}"'})

    async def mcp(self, request):
        auth = request.headers.get("authorization", "")
        rec = self.access.get(auth[7:]) if auth.lower().startswith("bearer ") else None
        if rec is None or rec["exp"] < time.time():
            return self._challenge(401, 'error="invalid_token", ' if auth else "")
        body = await request.body()
        if self.a.step_up_scope and self.a.step_up_scope not in rec["scope"].split():
            try:
                method = json.loads(body).get("method")
            except ValueError:
                method = None
            if method == "tools/call":
                return self._challenge(403, f'error="insufficient_scope", scope="mcp {self.a.step_up_scope}", ')
        headers = {k: v for k, v in request.headers.items()
                   if k not in ("host", "authorization", "content-length", "connection", "origin")}
        user = rec["user"]
        headers.update({"x-forwarded-user": user["login"], "x-forwarded-email": user["email"] or "",
                        "x-forwarded-groups": ",".join(user["groups"])})
        client = httpx2.AsyncClient(trust_env=False, timeout=httpx2.Timeout(30.0, read=300.0))
        upstream = await client.send(client.build_request(request.method, self.a.backend + "/mcp",
                                                          headers=headers, content=body), stream=True)

        async def relay():
            try:
                async for chunk in upstream.aiter_raw():
                    yield chunk
            finally:
                await upstream.aclose()
                await client.aclose()

        out = {k: v for k, v in upstream.headers.items()
               if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        return StreamingResponse(relay(), status_code=upstream.status_code, headers=out)

    # --- site.localhost -------------------------------------------------------

    async def site(self, request):
        user = self.sessions.get(request.cookies.get("__Host-postern-session", ""))
        if user is not None:
            return HTMLResponse(f"<html><head><title>Site backend</title></head><body>"
                                f"<h1>Hello from the site backend</h1><p id=user>{html.escape(user['login'])}</p>"
                                f"</body></html>")
        # A browser session: the site is an internal client of the auth server.
        cid = "site-internal"
        self.clients.setdefault(cid, {"client_id": cid, "client_name": "site.localhost",
                                      "redirect_uris": [self.origin("site") + "/_postern/callback"]})
        state, verifier = secrets.token_urlsafe(16), secrets.token_urlsafe(48)
        self.site_logins[state] = {"verifier": verifier, "path": request.url.path}
        url = self.origin("auth") + "/authorize?" + urlencode({
            "client_id": cid, "redirect_uri": self.origin("site") + "/_postern/callback", "state": state,
            "code_challenge": s256(verifier), "code_challenge_method": "S256", "response_type": "code"})
        return RedirectResponse(url, status_code=302)

    async def site_callback(self, request):
        login = self.site_logins.pop(request.query_params.get("state", ""), None)
        grant = self.codes.pop(request.query_params.get("code", ""), None)
        if login is None or grant is None or s256(login["verifier"]) != grant["params"]["code_challenge"]:
            return HTMLResponse("login failed", status_code=400)
        sid = secrets.token_urlsafe(24)
        self.sessions[sid] = grant["user"]
        resp = RedirectResponse(login["path"], status_code=302)
        resp.set_cookie("__Host-postern-session", sid, path="/", secure=True, httponly=True, samesite="lax")
        return resp

    async def site_logout(self, request):
        self.sessions.pop(request.cookies.get("__Host-postern-session", ""), None)
        resp = HTMLResponse("<html><body><h1>Signed out</h1></body></html>")
        resp.delete_cookie("__Host-postern-session", path="/", secure=True, httponly=True)
        return resp

    # --- routing by host ------------------------------------------------------

    def app(self):
        routes = {
            "auth": [("/.well-known/oauth-authorization-server", self.as_metadata, ["GET"]),
                     ("/register", self.register, ["POST"]), ("/authorize", self.authorize, ["GET"]),
                     ("/login/callback", self.login_callback, ["GET"]), ("/consent", self.consent, ["POST"]),
                     ("/token", self.token, ["POST"])],
            "mcp": [("/.well-known/oauth-protected-resource/mcp", self.prm, ["GET"]),
                    ("/mcp", self.mcp, ["GET", "POST", "DELETE"])],
            "site": [("/_postern/callback", self.site_callback, ["GET"]),
                     ("/_postern/logout", self.site_logout, ["GET"]), ("/{path:path}", self.site, ["GET"])],
        }
        apps = {h: Starlette(routes=[Route(p, f, methods=m) for p, f, m in r]) for h, r in routes.items()}

        async def by_host(scope, receive, send):
            if scope["type"] == "http":
                host = dict(scope["headers"]).get(b"host", b"").decode().split(":")[0]
                sub = host.removesuffix(".localhost")
                if sub in apps:
                    await apps[sub](scope, receive, send)
                    return
                await Response("unknown host", status_code=404)(scope, receive, send)
            elif scope["type"] == "lifespan":
                await apps["auth"](scope, receive, send)

        return by_host


async def serve(args):
    fake = Fake(args)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    fake.port = sock.getsockname()[1]
    config = uvicorn.Config(fake.app(), ssl_certfile=args.cert, ssl_keyfile=args.key, log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            return
        await asyncio.sleep(0.02)
    print(f"listening on 127.0.0.1:{fake.port}", flush=True)
    await task


def main():
    ap = argparse.ArgumentParser(description="Fake Postern OAuth surface, for testing the test clients only.")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--github-web", required=True)
    ap.add_argument("--github-api", required=True)
    ap.add_argument("--github-client-id", default="postern-test")
    ap.add_argument("--github-client-secret", default="postern-test-secret")
    ap.add_argument("--backend", required=True, help="MCP backend origin, http://127.0.0.1:PORT")
    ap.add_argument("--token-ttl", type=int, default=3600)
    ap.add_argument("--step-up-scope", help="tools/call needs this scope too (403 insufficient_scope)")
    args = ap.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
