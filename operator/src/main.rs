//! `postern-operator`: parse flags, start logging, run.

use std::io::IsTerminal;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Colour codes only on a terminal, not in files and log collectors.
        .with_ansi(std::io::stdout().is_terminal())
        .init();
    let config = postern_operator::Args::parse().into_config()?;
    postern_operator::run(config).await?;
    Ok(())
}
