//! `compile(inputs) -> (Snapshot, verdicts)`: the heart of Postern.
//!
//! A pure, deterministic function: the same resources and Secrets always give
//! byte-identical snapshots with the same version, whatever order they were
//! read in. Cross-object rules (hostname conflicts, missing references,
//! duplicate users...) never fail the whole compilation: each yields a
//! [`Verdict`] on the losing object, which is left out of the snapshot, and
//! the operator writes the verdict as the object's `Accepted` condition.
//!
//! One module per kind compiles it ([`compile`] calls them in order); they
//! share the bookkeeping of `build`, the refusal type of `refusal` and the
//! field checks of `checks`, none of which calls a pass.

mod inputs;
pub mod manifest;
mod verdict;

mod build;
mod checks;
mod claims;
mod policy;
mod refusal;

mod acme;
mod backends;
mod oauth_clients;
mod oauth_servers;
mod sites;
mod tunnels;
mod user_upstreams;

pub use acme::{AcmeRequest, CHALLENGES_KEY, acme_secret_name};
pub use inputs::{Inputs, Options, SecretData, ServiceInfo};
pub use oauth_servers::signing_keys_secret_name;
pub use policy::{NamePolicy, PolicyError, Takeover};
pub use verdict::{Reason, Verdict};

use postern_snapshot::Snapshot;

/// What compilation produces.
#[derive(Clone)]
pub struct Output {
    pub snapshot: Snapshot,
    /// The snapshot's wire form ([`Snapshot::to_json`]), kept from the
    /// serialisation that sealed it so a caller that sends it need not
    /// serialise a large snapshot again.
    pub json: Vec<u8>,
    /// One verdict per input object of the five kinds, sorted by kind and key.
    pub verdicts: Vec<Verdict>,
    /// The ACME certificates the accepted objects need, sorted by kind and key.
    pub acme: Vec<AcmeRequest>,
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("snapshot", &self.snapshot)
            .field("json", &format_args!("{} bytes", self.json.len()))
            .field("verdicts", &self.verdicts)
            .field("acme", &self.acme)
            .finish()
    }
}

/// Compiles resources into a sealed snapshot and a verdict per object.
pub fn compile(inputs: &Inputs) -> Output {
    let mut build = build::Build::new(inputs);
    // Sites first: tunnels lose hostnames that ProxyTargets serve.
    let (mut sites, hosts) = sites::compile(&mut build);
    let users = user_upstreams::compile(&mut build);
    let (tunnels, tunnel_sites) = tunnels::compile(&mut build, hosts);
    sites.extend(tunnel_sites);
    sites.sort_by(|a, b| a.id.cmp(&b.id));
    let oauth_clients = oauth_clients::compile(&mut build);
    let requests = acme::requests(inputs, &sites);
    let challenges = acme::challenges(inputs, &requests);
    let mut output = build.finish(sites, users, tunnels, oauth_clients, challenges);
    output.acme = requests;
    output
}
