//! blue-tx: the BLUE-side daemon of the optical data diode.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Takes TCP streams and UDP datagrams on the BLUE side, protects them with RaptorQ forward error
/// correction and sends them over one-way fibers to red-rx. Nothing ever comes back: pace it (link
/// rate_mbps) for what the RED side and the fibers can take, and give it repair (fec repair_percent)
/// for the loss the fibers show.
#[derive(Parser)]
#[command(name = "blue-tx", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the daemon until SIGTERM or Ctrl-C, then flushes what it accepted and stops.
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
        Command::CheckConfig { file } => match blue_tx::config::load(&file) {
            Ok(checked) => {
                println!(
                    "{}: valid ({} channels, {} fibers)",
                    file.display(),
                    checked.sources.len(),
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
            let checked = match blue_tx::config::load(&config) {
                Ok(checked) => checked,
                Err(error) => {
                    eprintln!("{error}");
                    return ExitCode::FAILURE;
                }
            };
            match blue_tx::daemon::run(checked) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error}");
                    eprintln!("blue-tx: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
