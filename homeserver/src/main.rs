//! The `homeserver` binary: parse configuration, then hand over to the library.

use clap::Parser;
use homeserver::config::{Args, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "homeserver=info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::from_args(Args::parse())?;
    homeserver::run(config, homeserver::shutdown_signal()).await
}
