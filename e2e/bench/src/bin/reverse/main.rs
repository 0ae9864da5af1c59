//! Reverse-proxy benchmark: Postern against nginx and haproxy, the three
//! reverse-proxying the same backend (one nginx worker answering `ok`) in
//! the same run, all on 127.0.0.1, each started here with its own
//! temporary configuration on free ports and stopped at the end.
//!
//! - keep-alive requests/s, p50 and p99: HTTP/1.1 plain and over TLS
//!   (`wrk -t2 -c64`), HTTP/2 with prior knowledge and over TLS with ALPN
//!   (`h2load -t2 -c64 -m10`);
//! - new TLS connections/s: full handshakes (no resumption) and one request
//!   each, from 32 clients in this process, the same client for all three;
//! - resident memory with 10,000 idle keep-alive connections, each after
//!   one answered request, plain and TLS (fresh processes for each row).
//!
//! Like with like on two cores: nginx `worker_processes 2`, haproxy
//! `nbthread 2`, Postern's runtime two worker threads; access logs off for
//! all three (a Postern row with its access log on is added once), and
//! Postern's request log off too: its cost is measured on its own, on
//! and off alternating in the same run (HTTP/1.1 and HTTP/2 plain), with
//! the ratio. All of them share the cores with the backend and the load
//! generator.
//!
//! Needs release binaries and the peers (`e2e/rig up` installs nginx,
//! haproxy, wrk and h2load from nghttp2-client):
//!   cargo build --release --bins && bash -c 'ulimit -n 20000 && target/release/reverse [SECS] [IDLE] [ROUNDS] [SECTIONS]'
//! SECS per load run defaults to 10; IDLE connections to 10000 (the
//! process limit of 20,000 descriptors allows about 19,000); ROUNDS to 1
//! (with more, each proxy's best round is shown); SECTIONS, comma-separated,
//! to `rate,log,idle` (all three).

mod load;
mod peers;
mod report;

use std::path::Path;

use anyhow::{Context, Result};

use load::Sample;
use peers::{Certs, Logs, Proxy};
use postern_harness::memory;
use report::Memory;

#[derive(Clone, Copy)]
enum Load {
    Http1,
    Http1Tls,
    H2c,
    H2Tls,
    Handshakes,
}

impl Load {
    fn title(self, secs: u64) -> String {
        match self {
            Load::Http1 => format!("HTTP/1.1 keep-alive, plain (wrk -t2 -c64 -d{secs}s)"),
            Load::Http1Tls => format!("HTTP/1.1 keep-alive, TLS 1.3 (wrk -t2 -c64 -d{secs}s)"),
            Load::H2c => format!("HTTP/2 prior knowledge, plain (h2load -t2 -c64 -m10 -D{secs})"),
            Load::H2Tls => format!("HTTP/2 over TLS 1.3, ALPN h2 (h2load -t2 -c64 -m10 -D{secs})"),
            Load::Handshakes => {
                "New TLS connections: full handshake + one request each (32 clients, 5 s or 50,000)"
                    .into()
            }
        }
    }

    async fn run(self, proxy: &Proxy, secs: u64, dir: &Path, ca: &[u8]) -> Result<Sample> {
        match self {
            Load::Http1 => load::wrk(proxy.http, false, secs).await,
            Load::Http1Tls => load::wrk(proxy.https, true, secs).await,
            Load::H2c => load::h2load(proxy.h2c, false, secs, dir).await,
            Load::H2Tls => load::h2load(proxy.https, true, secs, dir).await,
            Load::Handshakes => {
                let connector = load::connector(ca, true)?;
                load::handshakes(proxy.https, &connector, 32, 5, 50_000).await
            }
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: u64, what: &str| -> Result<u64> {
        args.get(i)
            .map_or(Ok(default), |s| s.parse())
            .with_context(|| format!("{what} is a number"))
    };
    let secs = number(1, 10, "SECS")?;
    let idle = number(2, 10_000, "IDLE")? as usize;
    let rounds = number(3, 1, "ROUNDS")?.max(1) as usize;
    let sections: Vec<&str> = args
        .get(4)
        .map_or("rate,log,idle", String::as_str)
        .split(',')
        .collect();
    if let Some(unknown) = sections
        .iter()
        .find(|s| !["rate", "log", "idle"].contains(s))
    {
        anyhow::bail!("unknown section {unknown:?}: expected rate, log or idle");
    }
    let limit = open_files_limit();
    anyhow::ensure!(
        limit >= idle as u64 + 1000,
        "{idle} idle connections need more descriptors than `ulimit -n` ({limit}) allows: \
         run under `bash -c 'ulimit -n 20000 && ...'` or pass a smaller IDLE"
    );
    let dir = std::env::temp_dir().join(format!("postern-bench-reverse-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let certs = Certs::new(&dir)?;
    let (_backend_process, backend) = peers::backend(&dir).await?;
    println!("## Reverse proxy: postern vs nginx vs haproxy, same backend, same run\n");
    println!(
        "{} cores; nginx worker_processes 2, haproxy nbthread 2, postern 2 serving threads; \
         access logs off; backend: nginx, 1 worker, `return 200 \"ok\"`; load generators on the same cores.",
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    if sections.contains(&"rate") {
        throughput(&dir, backend, &certs, secs, rounds).await?;
    }
    if sections.contains(&"log") {
        request_log_cost(&dir, backend, &certs, secs, rounds).await?;
    }
    if sections.contains(&"idle") {
        idle_memory(&dir, backend, &certs, idle).await?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The soft limit on open files, from `/proc/self/limits`.
fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse().ok()
        })
        .unwrap_or(u64::MAX)
}

async fn throughput(
    dir: &Path,
    backend: std::net::SocketAddr,
    certs: &Certs,
    secs: u64,
    rounds: usize,
) -> Result<()> {
    let proxies = [
        peers::postern(backend, certs, Logs::default()).await?,
        peers::nginx_proxy(dir, backend, certs).await?,
        peers::haproxy_proxy(dir, backend, certs).await?,
    ];
    let access = Logs {
        access: true,
        ..Logs::default()
    };
    let logging = peers::postern(backend, certs, access).await?;
    for proxy in proxies.iter().chain([&logging]) {
        load::wrk(proxy.http, false, 2).await?;
    }
    for kind in [
        Load::Http1,
        Load::Http1Tls,
        Load::H2c,
        Load::H2Tls,
        Load::Handshakes,
    ] {
        let mut best: Vec<Option<Sample>> = vec![None; proxies.len()];
        for round in 0..rounds {
            // Rotate the order so that no proxy always runs first.
            for k in 0..proxies.len() {
                let i = (k + round) % proxies.len();
                let s = kind.run(&proxies[i], secs, dir, &certs.ca_der).await?;
                eprintln!("{} {}: {s:?}", proxies[i].name, kind.title(secs));
                if best[i].is_none_or(|b| s.rate > b.rate) {
                    best[i] = Some(s);
                }
            }
        }
        let mut rows: Vec<(&str, Sample)> = proxies
            .iter()
            .zip(best)
            .map(|(p, s)| (p.name, s.unwrap_or_default()))
            .collect();
        if matches!(kind, Load::Http1) {
            rows.push((logging.name, load::wrk(logging.http, false, secs).await?));
        }
        let unit = if matches!(kind, Load::Handshakes) {
            "conn/s"
        } else {
            "req/s"
        };
        report::rates(&kind.title(secs), unit, &rows);
    }
    Ok(())
}

/// The request log on the request path: Postern with it on (in memory,
/// the default without Redis) and off, taking turns under the same load;
/// each one's best round, and on/off.
async fn request_log_cost(
    dir: &Path,
    backend: std::net::SocketAddr,
    certs: &Certs,
    secs: u64,
    rounds: usize,
) -> Result<()> {
    let on = Logs {
        requests: true,
        ..Logs::default()
    };
    let pair = [
        peers::postern(backend, certs, on).await?,
        peers::postern(backend, certs, Logs::default()).await?,
    ];
    for proxy in &pair {
        load::wrk(proxy.http, false, 2).await?;
    }
    for kind in [Load::Http1, Load::H2c] {
        let mut best: [Option<Sample>; 2] = [None, None];
        for round in 0..rounds.max(2) {
            for k in 0..2 {
                let i = (k + round) % 2;
                let s = kind.run(&pair[i], secs, dir, &certs.ca_der).await?;
                eprintln!("{} {}: {s:?}", pair[i].name, kind.title(secs));
                if best[i].is_none_or(|b| s.rate > b.rate) {
                    best[i] = Some(s);
                }
            }
        }
        let [on, off] = best.map(Option::unwrap_or_default);
        report::on_off(
            &format!("Request log on vs off: {}", kind.title(secs)),
            on,
            off,
        );
    }
    Ok(())
}

async fn idle_memory(
    dir: &Path,
    backend: std::net::SocketAddr,
    certs: &Certs,
    n: usize,
) -> Result<()> {
    for tls in [false, true] {
        let mut rows = Vec::new();
        for name in ["postern", "nginx", "haproxy"] {
            let proxy = match name {
                "postern" => peers::postern(backend, certs, Logs::default()).await?,
                "nginx" => peers::nginx_proxy(dir, backend, certs).await?,
                _ => peers::haproxy_proxy(dir, backend, certs).await?,
            };
            rows.push((name, hold(&proxy, certs, tls, n).await?));
        }
        let what = if tls { "TLS 1.3" } else { "plain" };
        report::memory(
            &format!(
                "Resident memory, {n} idle HTTP/1.1 keep-alive connections ({what}), fresh processes"
            ),
            &rows,
        );
    }
    Ok(())
}

/// Opens `n` connections to a fresh proxy and reads its memory with them.
async fn hold(proxy: &Proxy, certs: &Certs, tls: bool, n: usize) -> Result<Memory> {
    let settle = std::time::Duration::from_secs(2);
    tokio::time::sleep(settle).await;
    let before = memory::usage(proxy.pid())?;
    let connector = load::connector(&certs.ca_der, true)?;
    let (addr, tls) = if tls {
        (proxy.https, Some(&connector))
    } else {
        (proxy.http, None)
    };
    let crowd = load::crowd(addr, tls, n).await?;
    tokio::time::sleep(settle).await;
    let at = memory::usage(proxy.pid())?;
    eprintln!(
        "{}: {} connections in {:.1}s",
        proxy.name,
        crowd.opened,
        crowd.took.as_secs_f64()
    );
    Ok(Memory {
        connections: crowd.opened,
        rss_before: before.rss,
        rss_at: at.rss,
        pss_at: at.pss,
    })
}
