//! Per-object outcomes of compilation.

use std::fmt;

use postern_api::{Kind, LostClaims, ObjectKey};

/// Why an object was refused (or `Accepted`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Accepted,
    /// A hostname another, older object already holds.
    HostnameConflict,
    /// A Route's targetRef names no ProxyTarget.
    TargetNotFound,
    /// A Secret, or a key of it, is missing or unusable.
    SecretNotFound,
    /// A Service backend names no Service or no such port.
    BackendNotFound,
    /// A RegularExpression path that does not compile.
    InvalidRegex,
    /// Two UserUpstreams with one user name.
    DuplicateUser,
    /// Two OAuthClients with one name (the client id) in different namespaces.
    DuplicateClientId,
    /// A hostname or user name the name policy does not give to the
    /// object's namespace.
    NameNotAllowed,
    /// A Tunnel path prefix another, older Tunnel already holds.
    PathConflict,
    /// A field the schema cannot fully check (URLs, durations, PEM...).
    InvalidSpec,
    /// The TCP port of a tcp Tunnel held by another Tunnel.
    PortConflict,
    /// An ACME issuer the configuration does not define.
    UnknownIssuer,
    /// An oauth policy names no accepted ProxyTarget with authorizationServer.
    ServerNotFound,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Accepted => "Accepted",
            Reason::HostnameConflict => "HostnameConflict",
            Reason::TargetNotFound => "TargetNotFound",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::BackendNotFound => "BackendNotFound",
            Reason::InvalidRegex => "InvalidRegex",
            Reason::DuplicateUser => "DuplicateUser",
            Reason::DuplicateClientId => "DuplicateClientId",
            Reason::NameNotAllowed => "NameNotAllowed",
            Reason::PathConflict => "PathConflict",
            Reason::InvalidSpec => "InvalidSpec",
            Reason::PortConflict => "PortConflict",
            Reason::UnknownIssuer => "UnknownIssuer",
            Reason::ServerNotFound => "ServerNotFound",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome for one object: accepted into the snapshot, or refused and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub kind: Kind,
    pub key: ObjectKey,
    pub generation: i64,
    pub reason: Reason,
    /// A sentence for people; for accepted objects, any warnings.
    pub message: String,
    /// Names lost to another namespace: the status records them, and the
    /// next compilation reads them back through `Inputs::lost_claims`.
    pub lost_claims: LostClaims,
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        self.reason == Reason::Accepted
    }
}
