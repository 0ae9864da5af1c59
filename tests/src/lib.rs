//! Test support for Postern and the cluster integration tests in `tests/`.
//!
//! The tests use real parts: the rig's kube-apiserver (`e2e/rig up` writes
//! `target/rig/env`), and the `postern-operator` and `postern` binaries run
//! as processes on port 0 by `postern-harness`, their real addresses read
//! from `--addr-file`.
//!
//! Without the rig a test prints why it skips and passes, except under
//! `CI=true`, where a missing part fails the test: CI never skips silently.
//!
//! The fault tests (`tests/faults.rs`, `tests/faults_apiserver.rs`) add a
//! [`relay::Relay`] between data planes and the operator (to switch
//! operators and cut the sync stream) and a private, restartable
//! [`apiserver::Apiserver`] on the rig's etcd, so no fault reaches a test
//! running beside them.
//!
//! Each test works in its own namespace ([`TestNamespace`]) and starts the
//! operator with `--namespace` and `--lease-namespace` set to it, so tests
//! running in parallel neither see each other's objects nor compete for
//! one Lease.

pub mod apiserver;
pub mod crds;
pub mod namespace;
pub mod process;
pub mod relay;
pub mod resources;
pub mod rig;
pub mod serving;
pub mod spine;

pub use crds::install_crds;
pub use namespace::TestNamespace;
pub use postern_harness::{
    Ca, HttpResponse, Operator, Postern, SnapshotView, binary, eventually, http_get,
};
pub use process::{dataplane, operator};
pub use rig::Rig;

/// The rig, or return from the test (after saying why) when it is not up.
/// Under `CI=true` a missing rig panics instead.
#[macro_export]
macro_rules! rig_or_skip {
    () => {
        match $crate::Rig::from_env() {
            Some(rig) => rig,
            None => return,
        }
    };
}
