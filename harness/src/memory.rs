//! Resident memory of a process (and of its descendants, for nginx's
//! workers) from `/proc`. A value that cannot be read is an error, never 0:
//! a memory bound must not pass because nothing was measured.

use std::io;

/// A `KEY: N kB` line of `/proc/PID/<file>`, in KiB.
pub fn proc_kib(pid: u32, file: &str, key: &str) -> io::Result<u64> {
    let path = format!("/proc/{pid}/{file}");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {path}: {e}")))?;
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok());
    match value {
        Some(0) | None => Err(io::Error::other(format!("no usable {key} in {path}"))),
        Some(kib) => Ok(kib),
    }
}

/// Resident set size now (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    proc_kib(pid, "status", "VmRSS")
}

/// Peak resident set size (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> io::Result<u64> {
    proc_kib(pid, "status", "VmHWM")
}

/// `pid` and every descendant, `pid` first.
pub fn tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| Some((p, parent(p)?)))
                .collect()
        })
        .unwrap_or_default();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let current = found[i];
        let children = parents.iter().filter(|(_, pp)| *pp == current);
        found.extend(children.map(|(p, _)| *p));
        i += 1;
    }
    found
}

fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: the fields after it start past ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Sums of VmRSS and Pss over a process tree, in bytes. Pss splits shared
/// pages among the processes that map them (nginx's master and workers).
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub rss: u64,
    pub pss: u64,
}

/// [`Usage`] of `pid` and its descendants; an error when any of them
/// cannot be read.
pub fn usage(pid: u32) -> io::Result<Usage> {
    tree(pid)
        .into_iter()
        .try_fold(Usage::default(), |total, p| {
            Ok(Usage {
                rss: total.rss + rss_kib(p)? * 1024,
                pss: total.pss + proc_kib(p, "smaps_rollup", "Pss")? * 1024,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_has_a_resident_size() {
        let pid = std::process::id();
        let rss = rss_kib(pid).expect("VmRSS");
        assert!(rss > 0);
        assert!(peak_rss_kib(pid).expect("VmHWM") >= rss);
    }

    #[test]
    fn an_unreadable_value_is_an_error_not_zero() {
        assert!(rss_kib(u32::MAX).is_err());
        let pid = std::process::id();
        assert!(proc_kib(pid, "status", "NoSuchKey").is_err());
    }
}
