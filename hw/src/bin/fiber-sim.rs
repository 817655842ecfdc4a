//! fiber-sim: stands in for an optical fiber between two UDP addresses.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use hw::forwarder::{Control, Forwarder, ForwarderConfig};
use hw::sim::{CutWindow, GilbertElliott, SimConfig};

/// Forwards UDP datagrams one way, from --listen to --forward, doing to them what a real optical link
/// (and its worst days) would: loss, bursts of loss, reordering, duplication, bit errors, a rate limit
/// with a finite queue, delay, and cuts. Every random choice comes from --seed, so a run can be
/// repeated exactly.
///
/// Signals: SIGUSR1 writes the --stats-json file now; SIGUSR2 cuts the fiber, or restores it if cut;
/// SIGTERM or SIGINT stops after delivering what is still on the link and writes the stats file.
#[derive(Parser, Debug)]
#[command(name = "fiber-sim", version, verbatim_doc_comment)]
struct Cli {
    /// Address to receive datagrams on (the transmitting end of the fiber).
    #[arg(long)]
    listen: SocketAddr,
    /// Address to deliver datagrams to (the receiving end of the fiber).
    #[arg(long)]
    forward: SocketAddr,
    /// Uniform loss: percent of datagrams dropped independently of each other.
    #[arg(long, default_value_t = 0.0, value_name = "PCT")]
    loss: f64,
    /// Gilbert-Elliott burst loss: percent chance per datagram of entering the bad state.
    /// Set it (with --ge-r) to enable the burst model.
    #[arg(long, value_name = "PCT", requires = "ge_r")]
    ge_p: Option<f64>,
    /// Gilbert-Elliott: percent chance per datagram of leaving the bad state (mean burst = 100/ge-r).
    #[arg(long, value_name = "PCT", requires = "ge_p")]
    ge_r: Option<f64>,
    /// Gilbert-Elliott: percent of datagrams lost while in the bad state.
    #[arg(long, default_value_t = 100.0, value_name = "PCT")]
    ge_loss_bad: f64,
    /// Gilbert-Elliott: percent of datagrams lost while in the good state.
    #[arg(long, default_value_t = 0.0, value_name = "PCT")]
    ge_loss_good: f64,
    /// Percent of datagrams held back and overtaken by up to --reorder-window later ones.
    #[arg(long, default_value_t = 0.0, value_name = "PCT")]
    reorder: f64,
    /// Most datagrams that overtake a held-back one.
    #[arg(long, default_value_t = 8, value_name = "N")]
    reorder_window: u32,
    /// Percent of datagrams delivered twice.
    #[arg(long, default_value_t = 0.0, value_name = "PCT")]
    duplicate: f64,
    /// Percent of datagrams with one random bit flipped.
    #[arg(long, default_value_t = 0.0, value_name = "PCT")]
    corrupt: f64,
    /// Link rate in Mbit/s (wire bits: payload plus IP and UDP headers). Unlimited when absent.
    #[arg(long, value_name = "MBPS")]
    rate_mbps: Option<f64>,
    /// Bytes the link queue holds with --rate-mbps before arrivals are dropped (tail drop).
    #[arg(long, default_value_t = 1 << 20, value_name = "BYTES")]
    queue_bytes: usize,
    /// Fixed one-way delay in milliseconds.
    #[arg(long, default_value_t = 0.0, value_name = "MS")]
    delay_ms: f64,
    /// Cut the fiber this many seconds after start (repeatable, paired with --cut-for).
    #[arg(long, value_name = "SECS")]
    cut_at: Vec<f64>,
    /// How long each --cut-at cut lasts, in seconds.
    #[arg(long, value_name = "SECS")]
    cut_for: Vec<f64>,
    /// A UDP address accepting the commands "cut", "restore" and "stats" (answered with JSON).
    #[arg(long, value_name = "ADDR")]
    control: Option<SocketAddr>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write forwarded/dropped/corrupted/duplicated counts as JSON here on exit and on SIGUSR1.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
}

/// A command-line option that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BadOption(String);

fn percent(field: &str, value: f64) -> Result<f64, BadOption> {
    if (0.0..=100.0).contains(&value) {
        Ok(value / 100.0)
    } else {
        Err(BadOption(format!("--{field} {value}: must be a percentage between 0 and 100")))
    }
}

fn sim_config(cli: &Cli) -> Result<SimConfig, BadOption> {
    if cli.cut_at.len() != cli.cut_for.len() {
        return Err(BadOption(format!(
            "--cut-at given {} times but --cut-for {} times: give one of each per cut",
            cli.cut_at.len(),
            cli.cut_for.len()
        )));
    }
    let mut cuts = Vec::new();
    for (at, length) in cli.cut_at.iter().zip(&cli.cut_for) {
        if !at.is_finite() || !length.is_finite() || *at < 0.0 || *length < 0.0 {
            return Err(BadOption(format!("--cut-at {at} --cut-for {length}: seconds must be zero or more")));
        }
        cuts.push(CutWindow { start: Duration::from_secs_f64(*at), length: Duration::from_secs_f64(*length) });
    }
    let burst = match (cli.ge_p, cli.ge_r) {
        (Some(p), Some(r)) => Some(GilbertElliott {
            p: percent("ge-p", p)?,
            r: percent("ge-r", r)?,
            loss_bad: percent("ge-loss-bad", cli.ge_loss_bad)?,
            loss_good: percent("ge-loss-good", cli.ge_loss_good)?,
        }),
        _ => None,
    };
    let rate_bps = match cli.rate_mbps {
        Some(mbps) if mbps.is_finite() && mbps > 0.0 => Some((mbps * 1e6) as u64),
        Some(mbps) => return Err(BadOption(format!("--rate-mbps {mbps}: must be above 0"))),
        None => None,
    };
    if !cli.delay_ms.is_finite() || cli.delay_ms < 0.0 {
        return Err(BadOption(format!("--delay-ms {}: must be zero or more", cli.delay_ms)));
    }
    let config = SimConfig {
        loss: percent("loss", cli.loss)?,
        burst,
        reorder: percent("reorder", cli.reorder)?,
        reorder_window: cli.reorder_window,
        duplicate: percent("duplicate", cli.duplicate)?,
        corrupt: percent("corrupt", cli.corrupt)?,
        rate_bps,
        queue_bytes: cli.queue_bytes,
        delay: Duration::from_secs_f64(cli.delay_ms / 1000.0),
        cuts,
        seed: cli.seed,
    };
    config.validate().map_err(|e| BadOption(e.to_string()))?;
    Ok(config)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let sim = match sim_config(&cli) {
        Ok(sim) => sim,
        Err(message) => {
            eprintln!("fiber-sim: {message}");
            return ExitCode::from(2);
        }
    };
    let control = Arc::new(Control::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let dump = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toggle = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for (signal, flag) in [
        (signal_hook::consts::SIGTERM, &stop),
        (signal_hook::consts::SIGINT, &stop),
        (signal_hook::consts::SIGUSR1, &dump),
        (signal_hook::consts::SIGUSR2, &toggle),
    ] {
        if let Err(error) = signal_hook::flag::register(signal, Arc::clone(flag)) {
            eprintln!("fiber-sim: cannot handle signal {signal}: {error}");
            return ExitCode::from(1);
        }
    }
    let config = ForwarderConfig {
        listen: cli.listen,
        forward: cli.forward,
        control: cli.control,
        stats_json: cli.stats_json.clone(),
        sim,
    };
    let forwarder = match Forwarder::spawn_with(config, Arc::clone(&control)) {
        Ok(forwarder) => forwarder,
        Err(error) => {
            eprintln!("fiber-sim: cannot start forwarding {} -> {}: {error}", cli.listen, cli.forward);
            return ExitCode::from(1);
        }
    };
    eprintln!("fiber-sim: forwarding {} -> {}", forwarder.local_addr(), cli.forward);
    while !stop.load(Ordering::SeqCst) {
        if dump.swap(false, Ordering::SeqCst) {
            control.dump.store(true, Ordering::SeqCst);
        }
        if toggle.swap(false, Ordering::SeqCst) {
            control.toggle_cut.store(true, Ordering::SeqCst);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    match forwarder.stop() {
        Ok(stats) => {
            eprintln!(
                "fiber-sim: received {}, forwarded {}, dropped {} (loss {}, burst {}, cut {}, queue {}), corrupted {}, duplicated {}, reordered {}",
                stats.received,
                stats.forwarded,
                stats.dropped(),
                stats.dropped_loss,
                stats.dropped_burst,
                stats.dropped_cut,
                stats.dropped_queue,
                stats.corrupted,
                stats.duplicated,
                stats.reordered
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("fiber-sim: {error}");
            ExitCode::from(1)
        }
    }
}
