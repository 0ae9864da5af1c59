//! Resident memory of a process and its descendants (nginx's workers),
//! from `/proc`.

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
        found.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == current)
                .map(|(p, _)| *p),
        );
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

/// Sums of VmRSS and Pss over the tree, in bytes. Pss splits shared pages
/// among the processes that map them (nginx's master and workers share).
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub rss: u64,
    pub pss: u64,
}

pub fn usage(pid: u32) -> Usage {
    tree(pid)
        .into_iter()
        .fold(Usage::default(), |total, p| Usage {
            rss: total.rss + kib(&format!("/proc/{p}/status"), "VmRSS:") * 1024,
            pss: total.pss + kib(&format!("/proc/{p}/smaps_rollup"), "Pss:") * 1024,
        })
}

fn kib(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
