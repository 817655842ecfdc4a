//! What both daemons need around their connectors: logging set-up and the status file.

use std::path::Path;

use tracing::warn;

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
