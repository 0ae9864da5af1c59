//! UserUpstream: a forward-proxy user and the upstream their tunnels use.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{LocalRef, SecretKeyRef};

/// A user of the forward proxy and where their connections go. Changing the
/// upstream, its credentials or the password cuts the user's open tunnels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.upstreamCaSecretRef) || self.upstream.startsWith('https://')", "message": "upstreamCaSecretRef applies only to https:// upstreams"}
]))]
pub struct UserUpstreamSpec {
    /// The proxy user name clients send in Proxy-Authorization. Unique
    /// across the cluster; the older UserUpstream keeps a duplicated name.
    #[schemars(
        length(min = crate::user_name::MIN_LEN, max = crate::user_name::MAX_LEN),
        regex(pattern = crate::user_name::PATTERN)
    )]
    pub user: String,
    /// The user's proxy password: a Secret key (default key `password`).
    pub password_secret_ref: SecretKeyRef,
    /// `direct://`, or `socks5://`, `http://`, `https://` with host and port.
    #[schemars(
        length(min = 1, max = 2048),
        regex(pattern = r"^(direct://|(socks5|http|https)://[^/?#\s]+(:[0-9]{1,5})?/?)$")
    )]
    pub upstream: String,
    /// Credentials for the upstream: a Secret with keys `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_credentials_secret_ref: Option<LocalRef>,
    /// CA certificates (PEM) that verify an `https://` upstream, trusted
    /// besides the system roots: a Secret key (default key `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca_secret_ref: Option<SecretKeyRef>,
    /// Which destinations the user may reach. Absent: every destination but
    /// the internal networks (see `allowInternalNetworks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Destinations>,
    /// Internal networks this user may reach although the gateway denies
    /// them to every user by default: loopback, unspecified, link-local
    /// (cloud metadata) and the data plane's `--proxy-deny-cidr` list (in a
    /// cluster, its pod and service ranges). CIDRs or single addresses, such
    /// as `127.0.0.0/8` or `::1`. The gateway's own listening ports stay
    /// denied whatever this says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 2, max = 49),
            regex(pattern = r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$")
        )
    )]
    pub allow_internal_networks: Vec<String>,
    /// Open tunnels the user may hold at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_connections: Option<u32>,
}

/// Destination rules: `host:port` globs (`*.example.com:443`, `*:80`) or CIDRs.
/// Deny wins over allow; an empty allow list allows everything not denied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Destinations {
    /// Destinations the user may reach (`host:port` globs or CIDRs). Empty:
    /// every destination not denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 260)))]
    pub allow: Vec<String>,
    /// Destinations the user may never reach (`host:port` globs or CIDRs),
    /// even when an allow rule matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 260)))]
    pub deny: Vec<String>,
}
