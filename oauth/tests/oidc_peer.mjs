// A real OpenID Connect provider for the login tests: npm's
// oauth2-mock-server, with signing keys of five algorithms (the ID tokens
// of consecutive logins use each in turn) and a few fault switches chosen
// by the redirect URI's last path segment, so a test can ask for one
// misbehaviour without another process:
//
//   .../userinfo   the ID token carries no e-mail; userinfo has one
//   .../tamper     the ID token's payload is changed after signing
//   .../alg-none   the ID token is replaced by an unsigned one
//   .../expired    the ID token expired ten minutes ago
//
// The provider pins every ID token's audience to the registered client
// (the mock itself would echo whatever client_id it is sent).
//
// Usage: node oidc_peer.mjs MODULE_DIR   (MODULE_DIR/oauth2-mock-server)
// Prints `listening on 127.0.0.1:PORT ISSUER` once ready.

import { pathToFileURL } from 'node:url';
import { join } from 'node:path';

const REGISTERED_CLIENT = 'postern-test';
const [moduleDir] = process.argv.slice(2);
const entry = join(moduleDir, 'oauth2-mock-server', 'dist', 'index.mjs');
const { OAuth2Server } = await import(pathToFileURL(entry).href);

const server = new OAuth2Server();
for (const alg of ['RS256', 'PS256', 'ES256', 'ES384', 'EdDSA']) {
  await server.issuer.keys.generate(alg);
}

const fault = (req) => {
  const uri = req.body?.redirect_uri ?? '';
  return uri.slice(uri.lastIndexOf('/') + 1);
};
const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

server.service.on('beforeTokenSigning', (token, req) => {
  // Only the ID token has an audience here; the access token has none.
  if (token.payload.aud === undefined) return;
  token.payload.aud = REGISTERED_CLIENT;
  Object.assign(token.payload, {
    preferred_username: 'john',
    name: 'John Doe',
    groups: ['admins', 'staff'],
  });
  if (fault(req) !== 'userinfo') {
    Object.assign(token.payload, { email: 'John.Doe@Example.com', email_verified: true });
  }
  if (fault(req) === 'expired') {
    const now = Math.floor(Date.now() / 1000);
    Object.assign(token.payload, { iat: now - 1200, nbf: now - 1200, exp: now - 600 });
  }
});

server.service.on('beforeResponse', (response, req) => {
  const idToken = response.body?.id_token;
  if (typeof idToken !== 'string') return;
  const [header, payload, signature] = idToken.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
  if (fault(req) === 'tamper') {
    response.body.id_token = [header, b64({ ...claims, sub: 'admin' }), signature].join('.');
  } else if (fault(req) === 'alg-none') {
    response.body.id_token = [b64({ alg: 'none', typ: 'JWT' }), payload, ''].join('.');
  }
});

server.service.on('beforeUserinfo', (response) => {
  response.body = {
    sub: 'johndoe',
    email: 'John@Userinfo.Example',
    email_verified: true,
    preferred_username: 'ignored-when-the-id-token-has-one',
  };
});

await server.start(0, '127.0.0.1');
console.log(`listening on 127.0.0.1:${server.address().port} ${server.issuer.url}`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.stop().finally(() => process.exit(0)));
}
