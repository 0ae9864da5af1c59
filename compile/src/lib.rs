//! `compile(inputs) -> (Snapshot, verdicts)`: the heart of Postern.
//!
//! A pure, deterministic function: the same resources and Secrets always give
//! byte-identical snapshots with the same version, whatever order they were
//! read in. Cross-object rules (hostname conflicts, missing references,
//! duplicate users...) never fail the whole compilation: each yields a
//! [`Verdict`] on the losing object, which is left out of the snapshot, and
//! the operator writes the verdict as the object's `Accepted` condition.

mod inputs;
pub mod manifest;
pub mod upstreamgate;
mod verdict;

mod backends;
mod build;
mod checks;
mod others;
mod sites;

pub use inputs::{Inputs, Options, SecretData, ServiceInfo};
pub use verdict::{Reason, Verdict};

use postern_snapshot::Snapshot;

/// What compilation produces.
#[derive(Clone, Debug)]
pub struct Output {
    pub snapshot: Snapshot,
    /// One verdict per input object of the five kinds, sorted by kind and key.
    pub verdicts: Vec<Verdict>,
}

/// Compiles resources into a sealed snapshot and a verdict per object.
pub fn compile(inputs: &Inputs) -> Output {
    build::Build::new(inputs).run()
}
