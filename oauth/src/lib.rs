//! The OAuth 2.1 core of Postern's authorization server and guard, with no
//! HTTP server in it (the data plane's `oauth` module serves the endpoints):
//!
//! - [`cimd`]: Client ID Metadata Documents, fetched SSRF-safely and
//!   cached in the store;
//! - [`identity`]: who logged in, from whichever provider;
//! - [`keys`]: signing keys from the snapshot, JWKS, verification keys;
//! - [`tokens`]: access-token claims, signing and local verification;
//! - [`pkce`], [`redirect`], [`resource`]: the rules of RFC 7636, RFC 8252
//!   and RFC 8707 as pure functions;
//! - [`store`]: the runtime state replicas share (codes, sessions,
//!   refresh-token families, registered clients, rate counters), in Redis
//!   or in memory;
//! - [`codes`], [`refresh`]: single-use authorization codes and rotating
//!   refresh-token families with reuse detection, over the store;
//! - [`ratelimit`]: fixed windows per client address over the store;
//! - [`login`]: the upstream identity providers (GitHub's web flow and
//!   generic OpenID Connect) as clients.

pub mod cimd;
pub mod codes;
pub mod identity;
pub mod keys;
pub mod login;
pub mod pkce;
pub mod ratelimit;
pub mod redirect;
pub mod refresh;
pub mod resource;
pub mod store;
pub mod tokens;
