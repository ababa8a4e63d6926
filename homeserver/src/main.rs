//! The `homeserver` binary: parse configuration, then hand over to the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use homeserver::config::{Args, Command, Config};

/// How long the runtime waits, once the server stopped, for blocking work
/// still running (a Kafka commit with every broker down never returns).
const EXIT_GRACE: Duration = Duration::from_secs(5);

fn main() -> anyhow::Result<ExitCode> {
    let mut args = Args::parse();
    match args.command.take() {
        Some(Command::CheckConfig { file }) => return Ok(check_config(file, args)),
        Some(Command::RotateSigningKey) => {
            let config = Config::from_args(args)?;
            std::fs::create_dir_all(&config.data_dir)?;
            let key_id = homeserver::service::keys::ServerKey::rotate(&config.data_dir)?;
            println!("signing with {key_id} from the next start");
            return Ok(ExitCode::SUCCESS);
        }
        None => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(serve(args));
    // Dropping the runtime would wait for blocking tasks without end.
    runtime.shutdown_timeout(EXIT_GRACE);
    result.map(|()| ExitCode::SUCCESS)
}

/// `homeserver check-config FILE`, for operators and scripts/check_docker.py:
/// one line, and a failing exit status if the server would refuse the file.
fn check_config(file: PathBuf, args: Args) -> ExitCode {
    match Config::from_file_and_args(file.clone(), args) {
        Ok(_) => {
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{}: {err:#}", file.display());
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    keep_large_allocations_out_of_the_heap();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "homeserver=info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = Config::from_args(args)?;
    homeserver::run(config, homeserver::shutdown_signal()).await
}

/// Argon2 allocates ~19 MiB per password hash. glibc raises its mmap threshold
/// after freeing such a block, so later ones come from the heap and are never
/// returned to the system: a few logins left the server ~100 MiB larger.
/// A fixed threshold keeps large blocks mmapped and returned on free.
fn keep_large_allocations_out_of_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator and takes its own locks.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}
