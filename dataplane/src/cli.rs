//! The command line: subcommands and flags, parsed by clap in `main`. Holds
//! no behaviour; each flag's environment variable suits a Helm chart.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Postern's data plane.
#[derive(Debug, Parser)]
#[command(name = "postern", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format (the level comes from RUST_LOG, default info).
    #[arg(
        long,
        global = true,
        env = "POSTERN_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProxyVersion {
    V1,
    V2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Cluster mode: receive snapshots from the operator.
    Dataplane(DataplaneArgs),
    /// No cluster: compile a folder of manifests and watch it.
    Standalone(StandaloneArgs),
    /// The tunnel client: publishes local services through a data plane.
    Agent(AgentArgs),
    /// Tunnel keys and agent tokens.
    #[command(subcommand)]
    Tunnel(crate::tunnel::keys::TunnelCommand),
}

#[derive(Debug, Args)]
pub struct DataplaneArgs {
    /// The operator's sync endpoint, HOST:PORT.
    #[arg(long, env = "POSTERN_OPERATOR", value_name = "HOST:PORT", value_parser = parse_host_port)]
    pub operator: String,
    /// A file holding the shared sync token (re-read on every connection).
    #[arg(long, env = "POSTERN_SYNC_TOKEN_FILE", value_name = "PATH")]
    pub sync_token_file: Option<PathBuf>,
    /// A file holding this data plane's own ServiceAccount token (a
    /// projected token for the audience `postern-sync`, which kubelet
    /// refreshes; re-read on every connection). Wins over the shared token;
    /// the operator then takes this data plane's id from the token.
    #[arg(long, env = "POSTERN_SYNC_SA_TOKEN_FILE", value_name = "PATH")]
    pub sync_sa_token_file: Option<PathBuf>,
    /// The shared sync token itself, when no file is given.
    #[arg(long, env = "POSTERN_SYNC_TOKEN", hide_env_values = true, hide = true)]
    pub sync_token: Option<String>,
    /// PEM bundle of the CA(s) that sign the operator's sync certificate.
    /// Given: the sync stream is TLS, verified against this bundle only
    /// (re-read on every connection). Absent: plain TCP.
    #[arg(long, env = "POSTERN_SYNC_CA", value_name = "FILE")]
    pub sync_ca: Option<PathBuf>,
    /// The name the operator's certificate must carry (default: the host
    /// part of --operator).
    #[arg(
        long,
        env = "POSTERN_SYNC_SERVER_NAME",
        value_name = "NAME",
        requires = "sync_ca"
    )]
    pub sync_server_name: Option<String>,
    /// This data plane's name in the operator's status and metrics
    /// (default: $POD_NAME, else the hostname).
    #[arg(long, env = "POD_NAME")]
    pub dataplane_id: Option<String>,
    /// Keep the last applied snapshot here (created if missing, owner-only),
    /// and serve it at start-up while the operator cannot be reached.
    #[arg(long, env = "POSTERN_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub listeners: ListenerArgs,
}

#[derive(Debug, Args)]
pub struct StandaloneArgs {
    /// The folder of manifests (*.yaml, *.yml; not recursive).
    #[arg(long, env = "POSTERN_MANIFESTS", value_name = "DIR")]
    pub manifests: PathBuf,
    /// The folder is refused whole (the last good snapshot serves) when its
    /// manifest files total more bytes than this.
    #[arg(long, env = "POSTERN_MANIFESTS_MAX_BYTES", default_value_t = 32 * 1024 * 1024, value_name = "BYTES")]
    pub manifests_max_bytes: u64,
    /// ... or hold more YAML documents than this.
    #[arg(
        long,
        env = "POSTERN_MANIFESTS_MAX_DOCUMENTS",
        default_value_t = 20_000,
        value_name = "N"
    )]
    pub manifests_max_documents: usize,
    /// Where ACME account keys and certificates are kept (created if
    /// missing). Without it no certificate is ordered.
    #[arg(long, env = "POSTERN_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub acme: postern_acme::AcmeArgs,
    #[command(flatten)]
    pub listeners: ListenerArgs,
}

impl StandaloneArgs {
    pub fn limits(&self) -> crate::standalone::Limits {
        crate::standalone::Limits {
            max_bytes: self.manifests_max_bytes,
            max_documents: self.manifests_max_documents,
        }
    }
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// The data plane's tunnel listener (`--tunnel-addr`), HOST:PORT; or,
    /// where only HTTPS gets out, its HTTPS listener as
    /// `wss://HOST[:PORT]/.well-known/postern/tunnel` (any host it serves).
    #[arg(long, env = "POSTERN_AGENT_SERVER", value_name = "HOST:PORT|wss://URL", value_parser = parse_server)]
    pub server: String,
    /// The name the server's certificate carries (default: the host of
    /// --server; set it when --server is an address).
    #[arg(long, env = "POSTERN_AGENT_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
    /// PEM CA bundle that verifies the server (default: the system's roots).
    #[arg(long, env = "POSTERN_AGENT_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The agent token (`postern tunnel token`), re-read on every connection.
    #[arg(long, env = "POSTERN_AGENT_TOKEN_FILE", value_name = "FILE")]
    pub token_file: PathBuf,
    /// A local service: `http://127.0.0.1:3000`, `https://...`, `h2c://...`
    /// (HTTP/2 without TLS, for gRPC) or `tcp://127.0.0.1:5432`; `NS/NAME=URL`
    /// for one tunnel of several.
    /// Repeatable; one unnamed --to serves every other tunnel of the token.
    #[arg(long = "to", required = true, value_name = "URL", value_parser = crate::agent::Mapping::parse)]
    pub to: Vec<crate::agent::Mapping>,
    /// PEM CA bundle trusted for `https://` local services.
    #[arg(long, env = "POSTERN_AGENT_TO_CA", value_name = "FILE")]
    pub to_ca: Option<PathBuf>,
    /// The longest wait between two dials (jittered exponential backoff
    /// from 100 ms; refusals back off from 1 s to 60 s instead).
    #[arg(long, default_value = "500ms", value_parser = parse_duration, value_name = "DURATION")]
    pub reconnect_max: Duration,
    /// Send a PROXY protocol header (v1 or v2) naming the public client
    /// first on every tcp tunnel connection to the local service.
    #[arg(long, env = "POSTERN_AGENT_PROXY_PROTOCOL", value_name = "VERSION")]
    pub proxy_protocol: Option<ProxyVersion>,
    /// On SIGTERM, how long in-flight streams may take.
    #[arg(long, default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,
}

/// Every listener of the data plane. Port 0 picks a free port; the log and
/// the address file say which.
#[derive(Debug, Clone, Args)]
pub struct ListenerArgs {
    /// CONNECT / HTTP forward proxy.
    #[arg(long, env = "POSTERN_PROXY_ADDR", default_value = "0.0.0.0:8090", value_parser = parse_addr, value_name = "HOST:PORT")]
    pub proxy_addr: SocketAddr,
    /// SOCKS5 forward proxy.
    #[arg(long, env = "POSTERN_SOCKS_ADDR", default_value = "0.0.0.0:1080", value_parser = parse_addr, value_name = "HOST:PORT")]
    pub socks_addr: SocketAddr,
    /// Plain HTTP: ACME challenges, redirects, plain sites.
    #[arg(long, env = "POSTERN_HTTP_ADDR", default_value = "0.0.0.0:8080", value_parser = parse_addr, value_name = "HOST:PORT")]
    pub http_addr: SocketAddr,
    /// HTTPS sites.
    #[arg(long, env = "POSTERN_HTTPS_ADDR", default_value = "0.0.0.0:8443", value_parser = parse_addr, value_name = "HOST:PORT")]
    pub https_addr: SocketAddr,
    /// Tunnel agents.
    #[arg(long, env = "POSTERN_TUNNEL_ADDR", default_value = "0.0.0.0:9443", value_parser = parse_addr, value_name = "HOST:PORT")]
    pub tunnel_addr: SocketAddr,
    /// Admin API, /metrics, /healthz, /readyz.
    /// Loopback by default: the admin API is unauthenticated (the chart binds
    /// it to the pod address for probes and scraping).
    #[arg(long, env = "POSTERN_ADMIN_ADDR", default_value = "127.0.0.1:9000", value_parser = parse_addr, value_name = "HOST:PORT")]
    pub admin_addr: SocketAddr,
    /// Threads that serve the traffic listeners' connections, each with its
    /// own runtime, a connection staying on the thread that accepted it.
    /// 0: one per CPU the process may use.
    #[arg(
        long,
        env = "POSTERN_SERVE_THREADS",
        default_value_t = 0,
        value_name = "N"
    )]
    pub serve_threads: usize,
    /// Once bound, write the listeners' real addresses here as JSON.
    #[arg(long, env = "POSTERN_ADDR_FILE", value_name = "PATH")]
    pub addr_file: Option<PathBuf>,
    /// How the forward proxy listeners (`--proxy-addr`, `--socks-addr`) behave.
    #[command(flatten)]
    pub proxy: ProxyArgs,
    /// How the reverse proxy listeners (`--http-addr`, `--https-addr`) behave.
    #[command(flatten)]
    pub reverse: crate::reverse::ReverseArgs,
    /// The agent listener (`--tunnel-addr`) and tcp tunnels.
    #[command(flatten)]
    pub tunnel: crate::tunnel::TunnelArgs,
    /// The OAuth authorization server and guard.
    #[command(flatten)]
    pub oauth: crate::oauth::OauthArgs,
    /// Connection caps of the traffic listeners.
    #[command(flatten)]
    pub caps: CapArgs,
    /// The request log's store and retention.
    #[command(flatten)]
    pub request_log: crate::reqlog::RequestLogArgs,
}

/// Caps on client connections. Every traffic listener (proxy, socks, http,
/// https, tunnel) also draws on one budget for the process: the open-file
/// limit less a reserve, so descriptors never run out and the admin
/// listener keeps answering. A connection beyond a cap is closed at once
/// and counted in `postern_connections_refused_total`.
#[derive(Debug, Clone, Args)]
pub struct CapArgs {
    /// Connections one traffic listener holds at most (0: only the budget).
    #[arg(
        long,
        env = "POSTERN_MAX_CONNECTIONS",
        default_value_t = 0,
        value_name = "N"
    )]
    pub max_connections: usize,
    /// Connections one client address holds at most on one traffic
    /// listener (0: unlimited). Peers trusted for PROXY protocol are exempt.
    #[arg(
        long,
        env = "POSTERN_MAX_CONNECTIONS_PER_CLIENT",
        default_value_t = 1024,
        value_name = "N"
    )]
    pub max_connections_per_client: usize,
}

impl CapArgs {
    pub fn caps(&self) -> crate::net::Caps {
        crate::net::Caps {
            per_listener: self.max_connections,
            per_client: self.max_connections_per_client,
        }
    }
}

/// Timeouts and limits of the forward proxy. Durations take `ms`, `s` or `m`.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Establishing a tunnel (resolution, TCP, TLS, upstream handshake); 504 beyond.
    #[arg(long, env = "POSTERN_PROXY_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub proxy_connect_timeout: Duration,
    /// A tunnel with no traffic either way for this long is closed (and a
    /// plain-HTTP request waits this long at most for its response head).
    #[arg(long, env = "POSTERN_PROXY_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration, value_name = "DURATION")]
    pub proxy_idle_timeout: Duration,
    /// A client must send its request head or SOCKS handshake within this.
    #[arg(long, env = "POSTERN_PROXY_HANDSHAKE_TIMEOUT", default_value = "30s", value_parser = parse_duration, value_name = "DURATION")]
    pub proxy_handshake_timeout: Duration,
    /// The largest request head the HTTP proxy accepts (431 beyond; at least 8192).
    #[arg(long, env = "POSTERN_PROXY_MAX_HEADER_BYTES", default_value_t = 32 * 1024, value_name = "BYTES")]
    pub proxy_max_header_bytes: usize,
    /// A PEM file of extra CA certificates trusted for `https://` upstream
    /// proxies, besides the system's roots. Repeatable.
    #[arg(
        long,
        env = "POSTERN_UPSTREAM_CA_FILE",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub upstream_ca_file: Vec<PathBuf>,
    /// A file holding the admin role's bearer token: the admin API and
    /// dashboard (reads and actions) and the UpstreamGate-compatible
    /// `/upstream` API. Re-read when it changes (rotation without restart).
    /// Absent (and no read token): every authenticated call is refused.
    #[arg(long, env = "POSTERN_ADMIN_TOKEN_FILE", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,
    /// A file holding a read-only token for the admin API and dashboard
    /// (no actions, no `/upstream`). Re-read when it changes.
    #[arg(long, env = "POSTERN_ADMIN_READ_TOKEN_FILE", value_name = "PATH")]
    pub admin_read_token_file: Option<PathBuf>,
    /// `/metrics` asks for a token too (by default it is open for scrapers,
    /// like `/healthz` and `/readyz`).
    #[arg(long, env = "POSTERN_ADMIN_PROTECT_METRICS")]
    pub admin_protect_metrics: bool,
    /// Dashboard sign-on through an OpenID Connect provider.
    #[command(flatten)]
    pub admin_sso: postern_admin::SsoArgs,
    /// A network (CIDR or address) no proxy user reaches unless its
    /// UserUpstream lists it in `allowInternalNetworks`, like loopback and
    /// link-local. In a cluster: its pod and service ranges. Repeatable.
    #[arg(long, env = "POSTERN_PROXY_DENY_CIDR", value_name = "CIDR", value_delimiter = ',', value_parser = parse_cidr)]
    pub proxy_deny_cidr: Vec<ipnet::IpNet>,
}

impl ProxyArgs {
    /// The admin API's tokens, read once now (a missing or blank file is
    /// an error) and again whenever a file changes.
    pub fn admin_tokens(&self) -> Result<postern_admin::Tokens, postern_admin::TokenError> {
        postern_admin::Tokens::from_files(
            self.admin_token_file.as_deref(),
            self.admin_read_token_file.as_deref(),
        )
    }

    pub fn config(&self) -> crate::forward::ForwardConfig {
        crate::forward::ForwardConfig {
            connect_timeout: self.proxy_connect_timeout,
            idle_timeout: self.proxy_idle_timeout,
            handshake_timeout: self.proxy_handshake_timeout,
            max_header_bytes: self.proxy_max_header_bytes,
            upstream_ca_files: self.upstream_ca_file.clone(),
            deny_cidrs: self.proxy_deny_cidr.clone(),
        }
    }
}

/// `250ms`, `10s`, `5m` (a bare number is seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let err = || format!("{text}: expected a duration such as 500ms, 10s or 5m");
    let (digits, unit) = text.trim().split_at(
        text.trim()
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.trim().len()),
    );
    let n: u64 = digits.parse().map_err(|_| err())?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        _ => return Err(err()),
    };
    if d.is_zero() {
        return Err(err());
    }
    Ok(d)
}

/// `HOST:PORT`: an IP address, or a name resolved once at start-up.
fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    text.to_socket_addrs()
        .map_err(|e| format!("{text}: expected HOST:PORT ({e})"))?
        .next()
        .ok_or_else(|| format!("{text}: resolves to no address"))
}

/// `10.96.0.0/12`, or one address (`10.0.0.1`, a /32 or /128).
fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>()
        .map(|n| n.trunc())
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{text}: expected a CIDR such as 10.96.0.0/12"))
}

/// `HOST:PORT` kept as text: resolved on every connection attempt.
/// `HOST:PORT`, or a `wss://` URL with a host (port 443 by default).
fn parse_server(text: &str) -> Result<String, String> {
    if !text.starts_with("wss://") {
        return parse_host_port(text);
    }
    let uri: http::Uri = text.parse().map_err(|e| format!("{text}: {e}"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{text}: a wss:// URL needs a host"));
    }
    Ok(text.to_string())
}

fn parse_host_port(text: &str) -> Result<String, String> {
    let err = || format!("{text}: expected HOST:PORT");
    let (host, port) = text.rsplit_once(':').ok_or_else(err)?;
    let port: u16 = port.parse().map_err(|_| err())?;
    if host.is_empty() || port == 0 {
        return Err(err());
    }
    Ok(text.to_string())
}

/// Every listener flag on port 0, for tests.
#[cfg(test)]
pub(crate) const PORT_0_FLAGS: [&str; 6] = [
    "--proxy-addr=127.0.0.1:0",
    "--socks-addr=127.0.0.1:0",
    "--http-addr=127.0.0.1:0",
    "--https-addr=127.0.0.1:0",
    "--tunnel-addr=127.0.0.1:0",
    "--admin-addr=127.0.0.1:0",
];

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn both_modes_take_every_listener_flag() {
        let flags = PORT_0_FLAGS;
        let standalone = ["postern", "standalone", "--manifests", "m"];
        let dataplane = ["postern", "dataplane", "--operator", "op:7000"];
        for base in [&standalone[..], &dataplane[..]] {
            let args = base.iter().chain(flags.iter());
            let cli = Cli::try_parse_from(args).expect("parses");
            let listeners = match cli.command {
                Command::Standalone(a) => a.listeners,
                Command::Dataplane(a) => a.listeners,
                _ => panic!("wrong command"),
            };
            assert_eq!(listeners.tunnel_addr.port(), 0);
        }
    }

    #[test]
    fn addresses_resolve_names_and_reject_garbage() {
        assert_eq!(parse_addr("[::1]:9000").map(|a| a.port()), Ok(9000));
        assert!(parse_addr("localhost:9000").is_ok());
        assert!(parse_addr("9000").is_err());
        assert!(parse_addr("127.0.0.1:70000").is_err());
    }

    #[test]
    fn deny_cidrs_take_networks_and_addresses() {
        assert_eq!(
            parse_cidr("10.96.0.1/12").map(|n| n.to_string()),
            Ok("10.96.0.0/12".into())
        );
        assert_eq!(
            parse_cidr("fd00::1").map(|n| n.to_string()),
            Ok("fd00::1/128".into())
        );
        for bad in ["", "10.0.0.0/33", "cluster"] {
            assert!(parse_cidr(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "0s", "s", "1h", "-1s", "1.5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn operator_is_host_and_port() {
        assert!(parse_host_port("postern-operator.postern.svc:7000").is_ok());
        assert!(parse_host_port("[::1]:7000").is_ok());
        for bad in ["operator", "operator:", ":7000", "operator:0", "operator:x"] {
            assert!(parse_host_port(bad).is_err(), "{bad}");
        }
    }
}
