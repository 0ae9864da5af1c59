//! The snapshot's types. Every list is sorted by the compiler, and no map is
//! a `HashMap`, so the same resources always serialise to the same bytes.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One immutable, complete configuration of the data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Snapshot {
    pub schema: u32,
    /// Hex SHA-256 of the snapshot serialised with an empty version.
    pub version: String,
    /// Every accepted resource and its generation, sorted. An ack of this
    /// snapshot means all of these generations are programmed.
    pub objects: Vec<SourceObject>,
    /// Reverse-proxy sites (ProxyTargets and their Routes), sorted by id.
    pub sites: Vec<Site>,
    /// Forward-proxy users, sorted by user name.
    pub users: Vec<ProxyUser>,
    /// Reverse tunnels, sorted by id.
    pub tunnels: Vec<TunnelEntry>,
    /// Statically declared OAuth clients, sorted by client id.
    pub oauth_clients: Vec<OAuthClientEntry>,
    /// Certificates and keys referenced by sites, sorted by id.
    pub certificates: Vec<Certificate>,
    /// ACME challenges being validated right now, sorted: every data plane
    /// answers them, and only for the hostname each names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acme_challenges: Vec<AcmeChallenge>,
}

/// A resource included in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceObject {
    /// ProxyTarget, Route, UserUpstream, Tunnel or OAuthClient.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub generation: i64,
}

/// A reverse-proxy site: one ProxyTarget with its Routes in match order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Site {
    /// `namespace/name` of the ProxyTarget.
    pub id: String,
    /// Lowercase exact names and `*.` wildcards, sorted.
    pub hostnames: Vec<String>,
    pub backend: BackendEndpoint,
    pub tls: Option<SiteTls>,
    pub redirect_http: bool,
    pub auth: AuthRule,
    pub timeouts: Timeouts,
    /// Routes in match order: priority descending, then longer value, then id.
    pub routes: Vec<RouteEntry>,
    /// Send the client's Host to the backend instead of the backend's own.
    #[serde(default)]
    pub preserve_host: bool,
    /// Forward the client's spelling of the path instead of the normalised
    /// one (routing and auth always use the normalised path).
    #[serde(default)]
    pub forward_raw_path: bool,
    /// Changes to requests on their way to the backend.
    #[serde(default)]
    pub request_headers: HeaderRules,
    /// Changes to responses on their way to the client.
    #[serde(default)]
    pub response_headers: HeaderRules,
    /// Set on the site of an http Tunnel's hostnames: requests go to the
    /// agent of the tunnel with this id, not to `backend`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<String>,
    /// Set on a ProxyTarget that serves Postern's authorization server on
    /// its hostnames instead of a backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_server: Option<crate::AuthorizationServer>,
}

impl Site {
    /// A site with defaults everywhere but its id, names and backend.
    pub fn new(id: impl Into<String>, hostnames: &[&str], backend: &str) -> Self {
        Site {
            id: id.into(),
            hostnames: hostnames.iter().map(|h| h.to_string()).collect(),
            backend: BackendEndpoint::new(backend),
            ..Site::default()
        }
    }
}

/// Header changes, applied in the order remove, set, add. Names are
/// lowercase; the compiler refuses hop-by-hop and framing headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    pub remove: Vec<String>,
    pub set: Vec<HeaderPair>,
    pub add: Vec<HeaderPair>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
}

/// One header name (lowercase) and value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderPair {
    pub name: String,
    pub value: String,
}

/// A resolved backend: scheme, host and port, no path, and how to speak to it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendEndpoint {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    #[serde(default)]
    pub protocol: BackendProtocol,
    /// Verification settings of an `https://` backend; absent: system roots
    /// and the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
    /// A PROXY protocol header sent first on every backend connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocol>,
}

impl BackendEndpoint {
    /// An HTTP/1.1 backend at `url` with default settings.
    pub fn new(url: impl Into<String>) -> Self {
        BackendEndpoint {
            url: url.into(),
            ..BackendEndpoint::default()
        }
    }
}

/// The HTTP version spoken to a backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum BackendProtocol {
    #[default]
    Http1,
    /// h2c with prior knowledge over http, ALPN `h2` over https.
    Http2,
}

/// How an https backend is verified. Never switched off.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BackendTls {
    /// PEM CA certificates trusted instead of the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// SNI and the name checked in the certificate, instead of the URL's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// A PROXY protocol version sent to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum ProxyProtocol {
    V1,
    V2,
}

/// How a site gets its certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", tag = "source")]
pub enum SiteTls {
    /// A certificate in [`Snapshot::certificates`] with this id.
    Secret { certificate: String },
    /// Ordered over ACME; the certificate appears once issued.
    Acme {
        issuer: AcmeIssuer,
        certificate: Option<String>,
    },
}

/// Which ACME directory orders a site's certificate. On the wire a plain
/// string: `production`, `staging`, or the name of an issuer the data
/// plane's configuration defines.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AcmeIssuer {
    Production,
    /// Untrusted certificates, generous rate limits.
    Staging,
    /// An issuer from configuration. Never a built-in name, so the string
    /// form reads back as the same value ([`Snapshot::validate`] checks).
    Named(String),
}

impl AcmeIssuer {
    /// The wire form.
    pub fn as_str(&self) -> &str {
        match self {
            AcmeIssuer::Production => "production",
            AcmeIssuer::Staging => "staging",
            AcmeIssuer::Named(name) => name,
        }
    }

    /// Reads the wire form: a built-in name, or else a named issuer.
    pub fn parse(name: &str) -> Self {
        match name {
            "production" => AcmeIssuer::Production,
            "staging" => AcmeIssuer::Staging,
            other => AcmeIssuer::Named(other.to_string()),
        }
    }
}

impl std::fmt::Display for AcmeIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for AcmeIssuer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for AcmeIssuer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|name| AcmeIssuer::parse(&name))
    }
}

/// Authentication in front of a site or route.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", tag = "type")]
pub enum AuthRule {
    #[default]
    None,
    /// Hex SHA-256 of each accepted token, sorted: the data plane hashes the
    /// presented token and compares in constant time, and no token is kept
    /// in the snapshot in the clear.
    Bearer { token_sha256: Vec<String> },
    /// An access token (or browser session) from an authorization server.
    Oauth(crate::OauthPolicy),
}

/// Timeouts towards a backend, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Timeouts {
    pub connect_ms: u64,
    pub response_headers_ms: u64,
    pub idle_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect_ms: 5_000,
            response_headers_ms: 60_000,
            idle_ms: 300_000,
        }
    }
}

/// One Route of a site.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteEntry {
    /// `namespace/name` of the Route.
    pub id: String,
    pub path: PathRule,
    /// Uppercase methods, sorted; empty means every method.
    pub methods: Vec<String>,
    pub priority: i32,
    pub backend: Option<BackendEndpoint>,
    pub auth: Option<AuthRule>,
}

/// A path match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase", tag = "type", content = "value")]
pub enum PathRule {
    Prefix(String),
    Exact(String),
    /// Matched against the whole path (the data plane anchors it).
    Regex(String),
}

impl PathRule {
    pub fn value(&self) -> &str {
        match self {
            PathRule::Prefix(v) | PathRule::Exact(v) | PathRule::Regex(v) => v,
        }
    }
}

/// A forward-proxy user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProxyUser {
    /// `namespace/name` of the UserUpstream.
    pub id: String,
    pub user: String,
    pub password: PasswordHash,
    pub upstream: Upstream,
    pub destinations: DestinationRules,
    /// CIDRs (normalised, e.g. `127.0.0.0/8`) punched into the data plane's
    /// default deny of internal networks for this user. Defaulted so a data
    /// plane reads snapshots of an operator that predates it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_internal_networks: Vec<String>,
    pub max_connections: Option<u32>,
    /// Changes whenever the password, upstream or its credentials change:
    /// the data plane cuts the user's open tunnels when it does.
    pub revision: String,
}

/// A salted SHA-256 of a password (hex). The salt is derived from the user's
/// identity so compilation stays deterministic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordHash {
    pub salt: String,
    pub sha256: String,
}

impl PasswordHash {
    pub fn new(salt: &str, password: &[u8]) -> Self {
        PasswordHash {
            salt: salt.to_string(),
            sha256: salted_sha256(salt, password),
        }
    }
}

/// Hex SHA-256 of `salt || 0x00 || secret`.
pub fn salted_sha256(salt: &str, secret: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update([0u8]);
    h.update(secret);
    hex::encode(h.finalize())
}

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where a user's connections go.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", tag = "scheme")]
pub enum Upstream {
    Direct,
    Socks5 {
        host: String,
        port: u16,
        credentials: Option<Credentials>,
    },
    Http {
        host: String,
        port: u16,
        credentials: Option<Credentials>,
    },
    Https {
        host: String,
        port: u16,
        credentials: Option<Credentials>,
        /// Extra CA certificates (PEM) that verify this upstream, besides
        /// the data plane's roots. Public material, not a secret.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_pem: Option<String>,
    },
}

/// Credentials for an upstream proxy. Plain text: the data plane must present them.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Destination allow and deny rules, as written in the UserUpstream.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationRules {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// A reverse tunnel an agent may attach to. Its hostnames, if any, are
/// also a [`Site`] whose `tunnel` is this id.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TunnelEntry {
    pub id: String,
    pub mode: TunnelMode,
    pub hostnames: Vec<String>,
    pub path_prefix: Option<String>,
    pub tcp_port: Option<u16>,
    /// The key (PEM or shared secret) that verifies the agent's JWT.
    pub agent_key: String,
    /// Path-prefix tunnels: the agent sees the path without the prefix.
    #[serde(default = "yes")]
    pub strip_prefix: bool,
    /// Every agent serves (`spec.pool`), instead of one with standbys.
    /// Left out when false, so that a snapshot without pools hashes (and
    /// reads, on an older data plane) as before the field existed.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pool: bool,
}

fn yes() -> bool {
    true
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl std::fmt::Debug for TunnelEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelEntry")
            .field("id", &self.id)
            .field("mode", &self.mode)
            .field("hostnames", &self.hostnames)
            .field("path_prefix", &self.path_prefix)
            .field("tcp_port", &self.tcp_port)
            .field("strip_prefix", &self.strip_prefix)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// What a tunnel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum TunnelMode {
    /// Requests by hostname or path prefix.
    Http,
    /// A raw TCP port.
    Tcp,
}

/// An OAuth 2.1 grant type a client may use. Declared in the order of the
/// wire names, so sorting the enum sorts as the strings do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    ClientCredentials,
    RefreshToken,
}

/// A statically declared OAuth client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OAuthClientEntry {
    pub id: String,
    pub client_id: String,
    /// Shown on the consent page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    /// Sorted, no duplicates.
    pub grant_types: Vec<GrantType>,
    pub scopes: Vec<String>,
    /// Salted SHA-256 of the client secret; absent for public clients.
    pub secret: Option<PasswordHash>,
}

/// A certificate chain and its private key, PEM.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Certificate {
    /// `namespace/secret-name`.
    pub id: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One pending ACME challenge, as the data planes must answer it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", tag = "type")]
pub enum AcmeChallenge {
    /// `GET http://HOSTNAME/.well-known/acme-challenge/TOKEN` answers
    /// `key_authorization` (RFC 8555 section 8.3).
    #[serde(rename = "http-01", rename_all = "camelCase")]
    Http01 {
        hostname: String,
        token: String,
        key_authorization: String,
    },
    /// A TLS handshake for HOSTNAME offering only ALPN `acme-tls/1` gets
    /// this self-signed certificate with the acmeIdentifier extension
    /// (RFC 8737).
    #[serde(rename = "tls-alpn-01", rename_all = "camelCase")]
    TlsAlpn01 {
        hostname: String,
        cert_pem: String,
        key_pem: String,
    },
}

impl AcmeChallenge {
    /// The hostname being validated.
    pub fn hostname(&self) -> &str {
        match self {
            AcmeChallenge::Http01 { hostname, .. } | AcmeChallenge::TlsAlpn01 { hostname, .. } => {
                hostname
            }
        }
    }
}

impl std::fmt::Debug for AcmeChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcmeChallenge::Http01 {
                hostname, token, ..
            } => f
                .debug_struct("Http01")
                .field("hostname", hostname)
                .field("token", token)
                .finish_non_exhaustive(),
            AcmeChallenge::TlsAlpn01 { hostname, .. } => f
                .debug_struct("TlsAlpn01")
                .field("hostname", hostname)
                .finish_non_exhaustive(),
        }
    }
}

impl Snapshot {
    /// Sets `schema` and `version` from the content. Call once, after every
    /// list is sorted.
    pub fn seal(mut self) -> Self {
        self.schema = crate::SCHEMA;
        self.version = self.content_hash();
        self
    }

    /// [`seal`](Self::seal), also returning the wire form ([`to_json`](Self::to_json))
    /// from the same serialisation: a large snapshot is serialised once
    /// instead of twice.
    pub fn seal_to_json(mut self) -> (Self, Vec<u8>) {
        self.schema = crate::SCHEMA;
        // As in `content_hash`: serialising plain data into memory does not fail.
        let mut bytes = serde_json::to_vec(&Unsealed(&self)).unwrap_or_default();
        self.version = crate::wire::version_of(&[&bytes]);
        // The unsealed form differs from the sealed one only in the empty
        // version string near its start; a hex version needs no escaping.
        use crate::wire::{VERSION_FIELD, find};
        match find(&bytes, VERSION_FIELD) {
            Some(at) => {
                let at = at + VERSION_FIELD.len();
                bytes.splice(at..at, self.version.bytes());
            }
            None => bytes = self.to_json().unwrap_or_default(),
        }
        (self, bytes)
    }

    /// The hash the version must equal.
    pub fn content_hash(&self) -> String {
        // Serialising with the version blanked avoids cloning a large snapshot.
        let bytes = serde_json::to_vec(&Unsealed(self)).unwrap_or_default();
        crate::wire::version_of(&[&bytes])
    }

    /// Serialised form, as sent on the wire and kept by the operator.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// A summary per kind, with no secret material: what admin endpoints show.
    pub fn summary(&self) -> Summary {
        let count = |k: &str| self.objects.iter().filter(|o| o.kind == k).count();
        Summary {
            schema: self.schema,
            version: self.version.clone(),
            proxy_targets: count("ProxyTarget"),
            routes: count("Route"),
            user_upstreams: count("UserUpstream"),
            tunnels: count("Tunnel"),
            oauth_clients: count("OAuthClient"),
            hostnames: self.sites.iter().map(|s| s.hostnames.len()).sum(),
            certificates: self.certificates.len(),
        }
    }
}

/// Serialises a snapshot as if its version were empty.
struct Unsealed<'a>(&'a Snapshot);

impl Serialize for Unsealed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let snap = self.0;
        let mut st = s.serialize_struct("Snapshot", 9)?;
        st.serialize_field("schema", &snap.schema)?;
        st.serialize_field("version", "")?;
        st.serialize_field("objects", &snap.objects)?;
        st.serialize_field("sites", &snap.sites)?;
        st.serialize_field("users", &snap.users)?;
        st.serialize_field("tunnels", &snap.tunnels)?;
        st.serialize_field("oauthClients", &snap.oauth_clients)?;
        st.serialize_field("certificates", &snap.certificates)?;
        if snap.acme_challenges.is_empty() {
            st.skip_field("acmeChallenges")?;
        } else {
            st.serialize_field("acmeChallenges", &snap.acme_challenges)?;
        }
        st.end()
    }
}

/// Counts per kind: safe to show anyone who may see the admin API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub schema: u32,
    pub version: String,
    pub proxy_targets: usize,
    pub routes: usize,
    pub user_upstreams: usize,
    pub tunnels: usize,
    pub oauth_clients: usize,
    pub hostnames: usize,
    pub certificates: usize,
}
