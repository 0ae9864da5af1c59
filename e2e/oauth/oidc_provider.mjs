#!/usr/bin/env node
// A real OpenID Connect provider for Postern's tests: npm oauth2-mock-server
// (pinned in e2e/oauth/package.json, installed by e2e/oauth/setup), started
// on a free loopback port, with the checks the package leaves out added
// through its events.
//
//   node e2e/oauth/oidc_provider.mjs [--port 0] [--config FILE] [--issuer URL]
//        [--modules DIR] [--no-require-pkce] [--token-ttl S] [--log FILE]
//
// stdout, once it accepts connections, exactly two lines:
//   listening on 127.0.0.1:PORT
//   issuer http://127.0.0.1:PORT
//
// What the package does by itself: discovery at
// /.well-known/openid-configuration, /authorize (auto-approves, 302 to
// redirect_uri with code and state), /token (RS256 JWTs; id_token with aud =
// client_id and the authorize request's nonce; checks code_verifier against
// the challenge when both are there), /jwks, /userinfo, /revoke, /endsession.
// Its issuer would be http://localhost:PORT; this wrapper sets
// http://127.0.0.1:PORT (or --issuer) so no name needs resolving.
//
// What this wrapper adds:
// - users from --config (the GitHub stand-in's format works: login → sub and
//   preferred_username, the primary email → email (+ email_verified), name,
//   orgs → groups). `login_hint` on /authorize picks the user, else
//   default_user; without --config one user, johndoe.
// - when the config has "clients" (id → secret, or {secret}), /token checks
//   client_id and the secret (client_secret_post or client_secret_basic).
// - codes are single-use, expire after 10 minutes, and are bound to
//   client_id and redirect_uri; PKCE S256 is required (--no-require-pkce
//   lets a request without a challenge through); a refresh token works once
//   (rotation); the token response's scope is the one asked for at /authorize.
// - --log FILE: one JSON line per authorize/token/userinfo event, so a test
//   can check that Postern sent PKCE, nonce and client credentials.

import { appendFileSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";

const USAGE = `usage: node oidc_provider.mjs [--port 0] [--host 127.0.0.1] [--config FILE]
       [--issuer URL] [--modules DIR] [--no-require-pkce] [--token-ttl SECONDS] [--log FILE]
  --modules  the node_modules directory holding oauth2-mock-server
             (default: $OAUTH_NODE_MODULES, printed by e2e/oauth/setup)`;

function parseArgs(argv) {
  const opts = { port: 0, host: "127.0.0.1", requirePkce: true, tokenTtl: 3600 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case "-h": case "--help": console.log(USAGE); process.exit(0); break;
      case "--port": opts.port = Number.parseInt(next(), 10); break;
      case "--host": opts.host = next(); break;
      case "--config": opts.config = next(); break;
      case "--issuer": opts.issuer = next(); break;
      case "--modules": opts.modules = next(); break;
      case "--no-require-pkce": opts.requirePkce = false; break;
      case "--token-ttl": opts.tokenTtl = Number.parseInt(next(), 10); break;
      case "--log": opts.log = next(); break;
      default: throw new Error(`unknown argument ${a}\n${USAGE}`);
    }
  }
  opts.modules ??= process.env.OAUTH_NODE_MODULES;
  if (!opts.modules) throw new Error("no --modules and no OAUTH_NODE_MODULES: run e2e/oauth/setup first");
  return opts;
}

function loadUsers(file) {
  if (!file) {
    return { defaultUser: "johndoe", users: new Map([["johndoe", { sub: "johndoe", preferred_username: "johndoe",
      email: "johndoe@example.com", email_verified: true, name: "John Doe", groups: [] }]]), clients: null };
  }
  const cfg = JSON.parse(readFileSync(file, "utf8"));
  const users = new Map();
  for (const u of cfg.users ?? []) {
    const emails = (u.emails ?? []).map((e, i) => (typeof e === "string" ? { email: e, primary: i === 0, verified: true } : e));
    const primary = emails.find((e) => e.primary) ?? emails[0];
    users.set(u.login, {
      sub: String(u.sub ?? u.login),
      preferred_username: u.login,
      ...(primary ? { email: primary.email, email_verified: primary.verified !== false } : {}),
      ...(u.name ? { name: u.name } : {}),
      groups: (u.orgs ?? []).map((o) => (typeof o === "string" ? o : o.login)),
    });
  }
  if (users.size === 0) throw new Error(`${file}: no users`);
  let clients = null;
  if (cfg.clients) {
    clients = new Map(Object.entries(cfg.clients).map(([id, v]) => [id, typeof v === "string" ? v : v.secret]));
  }
  return { defaultUser: cfg.default_user ?? users.keys().next().value, users, clients };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const require = createRequire(join(resolve(opts.modules), "noop.js"));
  const { OAuth2Server } = await import(pathToFileURL(require.resolve("oauth2-mock-server")).href);
  const { defaultUser, users, clients } = loadUsers(opts.config);

  const log = (event, data) => {
    if (opts.log) appendFileSync(opts.log, JSON.stringify({ time: Date.now() / 1000, event, ...data }) + "\n");
  };
  const codes = new Map(); // code → {clientId, redirectUri, login, scope, hasChallenge, expires, used}
  const refreshTokens = new Map(); // refresh token → {login, clientId, scope}
  const accessTokens = new Map(); // access token → login

  const server = new OAuth2Server();
  await server.issuer.keys.generate("RS256");
  const service = server.service;

  service.on("beforeAuthorizeRedirect", (redirect, req) => {
    const q = req.query;
    const url = redirect.url;
    const fail = (error, description) => {
      url.searchParams.delete("code");
      url.searchParams.set("error", error);
      url.searchParams.set("error_description", description);
      log("authorize", { query: q, error });
    };
    const login = q.login_hint || defaultUser;
    if (clients && !clients.has(q.client_id)) return fail("unauthorized_client", "unknown client_id");
    if (!users.has(login)) return fail("access_denied", `no user ${login}`);
    if (q.code_challenge === undefined ? opts.requirePkce : q.code_challenge_method !== "S256") {
      return fail("invalid_request", "PKCE with code_challenge_method=S256 is required");
    }
    const code = url.searchParams.get("code");
    if (code) {
      codes.set(code, { clientId: q.client_id, redirectUri: q.redirect_uri, login, scope: q.scope ?? "openid",
        hasChallenge: q.code_challenge !== undefined, expires: Date.now() + 600_000, used: false });
    }
    log("authorize", { query: q, login });
  });

  const userFor = (body) => {
    if (body.grant_type === "authorization_code") return codes.get(body.code)?.login;
    if (body.grant_type === "refresh_token") return refreshTokens.get(body.refresh_token)?.login;
    return undefined;
  };

  service.on("beforeTokenSigning", (token, req) => {
    const login = userFor(req.body ?? {});
    if (login) {
      const { sub, ...claims } = users.get(login);
      Object.assign(token.payload, { sub, ...claims });
    }
    if (opts.tokenTtl !== 3600) token.payload.exp = token.payload.iat + opts.tokenTtl;
  });

  service.on("beforeResponse", (response, req) => {
    const body = req.body ?? {};
    const basic = /^basic\s+(.+)$/i.exec(req.headers.authorization ?? "");
    let clientId = body.client_id;
    let secret = body.client_secret;
    let auth = secret ? "client_secret_post" : "none";
    if (basic) {
      const [id, ...rest] = Buffer.from(basic[1], "base64").toString().split(":");
      clientId = decodeURIComponent(id);
      secret = decodeURIComponent(rest.join(":"));
      auth = "client_secret_basic";
    }
    const entry = { grant_type: body.grant_type, client_id: clientId, client_auth: auth,
      has_code_verifier: "code_verifier" in body, redirect_uri: body.redirect_uri, scope: body.scope };
    const fail = (error, description, status = 400) => {
      response.statusCode = status;
      response.body = { error, error_description: description };
      log("token", { ...entry, error });
    };
    if (clients && (!clients.has(clientId) || clients.get(clientId) !== secret)) {
      return fail("invalid_client", "client authentication failed", 401);
    }
    let grant;
    if (body.grant_type === "authorization_code") {
      grant = codes.get(body.code);
      if (!grant || grant.used || grant.expires < Date.now()) return fail("invalid_grant", "unknown, used or expired code");
      grant.used = true;
      if (grant.clientId !== clientId) return fail("invalid_grant", "code issued to another client");
      if (grant.redirectUri !== body.redirect_uri) return fail("invalid_grant", "redirect_uri differs from the authorize request");
      if (grant.hasChallenge && !("code_verifier" in body)) return fail("invalid_grant", "code_verifier missing");
    } else if (body.grant_type === "refresh_token") {
      grant = refreshTokens.get(body.refresh_token);
      refreshTokens.delete(body.refresh_token);
      if (!grant || grant.clientId !== clientId) return fail("invalid_grant", "unknown or used refresh token");
    } else {
      return fail("unsupported_grant_type", `grant_type ${body.grant_type} is not offered here`);
    }
    response.body.scope = grant.scope;
    response.body.expires_in = opts.tokenTtl;
    refreshTokens.set(response.body.refresh_token, { login: grant.login, clientId, scope: grant.scope });
    accessTokens.set(response.body.access_token, grant.login);
    log("token", { ...entry, login: grant.login });
  });

  service.on("beforeUserinfo", (response, req) => {
    const token = (req.headers.authorization ?? "").replace(/^bearer\s+/i, "");
    const login = accessTokens.get(token);
    if (!login) {
      response.statusCode = 401;
      response.body = { error: "invalid_token" };
    } else {
      response.body = { ...users.get(login) };
    }
    log("userinfo", { login: login ?? null });
  });

  await server.start(opts.port, opts.host);
  const port = server.address().port;
  server.issuer.url = opts.issuer ?? `http://${opts.host}:${port}`;
  process.stdout.write(`listening on ${opts.host}:${port}\nissuer ${server.issuer.url}\n`);
  const stop = async () => {
    await server.stop();
    process.exit(0);
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((err) => {
  console.error(`oidc_provider: ${err.message ?? err}`);
  process.exit(1);
});
