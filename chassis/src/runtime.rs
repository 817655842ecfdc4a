//! What both daemons need around their connectors: logging set-up and the status file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tracing::warn;

use connectors::config::ConfigError;

/// Why a daemon could not start, or stopped on its own. Each variant says what failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A socket, file, folder or thread the daemon needs could not be had.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("fiber {index}: {source}")]
    Fiber {
        index: usize,
        #[source]
        source: hw::fiber::FiberError,
    },
    /// A part of the daemon (the election, the pair channel, the management server) failed.
    #[error("{part}: {source}")]
    Part {
        part: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The configuration passed its checks but lacks what a running part needs: a check is missing.
    #[error("{0} (a configuration check was skipped)")]
    Unchecked(String),
}

impl DaemonError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> DaemonError {
        DaemonError::Io { what: what.into(), source }
    }

    pub fn part(part: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> DaemonError {
        DaemonError::Part { part, source: source.into() }
    }
}

/// Why the daemon's control socket could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the daemon at {path}: {source}")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the daemon's control socket: {0}")]
    Io(#[from] std::io::Error),
}

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
    /// Reads a password or API token on stdin (one line) and prints its Argon2 hash, for the
    /// `[management]` section's password_hash or token_hash.
    HashSecret,
    /// Steers the local daemon's HA pair membership through its control socket.
    Ha {
        #[arg(value_enum)]
        action: HaAction,
        /// The running daemon's configuration file (it names the control socket).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HaAction {
    /// Hand the VIP to the peer (it takes over at once).
    Demote,
    /// Take the VIP, unless the active peer is preferred.
    Promote,
    /// Show role, demotion, faults and advert counters.
    Status,
}

/// Freed memory a daemon keeps for its next blocks instead of returning it to the kernel: a full
/// block is 90 KiB at MTU 1500 and 570 KiB at MTU 9000 by default, and 8 MiB leaves room for larger
/// `block_symbols`.
const KEEP_FREED_BYTES: usize = 8 << 20;

/// A daemon's `main`: checks or runs a configuration with the daemon's own `load`, `describe` (one
/// line for a valid file) and `run`.
pub fn daemon_main<C>(
    program: &str,
    command: DaemonCommand,
    load: impl Fn(&Path) -> Result<C, ConfigError>,
    describe: impl Fn(&C) -> String,
    control_socket: impl Fn(&C) -> Option<PathBuf>,
    run: impl FnOnce(C) -> Result<(), DaemonError>,
) -> ExitCode {
    match command {
        DaemonCommand::HashSecret => {
            let mut line = String::new();
            if let Err(error) = std::io::stdin().read_line(&mut line) {
                eprintln!("{program}: cannot read the secret: {error}");
                return ExitCode::FAILURE;
            }
            let secret = line.trim_end_matches(['\r', '\n']);
            if secret.is_empty() {
                eprintln!("{program}: the secret is empty");
                return ExitCode::FAILURE;
            }
            match crate::management::hash_secret(secret) {
                Ok(hash) => {
                    println!("{hash}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{program}: {error}");
                    ExitCode::FAILURE
                }
            }
        }
        DaemonCommand::Ha { action, config } => {
            let socket = match load(&config) {
                Ok(checked) => control_socket(&checked),
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            let Some(socket) = socket else {
                eprintln!("{}: node: control_socket is not set, so the daemon cannot be steered", config.display());
                return ExitCode::FAILURE;
            };
            let command = match action {
                HaAction::Demote => "ha demote",
                HaAction::Promote => "ha promote",
                HaAction::Status => "ha status",
            };
            match control_request(&socket, command) {
                Ok(answer) if answer.starts_with("error") => {
                    eprintln!("{program}: {answer}");
                    ExitCode::FAILURE
                }
                Ok(answer) => {
                    println!("{answer}");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("{program}: {error}");
                    ExitCode::FAILURE
                }
            }
        }
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
            // Before any thread starts, so every allocator arena follows it.
            if !hw::keep_freed_memory(KEEP_FREED_BYTES) {
                tracing::debug!("allocator thresholds left at their defaults");
            }
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
pub async fn tick_until_stopped(mut on_tick: impl FnMut()) -> Result<(), DaemonError> {
    let stop = stop_signal();
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = ticker.tick() => on_tick(),
            result = &mut stop => return result,
        }
    }
}

/// Runs a daemon's main future on a multi-threaded runtime whose threads carry the daemon's name.
pub fn block_on(
    name: &str,
    daemon: impl std::future::Future<Output = Result<(), DaemonError>>,
) -> Result<(), DaemonError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(name)
        .build()
        .map_err(|e| DaemonError::io("cannot start the runtime", e))?
        .block_on(daemon)
}

/// Why one run of a daemon ended.
pub enum RunEnd {
    /// A stop signal: the process exits.
    Stopped,
    /// The configuration file changed (replicated from the active peer): run again with it.
    Reload,
}

/// Runs a daemon in runs: each run gets a checked configuration and ends stopped or asking for a
/// reload, after which the file at `path` is loaded and checked again and a new run starts in the same
/// process. This is how a standby applies a replicated configuration without a restart.
pub fn run_reloading<C, E, F>(
    name: &str,
    first: C,
    path: std::path::PathBuf,
    load: impl Fn(&Path) -> Result<C, E>,
    run: impl Fn(C) -> F,
) -> Result<(), DaemonError>
where
    E: Into<DaemonError>,
    F: std::future::Future<Output = Result<RunEnd, DaemonError>>,
{
    block_on(name, async move {
        let mut checked = first;
        loop {
            match run(checked).await? {
                RunEnd::Stopped => return Ok(()),
                RunEnd::Reload => {
                    checked = load(&path).map_err(Into::into)?;
                    tracing::info!(path = %path.display(), "running the replicated configuration");
                }
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() -> Result<(), DaemonError> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::io("cannot handle SIGTERM", e))?;
    tokio::select! {
        _ = terminate.recv() => Ok(()),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// Serves one-line commands on a Unix socket (the local operator interface): each connection sends a
/// line, `handle` answers it, the answer goes back and the connection closes.
pub async fn serve_control<F, Fut>(path: PathBuf, handle: F) -> Result<(), DaemonError>
where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)
        .map_err(|e| DaemonError::io(format!("control socket {}", path.display()), e))?;
    // Only the owner may steer the daemon.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let handle = std::sync::Arc::new(handle);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handle = std::sync::Arc::clone(&handle);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(read).read_line(&mut line).await.is_ok() {
                    let answer = handle(line.trim().to_string()).await;
                    let _ = write.write_all(answer.as_bytes()).await;
                    let _ = write.write_all(b"\n").await;
                }
            });
        }
    });
    Ok(())
}

/// Sends one command line to a daemon's control socket and returns its answer.
pub fn control_request(path: &Path, command: &str) -> Result<String, ControlError> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path)
        .map_err(|source| ControlError::Unreachable { path: path.to_path_buf(), source })?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    stream.write_all(format!("{command}\n").as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.trim_end().to_string())
}

/// Replaces a configuration file atomically, keeping the previous one as `<name>.bak`.
pub fn save_config(path: &Path, text: &str) -> std::io::Result<()> {
    let temporary = path.with_extension("import");
    std::fs::write(&temporary, text.as_bytes())?;
    std::fs::File::open(&temporary)?.sync_all()?;
    let _ = std::fs::copy(path, path.with_extension("toml.bak"));
    std::fs::rename(&temporary, path)?;
    connectors::ledger::sync_parent(path)
}
