//! Load held: what many idle clients, slow clients and a long mixed load
//! cost Postern, measured against its own unloaded figures in the same run.
//!
//! 1. Latency of a normal request (a new connection, one GET; reverse and
//!    through a CONNECT tunnel) unloaded, then while IDLE keep-alive clients
//!    sit on the reverse listener, then while TUNNELS idle tunnels sit on
//!    the forward listener: p50, p99 and the ratio to unloaded.
//! 2. Slowloris: SLOW connections dribbling a request head one byte a
//!    second: resident memory while they are held, and how many the
//!    request-header deadline closed.
//! 3. Soak: SOAK seconds of mixed traffic (keep-alive and new-connection
//!    GETs on the reverse proxy, CONNECT tunnels and absolute-form GETs on
//!    the forward proxy); resident memory sampled every 5 s, and the slope
//!    of a least-squares line through the samples after the first fifth
//!    (warm-up), in KiB per minute.
//!
//! Everything is on 127.0.0.1; the backend runs in this process. Needs the
//! release binaries and the soft open-file limit raised to the hard one
//! (20,000 here: a tunnel holds two descriptors on each side, so TUNNELS
//! stops below 10,000):
//!   cargo build --release --bins && bash -c 'ulimit -n 20000 && target/release/hold [IDLE] [TUNNELS] [SLOW] [SOAK]'
//! IDLE defaults to 10000, TUNNELS to 9000, SLOW to 2000, SOAK to 600 (seconds).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::stream::{self, StreamExt};
use postern_harness::{Backend, Manifests, Postern, memory, target_yaml, user_yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "hold.test";
const AUTH: &str = "Basic Ym9uZDpwdw=="; // bond:pw
/// Requests per latency probe, each on a new connection.
const PROBES: usize = 400;
/// Connections opened at once while building up the idle ones.
const PARALLEL_OPENS: usize = 128;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: u64| -> Result<u64> {
        args.get(i)
            .map_or(Ok(default), |s| s.parse())
            .with_context(|| format!("argument {i} is a number"))
    };
    let idle = number(1, 10_000)? as usize;
    let tunnels = number(2, 9_000)? as usize;
    let slow = number(3, 2_000)? as usize;
    let soak = Duration::from_secs(number(4, 600)?);

    let backend = Backend::start("hold");
    let postern = start(&backend, &["--request-header-timeout", "10s"]).await?;
    let target = backend.addr;
    let pid = postern.pid();
    println!("# Load held (postern pid {pid}, backend {target})\n");
    println!("## A normal request while idle clients are held\n");

    // 1. Latency with idle clients, one listener at a time: a tunnel holds
    // two descriptors in Postern and two here, and the hard limit of 20,000
    // per process is the ceiling.
    let unloaded = probe(&postern, target).await?;
    println!(
        "| idle clients held | opened in s | RSS held MiB | bytes per idle client | path probed | unloaded p50 ms | unloaded p99 ms | loaded p50 ms | loaded p99 ms | p99 × unloaded | p99 ≤ 50 ms |"
    );
    println!("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|:-:|");
    for forward in [false, true] {
        let rss_before = memory::rss_kib(pid)?;
        let started = Instant::now();
        let held = if forward {
            open_many(tunnels, || tunnel(postern.proxy, target)).await?
        } else {
            open_many(idle, || idle_reverse(postern.http)).await?
        };
        let opened = started.elapsed().as_secs_f64();
        let rss_held = memory::rss_kib(pid)?;
        let loaded = probe(&postern, target).await?;
        let what = if forward {
            format!("{} tunnels (forward)", held.len())
        } else {
            format!("{} keep-alive (reverse)", held.len())
        };
        let per_client =
            (rss_held.saturating_sub(rss_before) * 1024) as f64 / held.len().max(1) as f64;
        for (path, before, after) in [
            (
                "reverse: new connection + GET",
                &unloaded.reverse,
                &loaded.reverse,
            ),
            (
                "forward: new CONNECT + GET",
                &unloaded.forward,
                &loaded.forward,
            ),
        ] {
            let (b50, b99) = (percentile(before, 0.50), percentile(before, 0.99));
            let (a50, a99) = (percentile(after, 0.50), percentile(after, 0.99));
            println!(
                "| {what} | {opened:.1} | {:.1} | {per_client:.0} | {path} | {b50:.2} | {b99:.2} | {a50:.2} | {a99:.2} | {:.2} | {} |",
                rss_held as f64 / 1024.0,
                a99 / b99,
                if a99 <= 50.0 { "yes" } else { "no" }
            );
        }
        drop(held);
        // Let both sides close before the next row.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!();

    // 2. Slowloris.
    slowloris(&postern, slow).await?;

    // 3. Soak.
    soak_run(&postern, target, soak).await?;
    Ok(())
}

async fn start(backend: &Backend, extra: &[&str]) -> Result<Postern> {
    let yaml = format!(
        "{}---\n{}",
        target_yaml("hold", &[HOST], &backend.url(), ""),
        user_yaml(
            "bond",
            "pw",
            "direct://",
            None,
            "  allowInternalNetworks: [\"127.0.0.0/8\"]\n"
        )
    );
    let mut builder = Postern::standalone(Manifests::new("hold").with("hold.yaml", &yaml))
        .args([
            "--max-connections-per-client",
            "0",
            "--client-idle-timeout",
            "30m",
            "--proxy-idle-timeout",
            "30m",
        ])
        .args(extra)
        .env("RUST_LOG", "info,postern::access=off");
    if let Some(bin) = std::env::var_os("POSTERN_BIN") {
        builder = builder.bin(std::path::PathBuf::from(bin));
    }
    Ok(builder.start().await)
}

struct Probe {
    reverse: Vec<f64>,
    forward: Vec<f64>,
}

/// [`PROBES`] sequential requests on each path, in milliseconds.
async fn probe(postern: &Postern, target: SocketAddr) -> Result<Probe> {
    let mut reverse = Vec::with_capacity(PROBES);
    let mut forward = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        let t = Instant::now();
        let mut s = TcpStream::connect(postern.http).await?;
        get(&mut s, "/probe", HOST).await?;
        reverse.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let mut s = tunnel(postern.proxy, target).await?;
        get(&mut s, "/probe", "backend").await?;
        forward.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(Probe { reverse, forward })
}

fn percentile(samples: &[f64], p: f64) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

/// Opens `n` connections with `open`, [`PARALLEL_OPENS`] at a time; stops
/// at the first failure and keeps what was opened.
async fn open_many<F, Fut>(n: usize, open: F) -> Result<Vec<TcpStream>>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<TcpStream>>,
{
    let results: Vec<Result<TcpStream>> = stream::iter(0..n)
        .map(|_| open())
        .buffer_unordered(PARALLEL_OPENS)
        .collect()
        .await;
    let mut open = Vec::with_capacity(n);
    let mut failed = 0;
    let mut first_error = None;
    for result in results {
        match result {
            Ok(stream) => open.push(stream),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        eprintln!("{failed} of {n} connections failed to open; first: {e:#}");
    }
    Ok(open)
}

/// A reverse-proxy client after one answered request, kept alive.
async fn idle_reverse(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    get(&mut s, "/hello", HOST).await?;
    Ok(s)
}

/// A CONNECT tunnel through the forward proxy to `target`, established.
async fn tunnel(proxy: SocketAddr, target: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(proxy).await?;
    let request = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {AUTH}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await?;
    let (status, _) = read_response(&mut s).await?;
    if status != 200 {
        bail!("CONNECT answered {status}");
    }
    Ok(s)
}

/// One keep-alive GET; fails unless answered 200.
async fn get(s: &mut TcpStream, path: &str, host: &str) -> Result<()> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    s.write_all(request.as_bytes()).await?;
    let (status, _) = read_response(s).await?;
    if status != 200 {
        bail!("GET {path} answered {status}");
    }
    Ok(())
}

/// Reads one response head and its Content-Length body: status, body size.
async fn read_response(s: &mut TcpStream) -> Result<(u16, usize)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .context("response timed out")??;
        if n == 0 {
            bail!("closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < length {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("closed mid-body");
        }
        have += n;
    }
    Ok((status, length))
}

/// `n` clients sending a request head one byte a second.
async fn slowloris(postern: &Postern, n: usize) -> Result<()> {
    let pid = postern.pid();
    let before = memory::rss_kib(pid)?;
    let closed = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(before));
    let started = Instant::now();
    let clients = (0..n).map(|_| {
        let (addr, closed) = (postern.http, closed.clone());
        tokio::spawn(async move {
            let Ok(mut s) = TcpStream::connect(addr).await else {
                return;
            };
            let head = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: ");
            let _ = s.write_all(head.as_bytes()).await;
            // 30 s of dribbling, three times the request-header deadline.
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if s.write_all(b"a").await.is_err() {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let mut byte = [0u8; 1];
                if let Ok(Ok(0)) =
                    tokio::time::timeout(Duration::from_millis(1), s.read(&mut byte)).await
                {
                    closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        })
    });
    let tasks: Vec<_> = clients.collect();
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            for _ in 0..40 {
                if let Ok(rss) = memory::rss_kib(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    for task in tasks {
        let _ = task.await;
    }
    sampler.abort();
    let peak = peak.load(Ordering::Relaxed);
    println!("## Slowloris: {n} clients dribbling a request head, one byte a second, for 30 s\n");
    println!(
        "| closed by the 10 s header deadline | RSS before MiB | peak RSS MiB | bytes per slow client | took s |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {} of {n} | {:.1} | {:.1} | {:.0} | {:.0} |\n",
        closed.load(Ordering::Relaxed),
        before as f64 / 1024.0,
        peak as f64 / 1024.0,
        (peak.saturating_sub(before) * 1024) as f64 / n.max(1) as f64,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Mixed traffic for `length`, RSS sampled every 5 s.
async fn soak_run(postern: &Postern, target: SocketAddr, length: Duration) -> Result<()> {
    let pid = postern.pid();
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + length;
    let (http, proxy) = (postern.http, postern.proxy);
    let mut workers = Vec::new();
    for kind in 0..8usize {
        let (done, failed) = (done.clone(), failed.clone());
        workers.push(tokio::spawn(async move {
            let mut kept: Option<TcpStream> = None;
            while Instant::now() < deadline {
                let result: Result<()> = async {
                    match kind % 4 {
                        // Keep-alive GETs on one connection.
                        0 => {
                            if kept.is_none() {
                                kept = Some(TcpStream::connect(http).await?);
                            }
                            if let Some(s) = kept.as_mut()
                                && let Err(e) = get(s, "/soak", HOST).await
                            {
                                kept = None;
                                return Err(e);
                            }
                            Ok(())
                        }
                        // A new connection per GET.
                        1 => get(&mut TcpStream::connect(http).await?, "/soak", HOST).await,
                        // A new tunnel per GET.
                        2 => get(&mut tunnel(proxy, target).await?, "/soak", "backend").await,
                        // Absolute-form GET through the forward proxy.
                        _ => {
                            let mut s = TcpStream::connect(proxy).await?;
                            let request = format!(
                                "GET http://{target}/soak HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: {AUTH}\r\n\r\n"
                            );
                            s.write_all(request.as_bytes()).await?;
                            let (status, _) = read_response(&mut s).await?;
                            if status != 200 {
                                bail!("absolute-form GET answered {status}");
                            }
                            Ok(())
                        }
                    }
                }
                .await;
                match result {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let started = Instant::now();
    let mut samples: Vec<(f64, f64)> = Vec::new();
    while Instant::now() < deadline {
        if let Ok(rss) = memory::rss_kib(pid) {
            samples.push((started.elapsed().as_secs_f64() / 60.0, rss as f64));
        }
        tokio::time::sleep(Duration::from_secs(5).min(deadline - Instant::now().min(deadline)))
            .await;
    }
    for worker in workers {
        let _ = worker.await;
    }
    if let Ok(rss) = memory::rss_kib(pid) {
        samples.push((started.elapsed().as_secs_f64() / 60.0, rss as f64));
    }
    let warm = samples.len() / 5;
    let after: Vec<(f64, f64)> = samples[warm..].to_vec();
    let slope = least_squares_slope(&after);
    let (first, last) = (
        after.first().map_or(0.0, |s| s.1),
        after.last().map_or(0.0, |s| s.1),
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "## Soak: {secs:.0} s of mixed traffic (8 workers: keep-alive, new-connection, CONNECT, absolute-form)\n"
    );
    println!(
        "| requests | failed | req/s | RSS after warm-up MiB | RSS at end MiB | slope KiB/min |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    let requests = done.load(Ordering::Relaxed);
    println!(
        "| {requests} | {} | {:.0} | {:.1} | {:.1} | {slope:.1} |",
        failed.load(Ordering::Relaxed),
        requests as f64 / secs,
        first / 1024.0,
        last / 1024.0
    );
    Ok(())
}

/// The slope of the least-squares line through `(x, y)` points.
fn least_squares_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}
