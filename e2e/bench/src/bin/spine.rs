//! Spine benchmark: time from an update on the API server to the moment every
//! data plane serves the snapshot that contains it, at several numbers of
//! ProxyTargets, with the resident memory of the operator and data planes.
//!
//! Needs the rig (`e2e/rig up`) and release binaries:
//!   cargo build --release --bins && cargo run --release -p postern-bench --bin spine -- [SIZES] [UPDATES]
//! SIZES defaults to 10,1000,10000; UPDATES (per size) to 30.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Config};
use postern_crds::ProxyTarget;
use postern_harness::memory::rss_kib;
use postern_harness::{Operator, Postern, admin_get};

const DATAPLANES: usize = 2;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let sizes: Vec<usize> = args
        .get(1)
        .map_or("10,1000,10000", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("SIZES is a comma-separated list of numbers")?;
    let updates: usize = args.get(2).map_or(Ok(30), |s| s.parse())?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (kubeconfig, client) = rig_client(&root).await?;
    install_crds(&client).await?;
    println!(
        "| ProxyTargets | updates | p50 to all acks | p99 | max | operator RSS | dataplane RSS (max of {DATAPLANES}) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for size in sizes {
        let row = run_size(&client, &kubeconfig, size, updates).await?;
        println!("{row}");
    }
    Ok(())
}

/// The rig's kubeconfig path and a client for it.
async fn rig_client(root: &Path) -> Result<(String, Client)> {
    let env = std::fs::read_to_string(root.join("target/rig/env"))
        .context("target/rig/env missing: run e2e/rig up")?;
    let path = env
        .lines()
        .find_map(|l| l.strip_prefix("KUBECONFIG="))
        .context("KUBECONFIG not in target/rig/env")?;
    let path = path.trim_matches('"').to_string();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path)?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    Ok((path, Client::try_from(config)?))
}

async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in postern_crds::crds() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("postern-bench").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

fn target(i: usize, generation: usize) -> ProxyTarget {
    let spec: postern_api::ProxyTargetSpec = serde_json::from_value(serde_json::json!({
        "hostnames": [format!("h{i}.bench.example.com"), format!("g{generation}.h{i}.bench.example.com")],
        "backend": {"url": "http://127.0.0.1:9"},
    }))
    .unwrap_or_default();
    ProxyTarget::new(&format!("t{i}"), spec.into())
}

async fn run_size(
    client: &Client,
    kubeconfig: &str,
    size: usize,
    updates: usize,
) -> Result<String> {
    let ns = format!("bench-spine-{size}-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut namespace = Namespace::default();
    namespace.metadata.name = Some(ns.clone());
    namespaces
        .create(&PostParams::default(), &namespace)
        .await?;
    let result = measure(client, kubeconfig, &ns, size, updates).await;
    namespaces.delete(&ns, &DeleteParams::default()).await.ok();
    result
}

async fn measure(
    client: &Client,
    kubeconfig: &str,
    ns: &str,
    size: usize,
    updates: usize,
) -> Result<String> {
    let api: Api<ProxyTarget> = Api::namespaced(client.clone(), ns);
    let created = Instant::now();
    let results: Vec<Result<ProxyTarget, kube::Error>> = futures::stream::iter(0..size)
        .map(|i| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &target(i, 0)).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    for r in results {
        r?;
    }
    eprintln!(
        "size {size}: created in {:.1}s",
        created.elapsed().as_secs_f64()
    );

    // Release binaries sit next to this benchmark's executable.
    let log = child_log();
    let operator = Operator::builder(Path::new(kubeconfig), ns)
        .sync_token("bench-token")
        .env("RUST_LOG", &log)
        .start()
        .await;
    let mut planes = Vec::new();
    for i in 0..DATAPLANES {
        let plane = Postern::dataplane(operator.sync)
            .id(&format!("bench-{i}"))
            .sync_token("bench-token")
            .env("RUST_LOG", &log)
            .start()
            .await;
        planes.push(plane);
    }
    let admins: Vec<SocketAddr> = planes.iter().map(|p| p.admin).collect();

    let synced = Instant::now();
    let mut version = wait_all(
        &admins,
        |s| s["summary"]["proxyTargets"] == size,
        Duration::from_secs(300),
    )
    .await?;
    eprintln!(
        "size {size}: first sync in {:.1}s",
        synced.elapsed().as_secs_f64()
    );
    // The first sync makes the operator write every object's status; let
    // that burst settle so the samples measure steady-state updates.
    let settled = Instant::now();
    settle_status_writes(operator.admin).await;
    eprintln!(
        "size {size}: status writes settled in {:.1}s",
        settled.elapsed().as_secs_f64()
    );

    let mut samples = Vec::with_capacity(updates);
    for k in 1..=updates {
        let i = (k * 7919) % size;
        // One request, as the change: a merge patch of the spec (a
        // read-modify-write would time the bench's own read too).
        let patch = serde_json::json!({ "spec": target(i, k).spec });
        let start = Instant::now();
        api.patch(
            &format!("t{i}"),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        let written = start.elapsed();
        let before = version.clone();
        version = wait_all(
            &admins,
            |s| s["version"] != before.as_str(),
            Duration::from_secs(60),
        )
        .await?;
        samples.push(start.elapsed());
        if std::env::var_os("SPINE_LOG").is_some() {
            // Wall-clock start, to line the sample up with the children's logs.
            eprintln!(
                "size {size}: update {k} (t{i}) at {} took {:.1} ms (the patch answered in {:.1} ms)",
                utc_now(start.elapsed()),
                start.elapsed().as_secs_f64() * 1000.0,
                written.as_secs_f64() * 1000.0
            );
        }
    }
    if std::env::var_os("SPINE_LOG").is_some() {
        eprintln!(
            "size {size}: operator log {}",
            operator.log_path().display()
        );
        for plane in &planes {
            eprintln!("size {size}: data plane log {}", plane.log_path().display());
        }
    }
    let op_rss = rss_mib(operator.pid())?;
    let mut dp_rss: f64 = 0.0;
    for plane in &planes {
        dp_rss = dp_rss.max(rss_mib(plane.pid())?);
    }
    drop((operator, planes));
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    Ok(format!(
        "| {size} | {updates} | {} | {} | {} | {op_rss:.1} MiB | {dp_rss:.1} MiB |",
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(pct(1.0)),
    ))
}

/// The children's `RUST_LOG`: `SPINE_LOG` when set (to profile the
/// stages from their timing logs), else warnings only.
fn child_log() -> String {
    std::env::var("SPINE_LOG").unwrap_or_else(|_| "warn".into())
}

/// The wall-clock time `ago` before now, as the children's logs print it.
fn utc_now(ago: Duration) -> String {
    let at = std::time::SystemTime::now() - ago;
    let since = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let day = since.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}Z",
        day / 3600,
        day / 60 % 60,
        day % 60,
        since.subsec_micros()
    )
}

/// Polls every admin API until `done` holds for all; returns the version.
async fn wait_all(
    admins: &[SocketAddr],
    done: impl Fn(&serde_json::Value) -> bool,
    limit: Duration,
) -> Result<String> {
    let deadline = Instant::now() + limit;
    loop {
        let mut versions = Vec::new();
        for admin in admins {
            let snap = get_snapshot(*admin).await.unwrap_or_default();
            if done(&snap) {
                versions.push(snap["version"].as_str().unwrap_or_default().to_string());
            }
        }
        if versions.len() == admins.len() && versions.windows(2).all(|w| w[0] == w[1]) {
            return Ok(versions.swap_remove(0));
        }
        if Instant::now() > deadline {
            bail!("data planes did not converge within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits (at most five minutes) until the operator's status patch counter
/// has not moved for two seconds.
async fn settle_status_writes(admin: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last = (String::new(), Instant::now());
    while Instant::now() < deadline {
        let metrics = get(admin, "/metrics").await.unwrap_or_default();
        let patches: String = metrics
            .lines()
            .filter(|l| l.starts_with("postern_operator_status_patches"))
            .collect();
        if patches != last.0 {
            last = (patches, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn get_snapshot(admin: SocketAddr) -> Result<serde_json::Value> {
    Ok(serde_json::from_str(
        &get(admin, "/api/v1/snapshot").await?,
    )?)
}

/// The body of `GET path`.
async fn get(addr: SocketAddr, path: &str) -> Result<String> {
    let response = admin_get(addr, path).await.map_err(anyhow::Error::msg)?;
    Ok(response.body)
}

/// Resident memory in MiB; an error, never 0, when `/proc` cannot tell.
fn rss_mib(pid: u32) -> Result<f64> {
    Ok(rss_kib(pid)? as f64 / 1024.0)
}
