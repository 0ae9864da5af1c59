//! Postern's certificate manager over ACME (RFC 8555), shared by the
//! operator (on its elected leader) and `postern standalone`: named
//! [`issuers`], the pure renewal [`policy`], one multi-SAN [`order`] per
//! target and the [`manager`] loop. Kube-free: storage and challenge
//! publishing are the caller's.

pub mod issuers;
pub mod manager;
pub mod metrics;
pub mod order;
pub mod policy;

pub use issuers::{AcmeArgs, AcmeConfig, Issuer};
pub use manager::{Manager, Report, Reporter, Store, now, rfc3339};
pub use metrics::Metrics;
pub use order::{Presenter, validity};
pub use policy::{CertState, Policy, Problem};

/// Configuration errors; ordering failures are [`Problem`]s.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ACME configuration: {0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
