//! What the OAuth and MCP tests share:
//!
//! - [`Tools`]: the e2e/oauth test tools (`e2e/oauth/setup` writes
//!   `target/oauth/env`): the GitHub stand-in, the MCP backend, the OIDC
//!   provider, a private redis-server, and the two real clients
//!   (`mcp_client.py`, `browser.py`) whose JSON reports tests read. Under
//!   `CI=true` a missing tool fails the test; elsewhere it skips, saying why.
//! - [`OauthSetup`]: manifests for `postern standalone` with authorization
//!   servers and protected sites, one CA leaf for every hostname and one
//!   explicit ES256 signing key, started as an [`OauthRig`].
//! - [`Flow`]: a cookie-keeping client over curl that drives `/authorize`,
//!   the stand-in, `/consent` and `/token` by hand, for the cases a real
//!   client would never produce.

mod flow;
mod setup;
mod tools;

pub use flow::{Flow, Pkce, Redirected, enc};
pub use setup::{CLIENT_ID, CLIENT_SECRET, OauthRig, OauthSetup, STANDIN_USERS, oauth_route};
pub use tools::{Need, Report, Served, Tools, redis_server};
