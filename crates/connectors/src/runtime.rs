//! What both daemons need around their connectors: logging set-up and the status file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tracing::warn;

use crate::config::ConfigError;

/// Sets up logging on stderr: human-readable by default, one JSON object per line with `json`.
/// `RUST_LOG` overrides the level (default `info`).
pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Writes JSON atomically (temporary file, then rename) so readers never see half a file.
pub fn write_json(path: &Path, value: &serde_json::Value) {
    let temporary = path.with_extension("tmp");
    let written = serde_json::to_vec_pretty(value)
        .map_err(std::io::Error::other)
        .and_then(|bytes| std::fs::write(&temporary, bytes))
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = written {
        warn!(path = %path.display(), %error, "cannot write the status file");
    }
}

/// The commands both daemons take.
#[derive(Debug, clap::Subcommand)]
pub enum DaemonCommand {
    /// Runs the daemon until SIGTERM or Ctrl-C, then stops cleanly (blue-tx first sends what it accepted).
    Run {
        /// The TOML configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Log one JSON object per line instead of human-readable lines.
        #[arg(long)]
        log_json: bool,
    },
    /// Checks a configuration file: exits 0 when it is valid, 1 with the file, field and reason when not.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
}

/// A daemon's `main`: checks or runs a configuration with the daemon's own `load`, `describe` (one
/// line for a valid file) and `run`.
pub fn daemon_main<C>(
    program: &str,
    command: DaemonCommand,
    load: impl Fn(&Path) -> Result<C, ConfigError>,
    describe: impl Fn(&C) -> String,
    run: impl FnOnce(C) -> Result<(), String>,
) -> ExitCode {
    match command {
        DaemonCommand::CheckConfig { file } => match load(&file) {
            Ok(checked) => {
                println!("{}: valid ({})", file.display(), describe(&checked));
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        DaemonCommand::Run { config, log_json } => {
            init_logging(log_json);
            let checked = match load(&config) {
                Ok(checked) => checked,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            match run(checked) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error}");
                    eprintln!("{program}: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Calls `on_tick` every second until SIGTERM or SIGINT.
pub async fn tick_until_stopped(mut on_tick: impl FnMut()) -> Result<(), String> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot handle SIGTERM: {e}"))?;
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => on_tick(),
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// Runs a daemon's main future on a multi-threaded runtime whose threads carry the daemon's name.
pub fn block_on(name: &str, daemon: impl std::future::Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?
        .block_on(daemon)
}
