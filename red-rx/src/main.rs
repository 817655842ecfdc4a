//! red-rx: the RED-side daemon of the optical data diode.

use std::process::ExitCode;

use chassis::runtime::DaemonCommand;
use clap::Parser;

/// Receives the symbols blue-tx sends over one-way fibers, rebuilds and verifies every block and stream,
/// and delivers them to destination pools on the RED side. A stream is closed cleanly only when its
/// length and BLAKE3 matched; every other ending resets the destination connection, and the log and
/// the status file say why. It never sends anything on a fiber.
#[derive(Parser)]
#[command(name = "red-rx", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: DaemonCommand,
}

fn main() -> ExitCode {
    chassis::runtime::daemon_main(
        "red-rx",
        Cli::parse().command,
        red_rx::config::load,
        |checked| format!("{} channels, {} fibers", checked.sinks.len(), checked.fibers.len()),
        |checked| checked.config.node.control_socket.clone(),
        red_rx::daemon::run,
    )
}
