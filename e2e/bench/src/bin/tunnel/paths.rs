//! The tunnels under test, each carrying the same local services to public
//! ports on the server's side: Postern (agent + data plane, one TLS
//! connection multiplexed with HTTP/2), rathole (plain TCP and TLS
//! transports; a new data connection per visitor) and bore (plain TCP).
//! Every process is started here with its own configuration and stopped
//! on drop.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use postern_harness::pki::Leaf;
use postern_harness::{
    Agent, Ca, Launch, Postern, Proc, TunnelKey, documents, free_port, tmp_dir, tunnel_yaml,
};

/// The name on the tunnel servers' certificate.
pub const SERVER_NAME: &str = "tunnel.bench.test";
/// The peers' installs, shared between runs.
const TOOLS: &str = ".cache/postern-bench";

/// The local services, as the agent side reaches them.
#[derive(Clone, Copy)]
pub struct Services {
    pub iperf: SocketAddr,
    pub web: Option<SocketAddr>,
    pub echo: Option<SocketAddr>,
}

impl Services {
    fn named(&self) -> Vec<(&'static str, SocketAddr)> {
        let mut all = vec![("iperf", self.iperf)];
        all.extend(self.web.map(|a| ("web", a)));
        all.extend(self.echo.map(|a| ("echo", a)));
        all
    }
}

/// Where the two ends run: the server (and the public ports, on its
/// loopback) here, the agent side through `far` (`ip netns exec NS`, or
/// nothing), dialling the server at `server_ip`.
#[derive(Clone)]
pub struct Sides {
    pub server_ip: IpAddr,
    pub far: Vec<String>,
}

impl Sides {
    pub fn loopback() -> Sides {
        Sides {
            server_ip: IpAddr::from([127, 0, 0, 1]),
            far: Vec::new(),
        }
    }
}

/// One way through: the public address of each service, and the
/// processes at both ends.
pub struct Tunnel {
    pub name: &'static str,
    pub iperf: SocketAddr,
    pub web: Option<SocketAddr>,
    pub echo: Option<SocketAddr>,
    ends: Ends,
}

enum Ends {
    Direct,
    Postern {
        server: Box<Postern>,
        agent: Agent,
        leaf: Box<Leaf>,
    },
    Peer {
        server: Proc,
        client: Proc,
        /// How to start the server again, for the reconnect row.
        relaunch: Box<dyn Fn() -> Launch>,
    },
}

/// Which tunnel.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Direct,
    Postern,
    Rathole,
    RatholeTls,
    Bore,
}

impl Kind {
    /// How the command line names it.
    pub fn short(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Postern => "postern",
            Kind::Rathole => "rathole",
            Kind::RatholeTls => "rathole-tls",
            Kind::Bore => "bore",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Postern => "postern (TLS, h2 mux)",
            Kind::Rathole => "rathole (plain TCP)",
            Kind::RatholeTls => "rathole (TLS)",
            Kind::Bore => "bore (plain TCP)",
        }
    }
}

impl Tunnel {
    pub async fn start(kind: Kind, services: Services, sides: &Sides) -> Result<Tunnel> {
        match kind {
            Kind::Direct => Ok(Tunnel {
                name: kind.name(),
                iperf: services.iperf,
                web: services.web,
                echo: services.echo,
                ends: Ends::Direct,
            }),
            Kind::Postern => postern(services, sides).await,
            Kind::Rathole => rathole(services, sides, false).await,
            Kind::RatholeTls => rathole(services, sides, true).await,
            Kind::Bore => bore(services, sides).await,
        }
    }

    /// The server's and the client's process ids (none for direct).
    pub fn pids(&self) -> Option<(u32, u32)> {
        match &self.ends {
            Ends::Direct => None,
            Ends::Postern { server, agent, .. } => Some((server.pid(), agent.pid())),
            Ends::Peer { server, client, .. } => Some((server.pid(), client.pid())),
        }
    }

    /// SIGKILLs the server and starts it again on the same ports; returns
    /// once the new one listens (for Postern: serves its manifests).
    pub async fn restart_server(&mut self) -> Result<()> {
        match &mut self.ends {
            Ends::Direct => bail!("direct has no server"),
            Ends::Postern { server, leaf, .. } => {
                let tunnel = server.tunnel.context("no tunnel listener")?;
                let dir = server.manifests().to_path_buf();
                server.kill();
                **server = Postern::standalone(dir)
                    .tunnel_tls(leaf)
                    .listen("--tunnel-addr", tunnel)
                    .args(postern_args())
                    .env("RUST_LOG", QUIET)
                    .start()
                    .await;
            }
            Ends::Peer {
                server, relaunch, ..
            } => {
                server.kill();
                *server = relaunch().spawn();
            }
        }
        Ok(())
    }
}

/// Per-stream log lines off on both sides, like the peers' (which log
/// nothing per connection at their defaults).
const QUIET: &str = "info,postern::tunnel::tcp=warn,postern::agent::local=warn";

fn postern_args() -> [&'static str; 4] {
    [
        "--max-connections-per-client",
        "0",
        "--max-connections",
        "0",
    ]
}

fn binary(name: &str) -> PathBuf {
    match std::env::var_os("POSTERN_BIN").filter(|_| name == "postern") {
        Some(bin) => PathBuf::from(bin),
        None => postern_harness::binary(name),
    }
}

async fn postern(services: Services, sides: &Sides) -> Result<Tunnel> {
    let ca = Ca::new("tunnel bench CA");
    let ca_file = ca.write(&tmp_dir("tunnel-bench-ca"));
    let leaf = ca.leaf(&[SERVER_NAME]);
    let key = TunnelKey::generate("ed25519");
    let named = services.named();
    let mut docs = vec![key.secret_yaml("agent-key")];
    let mut public = Vec::new();
    for (name, _) in &named {
        let port = free_port();
        public.push(SocketAddr::from(([127, 0, 0, 1], port)));
        docs.push(tunnel_yaml(
            name,
            "agent-key",
            &format!("  mode: tcp\n  tcpPort: {port}\n"),
        ));
    }
    let server = Postern::standalone_with("tunnel-bench", &[("all.yaml", documents(&docs))])
        .bin(binary("postern"))
        .tunnel_tls(&leaf)
        .listen("--tunnel-addr", SocketAddr::new(sides.server_ip, 0))
        .args(postern_args())
        .env("RUST_LOG", QUIET)
        .start()
        .await;
    let tunnels: Vec<String> = named.iter().map(|(n, _)| format!("default/{n}")).collect();
    let tunnels: Vec<&str> = tunnels.iter().map(String::as_str).collect();
    let to: Vec<String> = named
        .iter()
        .map(|(n, a)| format!("default/{n}=tcp://{a}"))
        .collect();
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    let tunnel = server.tunnel.context("no tunnel listener")?;
    let agent = Agent::builder(
        tunnel,
        SERVER_NAME,
        &ca_file,
        &key.token(&tunnels, "1d"),
        &to,
    )
    .program(binary("postern"))
    .wrapped(&sides.far)
    .env("RUST_LOG", QUIET)
    .spawn();
    agent
        .wait_status("connected", 1, Duration::from_secs(30))
        .await;
    // The public ports open once the agent is live. A probe of iperf3's
    // port is a session iperf3 must first give up on; let it.
    for addr in &public {
        postern_harness::wait_port(*addr).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Tunnel {
        name: Kind::Postern.name(),
        iperf: public[0],
        web: services.web.map(|_| public[1]),
        echo: services.echo.map(|_| public[named.len() - 1]),
        ends: Ends::Postern {
            server: Box::new(server),
            agent,
            leaf: Box::new(leaf),
        },
    })
}

/// `cargo install`s a peer into `~/.cache/postern-bench` unless there.
pub fn tool(bin: &str, krate: &str, version: &str) -> Result<PathBuf> {
    let root = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(TOOLS);
    let path = root.join("bin").join(bin);
    if path.is_file() {
        return Ok(path);
    }
    eprintln!("installing {krate} {version} (cargo install, once)");
    // rathole's own lock file pins a `time` that no longer builds with this
    // toolchain, so no --locked: the newest compatible dependencies.
    let status = Command::new("cargo")
        .args(["install", "--quiet", "--root"])
        .arg(&root)
        .args([krate, "--version", version])
        .status()
        .context("running cargo install")?;
    if !status.success() {
        bail!("cargo install {krate} {version} failed");
    }
    Ok(path)
}

fn launch(name: &str, program: &Path, wrapper: &[String]) -> Launch {
    Launch::new(name, program)
        .wrapped(wrapper)
        .env("RUST_LOG", "info")
}

async fn rathole(services: Services, sides: &Sides, tls: bool) -> Result<Tunnel> {
    let bin = tool("rathole", "rathole", "0.5.0")?;
    let dir = tmp_dir(if tls { "rathole-tls" } else { "rathole" });
    let control = SocketAddr::new(sides.server_ip, free_port());
    let (server_tls, client_tls) = if tls {
        let ca = Ca::new("rathole bench CA");
        let leaf = ca.leaf(&[SERVER_NAME]);
        let files = leaf.write(&dir);
        let p12 = dir.join("identity.p12");
        let status = Command::new("openssl")
            .args(["pkcs12", "-export", "-passout", "pass:bench", "-inkey"])
            .arg(&files.key)
            .arg("-in")
            .arg(&files.cert)
            .arg("-out")
            .arg(&p12)
            .status()
            .context("openssl pkcs12")?;
        if !status.success() {
            bail!("openssl pkcs12 failed");
        }
        let ca_file = ca.write(&dir);
        (
            format!(
                "type = \"tls\"\n[server.transport.tls]\npkcs12 = \"{}\"\npkcs12_password = \"bench\"\n",
                p12.display()
            ),
            format!(
                "type = \"tls\"\n[client.transport.tls]\ntrusted_root = \"{}\"\nhostname = \"{SERVER_NAME}\"\n",
                ca_file.display()
            ),
        )
    } else {
        ("type = \"tcp\"\n".into(), "type = \"tcp\"\n".into())
    };
    let named = services.named();
    let mut server =
        format!("[server]\nbind_addr = \"{control}\"\n[server.transport]\n{server_tls}");
    let mut client =
        format!("[client]\nremote_addr = \"{control}\"\n[client.transport]\n{client_tls}");
    let mut public = Vec::new();
    for (name, local) in &named {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        public.push(addr);
        server.push_str(&format!(
            "[server.services.{name}]\ntoken = \"bench\"\nbind_addr = \"{addr}\"\n"
        ));
        client.push_str(&format!(
            "[client.services.{name}]\ntoken = \"bench\"\nlocal_addr = \"{local}\"\n"
        ));
    }
    let server_file = dir.join("server.toml");
    std::fs::write(&server_file, server)?;
    let client_file = dir.join("client.toml");
    std::fs::write(&client_file, client)?;
    let relaunch = {
        let (bin, server_file) = (bin.clone(), server_file.clone());
        move || {
            launch("rathole server", &bin, &[])
                .arg("-s")
                .arg(&server_file)
        }
    };
    let server = relaunch().spawn();
    postern_harness::wait_port(control).await;
    let client = launch("rathole client", &bin, &sides.far)
        .arg("-c")
        .arg(&client_file)
        .spawn();
    // Every service's control channel up before any traffic.
    wait_log(&client, "Control channel established", named.len()).await?;
    Ok(Tunnel {
        name: if tls {
            Kind::RatholeTls.name()
        } else {
            Kind::Rathole.name()
        },
        iperf: public[0],
        web: services.web.map(|_| public[1]),
        echo: services.echo.map(|_| public[named.len() - 1]),
        ends: Ends::Peer {
            server,
            client,
            relaunch: Box::new(relaunch),
        },
    })
}

async fn bore(services: Services, sides: &Sides) -> Result<Tunnel> {
    let bin = tool("bore", "bore-cli", "0.6.0")?;
    let ip = sides.server_ip.to_string();
    let relaunch = {
        let (bin, ip) = (bin.clone(), ip.clone());
        move || {
            launch("bore server", &bin, &[]).args([
                "server",
                "--bind-addr",
                &ip,
                "--bind-tunnels",
                "127.0.0.1",
            ])
        }
    };
    let server = relaunch().spawn();
    // bore's control port is fixed.
    postern_harness::wait_port(SocketAddr::new(sides.server_ip, 7835)).await;
    // One `bore local` per service, in one process tree under `sh`.
    let mut script = String::new();
    let mut public = Vec::new();
    for (_, local) in services.named() {
        let port = free_port();
        public.push(SocketAddr::from(([127, 0, 0, 1], port)));
        script.push_str(&format!(
            "{} local {} --local-host {} --to {ip} --port {port} &\n",
            bin.display(),
            local.port(),
            local.ip()
        ));
    }
    script.push_str("wait\n");
    let client = launch("bore local", Path::new("sh"), &sides.far)
        .args(["-c", &script])
        .spawn();
    for addr in &public {
        postern_harness::wait_port(*addr).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let named = services.named().len();
    Ok(Tunnel {
        name: Kind::Bore.name(),
        iperf: public[0],
        web: services.web.map(|_| public[1]),
        echo: services.echo.map(|_| public[named - 1]),
        ends: Ends::Peer {
            server,
            client,
            relaunch: Box::new(relaunch),
        },
    })
}

/// Waits (at most 30 s) until `proc`'s log has `needle` `n` times.
async fn wait_log(proc: &Proc, needle: &str, n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while proc.log().matches(needle).count() < n {
        if Instant::now() > deadline {
            bail!("{} never logged {needle:?} {n} times", proc.name());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
