//! The load: wrk (HTTP/1.1), h2load (HTTP/2), a loop of fresh TLS
//! handshakes, and a crowd of idle keep-alive connections. Every run is
//! bounded by a duration and a count.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_rustls::TlsConnector;

use crate::peers::HOST;

/// Requests per second with latency percentiles, or a rate of anything.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: u64,
}

/// `wrk -t2 -c64 -d{secs}s --latency` keep-alive GETs of `/`.
pub async fn wrk(addr: SocketAddr, tls: bool, secs: u64) -> Result<Sample> {
    let scheme = if tls { "https" } else { "http" };
    let out = run(
        Command::new("wrk")
            .args([
                "-t2",
                "-c64",
                &format!("-d{secs}s"),
                "--latency",
                "--timeout",
                "5s",
            ])
            .args(["-H", &format!("Host: {HOST}")])
            .arg(format!("{scheme}://{addr}/")),
        secs,
    )
    .await?;
    let field = |prefix: &str| -> Option<&str> {
        out.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .map(str::trim)
    };
    let rate: f64 = field("Requests/sec:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{out}"))?;
    let latency = |p: &str| field(p).and_then(duration_ms).unwrap_or(f64::NAN);
    let non_2xx: u64 = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let socket_errors: u64 = field("Socket errors:")
        .map(|v| {
            v.split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok(Sample {
        rate,
        p50_ms: latency("50%"),
        p99_ms: latency("99%"),
        errors: non_2xx + socket_errors,
    })
}

/// `1.23ms`, `456.78us`, `1.02s` in milliseconds.
fn duration_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    match unit {
        "us" => Some(value / 1000.0),
        "ms" => Some(value),
        "s" => Some(value * 1000.0),
        "m" => Some(value * 60_000.0),
        _ => None,
    }
}

/// `h2load -t2 -c64 -m10 -D {secs}`: HTTP/2 with prior knowledge (h2c) or
/// over TLS with ALPN h2; latencies from its per-request log.
pub async fn h2load(addr: SocketAddr, tls: bool, secs: u64, dir: &Path) -> Result<Sample> {
    let scheme = if tls { "https" } else { "http" };
    let log = dir.join(format!("h2load-{}-{scheme}.log", addr.port()));
    let out = run(
        Command::new("h2load")
            .args([
                "-t2",
                "-c64",
                "-m10",
                "-D",
                &secs.to_string(),
                "--warm-up-time",
                "1",
            ])
            .arg("--log-file")
            .arg(&log)
            .args(["--connect-to", &addr.to_string()])
            .arg(format!("{scheme}://{HOST}:{}/", addr.port())),
        secs + 1,
    )
    .await?;
    let protocol = out
        .lines()
        .find_map(|l| l.strip_prefix("Application protocol:"))
        .map(str::trim);
    if !protocol.is_some_and(|p| p.starts_with("h2")) {
        bail!("h2load did not speak HTTP/2:\n{out}");
    }
    let rate: f64 = out
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1)?.strip_suffix(" req/s")?.parse().ok())
        .with_context(|| format!("no req/s in h2load's output:\n{out}"))?;
    let count = |what: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix("requests: "))
            .and_then(|l| {
                l.split(", ")
                    .find_map(|part| part.strip_suffix(what)?.trim().parse().ok())
            })
            .unwrap_or(0)
    };
    let mut latencies: Vec<f64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split('\t').nth(2)?.trim().parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let _ = std::fs::remove_file(&log);
    Ok(Sample {
        rate,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        errors: count(" failed") + count(" errored") + count(" timeout"),
    })
}

/// Runs a load tool bounded by `secs` plus a margin; its stdout.
async fn run(cmd: &mut Command, secs: u64) -> Result<String> {
    cmd.kill_on_drop(true);
    let limit = Duration::from_secs(secs + 30);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .with_context(|| format!("{cmd:?} ran past {limit:?}"))??;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A TLS client trusting only the run's CA, offering h2 and http/1.1
/// like a browser, with session resumption off: every handshake is full.
pub fn connector(ca_der: &[u8], h1_only: bool) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = if h1_only {
        vec![b"http/1.1".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// New TLS connections from `concurrency` clients for `secs` (at most
/// `limit`): a full handshake and one HTTP/1.1 request each, then a reset
/// (no TIME_WAIT left to run out of ports).
pub async fn handshakes(
    addr: SocketAddr,
    connector: &TlsConnector,
    concurrency: usize,
    secs: u64,
    limit: usize,
) -> Result<Sample> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let issued = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (connector, issued) = (connector.clone(), issued.clone());
        workers.push(tokio::spawn(async move {
            let (mut latencies, mut failed) = (Vec::new(), 0u64);
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < limit {
                let t0 = Instant::now();
                let once = tokio::time::timeout(Duration::from_secs(5), open_tls(addr, &connector));
                match once.await {
                    Ok(Ok(stream)) => {
                        latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                        let _ = stream.get_ref().0.set_zero_linger();
                    }
                    _ => failed += 1,
                }
            }
            (latencies, failed)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for worker in workers {
        let (latencies, failed) = worker.await?;
        all.extend(latencies);
        errors += failed;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    Ok(Sample {
        rate: all.len() as f64 / secs,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        errors,
    })
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn open_tls(addr: SocketAddr, connector: &TlsConnector) -> Result<Tls> {
    let step = Duration::from_secs(5);
    let tcp = tokio::time::timeout(step, TcpStream::connect(addr))
        .await
        .context("connect")??;
    tcp.set_nodelay(true)?;
    let mut tls = tokio::time::timeout(step, connector.connect(ServerName::try_from(HOST)?, tcp))
        .await
        .context("handshake")??;
    tokio::time::timeout(step, request(&mut tls))
        .await
        .context("request")??;
    Ok(tls)
}

/// One keep-alive `GET /`, read through the `ok` body.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Result<()> {
    let req = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed before the response ended");
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.ends_with(b"ok") {
            break;
        }
        if buf.len() > 8192 {
            bail!("an unexpected response");
        }
    }
    if !buf.starts_with(b"HTTP/1.1 200") {
        bail!(
            "not a 200: {}",
            String::from_utf8_lossy(&buf[..buf.len().min(60)])
        );
    }
    Ok(())
}

/// Connections held open, each after one answered request.
pub struct Crowd {
    _held: Vec<Box<dyn Send>>,
    pub opened: usize,
    pub took: Duration,
}

/// Opens `n` keep-alive connections (TLS when `tls` is given), 200 at a
/// time, each with one request answered; gives up after two minutes.
pub async fn crowd(addr: SocketAddr, tls: Option<&TlsConnector>, n: usize) -> Result<Crowd> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(120);
    let mut held: Vec<Box<dyn Send>> = Vec::with_capacity(n);
    while held.len() < n && Instant::now() < deadline {
        let batch = (n - held.len()).min(200);
        let opens = (0..batch).map(|_| open(addr, tls));
        for opened in futures::future::join_all(opens).await {
            held.push(opened.with_context(|| format!("connection {} of {n}", held.len() + 1))?);
        }
    }
    Ok(Crowd {
        opened: held.len(),
        _held: held,
        took: started.elapsed(),
    })
}

async fn open(addr: SocketAddr, tls: Option<&TlsConnector>) -> Result<Box<dyn Send>> {
    let once = async {
        Ok::<Box<dyn Send>, anyhow::Error>(match tls {
            Some(connector) => Box::new(open_tls(addr, connector).await?),
            None => {
                let mut tcp = TcpStream::connect(addr).await?;
                request(&mut tcp).await?;
                Box::new(tcp)
            }
        })
    };
    tokio::time::timeout(Duration::from_secs(10), once)
        .await
        .context("timed out")?
}
