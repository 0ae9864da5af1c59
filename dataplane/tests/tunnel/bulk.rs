//! Large bodies both ways stream with bounded memory on both sides: the
//! data plane's and the agent's resident size are sampled throughout.
//! `POSTERN_TUNNEL_BULK_MIB` sets the size (default 256; `e2e/test` sets
//! 1024, the 1 GiB).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use postern_harness::memory::rss_kib;
use postern_harness::{Backend, peer, tmp_dir};

use crate::rig::{CONNECT, Rig, host_tunnel};

/// Resident size either process may reach while relaying.
const RSS_BOUND_MIB: u64 = 160;

fn size_mib() -> u64 {
    std::env::var("POSTERN_TUNNEL_BULK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Samples the peak RSS of `pids` every 50 ms until `stop`.
fn sampler(
    pids: Vec<u32>,
    stop: Arc<AtomicBool>,
) -> (std::thread::JoinHandle<()>, Arc<Vec<AtomicU64>>) {
    let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
    let out = peaks.clone();
    let handle = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for (i, pid) in pids.iter().enumerate() {
                let kib = rss_kib(*pid).unwrap_or_else(|e| panic!("RSS of {pid}: {e}"));
                peaks[i].fetch_max(kib, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    (handle, out)
}

fn curl(args: &[&str]) -> String {
    let bin = peer("curl").expect("curl");
    let out = Command::new(bin)
        .args(["-sS", "--max-time", "300"])
        .args(args)
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn large_downloads_and_uploads_stream_with_bounded_memory() {
    let mib = size_mib();
    let bytes = mib * 1024 * 1024;
    let local = Backend::start("bulk");
    let rig = Rig::start(
        "tunnel-bulk",
        "ed25519",
        &[host_tunnel("app", &["app.test"])],
    )
    .await;
    let agent = rig.agent(&rig.key.token(&["default/app"], "1h"), &[&local.url()]);
    agent.wait_status("connected", 1, CONNECT).await;
    let port = rig.postern.http.port();
    let resolve = format!("app.test:{port}:127.0.0.1");
    let upload = tmp_dir("tunnel-bulk").join("upload");
    let file = std::fs::File::create(&upload).expect("upload file");
    file.set_len(bytes).expect("sparse upload file");
    let stop = Arc::new(AtomicBool::new(false));
    let (thread, peaks) = sampler(vec![rig.postern.pid(), agent.pid()], stop.clone());

    let started = Instant::now();
    let url = format!("http://app.test:{port}/bytes/{bytes}");
    let got = tokio::task::spawn_blocking({
        let resolve = resolve.clone();
        move || {
            curl(&[
                "--resolve",
                &resolve,
                "-o",
                "/dev/null",
                "-w",
                "%{size_download}",
                &url,
            ])
        }
    })
    .await
    .expect("download");
    let down = started.elapsed();
    assert_eq!(got.trim(), bytes.to_string(), "downloaded bytes");

    let started = Instant::now();
    let url = format!("http://app.test:{port}/sink");
    let path = upload.to_str().expect("utf-8").to_string();
    let got =
        tokio::task::spawn_blocking(move || curl(&["--resolve", &resolve, "-T", &path, &url]))
            .await
            .expect("upload");
    let up = started.elapsed();
    assert_eq!(
        got.trim(),
        bytes.to_string(),
        "uploaded bytes the service read"
    );

    stop.store(true, Ordering::Relaxed);
    thread.join().expect("sampler");
    let (dp, ag) = (
        peaks[0].load(Ordering::Relaxed) / 1024,
        peaks[1].load(Ordering::Relaxed) / 1024,
    );
    eprintln!(
        "{mib} MiB down in {down:?} ({:.0} MiB/s), up in {up:?} ({:.0} MiB/s); peak RSS data plane {dp} MiB, agent {ag} MiB",
        mib as f64 / down.as_secs_f64(),
        mib as f64 / up.as_secs_f64()
    );
    assert!(dp < RSS_BOUND_MIB, "data plane RSS {dp} MiB");
    assert!(ag < RSS_BOUND_MIB, "agent RSS {ag} MiB");
    let _ = std::fs::remove_file(&upload);
}
