//! Command-line flags and the immutable configuration built from them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::sync_server::auth::{ServiceAccountPolicy, SyncAuthMode};
use crate::sync_tls::SyncTlsFiles;
use crate::token::SyncToken;
use crate::{Error, Result};

/// Flags of `postern-operator`; each falls back to an environment variable.
#[derive(Clone, Debug, Parser)]
#[command(name = "postern-operator", version, about)]
pub struct Args {
    /// Where data planes connect for snapshots.
    #[arg(long, env = "POSTERN_SYNC_ADDR", default_value = "0.0.0.0:9091")]
    pub sync_addr: SocketAddr,
    /// /healthz, /readyz, /metrics, /api/v1/snapshot and the /upstream API.
    #[arg(long, env = "POSTERN_ADMIN_ADDR", default_value = "0.0.0.0:9090")]
    pub admin_addr: SocketAddr,
    /// How data planes authenticate: `token` (the shared token below),
    /// `serviceaccount` (each its own ServiceAccount token, verified with
    /// a TokenReview), or `both`.
    #[arg(long, env = "POSTERN_SYNC_AUTH", value_enum, default_value = "token")]
    pub sync_auth: SyncAuthMode,
    /// NAMESPACE/NAME of a ServiceAccount whose tokens may connect as data
    /// planes (repeatable).
    #[arg(
        long = "sync-allowed-serviceaccount",
        env = "POSTERN_SYNC_ALLOWED_SERVICEACCOUNTS",
        value_delimiter = ',',
        value_name = "NS/NAME"
    )]
    pub sync_allowed_serviceaccounts: Vec<String>,
    /// The audience data planes' ServiceAccount tokens must be issued for.
    #[arg(long, env = "POSTERN_SYNC_AUDIENCE", default_value = "postern-sync")]
    pub sync_audience: String,
    /// Seconds between reviews of a connected data plane's ServiceAccount
    /// token; a failed review disconnects it.
    #[arg(long, env = "POSTERN_SYNC_REVIEW_SECS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_review_secs: u64,
    /// File holding the token data planes must present (a mounted Secret).
    #[arg(long, env = "POSTERN_SYNC_TOKEN_FILE")]
    pub sync_token_file: Option<PathBuf>,
    /// The token itself, when no file is given.
    #[arg(
        long = "sync-token",
        env = "POSTERN_SYNC_TOKEN",
        hide_env_values = true
    )]
    pub sync_token: Option<String>,
    /// PEM certificate chain for the sync port; with --sync-tls-key, data
    /// planes must connect with TLS. Re-read when the file changes.
    #[arg(long, env = "POSTERN_SYNC_TLS_CERT", value_name = "FILE")]
    pub sync_tls_cert: Option<PathBuf>,
    /// PEM private key of --sync-tls-cert.
    #[arg(long, env = "POSTERN_SYNC_TLS_KEY", value_name = "FILE")]
    pub sync_tls_key: Option<PathBuf>,
    /// PEM certificate chain for the admin port; with --admin-tls-key it
    /// serves HTTPS only. Re-read when the file changes. Absent: plain HTTP.
    #[arg(long, env = "POSTERN_ADMIN_TLS_CERT", value_name = "FILE")]
    pub admin_tls_cert: Option<PathBuf>,
    /// PEM private key of --admin-tls-cert.
    #[arg(long, env = "POSTERN_ADMIN_TLS_KEY", value_name = "FILE")]
    pub admin_tls_key: Option<PathBuf>,
    /// Watch only this namespace. Absent: every namespace.
    #[arg(long, env = "POSTERN_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace of the leader-election Lease: the one the operator runs in.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's name in the Lease and in logs. Default: POD_NAME, else the host name.
    #[arg(long, env = "POD_NAME")]
    pub operator_id: Option<String>,
    /// Quiet time that settles a burst of changes, or a change whose
    /// compile refuses an object anew (one that came before its Secret),
    /// before compiling (again). A lone change that refuses nothing new is
    /// published at once.
    #[arg(long, env = "POSTERN_DEBOUNCE_MS", default_value_t = 100)]
    pub debounce_ms: u64,
    /// Suffix of Service DNS names.
    #[arg(long, env = "POSTERN_CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// File holding the admin role's bearer token: the admin API and
    /// dashboard and the UpstreamGate-compatible `/upstream` API. Re-read
    /// when it changes. Absent (and no read token): they refuse every call.
    #[arg(long, env = "POSTERN_ADMIN_TOKEN_FILE", value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// File holding a read-only token for the admin API and dashboard.
    #[arg(long, env = "POSTERN_ADMIN_READ_TOKEN_FILE", value_name = "FILE")]
    pub admin_read_token_file: Option<PathBuf>,
    /// `/metrics` asks for a token too (by default it is open for scrapers).
    #[arg(long, env = "POSTERN_ADMIN_PROTECT_METRICS")]
    pub admin_protect_metrics: bool,
    /// Dashboard sign-on through an OpenID Connect provider.
    #[command(flatten)]
    pub admin_sso: postern_admin::SsoArgs,
    /// Where the `/upstream` API writes UserUpstreams and their Secrets.
    /// Default: --namespace if set, else `default`.
    #[arg(long, env = "POSTERN_UPSTREAM_API_NAMESPACE", value_name = "NS")]
    pub upstream_api_namespace: Option<String>,
    /// YAML file binding hostname patterns and user-name prefixes to
    /// namespaces (see the README). Absent: any namespace may claim any
    /// name, with no takeover of lost claims.
    #[arg(long, env = "POSTERN_NAME_POLICY", value_name = "FILE")]
    pub name_policy: Option<PathBuf>,
    /// Once listening, write `{"sync": ADDR, "admin": ADDR}` here (for port 0).
    #[arg(long)]
    pub addr_file: Option<PathBuf>,
    #[command(flatten)]
    pub acme: postern_acme::AcmeArgs,
}

/// Leader-election timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a lease holds without renewal.
    pub duration: Duration,
    /// How often the holder renews and others retry.
    pub renew: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming {
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        }
    }
}

/// The operator's configuration, fixed for the life of the process.
#[derive(Clone, Debug)]
pub struct Config {
    pub sync_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub sync_auth: SyncAuth,
    /// `None`: the sync stream is plain TCP.
    pub sync_tls: Option<SyncTlsFiles>,
    /// `None`: the admin port is plain HTTP.
    pub admin_tls: Option<SyncTlsFiles>,
    pub namespace: Option<String>,
    pub lease_namespace: String,
    pub operator_id: String,
    pub debounce: Duration,
    pub cluster_domain: String,
    pub addr_file: Option<PathBuf>,
    pub lease: LeaseTiming,
    /// The admin API's tokens (admin and read roles), re-read on change.
    pub admin_tokens: Arc<postern_admin::Tokens>,
    pub admin_protect_metrics: bool,
    /// Dashboard sign-on, when an issuer is configured.
    pub admin_sso: Option<Arc<postern_admin::Sso>>,
    /// Where the `/upstream` API writes; always within the watch scope.
    pub upstream_api_namespace: String,
    /// ACME issuers and the renewal policy (the leader orders).
    pub acme: postern_acme::AcmeConfig,
    /// Who may claim which names; `None`: no policy was given (anyone may).
    pub name_policy: Option<postern_compile::NamePolicy>,
}

/// What a data plane may present in its hello: the shared token, a
/// ServiceAccount token, or (both `Some`) either.
#[derive(Clone, Debug)]
pub struct SyncAuth {
    pub token: Option<SyncToken>,
    pub serviceaccounts: Option<ServiceAccountPolicy>,
}

impl Args {
    /// Reads the token file and fills in defaults that need the environment.
    pub fn into_config(self) -> Result<Config> {
        let sync_auth = self.sync_auth()?;
        let sync_tls =
            tls_pair(self.sync_tls_cert, self.sync_tls_key, "sync").map_err(Error::Tls)?;
        let admin_tls =
            tls_pair(self.admin_tls_cert, self.admin_tls_key, "admin").map_err(Error::Config)?;
        let admin_tokens = Arc::new(
            postern_admin::Tokens::from_files(
                self.admin_token_file.as_deref(),
                self.admin_read_token_file.as_deref(),
            )
            .map_err(|e| match e {
                postern_admin::TokenError::Read { path, source } => {
                    Error::ReadFile { path, source }
                }
                empty => Error::AdminToken(empty.to_string()),
            })?,
        );
        let acme = postern_acme::AcmeConfig::from_args(&self.acme)
            .map_err(|e| Error::Config(e.to_string()))?;
        let name_policy = match &self.name_policy {
            Some(path) => Some(read_name_policy(path)?),
            None => None,
        };
        let namespace = self.namespace.filter(|ns| !ns.is_empty());
        let upstream_api_namespace =
            upstream_api_namespace(self.upstream_api_namespace, namespace.as_deref())?;
        Ok(Config {
            sync_addr: self.sync_addr,
            admin_addr: self.admin_addr,
            sync_auth,
            sync_tls,
            admin_tls,
            namespace,
            lease_namespace: self.lease_namespace,
            operator_id: self.operator_id.unwrap_or_else(default_operator_id),
            debounce: Duration::from_millis(self.debounce_ms),
            cluster_domain: self.cluster_domain,
            addr_file: self.addr_file,
            lease: LeaseTiming::default(),
            admin_tokens,
            admin_protect_metrics: self.admin_protect_metrics,
            admin_sso: self
                .admin_sso
                .build()
                .map_err(|e| Error::Config(e.to_string()))?
                .map(Arc::new),
            upstream_api_namespace,
            acme,
            name_policy,
        })
    }
}

impl Args {
    /// The shared token is read only when the mode accepts it; the
    /// ServiceAccount policy needs at least one allowed ServiceAccount.
    fn sync_auth(&self) -> Result<SyncAuth> {
        let token = match self.sync_auth {
            SyncAuthMode::Serviceaccount => None,
            SyncAuthMode::Token | SyncAuthMode::Both => Some(self.shared_token()?),
        };
        let serviceaccounts = match self.sync_auth {
            SyncAuthMode::Token => None,
            SyncAuthMode::Serviceaccount | SyncAuthMode::Both => Some(
                ServiceAccountPolicy::new(
                    &self.sync_allowed_serviceaccounts,
                    self.sync_audience.clone(),
                    Duration::from_secs(self.sync_review_secs),
                )
                .map_err(Error::Config)?,
            ),
        };
        Ok(SyncAuth {
            token,
            serviceaccounts,
        })
    }

    fn shared_token(&self) -> Result<SyncToken> {
        match (&self.sync_token_file, &self.sync_token) {
            (Some(path), _) => {
                let raw = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
                    path: path.clone(),
                    source,
                })?;
                SyncToken::new(&raw)
                    .ok_or_else(|| Error::Token(format!("{} is empty", path.display())))
            }
            (None, Some(raw)) => SyncToken::new(raw)
                .ok_or_else(|| Error::Token("POSTERN_SYNC_TOKEN is empty".into())),
            (None, None) => Err(Error::Token(
                "give --sync-token-file or POSTERN_SYNC_TOKEN (or --sync-auth serviceaccount)"
                    .into(),
            )),
        }
    }
}

/// A certificate and key given together, or neither.
fn tls_pair(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    port: &str,
) -> Result<Option<SyncTlsFiles>, String> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(SyncTlsFiles { cert, key })),
        (None, None) => Ok(None),
        _ => Err(format!(
            "give both --{port}-tls-cert and --{port}-tls-key, or neither"
        )),
    }
}

/// The name policy file; one that does not read or check stops the
/// operator rather than falling back to letting anyone claim anything.
fn read_name_policy(path: &std::path::Path) -> Result<postern_compile::NamePolicy> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    postern_compile::NamePolicy::from_yaml(&text)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// Objects outside the watch scope would never be compiled, so a namespace
/// the operator does not watch is refused.
fn upstream_api_namespace(flag: Option<String>, watched: Option<&str>) -> Result<String> {
    let chosen = flag
        .filter(|ns| !ns.is_empty())
        .or_else(|| watched.map(str::to_string))
        .unwrap_or_else(|| "default".to_string());
    match watched {
        Some(watched) if watched != chosen => Err(Error::Config(format!(
            "--upstream-api-namespace {chosen} is not the watched --namespace {watched}"
        ))),
        _ => Ok(chosen),
    }
}

/// The host name, which in a pod is the pod name.
fn default_operator_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("postern-operator-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Args {
        let mut argv = vec!["postern-operator"];
        argv.extend_from_slice(args);
        Args::try_parse_from(argv).expect("args parse")
    }

    #[test]
    fn token_is_required() {
        let args = Args {
            sync_token: None,
            sync_token_file: None,
            ..parse(&[])
        };
        assert!(matches!(args.into_config(), Err(Error::Token(_))));
    }

    #[test]
    fn flags_become_config() {
        let config = parse(&[
            "--sync-token",
            "t",
            "--sync-addr",
            "127.0.0.1:0",
            "--namespace",
            "team-a",
            "--operator-id",
            "op-1",
            "--debounce-ms",
            "20",
        ])
        .into_config()
        .expect("config");
        assert_eq!(config.sync_addr.port(), 0);
        assert_eq!(config.namespace.as_deref(), Some("team-a"));
        assert_eq!(config.operator_id, "op-1");
        assert_eq!(config.debounce, Duration::from_millis(20));
        assert!(
            config
                .sync_auth
                .token
                .as_ref()
                .is_some_and(|t| t.matches("t"))
        );
        assert!(config.sync_auth.serviceaccounts.is_none());
        assert_eq!(config.sync_tls, None);
    }

    #[test]
    fn the_upstream_api_writes_where_the_operator_watches() {
        let config = parse(&["--sync-token=t"]).into_config().expect("config");
        assert_eq!(config.upstream_api_namespace, "default");
        assert!(!config.admin_tokens.configured());
        let config = parse(&["--sync-token=t", "--namespace=team-a"])
            .into_config()
            .expect("config");
        assert_eq!(config.upstream_api_namespace, "team-a");
        let config = parse(&["--sync-token=t", "--upstream-api-namespace=users"])
            .into_config()
            .expect("config");
        assert_eq!(config.upstream_api_namespace, "users");
        let outside = parse(&[
            "--sync-token=t",
            "--namespace=team-a",
            "--upstream-api-namespace=users",
        ])
        .into_config();
        assert!(matches!(outside, Err(Error::Config(_))), "{outside:?}");
    }

    #[test]
    fn the_admin_token_comes_from_a_file_and_is_never_blank() {
        let dir = std::env::temp_dir().join(format!("postern-admin-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("token");
        std::fs::write(&file, "s3cret\n").expect("write");
        let flag = format!("--admin-token-file={}", file.display());
        let config = parse(&["--sync-token=t", &flag])
            .into_config()
            .expect("config");
        assert_eq!(
            config.admin_tokens.role_of("s3cret"),
            Some(postern_admin::Role::Admin)
        );
        std::fs::write(&file, " \n").expect("write");
        let blank = parse(&["--sync-token=t", &flag]).into_config();
        assert!(matches!(blank, Err(Error::AdminToken(_))), "{blank:?}");
        let missing = parse(&["--sync-token=t", "--admin-token-file=/nonexistent/t"]).into_config();
        assert!(
            matches!(missing, Err(Error::ReadFile { .. })),
            "{missing:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_name_policy_is_read_and_checked_at_start() {
        assert!(
            parse(&["--sync-token=t"])
                .into_config()
                .expect("config")
                .name_policy
                .is_none()
        );
        let dir = std::env::temp_dir().join(format!("postern-name-policy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("policy.yaml");
        let flag = format!("--name-policy={}", file.display());
        std::fs::write(
            &file,
            "rules: [{hostnames: [\"*.a.example\"], namespaces: [a]}]\n",
        )
        .expect("write");
        let config = parse(&["--sync-token=t", &flag])
            .into_config()
            .expect("config");
        assert!(config.name_policy.is_some());
        std::fs::write(&file, "rules: [{hostnames: [\"*.a.example\"]}]\n").expect("write");
        let bad = parse(&["--sync-token=t", &flag]).into_config();
        assert!(
            matches!(&bad, Err(Error::Config(m)) if m.contains("namespaces")),
            "{bad:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn serviceaccount_auth_needs_an_allowed_account_and_no_shared_token() {
        let config = parse(&[
            "--sync-auth=serviceaccount",
            "--sync-allowed-serviceaccount=edge/postern-dataplane",
            "--sync-review-secs=60",
        ])
        .into_config()
        .expect("config");
        assert!(config.sync_auth.token.is_none());
        let policy = config.sync_auth.serviceaccounts.expect("policy");
        assert_eq!(
            policy.allowed,
            ["system:serviceaccount:edge:postern-dataplane"]
        );
        assert_eq!(policy.audience, "postern-sync");
        assert_eq!(policy.review_every, Duration::from_secs(60));
        let none = parse(&["--sync-auth=serviceaccount"]).into_config();
        assert!(matches!(none, Err(Error::Config(_))), "{none:?}");
        let both = parse(&["--sync-auth=both", "--sync-allowed-serviceaccount=a/b"]).into_config();
        assert!(matches!(both, Err(Error::Token(_))), "{both:?}");
        let both = parse(&[
            "--sync-auth=both",
            "--sync-token=t",
            "--sync-allowed-serviceaccount=a/b",
        ])
        .into_config()
        .expect("config");
        assert!(both.sync_auth.token.is_some() && both.sync_auth.serviceaccounts.is_some());
    }

    #[test]
    fn tls_takes_a_cert_and_a_key() {
        let config = parse(&[
            "--sync-token=t",
            "--sync-tls-cert=/tls/tls.crt",
            "--sync-tls-key=/tls/tls.key",
        ])
        .into_config()
        .expect("config");
        let files = config.sync_tls.expect("tls");
        assert_eq!(files.cert, PathBuf::from("/tls/tls.crt"));
        assert_eq!(files.key, PathBuf::from("/tls/tls.key"));

        let half = parse(&["--sync-token=t", "--sync-tls-cert=/tls/tls.crt"]).into_config();
        assert!(matches!(half, Err(Error::Tls(_))), "{half:?}");
        let admin = parse(&[
            "--sync-token=t",
            "--admin-tls-cert=/a/tls.crt",
            "--admin-tls-key=/a/tls.key",
        ])
        .into_config()
        .expect("config");
        assert_eq!(
            admin.admin_tls.map(|f| f.key),
            Some(PathBuf::from("/a/tls.key"))
        );
        let half = parse(&["--sync-token=t", "--admin-tls-key=/a/tls.key"]).into_config();
        assert!(
            matches!(half, Err(Error::Config(m)) if m.contains("admin")),
            "admin half"
        );
    }
}
