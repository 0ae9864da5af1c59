//! The `postern` binary: parses arguments, sets up logging, and runs the library.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use postern::cli::{Cli, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: the request path allocates on one
/// worker thread and the request log's writer frees on another, which
/// glibc serves slowly (arena locks, chunk consolidation; measured in the
/// README's request-log benchmark), and idle connections hold less.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    small_pages();
    let cli = Cli::parse();
    if let Err(e) = init_tracing(cli.log_format) {
        eprintln!("postern: cannot set up logging: {e:#}");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postern: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(postern::run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "postern stopped");
            eprintln!("postern: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Turns transparent huge pages off for this process. The allocator's
/// arenas are 2 MiB-aligned, so with THP (Debian's default is `madvise`,
/// which mimalloc asks for; others default to `always`) memory is faulted
/// in 2 MiB at a time: ten thousand idle connections, a few KiB each, then
/// cost whole huge pages that stay mostly empty. Measured with the tunnel
/// benchmark's idle row: 12.1 / 10.4 KiB per idle stream (server / agent)
/// with THP, 3.9 / 2.7 KiB without. `no_thp` (Cargo.toml) keeps mimalloc
/// from asking before `main` runs; this covers the `always` setting.
fn small_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!(
            "postern: cannot turn transparent huge pages off ({e}); idle connections will cost more memory"
        );
    }
}

fn init_tracing(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(|e| anyhow::anyhow!(e))
}
