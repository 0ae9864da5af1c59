//! Tunnel: hostnames or a path prefix served by a connected agent.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{SecretKeyRef, TlsConfig};

/// http: requests by hostname or path prefix; tcp: a raw TCP port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TunnelMode {
    #[default]
    Http,
    Tcp,
}

/// What a reverse-tunnel agent may serve. One live agent holds a hostname.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.mode != 'http' || (has(self.hostnames) != has(self.pathPrefix))", "message": "an http tunnel needs exactly one of hostnames or pathPrefix"},
    {"rule": "self.mode != 'tcp' || has(self.tcpPort)", "message": "a tcp tunnel needs tcpPort"},
    {"rule": "self.mode != 'tcp' || !has(self.pathPrefix)", "message": "pathPrefix applies only to http tunnels"}
]))]
pub struct TunnelSpec {
    /// http or tcp.
    pub mode: TunnelMode,
    /// Hostnames the agent serves (http mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 100),
        inner(
            length(min = 1, max = 253),
            regex(
                pattern = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
            )
        )
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub hostnames: Option<Vec<String>>,
    /// A path prefix on the gateway's default host (http mode), e.g. `/t/laptop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 2, max = 256),
        regex(pattern = r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*[^/]$")
    )]
    pub path_prefix: Option<String>,
    /// The key that verifies the agent's JWT (default key `key`).
    pub agent_key_secret_ref: SecretKeyRef,
    /// The public TCP port (tcp mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub tcp_port: Option<u16>,
    /// The certificate of the hostnames (http mode with hostnames): the data
    /// plane terminates TLS with it. Absent: the hostnames are served over
    /// plain HTTP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Whether the agent's local service sees the path without `pathPrefix`
    /// (default true): `/t/laptop/x` arrives as `/x`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_prefix: Option<bool>,
    /// What a second agent for this Tunnel does. false (the default): it
    /// stands by and takes over the moment the serving agent goes. true:
    /// every connected agent serves, streams are spread over them in turn,
    /// and one that fails its heartbeat or drains stops getting streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<bool>,
}
