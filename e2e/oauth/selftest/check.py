#!/usr/bin/env python3
"""Self-test of the OAuth test tools in e2e/oauth, without Postern: each tool
is started the way Postern's integration tests start it and checked against
the others, with fake_postern.py standing in for the Rust server.

Run through e2e/oauth/selftest/run (which makes the certificates and the
venv). Prints one line per check and a closing `N passed, N failed`.
"""

import base64
import hashlib
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
import traceback
from urllib.parse import parse_qs, urlsplit

import httpx2

HERE = os.path.dirname(os.path.abspath(__file__))
OAUTH = os.path.dirname(HERE)
PY = sys.executable
PKI = os.environ["SELFTEST_PKI"]
WORK = os.environ["SELFTEST_DIR"]
CONFIG = os.path.join(OAUTH, "github_standin.example.json")

procs = []


def start(name, cmd, lines=1):
    """Starts CMD, waits for its `listening on` line(s), returns them."""
    log = open(os.path.join(WORK, name + ".log"), "wb")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    procs.append(p)
    buf = b""
    deadline = time.monotonic() + 30
    while buf.count(b"\n") < lines:
        ready, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(p.stdout.fileno(), 4096) if ready else b""
        if not chunk and (p.poll() is not None or time.monotonic() > deadline):
            raise RuntimeError(f"{name} did not start in 30 s; see {log.name}")
        buf += chunk
    out = buf.decode().splitlines()[:lines]
    if not out[0].startswith("listening on 127.0.0.1:"):
        raise RuntimeError(f"{name} printed {out[0]!r}")
    return out


def port_of(line):
    return int(line.rsplit(":", 1)[1])


def run_json(cmd, expect_rc):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    try:
        report = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"no JSON on stdout (rc {r.returncode}): {r.stdout[:300]!r} {r.stderr[-800:]!r}")
    assert r.returncode == expect_rc, f"exit {r.returncode}, wanted {expect_rc}: {json.dumps(report)[:1500]}"
    return report


def s256(v):
    return base64.urlsafe_b64encode(hashlib.sha256(v.encode()).digest()).decode().rstrip("=")


# --- checks ---------------------------------------------------------------------


def check_github_standin(gh):
    web, api = f"http://127.0.0.1:{gh}", f"http://127.0.0.1:{gh}/api/v3"
    with httpx2.Client(trust_env=False) as c:
        assert c.get(f"{web}/login/oauth/authorize", params={"client_id": "nope"}).status_code == 404
        verifier = secrets.token_urlsafe(40)
        r = c.get(f"{web}/login/oauth/authorize", params={
            "client_id": "postern-test", "redirect_uri": "https://auth.localhost:1/login/callback",
            "scope": "user:email read:org", "state": "st", "code_challenge": s256(verifier),
            "code_challenge_method": "S256", "login": "alice"})
        assert r.status_code == 302, r.status_code
        q = parse_qs(urlsplit(r.headers["location"]).query)
        assert q["state"] == ["st"], q
        code = q["code"][0]
        form = {"client_id": "postern-test", "client_secret": "postern-test-secret", "code": code}
        bad = c.post(f"{web}/login/oauth/access_token", data={**form, "code_verifier": "x" * 43},
                     headers={"Accept": "application/json"})
        assert bad.status_code == 200 and bad.json()["error"] == "bad_verification_code", bad.text
        # the failed attempt used the code up, as GitHub does: get another one
        r = c.get(f"{web}/login/oauth/authorize", params={
            "client_id": "postern-test", "redirect_uri": "https://auth.localhost:1/cb", "scope": "user:email read:org",
            "code_challenge": s256(verifier), "code_challenge_method": "S256"})
        code = parse_qs(urlsplit(r.headers["location"]).query)["code"][0]
        tok = c.post(f"{web}/login/oauth/access_token", data={**form, "code": code, "code_verifier": verifier})
        assert tok.headers["content-type"].startswith("application/x-www-form-urlencoded"), tok.headers
        fields = parse_qs(tok.text)
        assert fields["token_type"] == ["bearer"] and fields["scope"] == ["read:org,user:email"], tok.text
        token = fields["access_token"][0]
        h = {"Authorization": f"token {token}", "User-Agent": "selftest"}
        assert c.get(f"{api}/user", headers=h).json()["login"] == "alice"
        emails = c.get(f"{api}/user/emails", headers=h).json()
        assert any(e["primary"] and e["verified"] for e in emails), emails
        logins, url, pages = [], f"{api}/user/orgs?per_page=2", 0
        while url:
            r = c.get(url, headers=h)
            pages += 1
            logins += [o["login"] for o in r.json()]
            url = r.links.get("next", {}).get("url")
        assert logins == ["acme", "widgets", "open-source"] and pages == 2, (logins, pages)
        assert c.get(f"{api}/user", headers={"Authorization": "Bearer nope", "User-Agent": "x"}).json()[
            "message"] == "Bad credentials"
        assert c.get(f"{api}/user", headers={**h, "User-Agent": ""}).status_code == 403
        seen = c.get(f"{web}/_standin/log", params={"path": "/login/oauth/authorize"}).json()
        assert seen[-1]["query"]["code_challenge_method"] == "S256"


def check_mcp_server(ms):
    url = f"http://127.0.0.1:{ms}/mcp"
    hdr = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "selftest", "version": "1"}}}
    with httpx2.Client(trust_env=False) as c:
        r = c.post(url, json=init, headers=hdr)
        assert r.status_code == 200 and "mcp-session-id" in r.headers, (r.status_code, r.text)
        assert '"serverInfo"' in r.text
        r = c.post(url, json=init, headers={**hdr, "Host": "mcp.localhost:8443"})
        assert r.status_code == 421, r.status_code
        assert c.get(f"http://127.0.0.1:{ms}/_backend/log").json()[0]["path"] == "/mcp"


def client_cmd(port, *extra):
    return [PY, os.path.join(OAUTH, "mcp_client.py"), "--url", f"https://mcp.localhost:{port}/mcp",
            "--ca", os.path.join(PKI, "ca.crt"), *extra]


def check_mcp_client_refresh(fp):
    r = run_json(client_cmd(fp, "--login", "alice", "--calls", "2", "--wait-expiry", "4", "--force-refresh"), 0)
    n = r["counts"]
    assert n["registrations"] == 1 and n["authorizations"] == 1 and n["code_exchanges"] == 1, n
    assert n["refreshes_ok"] == 2 and r["refreshed_after_wait"] and r["refreshed_after_forced_expiry"], n
    who = r["calls"][0]["result"]
    assert who["user"] == "alice" and who["email"] == "alice@example.com", who
    assert who["groups_list"] == ["acme", "widgets", "open-source"], who
    assert who["authorization_present"] is False and who["host"].startswith("127.0.0.1:"), who
    assert [c["phase"] for c in r["calls"]] == ["initial", "initial", "after_wait", "after_forced_expiry"]
    auth = r["authorizations"][0]
    assert auth["params"]["code_challenge_method"] == "S256" and auth["params"]["resource"].endswith("/mcp")
    assert auth["result"]["iss"] == f"https://auth.localhost:{fp}", auth
    assert auth["consent_page"]["fields"] == ["csrf", "decision", "txn"], auth


def check_mcp_client_legacy_and_port(fp):
    r = run_json(client_cmd(fp, "--protocol", "legacy", "--tool", "echo", "--arguments", '{"text": "hi"}',
                            "--authorize-port", "40001", "--login", "bob"), 0)
    assert r["protocol_version"] == "2025-11-25", r["protocol_version"]
    assert r["calls"][0]["result"] == {"result": "hi"} or r["calls"][0]["text"] == ["hi"], r["calls"]
    assert r["authorizations"][0]["params"]["redirect_uri"] == "http://127.0.0.1:40001/callback"
    assert any(e.get("mcp-session-id") for e in r["http"]), "legacy mode should use Mcp-Session-Id"


def check_mcp_client_step_up(fp2):
    r = run_json(client_cmd(fp2), 0)
    scopes = [a["params"].get("scope") for a in r["authorizations"]]
    assert scopes == ["mcp", "mcp admin"], scopes
    assert r["counts"]["forbidden_403"] == 1 and r["scopes_granted"] == ["mcp", "admin"], r["counts"]


def check_mcp_client_deny(fp):
    r = run_json(client_cmd(fp, "--decision", "deny"), 1)
    assert r["error"]["oauth_error"] == "access_denied", r["error"]
    r = run_json(client_cmd(fp, "--login", "mallory"), 1)  # the stand-in's user who refuses
    assert r["error"]["type"] == "LoginError", r["error"]


def check_browser(fp):
    shot = os.path.join(WORK, "browser.png")
    cmd = [PY, os.path.join(OAUTH, "browser.py"), "--url", f"https://site.localhost:{fp}/",
           "--ca", os.path.join(PKI, "ca.crt"), "--login", "bob", "--expect-text", "Hello from the site backend",
           "--screenshot", shot]
    r = run_json(cmd, 0)
    assert r["host_cookie"]["name"].startswith("__Host-") and r["protected_again"]["first_status"] == 302, r
    assert r["consent"]["has_csrf_field"] and "bob" in r["body_excerpt"], r
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def check_oidc_provider(oidc_lines):
    port = port_of(oidc_lines[0])
    issuer = oidc_lines[1].split(" ", 1)[1]
    assert issuer == f"http://127.0.0.1:{port}", oidc_lines
    with httpx2.Client(trust_env=False) as c:
        disc = c.get(f"{issuer}/.well-known/openid-configuration").json()
        assert disc["issuer"] == issuer and "S256" in disc["code_challenge_methods_supported"], disc
        verifier = secrets.token_urlsafe(40)
        cb = "https://auth.localhost:1/login/callback"
        r = c.get(disc["authorization_endpoint"], params={
            "client_id": "postern-test", "redirect_uri": cb, "response_type": "code", "scope": "openid email",
            "state": "s", "nonce": "n-1", "code_challenge": s256(verifier), "code_challenge_method": "S256",
            "login_hint": "bob"})
        q = parse_qs(urlsplit(r.headers["location"]).query)
        form = {"grant_type": "authorization_code", "code": q["code"][0], "redirect_uri": cb,
                "code_verifier": verifier}
        tok = c.post(disc["token_endpoint"], data=form, auth=("postern-test", "postern-test-secret"))
        assert tok.status_code == 200, tok.text
        idt = tok.json()["id_token"].split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(idt + "=" * (-len(idt) % 4)))
        assert claims["sub"] == "bob" and claims["nonce"] == "n-1" and claims["aud"] == "postern-test", claims
        assert claims["iss"] == issuer and claims["email"] == "bob@example.org", claims
        again = c.post(disc["token_endpoint"], data=form, auth=("postern-test", "postern-test-secret"))
        assert again.status_code == 400, again.text
        r = c.get(disc["authorization_endpoint"], params={
            "client_id": "postern-test", "redirect_uri": cb, "response_type": "code", "state": "s"})
        assert "error=invalid_request" in r.headers["location"], r.headers["location"]


def main():
    results = []
    try:
        gh = port_of(start("github_standin", [PY, os.path.join(OAUTH, "github_standin.py"),
                                              "--config", CONFIG])[0])
        ms = port_of(start("mcp_server", [PY, os.path.join(OAUTH, "mcp_server.py")])[0])
        fake = [PY, os.path.join(HERE, "fake_postern.py"), "--cert", os.path.join(PKI, "postern.crt"),
                "--key", os.path.join(PKI, "postern.key"), "--github-web", f"http://127.0.0.1:{gh}",
                "--github-api", f"http://127.0.0.1:{gh}/api/v3", "--backend", f"http://127.0.0.1:{ms}"]
        fp = port_of(start("fake_postern", fake + ["--token-ttl", "3"])[0])
        fp2 = port_of(start("fake_postern_step_up", fake + ["--step-up-scope", "admin"])[0])
        oidc = start("oidc_provider", [os.environ.get("NODE", "node"), os.path.join(OAUTH, "oidc_provider.mjs"),
                                       "--config", CONFIG, "--log", os.path.join(WORK, "oidc-events.log")], lines=2)
        checks = [
            ("github stand-in: web flow, PKCE, form and JSON answers, pagination, errors",
             lambda: check_github_standin(gh)),
            ("mcp server: initialize over HTTP, 421 for a foreign Host", lambda: check_mcp_server(ms)),
            ("mcp client: register, PKCE login, tools/call, refresh after expiry and forced",
             lambda: check_mcp_client_refresh(fp)),
            ("mcp client: legacy handshake, echo, authorize on another loopback port",
             lambda: check_mcp_client_legacy_and_port(fp)),
            ("mcp client: step-up on 403 insufficient_scope", lambda: check_mcp_client_step_up(fp2)),
            ("mcp client: denied consent and refusing user fail cleanly", lambda: check_mcp_client_deny(fp)),
            ("browser: login, consent, __Host- cookie, logout, protected again", lambda: check_browser(fp)),
            ("oidc provider: discovery, login_hint, PKCE, nonce, single-use code", lambda: check_oidc_provider(oidc)),
        ]
    except Exception:  # noqa: BLE001 - a tool that does not start is a failure too
        checks = []
        results.append(False)
        print(f"FAIL  starting the tools\n{traceback.format_exc()}", flush=True)
    try:
        for name, fn in checks:
            started = time.monotonic()
            try:
                fn()
                results.append(True)
                print(f"ok    {name} ({time.monotonic() - started:.1f}s)", flush=True)
            except Exception:  # noqa: BLE001 - report and go on
                results.append(False)
                print(f"FAIL  {name}\n{traceback.format_exc()}", flush=True)
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    print(f"oauth-selftest: {results.count(True)} passed, {results.count(False)} failed")
    sys.exit(0 if results and all(results) else 1)


if __name__ == "__main__":
    main()
