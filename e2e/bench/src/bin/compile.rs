//! Where the time of one snapshot goes, without any network: compile,
//! serialise, and the data plane's decode + validate, at several sizes.
//!
//!   cargo run --release -p postern-bench --bin compile -- [SIZES]

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use postern_api::{Backend, Object, ProxyTargetSpec};
use postern_compile::{Inputs, compile};
use postern_snapshot::Snapshot;

fn main() -> Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "10,1000,10000".into())
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("SIZES is a comma-separated list of numbers")?;
    println!("| ProxyTargets | compile | to_json | bytes | decode | validate |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for size in sizes {
        let inputs = inputs(size);
        let (out, compile_t) = best_of(5, || compile(&inputs));
        let (json, json_t) = best_of(5, || out.snapshot.to_json().unwrap_or_default());
        let (decoded, decode_t) = best_of(5, || {
            serde_json::from_slice::<Snapshot>(&json).unwrap_or_default()
        });
        let (valid, validate_t) = best_of(5, || decoded.validate().is_ok());
        anyhow::ensure!(valid, "the compiled snapshot does not validate");
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {size} | {} | {} | {:.1} MiB | {} | {} |",
            ms(compile_t),
            ms(json_t),
            json.len() as f64 / 1048576.0,
            ms(decode_t),
            ms(validate_t)
        );
    }
    Ok(())
}

fn inputs(size: usize) -> Inputs {
    let mut inputs = Inputs::default();
    for i in 0..size {
        let spec = ProxyTargetSpec {
            hostnames: vec![format!("h{i}.bench.example.com")],
            backend: Backend {
                service: None,
                url: Some("http://127.0.0.1:9".into()),
                ..Backend::default()
            },
            ..ProxyTargetSpec::default()
        };
        inputs
            .proxy_targets
            .push(Object::new("bench", &format!("t{i}"), spec).into());
    }
    inputs
}

/// The fastest of `n` runs: the least disturbed by whatever else runs.
fn best_of<T>(n: usize, mut f: impl FnMut() -> T) -> (T, Duration) {
    let mut best = Duration::MAX;
    let mut value = None;
    for _ in 0..n {
        let start = Instant::now();
        let v = f();
        best = best.min(start.elapsed());
        value = Some(v);
    }
    (value.unwrap_or_else(f), best)
}
