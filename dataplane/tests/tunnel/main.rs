//! Reverse tunnels end to end: `postern standalone` and `postern agent` as
//! real processes on loopback, real clients (curl, redis-cli, python
//! websockets) in front and real services behind. One test binary, so the
//! suite links once.

mod admin;
mod auth;
mod bulk;
mod failover;
mod http;
mod replicas;
mod rig;
mod tcp;
mod websocket;
