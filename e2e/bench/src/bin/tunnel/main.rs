//! Tunnel benchmark: Postern's reverse tunnel (`postern agent` + a
//! standalone data plane, tcp Tunnels, one TLS connection multiplexed with
//! HTTP/2) against rathole (plain TCP and TLS transports) and bore (plain
//! TCP), carrying the same local services in the same run on the same two
//! cores, with direct connections as the ceiling:
//!
//! - throughput of one stream, both ways (`iperf3 -t SECS`, `-R`);
//! - keep-alive HTTP through the tunnel to one nginx worker answering `ok`
//!   (`wrk -t2 -c64`): requests/s and p99;
//! - new connections/s, one `Connection: close` GET each (32 clients, 5 s
//!   or 50,000);
//! - resident memory per idle stream on each side with STREAMS streams
//!   held open (each proven by an echoed byte), fresh processes per row;
//! - reconnect: the server SIGKILLed and started again on its ports, the
//!   time from it listening to a stream passing again (5 rounds);
//! - a long link: one stream's throughput over RTT_MS of added round trip
//!   between two network namespaces, direct against the tunnels.
//!
//! Peers are installed by this benchmark (`cargo install` into
//! ~/.cache/postern-bench, once); iperf3, wrk and nginx come from Debian
//! (`e2e/rig up` installs them). Needs root for the namespaces. Run:
//!   cargo build --release --bins && bash -c 'ulimit -n 20000 && target/release/tunnel [SECS] [STREAMS] [SECTIONS] [RTT_MS] [PATHS]'
//! SECS defaults to 10, STREAMS to 1000, SECTIONS (any of
//! rates,idle,reconnect,link) to all, RTT_MS to 50, PATHS (any of
//! direct,postern,rathole,rathole-tls,bore) to all; the rates rows keep
//! direct and rathole-tls whatever PATHS says, as their ratios need them.

// The reverse benchmark's nginx backend and wrk runner, shared as they are.
#[allow(dead_code)]
#[path = "../reverse/load.rs"]
mod http_load;
mod link;
mod load;
mod paths;
#[allow(dead_code)]
#[path = "../reverse/peers.rs"]
mod peers;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use postern_harness::{Launch, Proc, free_port, memory, tmp_dir, wait_port};

use paths::{Kind, Services, Sides, Tunnel};

const ALL: [Kind; 5] = [
    Kind::Direct,
    Kind::Postern,
    Kind::Rathole,
    Kind::RatholeTls,
    Kind::Bore,
];
/// Inside the near namespace, the long-link rows run in a child of this
/// binary started with this first argument.
const INSIDE: &str = "--inside-near";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(INSIDE) {
        let secs = number(&args, 2, 10)?;
        return long_link_inside(secs).await;
    }
    let secs = number(&args, 1, 10)?;
    let streams = number(&args, 2, 1000)? as usize;
    let sections = args
        .get(3)
        .map_or("rates,idle,reconnect,link", String::as_str);
    let rtt_ms = number(&args, 4, 50)?;
    let paths = match args.get(5) {
        None => ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|name| {
                ALL.into_iter()
                    .find(|k| k.short() == name)
                    .with_context(|| format!("no path named {name}"))
            })
            .collect::<Result<Vec<_>>>()?,
    };
    let run = |s: &str| sections.split(',').any(|x| x == s);
    // Installed before anything is measured, so no row pays for it.
    paths::tool("rathole", "rathole", "0.5.0")?;
    paths::tool("bore", "bore-cli", "0.6.0")?;

    let iperf_port = free_port();
    let _iperf = iperf3_server(iperf_port, &[]).await;
    let (_nginx, web) = peers::backend(&tmp_dir("tunnel-bench-nginx")).await?;
    let echo = load::echo([127, 0, 0, 1]).await?;
    let services = Services {
        iperf: SocketAddr::from(([127, 0, 0, 1], iperf_port)),
        web: Some(web),
        echo: Some(echo),
    };
    let sides = Sides::loopback();
    println!("# Tunnels on 127.0.0.1, 2 cores shared by everything\n");
    if run("rates") {
        rates(services, &sides, secs, &paths).await?;
    }
    if run("idle") {
        idle(services, &sides, streams, &paths).await?;
    }
    if run("reconnect") {
        reconnect(services, &sides).await?;
    }
    if run("link") {
        long_link(secs, rtt_ms)?;
    }
    Ok(())
}

fn number(args: &[String], i: usize, default: u64) -> Result<u64> {
    args.get(i)
        .map_or(Ok(default), |s| s.parse())
        .with_context(|| format!("argument {i} is a number"))
}

async fn iperf3_server(port: u16, far: &[String]) -> Proc {
    let proc = Launch::new("iperf3 server", "iperf3")
        .wrapped(far)
        .args(["-s", "-p", &port.to_string()])
        .spawn();
    if far.is_empty() {
        wait_port(SocketAddr::from(([127, 0, 0, 1], port))).await;
    } else {
        // Not reachable from here to probe; iperf3 listens within moments.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    proc
}

struct Row {
    name: &'static str,
    up: f64,
    down: f64,
    wrk: http_load::Sample,
    conns: load::Rate,
}

async fn rates(services: Services, sides: &Sides, secs: u64, paths: &[Kind]) -> Result<()> {
    let mut rows = Vec::new();
    let needed = [Kind::Direct, Kind::RatholeTls];
    for kind in ALL
        .into_iter()
        .filter(|k| paths.contains(k) || needed.contains(k))
    {
        let path = Tunnel::start(kind, services, sides).await?;
        let up = load::iperf3(path.iperf, secs, false)?;
        let down = load::iperf3(path.iperf, secs, true)?;
        let web = path.web.context("a web service")?;
        let wrk = http_load::wrk(web, false, secs).await?;
        let conns = load::new_connections(web, 32).await?;
        eprintln!("measured {}", path.name);
        rows.push(Row {
            name: path.name,
            up,
            down,
            wrk,
            conns,
        });
    }
    let direct = &rows[0];
    let rathole_tls = rows
        .iter()
        .find(|r| r.name == Kind::RatholeTls.name())
        .context("a rathole-TLS row")?;
    println!(
        "## Throughput, keep-alive HTTP and new connections ({secs} s runs)\n\n\
         | path | iperf3 up Gbit/s | iperf3 down Gbit/s | wrk -c64 req/s | wrk p99 ms | errors | new conns/s | p99 ms | failed | up × direct | req/s × direct | conns/s × direct | up × rathole-TLS | req/s × rathole-TLS | conns/s × rathole-TLS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.0} | {:.2} | {} | {:.0} | {:.2} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.name,
            r.up,
            r.down,
            r.wrk.rate,
            r.wrk.p99_ms,
            r.wrk.errors,
            r.conns.per_second,
            r.conns.p99_ms,
            r.conns.failed,
            r.up / direct.up,
            r.wrk.rate / direct.wrk.rate,
            r.conns.per_second / direct.conns.per_second,
            r.up / rathole_tls.up,
            r.wrk.rate / rathole_tls.wrk.rate,
            r.conns.per_second / rathole_tls.conns.per_second,
        );
    }
    println!();
    Ok(())
}

async fn idle(services: Services, sides: &Sides, streams: usize, paths: &[Kind]) -> Result<()> {
    println!(
        "## Memory with {streams} idle streams (fresh processes per row)\n\n\
         | path | server RSS before MiB | after MiB | bytes per stream | client RSS before MiB | after MiB | bytes per stream |\n\
         |---|---:|---:|---:|---:|---:|---:|"
    );
    for kind in paths.iter().copied().filter(|k| *k != Kind::Direct) {
        let path = Tunnel::start(kind, services, sides).await?;
        let (server, client) = path.pids().context("a tunnel has two ends")?;
        let echo = path.echo.context("an echo service")?;
        // One stream first: lazily made buffers are not per-stream costs.
        drop(load::echo_stream(echo).await?);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = (rss(server)?, rss(client)?);
        let held = load::hold(echo, streams).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = (rss(server)?, rss(client)?);
        let per = |b: u64, a: u64| a.saturating_sub(b) as f64 / held.len() as f64;
        println!(
            "| {} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {:.0} |",
            path.name,
            mib(before.0),
            mib(after.0),
            per(before.0, after.0),
            mib(before.1),
            mib(after.1),
            per(before.1, after.1)
        );
        drop(held);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!();
    Ok(())
}

/// Resident memory of a process tree's root, in bytes.
fn rss(pid: u32) -> Result<u64> {
    let pids = memory::tree(pid);
    let mut total = 0;
    for p in pids {
        total += memory::rss_kib(p).unwrap_or(0) * 1024;
    }
    Ok(total)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

async fn reconnect(services: Services, sides: &Sides) -> Result<()> {
    println!(
        "## Reconnect: server SIGKILLed and restarted on its ports; from listening to a stream echoing\n\n\
         | path | rounds | median ms | max ms |\n|---|---:|---:|---:|"
    );
    for kind in [Kind::Postern, Kind::RatholeTls] {
        let mut path = Tunnel::start(kind, services, sides).await?;
        let echo = path.echo.context("an echo service")?;
        let mut took = Vec::new();
        for _ in 0..5 {
            path.restart_server().await?;
            took.push(load::until_echo(echo, Duration::from_secs(30)).await?);
        }
        took.sort();
        println!(
            "| {} | {} | {:.0} | {:.0} |",
            path.name,
            took.len(),
            took[took.len() / 2].as_secs_f64() * 1000.0,
            took[took.len() - 1].as_secs_f64() * 1000.0
        );
    }
    println!();
    Ok(())
}

/// Sets up the link and runs [`long_link_inside`] in the near namespace.
fn long_link(secs: u64, rtt_ms: u64) -> Result<()> {
    let _link = link::Link::up(rtt_ms)?;
    println!(
        "## One stream over {rtt_ms} ms of added RTT (namespaces joined by e2e/bench/delayline.py)\n"
    );
    let me = std::env::current_exe()?;
    let status = std::process::Command::new("ip")
        .args(["netns", "exec", link::NEAR])
        .arg(me)
        .args([INSIDE, &secs.to_string()])
        .status()
        .context("running the long-link rows")?;
    anyhow::ensure!(status.success(), "the long-link rows failed");
    Ok(())
}

async fn long_link_inside(secs: u64) -> Result<()> {
    let far = link::Link::far();
    let port = free_port();
    let _iperf = iperf3_server(port, &far).await;
    let sides = Sides {
        server_ip: link::NEAR_IP.into(),
        far,
    };
    println!(
        "| path | iperf3 up Gbit/s | iperf3 down Gbit/s | up × direct | down × direct |\n|---|---:|---:|---:|---:|"
    );
    let mut direct = None;
    for kind in [Kind::Direct, Kind::Postern, Kind::RatholeTls] {
        let iperf = match kind {
            Kind::Direct => SocketAddr::from((link::FAR_IP, port)),
            _ => SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let services = Services {
            iperf,
            web: None,
            echo: None,
        };
        let path = Tunnel::start(kind, services, &sides).await?;
        let up = load::iperf3(path.iperf, secs, false)?;
        let down = load::iperf3(path.iperf, secs, true)?;
        let (du, dd) = *direct.get_or_insert((up, down));
        println!(
            "| {} | {up:.3} | {down:.3} | {:.2} | {:.2} |",
            path.name,
            up / du,
            down / dd
        );
    }
    println!();
    Ok(())
}
