//! The operator and the data planes of the cluster tests: the harness's
//! processes (port 0, logs printed when a test fails, killed on drop),
//! preset for the rig: its kubeconfig, one namespace that is also the lease
//! namespace, a sync token, debug logs.

use std::net::SocketAddr;

use postern_harness::{Operator, OperatorBuilder, Postern, PosternBuilder};

use crate::Rig;

const RUST_LOG: &str = "info,postern=debug,postern_operator=debug";

/// The operator watching `namespace` (and leasing in it), with `token` as
/// the sync token; add TLS, flags or a sync address, then `.start()`.
pub fn operator(rig: &Rig, namespace: &str, id: &str, token: &str) -> OperatorBuilder {
    Operator::builder(rig.kubeconfig(), namespace)
        .id(id)
        .sync_token(token)
        .env("RUST_LOG", RUST_LOG)
}

/// A data plane connecting to the operator's sync address with `token`;
/// add `--sync-ca`, then `.start()`.
pub fn dataplane(sync: SocketAddr, id: &str, token: &str) -> PosternBuilder {
    Postern::dataplane(sync)
        .id(id)
        .sync_token(token)
        .env("RUST_LOG", RUST_LOG)
}
