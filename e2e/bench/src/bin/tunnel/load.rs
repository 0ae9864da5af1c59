//! The loads: iperf3 for throughput, a loop of new connections with one
//! request each, and a crowd of idle streams held open through an echo
//! server. Every loop is bounded by a count and a deadline.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// `iperf3 -c` for `secs` through `addr` (one stream; `reverse`: the
/// server sends), in Gbit/s as the receiver counted it; tried twice, as
/// an iperf3 server still busy with an earlier session refuses the next.
pub fn iperf3(addr: SocketAddr, secs: u64, reverse: bool) -> Result<f64> {
    iperf3_once(addr, secs, reverse).or_else(|first| {
        eprintln!("iperf3 through {addr} failed ({first:#}); once more");
        std::thread::sleep(Duration::from_secs(2));
        iperf3_once(addr, secs, reverse)
    })
}

fn iperf3_once(addr: SocketAddr, secs: u64, reverse: bool) -> Result<f64> {
    let mut cmd = Command::new("iperf3");
    cmd.args(["-c", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-t", &secs.to_string(), "-J", "--connect-timeout", "5000"]);
    if reverse {
        cmd.arg("-R");
    }
    let out = Command::new("timeout")
        .arg((secs + 30).to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .output()
        .context("running iperf3")?;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3's output: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(error) = json["error"].as_str() {
        bail!("iperf3 through {addr}: {error}");
    }
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|bps| bps / 1e9)
        .with_context(|| format!("no sum_received in iperf3's output through {addr}"))
}

pub struct Rate {
    pub per_second: f64,
    pub p99_ms: f64,
    pub failed: usize,
}

/// New connections from `clients` loops for 5 s (at most 50,000), each a
/// GET with `Connection: close` answered `200` and read to the end.
pub async fn new_connections(addr: SocketAddr, clients: usize) -> Result<Rate> {
    const LIMIT: usize = 50_000;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(5);
    let issued = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..clients {
        let issued = issued.clone();
        workers.push(tokio::spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0usize);
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < LIMIT {
                let t0 = Instant::now();
                match tokio::time::timeout(Duration::from_secs(5), get_once(addr)).await {
                    Ok(Ok(())) => lat.push(t0.elapsed()),
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
    let p99 = all
        .get(((all.len() as f64 * 0.99) as usize).min(all.len().saturating_sub(1)))
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    // Let closing connections settle before the next row.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(Rate {
        per_second: all.len() as f64 / secs,
        p99_ms: p99,
        failed,
    })
}

async fn get_once(addr: SocketAddr) -> Result<()> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .await?;
    let mut buf = Vec::with_capacity(512);
    s.read_to_end(&mut buf).await?;
    if !buf.starts_with(b"HTTP/1.1 200") {
        bail!("not a 200: {:?}", String::from_utf8_lossy(&buf));
    }
    // A reset instead of TIME_WAIT here: the run must not run out of ports.
    let _ = s.set_zero_linger();
    Ok(())
}

/// An echo server on `ip`: every stream gets back what it sends.
pub async fn echo(ip: [u8; 4]) -> Result<SocketAddr> {
    let listener = TcpListener::bind(SocketAddr::from((ip, 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

/// `n` streams through `addr` to the echo server, each proven end to end
/// by one byte there and back; held until dropped.
pub async fn hold(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    let mut open = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(120);
    while open.len() < n {
        if Instant::now() > deadline {
            bail!("only {} of {n} streams opened in 120 s", open.len());
        }
        let batch = (n - open.len()).min(64);
        let dials: Vec<_> = (0..batch).map(|_| echo_stream(addr)).collect();
        for s in futures::future::join_all(dials).await {
            open.push(s.with_context(|| format!("stream {} of {n}", open.len() + 1))?);
        }
    }
    Ok(open)
}

/// One stream through `addr` that echoed a byte.
pub async fn echo_stream(addr: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(b"x").await?;
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut byte))
        .await
        .context("no echo in 10 s")??;
    Ok(s)
}

/// Waits until a stream through `addr` echoes, at most `limit`; how long
/// that took.
pub async fn until_echo(addr: SocketAddr, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let attempt = tokio::time::timeout(Duration::from_millis(500), echo_stream(addr)).await;
        if let Ok(Ok(_)) = attempt {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("nothing echoed through {addr} in {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
