//! red-rx: the RED-side daemon of the optical data diode.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Receives the symbols blue-tx sends over one-way fibers, rebuilds and verifies every block and stream,
/// and delivers them to destination pools on the RED side. A stream is closed cleanly only when its
/// length and BLAKE3 matched; every other ending resets the destination connection, and the log and
/// the status file say why. It never sends anything on a fiber.
#[derive(Parser)]
#[command(name = "red-rx", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the daemon until SIGTERM or Ctrl-C, then stops.
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

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::CheckConfig { file } => match red_rx::config::load(&file) {
            Ok(checked) => {
                println!(
                    "{}: valid ({} channels, {} fibers)",
                    file.display(),
                    checked.sinks.len(),
                    checked.fibers.len()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, log_json } => {
            connectors::runtime::init_logging(log_json);
            let checked = match red_rx::config::load(&config) {
                Ok(checked) => checked,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            match red_rx::daemon::run(checked) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error}");
                    eprintln!("red-rx: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
