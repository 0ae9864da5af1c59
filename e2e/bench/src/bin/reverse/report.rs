//! Markdown tables with Postern's ratios to nginx and haproxy.

use crate::load::Sample;

/// A rate table: one row per proxy, then postern/nginx and postern/haproxy.
/// Rows whose name is neither `postern`, `nginx` nor `haproxy` are shown
/// but not compared.
pub fn rates(title: &str, unit: &str, rows: &[(&str, Sample)]) {
    println!("\n### {title}\n");
    println!("| proxy | {unit} | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|");
    for (name, s) in rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            s.rate, s.p50_ms, s.p99_ms, s.errors
        );
    }
    let find = |want: &str| rows.iter().find(|(n, _)| *n == want).map(|(_, s)| *s);
    let Some(postern) = find("postern") else {
        return;
    };
    for peer in ["nginx", "haproxy"] {
        if let Some(p) = find(peer) {
            println!(
                "| postern/{peer} | {} | {} | {} | |",
                ratio(postern.rate, p.rate),
                ratio(postern.p50_ms, p.p50_ms),
                ratio(postern.p99_ms, p.p99_ms)
            );
        }
    }
}

/// Two rates of Postern, with a feature on and off, and on/off.
pub fn on_off(title: &str, on: Sample, off: Sample) {
    println!("\n### {title}\n");
    println!("| postern | req/s | p50 ms | p99 ms | errors |\n|---|---:|---:|---:|---:|");
    for (name, s) in [("on", on), ("off", off)] {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} | {} |",
            s.rate, s.p50_ms, s.p99_ms, s.errors
        );
    }
    println!(
        "| on/off | {} | {} | {} | |",
        ratio(on.rate, off.rate),
        ratio(on.p50_ms, off.p50_ms),
        ratio(on.p99_ms, off.p99_ms)
    );
}

/// Resident memory at a number of idle connections.
pub struct Memory {
    pub connections: usize,
    /// Bytes, process tree summed, before the connections and with them open.
    pub rss_before: u64,
    pub rss_at: u64,
    pub pss_at: u64,
}

impl Memory {
    fn per_connection_kib(&self) -> f64 {
        self.rss_at.saturating_sub(self.rss_before) as f64 / 1024.0 / self.connections.max(1) as f64
    }
}

pub fn memory(title: &str, rows: &[(&str, Memory)]) {
    let mib = |b: u64| b as f64 / 1048576.0;
    println!("\n### {title}\n");
    println!(
        "| proxy | open connections | RSS before MiB | RSS with them MiB | PSS with them MiB | KiB per connection |\n\
         |---|---:|---:|---:|---:|---:|"
    );
    for (name, m) in rows {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            m.connections,
            mib(m.rss_before),
            mib(m.rss_at),
            mib(m.pss_at),
            m.per_connection_kib()
        );
    }
    let find = |want: &str| rows.iter().find(|(n, _)| *n == want).map(|(_, m)| m);
    let Some(postern) = find("postern") else {
        return;
    };
    for peer in ["nginx", "haproxy"] {
        if let Some(p) = find(peer) {
            println!(
                "| postern/{peer} | | | {} | {} | {} |",
                ratio(postern.rss_at as f64, p.rss_at as f64),
                ratio(postern.pss_at as f64, p.pss_at as f64),
                ratio(postern.per_connection_kib(), p.per_connection_kib())
            );
        }
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() && b.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}
