//! The contract between the operator and the data planes.
//!
//! A [`Snapshot`] is everything a data plane needs to serve traffic, compiled
//! from resources by `postern-compile`. It is immutable, versioned by a hash
//! of its content (versions are opaque and only compared for equality) and
//! serialised as JSON with a schema number: a data plane refuses a schema it
//! cannot read and keeps serving its last good snapshot.
//!
//! This crate must not depend on kube, tokio or hyper: it is linked by both
//! sides and by standalone mode.

mod model;
mod oauth;
pub mod sync;
mod validate;
mod wire;

pub use model::*;
pub use oauth::*;
pub use validate::SnapshotError;
pub use wire::check_wire_version;

/// The snapshot schema this build writes and reads.
/// 2: `acmeChallenges` (a schema-1 data plane would ack a snapshot whose
/// challenges it cannot answer).
/// 3: authorization servers on sites and the oauth policy (a schema-2 data
/// plane answers 501 for oauth and would ack what it cannot serve).
pub const SCHEMA: u32 = 3;
