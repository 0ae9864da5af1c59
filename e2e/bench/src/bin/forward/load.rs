//! The load generators: a sink and an idle holder as targets, and the three
//! measurements. Every loop is bounded by a count and a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A forward proxy to measure: its address and `Basic` credentials, if any.
#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    pub auth: Option<String>,
}

/// Opens a stream to `target`, through `proxy` with CONNECT when given.
pub async fn dial(proxy: Option<&Proxy>, target: SocketAddr) -> Result<TcpStream> {
    let Some(proxy) = proxy else {
        return Ok(TcpStream::connect(target).await?);
    };
    let mut s = TcpStream::connect(proxy.addr).await?;
    s.set_nodelay(true)?;
    let auth = proxy.auth.as_ref().map_or(String::new(), |a| {
        format!("Proxy-Authorization: Basic {a}\r\n")
    });
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 || head.len() > 8192 {
            bail!("proxy closed during CONNECT");
        }
        head.extend_from_slice(&buf[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        bail!(
            "CONNECT refused: {}",
            String::from_utf8_lossy(&head[..head.len().min(80)])
        );
    }
    Ok(s)
}

/// Reads an 8-byte length, then that many bytes, then answers one byte.
/// (No half-close: tinyproxy closes both ways on the first FIN.)
pub async fn sink() -> Result<SocketAddr> {
    let listener = listen()?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut left) = s.read_u64().await else {
                    return;
                };
                let mut buf = vec![0u8; 256 * 1024];
                while left > 0 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => left = left.saturating_sub(n as u64),
                    }
                }
                let _ = s.write_all(b"k").await;
            });
        }
    });
    Ok(addr)
}

/// Accepts and holds each connection until its peer closes.
pub async fn holder() -> Result<SocketAddr> {
    let listener = listen()?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Accepts and closes at once: the tunnel-rate target. The target closing
/// first keeps TIME_WAIT off the proxies' ephemeral ports, which 50,000
/// tunnels in 5 s would otherwise exhaust.
pub async fn closer() -> Result<SocketAddr> {
    let listener = listen()?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    Ok(addr)
}

/// A loopback listener with the machine's largest accept queue, so that
/// the targets never drop a SYN (a 1 s retransmit would skew p99).
fn listen() -> Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    Ok(socket.listen(4096)?)
}

/// The best of `runs` transfers of `bytes` to the sink, in Gbit/s.
pub async fn throughput(
    proxy: Option<&Proxy>,
    sink: SocketAddr,
    bytes: u64,
    runs: usize,
) -> Result<f64> {
    let mut best = 0.0f64;
    for _ in 0..runs {
        best = best.max(transfer(dial(proxy, sink).await?, bytes).await?);
    }
    Ok(best)
}

/// As [`throughput`], through a plain TCP relay that forwards to the sink.
pub async fn throughput_relay(relay: SocketAddr, bytes: u64, runs: usize) -> Result<f64> {
    let mut best = 0.0f64;
    for _ in 0..runs {
        let s = TcpStream::connect(relay).await?;
        s.set_nodelay(true)?;
        best = best.max(transfer(s, bytes).await?);
    }
    Ok(best)
}

/// One transfer of `bytes` (rounded up to whole chunks) and the sink's
/// confirmation, in Gbit/s.
async fn transfer(mut s: TcpStream, bytes: u64) -> Result<f64> {
    let chunk = vec![0u8; 256 * 1024];
    let started = Instant::now();
    let total = bytes.div_ceil(chunk.len() as u64) * chunk.len() as u64;
    s.write_u64(total).await?;
    let mut sent = 0u64;
    while sent < total {
        s.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    let mut done = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(120), s.read_exact(&mut done))
        .await
        .context("the sink never confirmed")??;
    let secs = started.elapsed().as_secs_f64();
    Ok(sent as f64 * 8.0 / secs / 1e9)
}

pub struct Rate {
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub failed: usize,
}

/// Opens and closes tunnels from `concurrency` clients for 5 s (at most 50,000).
pub async fn tunnel_rate(
    proxy: Option<&Proxy>,
    target: SocketAddr,
    concurrency: usize,
) -> Result<Rate> {
    const LIMIT: usize = 50_000;
    let deadline = Instant::now() + Duration::from_secs(5);
    let started = Instant::now();
    let issued = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (proxy, issued) = (proxy.cloned(), issued.clone());
        workers.push(tokio::spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0usize);
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < LIMIT {
                let t0 = Instant::now();
                match tokio::time::timeout(Duration::from_secs(5), dial(proxy.as_ref(), target))
                    .await
                {
                    Ok(Ok(s)) => {
                        lat.push(t0.elapsed());
                        // A reset instead of TIME_WAIT: the run must not run out of ports.
                        let _ = s.set_zero_linger();
                    }
                    _ => failed += 1,
                }
            }
            (lat, failed)
        }));
    }
    let (mut all, mut failed) = (Vec::new(), 0);
    for w in workers {
        let (lat, f) = w.await?;
        all.extend(lat);
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(Rate {
        per_second: all.len() as f64 / secs,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        failed,
    })
}

pub struct Idle {
    pub before: u64,
    pub after: u64,
}

/// RSS of `pid` before and after opening `n` idle tunnels through `proxy`.
pub async fn idle(proxy: &Proxy, target: SocketAddr, pid: u32, n: usize) -> Result<Idle> {
    let before = rss(pid)?;
    let mut open = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(120);
    while open.len() < n && Instant::now() < deadline {
        let batch = (n - open.len()).min(64);
        let dials: Vec<_> = (0..batch).map(|_| dial(Some(proxy), target)).collect();
        for s in futures::future::join_all(dials).await {
            open.push(s.with_context(|| format!("tunnel {} of {n}", open.len() + 1))?);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss(pid)?;
    drop(open);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Idle { before, after })
}

/// Resident set size of a process, in bytes; an error, never 0, when
/// `/proc` cannot tell.
pub fn rss(pid: u32) -> Result<u64> {
    Ok(postern_harness::memory::rss_kib(pid)? * 1024)
}
