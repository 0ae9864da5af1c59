#!/usr/bin/env python3
"""A local stand-in for GitHub's OAuth web flow and the few REST calls a login needs.

Standard library only. It speaks GitHub's wire protocol with the web base and
the API base apart, the way GitHub Enterprise Server is configured:

    webUrl = http://127.0.0.1:PORT          GET  /login/oauth/authorize
                                            POST /login/oauth/access_token
    apiUrl = http://127.0.0.1:PORT/api/v3   GET  /user, /user/emails, /user/orgs

Test hooks (not GitHub's): GET /_standin/log (requests seen, JSON; ?path=
filters), DELETE /_standin/log, POST /_standin/default-user {"login": ...}.

Config (--config FILE, JSON):

    {
      "default_user": "alice",
      "users": [
        {"login": "alice", "id": 1001, "name": "Alice",
         "emails": [{"email": "alice@example.com", "primary": true,
                     "verified": true, "visibility": "public"}],
         "orgs": ["acme", {"login": "open-org", "public": true}],
         "deny": false}
      ],
      "clients": {"client-id": "client-secret",
                  "strict-client": {"secret": "s", "callback_url": "https://auth.localhost:8443/login/callback"}},
      "require_pkce": false,
      "require_user_agent": true,
      "code_ttl": 600
    }

An email may be a bare string (the first is then primary and verified). An org
given as a string is a private membership: /user/orgs lists it only for a
token with read:org (or write:org, admin:org, user). A user with "deny": true
refuses the authorization (error=access_denied), like clicking Cancel.

Prints exactly one line, `listening on 127.0.0.1:PORT`, on stdout once ready.
"""

import argparse
import base64
import hashlib
import html
import json
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

API_PREFIX = "/api/v3"
DOCS = "https://docs.github.com"
TOKEN_ERRORS_URI = "/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/"
AUTHORIZE_ERRORS_URI = "/apps/managing-oauth-apps/troubleshooting-authorization-request-errors/"
# Scopes that include others (GitHub's scope hierarchy, the parts a login uses).
IMPLIED_SCOPES = {
    "user": {"read:user", "user:email", "user:follow"},
    "admin:org": {"write:org", "read:org"},
    "write:org": {"read:org"},
}


def split_scopes(value):
    """GitHub accepts scopes separated by spaces or commas."""
    return [s for s in value.replace(",", " ").split() if s]


def effective_scopes(scopes):
    out = set(scopes)
    for s in scopes:
        out |= IMPLIED_SCOPES.get(s, set())
    return out


def s256(verifier):
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


def redirect_uri_allowed(callback_url, redirect_uri):
    """GitHub's rule: same scheme, host and port as the registered callback
    URL, and a path at or below the callback's path."""
    cb, ru = urlsplit(callback_url), urlsplit(redirect_uri)
    if (cb.scheme, cb.hostname, cb.port) != (ru.scheme, ru.hostname, ru.port):
        return False
    base = cb.path.rstrip("/")
    return ru.path == cb.path or ru.path == base or ru.path.startswith(base + "/")


class State:
    def __init__(self, config):
        self.lock = threading.Lock()
        self.users = {}
        for u in config.get("users", []):
            self.users[u["login"]] = self._normalise_user(u)
        if not self.users:
            raise SystemExit("config has no users")
        self.default_user = config.get("default_user") or next(iter(self.users))
        if self.default_user not in self.users:
            raise SystemExit(f"default_user {self.default_user!r} is not a configured user")
        self.clients = {}
        for cid, value in config.get("clients", {}).items():
            if isinstance(value, str):
                value = {"secret": value}
            self.clients[cid] = {"secret": value.get("secret"), "callback_url": value.get("callback_url")}
        self.require_pkce = bool(config.get("require_pkce", False))
        self.require_user_agent = bool(config.get("require_user_agent", True))
        self.code_ttl = float(config.get("code_ttl", 600))
        self.codes = {}
        self.tokens = {}
        self.log = []

    @staticmethod
    def _normalise_user(u):
        emails = []
        for i, e in enumerate(u.get("emails", [])):
            if isinstance(e, str):
                e = {"email": e, "primary": i == 0, "verified": True, "visibility": "private" if i else "public"}
            emails.append({
                "email": e["email"],
                "primary": bool(e.get("primary", False)),
                "verified": bool(e.get("verified", True)),
                "visibility": e.get("visibility"),
            })
        orgs = []
        for o in u.get("orgs", []):
            if isinstance(o, str):
                o = {"login": o}
            orgs.append({
                "login": o["login"],
                "id": int(o.get("id", 1 + int(hashlib.sha256(o["login"].encode()).hexdigest()[:6], 16))),
                "description": o.get("description"),
                "public": bool(o.get("public", False)),
            })
        return {
            "login": u["login"],
            "id": int(u.get("id", 1 + int(hashlib.sha256(u["login"].encode()).hexdigest()[:6], 16))),
            "name": u.get("name"),
            "emails": emails,
            "orgs": orgs,
            "deny": bool(u.get("deny", False)),
        }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def version_string(self):
        return "GitHub.com-standin"

    # --- plumbing ---------------------------------------------------------------

    @property
    def st(self):
        return self.server.state

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("github-standin: " + (fmt % args) + "\n")

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _parse_body(self, raw):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not raw:
            return {}
        if ctype == "application/json":
            try:
                data = json.loads(raw)
            except ValueError:
                return {}
            return {k: str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))

    def _record(self, path, query, body):
        entry = {
            "time": time.time(),
            "method": self.command,
            "path": path,
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }
        with self.st.lock:
            self.st.log.append(entry)

    def _send(self, status, body, ctype, headers=None):
        data = body if isinstance(body, bytes) else body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self, status, obj, headers=None):
        self._send(status, json.dumps(obj, indent=2) + "\n", "application/json; charset=utf-8", headers)

    def _error_page(self, status, message):
        page = (
            "<!DOCTYPE html><html><head><title>GitHub stand-in: error</title></head>"
            f"<body><h1>{status}</h1><p>{html.escape(message)}</p></body></html>"
        )
        self._send(status, page, "text/html; charset=utf-8")

    def _redirect(self, location):
        self._send(302, f'<html><body>You are being <a href="{html.escape(location)}">redirected</a>.</body></html>',
                   "text/html; charset=utf-8", {"Location": location})

    def _dispatch(self):
        parts = urlsplit(self.path)
        path = parts.path
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        raw = self._read_body() if self.command in ("POST", "PUT", "PATCH", "DELETE") else b""
        body = self._parse_body(raw)
        if not path.startswith("/_standin/"):
            self._record(path, query, body)
        routes = {
            ("GET", "/login/oauth/authorize"): self.authorize,
            ("POST", "/login/oauth/authorize"): self.authorize,
            ("POST", "/login/oauth/access_token"): self.access_token,
            ("GET", API_PREFIX + "/user"): self.api_user,
            ("GET", API_PREFIX + "/user/emails"): self.api_emails,
            ("GET", API_PREFIX + "/user/orgs"): self.api_orgs,
            ("GET", "/_standin/log"): self.standin_log,
            ("DELETE", "/_standin/log"): self.standin_clear_log,
            ("POST", "/_standin/default-user"): self.standin_default_user,
        }
        handler = routes.get((self.command, path.rstrip("/") or "/"))
        if handler is None:
            if path.startswith(API_PREFIX + "/"):
                self._json(404, {"message": "Not Found", "documentation_url": DOCS + "/rest", "status": "404"})
            else:
                self._error_page(404, "Not Found")
            return
        handler(query, body)

    do_GET = do_POST = do_DELETE = do_HEAD = _dispatch

    # --- web flow ---------------------------------------------------------------

    def authorize(self, query, body):
        params = {**query, **body}
        client_id = params.get("client_id", "")
        client = self.st.clients.get(client_id)
        if client is None:
            # GitHub shows a 404 page for an unknown client and never redirects.
            self._error_page(404, f"No OAuth application with client_id {client_id!r}.")
            return
        redirect_uri = params.get("redirect_uri") or client["callback_url"]
        if not redirect_uri:
            self._error_page(400, "redirect_uri is required: the application has no callback URL registered.")
            return
        state = params.get("state")
        if client["callback_url"] and not redirect_uri_allowed(client["callback_url"], redirect_uri):
            # GitHub sends the user to the registered callback URL with the error.
            self._redirect_error(client["callback_url"], "redirect_uri_mismatch",
                                 "The redirect_uri MUST match the registered callback URL for this application.",
                                 AUTHORIZE_ERRORS_URI + "#redirect-uri-mismatch", state)
            return
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        if challenge is not None or method is not None:
            if method != "S256" or not challenge:
                self._error_page(400, "PKCE: only code_challenge_method=S256 with a code_challenge is accepted.")
                return
        elif self.st.require_pkce:
            self._error_page(400, "PKCE is required: send code_challenge and code_challenge_method=S256.")
            return
        login = params.get("login") or self.st.default_user
        user = self.st.users.get(login)
        if user is None:
            self._error_page(404, f"No user {login!r} in the stand-in's configuration.")
            return
        if user["deny"]:
            self._redirect_error(redirect_uri, "access_denied", "The user has denied your application access.",
                                 AUTHORIZE_ERRORS_URI + "#access-denied", state)
            return
        code = secrets.token_hex(10)
        with self.st.lock:
            self.st.codes[code] = {
                "client_id": client_id,
                "redirect_uri": redirect_uri,
                "scopes": split_scopes(params.get("scope", "")),
                "login": login,
                "challenge": challenge,
                "expires": time.time() + self.st.code_ttl,
            }
        back = {"code": code}
        if state is not None:
            back["state"] = state
        self._redirect(self._append_query(redirect_uri, back))

    @staticmethod
    def _append_query(url, params):
        sep = "&" if urlsplit(url).query else "?"
        return url + sep + urlencode(params)

    def _redirect_error(self, redirect_uri, error, description, error_uri, state):
        params = {"error": error, "error_description": description, "error_uri": DOCS + error_uri}
        if state is not None:
            params["state"] = state
        self._redirect(self._append_query(redirect_uri, params))

    def _token_answer(self, fields):
        accept = (self.headers.get("Accept") or "").lower()
        if "application/json" in accept:
            self._json(200, fields)
        else:
            self._send(200, urlencode(fields), "application/x-www-form-urlencoded; charset=utf-8")

    def _token_error(self, error, description, anchor):
        # GitHub answers token errors with HTTP 200 and an `error` field.
        self._token_answer({"error": error, "error_description": description,
                            "error_uri": DOCS + TOKEN_ERRORS_URI + anchor})

    def access_token(self, query, body):
        params = {**query, **body}
        client_id, client_secret = params.get("client_id"), params.get("client_secret")
        auth = self.headers.get("Authorization") or ""
        if auth.lower().startswith("basic "):
            try:
                basic_id, _, basic_secret = base64.b64decode(auth[6:].strip()).decode().partition(":")
                client_id, client_secret = client_id or basic_id, client_secret or basic_secret
            except ValueError:
                pass
        client = self.st.clients.get(client_id or "")
        if client is None or not client_secret or not secrets.compare_digest(client_secret, client["secret"] or ""):
            self._token_error("incorrect_client_credentials",
                              "The client_id and/or client_secret passed are incorrect.",
                              "#incorrect-client-credentials")
            return
        with self.st.lock:
            grant = self.st.codes.pop(params.get("code", ""), None)  # single use, even when it fails below
        bad_code = ("bad_verification_code", "The code passed is incorrect or expired.", "#bad-verification-code")
        if grant is None or grant["client_id"] != client_id or grant["expires"] < time.time():
            self._token_error(*bad_code)
            return
        if params.get("redirect_uri") and params["redirect_uri"] != grant["redirect_uri"]:
            self._token_error("redirect_uri_mismatch",
                              "The redirect_uri MUST match the registered callback URL for this application.",
                              "#redirect-uri-mismatch2")
            return
        verifier = params.get("code_verifier")
        if grant["challenge"] is not None and (not verifier or s256(verifier) != grant["challenge"]):
            self._token_error(*bad_code)
            return
        token = "gho_" + secrets.token_urlsafe(27).replace("-", "A").replace("_", "B")[:36]
        with self.st.lock:
            self.st.tokens[token] = {"login": grant["login"], "scopes": grant["scopes"], "client_id": client_id}
        self._token_answer({"access_token": token, "token_type": "bearer", "scope": ",".join(sorted(grant["scopes"]))})

    # --- REST API ---------------------------------------------------------------

    def _api_auth(self):
        """The token's record, or None after answering the error."""
        if self.st.require_user_agent and not self.headers.get("User-Agent"):
            self._send(403, "Request forbidden by administrative rules. Please make sure your request has a "
                            "User-Agent header (" + DOCS + "/rest/overview/resources-in-the-rest-api#user-agent-required)."
                            " Check https://developer.github.com for other possible causes.\n",
                       "text/plain; charset=utf-8")
            return None
        auth = self.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if not auth:
            self._json(401, {"message": "Requires authentication", "documentation_url": DOCS + "/rest", "status": "401"})
            return None
        record = self.st.tokens.get(token.strip()) if scheme.lower() in ("bearer", "token") else None
        if record is None:
            self._json(401, {"message": "Bad credentials", "documentation_url": DOCS + "/rest", "status": "401"})
            return None
        return record

    def _scope_headers(self, record, accepted):
        return {
            "X-OAuth-Scopes": ", ".join(sorted(record["scopes"])),
            "X-Accepted-OAuth-Scopes": accepted,
            "X-GitHub-Media-Type": "github.v3; format=json",
        }

    def _base(self):
        return "http://" + (self.headers.get("Host") or "127.0.0.1:%d" % self.server.server_address[1])

    def api_user(self, query, body):
        record = self._api_auth()
        if record is None:
            return
        u = self.st.users[record["login"]]
        public_email = next((e["email"] for e in u["emails"] if e["visibility"] == "public"), None)
        api = self._base() + API_PREFIX
        self._json(200, {
            "login": u["login"],
            "id": u["id"],
            "node_id": base64.b64encode(f"04:User{u['id']}".encode()).decode(),
            "avatar_url": f"{self._base()}/avatars/u/{u['id']}",
            "gravatar_id": "",
            "url": f"{api}/users/{u['login']}",
            "html_url": f"{self._base()}/{u['login']}",
            "type": "User",
            "site_admin": False,
            "name": u["name"],
            "company": None,
            "blog": "",
            "location": None,
            "email": public_email,
            "hireable": None,
            "bio": None,
            "public_repos": 0,
            "followers": 0,
            "following": 0,
            "created_at": "2020-01-01T00:00:00Z",
            "updated_at": "2020-01-01T00:00:00Z",
        }, self._scope_headers(record, ""))

    def api_emails(self, query, body):
        record = self._api_auth()
        if record is None:
            return
        if "user:email" not in effective_scopes(record["scopes"]):
            # What GitHub answers a token without user:email (or user).
            self._json(404, {"message": "Not Found", "documentation_url": DOCS + "/rest/users/emails", "status": "404"},
                       self._scope_headers(record, "user, user:email"))
            return
        emails = self.st.users[record["login"]]["emails"]
        self._json(200, emails, self._scope_headers(record, "user, user:email"))

    def api_orgs(self, query, body):
        record = self._api_auth()
        if record is None:
            return
        u = self.st.users[record["login"]]
        private_ok = "read:org" in effective_scopes(record["scopes"]) or "user" in record["scopes"]
        orgs = [o for o in u["orgs"] if private_ok or o["public"]]
        try:
            per_page = max(1, min(100, int(query.get("per_page", "30"))))
            page = max(1, int(query.get("page", "1")))
        except ValueError:
            self._json(422, {"message": "Invalid request.", "documentation_url": DOCS + "/rest", "status": "422"})
            return
        last = max(1, -(-len(orgs) // per_page))
        chunk = orgs[(page - 1) * per_page: page * per_page]
        api = self._base() + API_PREFIX
        out = [{
            "login": o["login"],
            "id": o["id"],
            "node_id": base64.b64encode(f"04:Organization{o['id']}".encode()).decode(),
            "url": f"{api}/orgs/{o['login']}",
            "repos_url": f"{api}/orgs/{o['login']}/repos",
            "events_url": f"{api}/orgs/{o['login']}/events",
            "hooks_url": f"{api}/orgs/{o['login']}/hooks",
            "issues_url": f"{api}/orgs/{o['login']}/issues",
            "members_url": f"{api}/orgs/{o['login']}/members{{/member}}",
            "public_members_url": f"{api}/orgs/{o['login']}/public_members{{/member}}",
            "avatar_url": f"{self._base()}/avatars/o/{o['id']}",
            "description": o["description"],
        } for o in chunk]
        headers = self._scope_headers(record, "admin:org, read:org, user, write:org")
        links = []

        def link(p, rel):
            q = {**query, "per_page": str(per_page), "page": str(p)}
            links.append(f'<{api}/user/orgs?{urlencode(q)}>; rel="{rel}"')

        if page > 1:
            link(page - 1, "prev")
        if page < last:
            link(page + 1, "next")
            link(last, "last")
        if page > 1:
            link(1, "first")
        if links:
            headers["Link"] = ", ".join(links)
        self._json(200, out, headers)

    # --- test hooks -------------------------------------------------------------

    def standin_log(self, query, body):
        with self.st.lock:
            entries = list(self.st.log)
        if "path" in query:
            entries = [e for e in entries if e["path"] == query["path"]]
        self._json(200, entries)

    def standin_clear_log(self, query, body):
        with self.st.lock:
            self.st.log.clear()
        self._send(204, b"", "text/plain")

    def standin_default_user(self, query, body):
        login = body.get("login") or query.get("login")
        if login not in self.st.users:
            self._json(404, {"message": f"no user {login!r}"})
            return
        self.st.default_user = login
        self._json(200, {"default_user": login})


def main():
    ap = argparse.ArgumentParser(description="GitHub OAuth web flow and REST stand-in (stdlib only).")
    ap.add_argument("--config", required=True, help="JSON file: users, clients, options (see the module docstring)")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one)")
    ap.add_argument("--verbose", action="store_true", help="log each request to stderr")
    args = ap.parse_args()
    with open(args.config, encoding="utf-8") as f:
        config = json.load(f)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(config)
    server.verbose = args.verbose
    print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
