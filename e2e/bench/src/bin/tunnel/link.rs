//! A long link between two network namespaces made here: `pt-near` (the
//! server, the public clients) and `pt-far` (the agent, the local
//! services), joined by `delayline.py` (TUN devices and a fixed one-way
//! delay per packet; this kernel has no sch_netem), torn down on drop.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use postern_harness::repo_root;

pub const NEAR: &str = "pt-near";
pub const FAR: &str = "pt-far";
pub const NEAR_IP: [u8; 4] = [10, 77, 0, 1];
pub const FAR_IP: [u8; 4] = [10, 77, 0, 2];

pub struct Link {
    delayline: Child,
}

impl Link {
    /// Namespaces, devices and addresses; `rtt_ms` split evenly between
    /// the two directions.
    pub fn up(rtt_ms: u64) -> Result<Link> {
        // Leftovers of a run that was killed.
        teardown();
        for ns in [NEAR, FAR] {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])?;
        }
        let script = repo_root().join("e2e/bench/delayline.py");
        let mut delayline = Command::new("python3")
            .arg(&script)
            .args([NEAR, "tnear", FAR, "tfar"])
            .arg(format!("{}", rtt_ms as f64 / 2.0))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting delayline.py")?;
        let ready = wait_devices();
        if let Err(e) = ready {
            let _ = delayline.kill();
            return Err(e);
        }
        for (ns, dev, ip, peer) in [
            (NEAR, "tnear", NEAR_IP, FAR_IP),
            (FAR, "tfar", FAR_IP, NEAR_IP),
        ] {
            let (ip, peer) = (IpAddr::from(ip).to_string(), IpAddr::from(peer).to_string());
            let exec = ["ip", "netns", "exec", ns];
            run(&[
                &exec[..],
                &["ip", "addr", "add", &ip, "peer", &peer, "dev", dev],
            ]
            .concat())?;
            // Large packets, as on loopback: the emulator's per-packet cost
            // must not be what limits the rows.
            run(&[&exec[..], &["ip", "link", "set", dev, "mtu", "65000", "up"]].concat())?;
        }
        Ok(Link { delayline })
    }

    /// `ip netns exec FAR`, to run something on the far side.
    pub fn far() -> Vec<String> {
        ["ip", "netns", "exec", FAR].map(String::from).to_vec()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.delayline.kill();
        let _ = self.delayline.wait();
        teardown();
    }
}

fn wait_devices() -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let near = quiet(&["ip", "netns", "exec", NEAR, "ip", "link", "show", "tnear"]);
        let far = quiet(&["ip", "netns", "exec", FAR, "ip", "link", "show", "tfar"]);
        if near && far {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("delayline.py made no TUN devices in 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn teardown() {
    for ns in [NEAR, FAR] {
        let _ = quiet(&["ip", "netns", "del", ns]);
    }
}

fn quiet(words: &[&str]) -> bool {
    Command::new(words[0])
        .args(&words[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(words: &[&str]) -> Result<()> {
    let out = Command::new(words[0])
        .args(&words[1..])
        .output()
        .with_context(|| format!("running {words:?}"))?;
    if !out.status.success() {
        bail!(
            "{words:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
