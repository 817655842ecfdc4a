//! blue-tx: the BLUE-side daemon of the optical data diode.

use std::process::ExitCode;

use chassis::runtime::DaemonCommand;
use clap::Parser;

/// Takes TCP streams and UDP datagrams on the BLUE side, protects them with RaptorQ forward error
/// correction and sends them over one-way fibers to red-rx. Nothing ever comes back: pace it (link
/// rate_mbps) for what the RED side and the fibers can take, and give it repair (fec repair_percent)
/// for the loss the fibers show.
#[derive(Parser)]
#[command(name = "blue-tx", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: DaemonCommand,
}

fn main() -> ExitCode {
    chassis::runtime::daemon_main(
        "blue-tx",
        Cli::parse().command,
        blue_tx::config::load,
        |checked| format!("{} channels, {} fibers", checked.sources.len(), checked.fibers.len()),
        |checked| checked.config.node.control_socket.clone(),
        blue_tx::daemon::run,
    )
}
