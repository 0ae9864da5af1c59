//! Forward-proxy benchmark: Postern's CONNECT tunnels against direct
//! loopback, tinyproxy and squid, measured in the same run on this machine.
//!
//! - bulk throughput through one tunnel (best of 3 transfers), with haproxy
//!   relaying plain TCP with splice(2) as the reference for what the kernel
//!   allows a user-space relay on loopback;
//! - new tunnels per second and p50/p99 CONNECT latency with 32 and 256
//!   concurrent clients (bounded by count and time);
//! - resident memory per idle tunnel at 1,000 and 9,000 open tunnels (the
//!   proxy holds two sockets per tunnel; the machine's hard limit of 20,000
//!   descriptors per process rules out 10,000).
//!
//! Everything runs on 127.0.0.1; every peer is started here on a free port
//! and stopped at the end. Needs release binaries and the peers
//! (`e2e/rig up` installs tinyproxy and squid):
//!   cargo build --release -p postern && cargo run --release -p postern-bench --bin forward -- [GIB] [TUNNELS] [SECTIONS] [PATHS]
//! GIB (per transfer) defaults to 2; TUNNELS to 1000,9000; SECTIONS (any of
//! bulk,rate,idle) to all three; PATHS (any of direct,postern,tinyproxy,squid,
//! haproxy; haproxy is a bulk row only) to all five. Bulk ratios need `direct` first.

mod load;
mod peers;

use anyhow::{Context, Result};

use load::Proxy;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let gib: u64 = args
        .get(1)
        .map_or(Ok(2), |s| s.parse())
        .context("GIB is a number")?;
    let idle_sizes: Vec<usize> = args
        .get(2)
        .map_or("1000,9000", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("TUNNELS is a comma-separated list")?;
    let sections = args.get(3).map_or("bulk,rate,idle", String::as_str);
    let run = |section: &str| sections.split(',').any(|s| s == section);
    let sink = load::sink().await?;
    let holder = load::holder().await?;
    let closer = load::closer().await?;
    let postern = peers::Postern::start(holder).await?;
    let tinyproxy = peers::tinyproxy().await?;
    let squid = peers::squid().await?;
    let only = args
        .get(4)
        .map_or("direct,postern,tinyproxy,squid,haproxy", String::as_str);
    let run_haproxy = only.split(',').any(|o| o == "haproxy");
    let proxies: Vec<(&str, Option<Proxy>)> = vec![
        ("direct", None),
        ("postern", Some(postern.proxy())),
        ("tinyproxy", Some(tinyproxy.proxy())),
        ("squid", Some(squid.proxy())),
    ]
    .into_iter()
    .filter(|(name, _)| only.split(',').any(|o| o == *name))
    .collect();

    if run("bulk") {
        println!("## Bulk throughput through one tunnel ({gib} GiB, best of 3)\n");
        println!("| path | Gbit/s | × direct |\n|---|---:|---:|");
        let mut direct_gbps = 0.0;
        for (name, proxy) in &proxies {
            let gbps = load::throughput(proxy.as_ref(), sink, gib << 30, 3).await?;
            if proxy.is_none() {
                direct_gbps = gbps;
            }
            println!("| {name} | {gbps:.2} | {:.2} |", gbps / direct_gbps);
        }
        if run_haproxy {
            // A relay, not a CONNECT proxy: dialled directly, it forwards to the sink.
            let haproxy = peers::haproxy(sink).await?;
            let gbps = load::throughput_relay(haproxy.proxy().addr, gib << 30, 3).await?;
            println!(
                "| haproxy tcp relay, splice-auto (reference) | {gbps:.2} | {:.2} |",
                gbps / direct_gbps
            );
        }
    }

    for concurrency in [32usize, 256].into_iter().filter(|_| run("rate")) {
        println!("\n## New tunnels, {concurrency} concurrent clients (5 s or 50,000 tunnels)\n");
        println!("| path | tunnels/s | p50 ms | p99 ms | failed |\n|---|---:|---:|---:|---:|");
        for (name, proxy) in &proxies {
            let r = load::tunnel_rate(proxy.as_ref(), closer, concurrency).await?;
            println!(
                "| {name} | {:.0} | {:.2} | {:.2} | {} |",
                r.per_second, r.p50_ms, r.p99_ms, r.failed
            );
        }
    }

    drop((postern, tinyproxy, squid));
    if !run("idle") {
        return Ok(());
    }
    println!("\n## Resident memory with idle tunnels (a fresh process per row)\n");
    println!(
        "| proxy | tunnels | RSS before MiB | RSS after MiB | bytes per tunnel |\n|---|---:|---:|---:|---:|"
    );
    for name in ["postern", "tinyproxy", "squid"] {
        for &n in &idle_sizes {
            let peer = match name {
                "postern" => peers::Postern::start(holder).await?,
                "tinyproxy" => peers::tinyproxy().await?,
                _ => peers::squid().await?,
            };
            let r = load::idle(&peer.proxy(), holder, peer.pid(), n).await?;
            println!(
                "| {name} | {n} | {:.1} | {:.1} | {:.0} |",
                r.before as f64 / 1048576.0,
                r.after as f64 / 1048576.0,
                r.after.saturating_sub(r.before) as f64 / n as f64
            );
        }
    }
    Ok(())
}
