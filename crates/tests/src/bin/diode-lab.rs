//! diode-lab: the demo and benchmark driver.
//!
//! Today it runs the protocol round trip; the full BLUE/RED HA demo and the loopback benchmark will
//! join it as further subcommands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use diode_proto::FecParams;
use tests::roundtrip::{run, Plan};

#[derive(Parser)]
#[command(name = "diode-lab", version, about = "Demos and benchmarks of the optical data diode")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Sends a TCP-like stream, a folder of files and UDP datagrams through the real protocol code
    /// (block builder, RaptorQ encoder, interleaver, receiver) over a seeded lossy link in this
    /// process, then checks every byte. Exits non-zero unless every stream and file is intact.
    Roundtrip {
        /// Bytes of the TCP-like stream.
        #[arg(long, default_value_t = 20_000_000)]
        bytes: usize,
        /// Number of files (random sizes up to 300 kB).
        #[arg(long, default_value_t = 40)]
        files: usize,
        /// Number of UDP datagrams.
        #[arg(long, default_value_t = 1000)]
        datagrams: usize,
        /// Uniform datagram loss, in percent.
        #[arg(long, default_value_t = 1.0)]
        loss: f64,
        /// Consecutive datagrams lost once, halfway through.
        #[arg(long, default_value_t = 40)]
        burst: usize,
        /// Repair symbols per block, in percent of the source symbols.
        #[arg(long, default_value_t = 20.0)]
        repair: f64,
        /// Link MTU the symbol size is derived from.
        #[arg(long, default_value_t = 1500)]
        mtu: usize,
        /// Blocks interleaved on the wire.
        #[arg(long, default_value_t = 8)]
        interleave: u16,
        /// Seed of the data and of the loss pattern.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let Command::Roundtrip { bytes, files, datagrams, loss, burst, repair, mtu, interleave, seed, json } =
        Cli::parse().command;
    if !(0.0..=100.0).contains(&repair) || !(0.0..=100.0).contains(&loss) {
        eprintln!("diode-lab: --repair and --loss are percentages between 0 and 100");
        return ExitCode::from(2);
    }
    let symbol_size = match FecParams::symbol_size_for_mtu(mtu) {
        Ok(size) => size,
        Err(error) => {
            eprintln!("diode-lab: --mtu: {error}");
            return ExitCode::from(2);
        }
    };
    let fec = FecParams {
        symbol_size,
        repair_basis_points: (repair * 100.0).round() as u16,
        interleave_depth: interleave,
        ..FecParams::for_mtu(mtu)
    };
    let plan = Plan { stream_bytes: bytes, files, datagrams, loss_percent: loss, burst, fec, seed };
    let report = match run(&plan) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("diode-lab: {error}");
            return ExitCode::from(2);
        }
    };
    if json {
        let channels: Vec<String> = report
            .channels
            .iter()
            .map(|c| {
                format!(
                    r#"{{"name":"{}","sent_bytes":{},"delivered_bytes":{},"sent":{},"intact":{},"broken":{}}}"#,
                    c.name, c.sent_bytes, c.delivered_bytes, c.items_sent, c.items_intact, c.items_broken
                )
            })
            .collect();
        println!(
            r#"{{"channels":[{}],"datagrams_sent":{},"datagrams_lost":{},"blocks_decoded":{},"blocks_without_decoder":{},"blocks_lost":{},"elapsed_ms":{},"ok":{}}}"#,
            channels.join(","),
            report.datagrams_sent,
            report.datagrams_lost,
            report.blocks_decoded,
            report.blocks_without_decoder,
            report.blocks_lost,
            report.elapsed.as_millis(),
            report.ok()
        );
    } else {
        println!(
            "link: {} datagrams, {} lost ({:.2} %, including a burst of {}); symbol {} bytes, repair {:.1} %, interleave {}",
            report.datagrams_sent,
            report.datagrams_lost,
            100.0 * report.datagrams_lost as f64 / report.datagrams_sent.max(1) as f64,
            burst,
            fec.symbol_size,
            repair,
            interleave
        );
        println!(
            "{:<8} {:>14} {:>14} {:>7} {:>7} {:>7}",
            "channel", "sent bytes", "delivered", "items", "intact", "broken"
        );
        for c in &report.channels {
            println!(
                "{:<8} {:>14} {:>14} {:>7} {:>7} {:>7}",
                c.name, c.sent_bytes, c.delivered_bytes, c.items_sent, c.items_intact, c.items_broken
            );
        }
        println!(
            "blocks: {} rebuilt from source symbols, {} decoded with repair, {} lost; {:.2} s",
            report.blocks_without_decoder,
            report.blocks_decoded,
            report.blocks_lost,
            report.elapsed.as_secs_f64()
        );
        println!(
            "{}",
            if report.ok() { "OK: every stream and file intact" } else { "FAILED: not every stream and file intact" }
        );
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
