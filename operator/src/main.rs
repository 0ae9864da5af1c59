//! `postern-operator`: parse flags, start logging, run.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: a compile at 10,000 objects makes
/// and frees hundreds of thousands of small strings, and glibc's malloc,
/// free and chunk consolidation were over a third of the operator's CPU
/// while it compiled (perf, spine at 10,000 ProxyTargets).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Colour codes only on a terminal, not in files and log collectors.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    small_pages();
    let config = postern_operator::Args::parse().into_config()?;
    postern_operator::run(config).await?;
    Ok(())
}

/// Transparent huge pages off, as in the data plane (`postern`'s main.rs):
/// mimalloc's arenas are 2 MiB-aligned, and with THP the resident size
/// grows in 2 MiB steps that stay mostly empty.
fn small_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(error = %e, "cannot turn transparent huge pages off");
    }
}
