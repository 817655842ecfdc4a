//! diode-lab: the demo and benchmark driver.
//!
//! `demo` runs the product end to end as real processes on loopback; `failover` kills the active node
//! of a pair again and again under load; `bench` measures one sender and one receiver; `roundtrip`
//! runs the protocol alone in one process; `ha --netns` runs the HA scenarios in namespaces.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use diode_proto::FecParams;
use tests::demo::DemoOptions;
use tests::lab::LinkPlan;
use tests::roundtrip::{run, Plan};

#[derive(Parser)]
#[command(name = "diode-lab", version, about = "Demos and benchmarks of the optical data diode")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Builds the BLUE and RED pairs in fresh network namespaces (root needed): bridges as switches,
    /// veth pairs as cables and the four cross-connected fibers, addresses from 198.18.0.0/15. Runs
    /// the HA scenarios (election, kill -9 of the active, demote/promote/preemption, wrong key and
    /// replayed adverts, partition and heal, a RED with silent fibers, interop with Debian's ucarp)
    /// with a real client measuring service through the VIP, then removes every namespace.
    Ha {
        /// Use network namespaces (the only mode; kept explicit because it needs root).
        #[arg(long)]
        netns: bool,
        /// kill -9 trials of the active BLUE.
        #[arg(long, default_value_t = 10)]
        trials: u32,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// One BLUE and one RED on loopback with TCP and UDP traffic; mid-run every RED destination goes
    /// away for `--seconds`, then comes back. Prints per kind what was sent, delivered (from the
    /// spool), lost and duplicated, the spool's peak, red-rx's peak memory and how long the spool took
    /// to empty. Exits non-zero when a spooled stream was lost or duplicated.
    Outage {
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// What goes through the outage (files and vault are not spooled in this version).
        #[arg(long, value_parser = ["tcp", "udp", "files", "all"], default_value = "all")]
        kind: String,
        /// red-rx's resident memory may not pass this while it spools.
        #[arg(long, default_value_t = 256)]
        rss_budget_mb: u64,
        #[arg(long)]
        json: bool,
    },
    /// (lab helper) A destination that records received streams to a JSON file.
    #[command(hide = true)]
    NsSink {
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long)]
        out: std::path::PathBuf,
    },
    /// (lab helper) Sends one stream, retrying the connection until the timeout.
    #[command(hide = true)]
    NsSend {
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long)]
        id: u64,
        #[arg(long)]
        bytes: usize,
        #[arg(long)]
        timeout_ms: u64,
    },
    /// (lab helper) Sends CARP adverts with a wrong key, or replays a heard one.
    #[command(hide = true)]
    NsAdvert {
        #[arg(long)]
        source: std::net::Ipv4Addr,
        #[arg(long)]
        vhid: u8,
        #[arg(long)]
        vip: std::net::Ipv4Addr,
        #[arg(long)]
        key: Option<String>,
        #[arg(long)]
        replay: bool,
        #[arg(long, default_value_t = 10)]
        count: u32,
        /// IP TTL of the adverts (CARP requires 255: anything else came from off the link).
        #[arg(long, default_value_t = 255)]
        ttl: u32,
    },
    /// The whole product on loopback, no root: a BLUE pair and a RED pair (two blue-tx, two red-rx,
    /// each pair electing its active node and replicating over its pair channel) and four fiber-sim
    /// processes cross-connecting them with a little loss and bursts. Concurrent TCP streams, a UDP
    /// flow, files dropped in nested folders and HTTP vault uploads run for --load-seconds; a third of
    /// the way in the active BLUE is killed -9, two thirds in the active RED, and each comes back as
    /// standby. Shows progress, then a table (or --json): per channel sent, delivered and intact, and
    /// each failover's takeover time and files lost. Exits non-zero unless every TCP stream, file and
    /// upload is intact, no file was lost or delivered twice, and both failovers happened. Cleans up
    /// every process and temporary file.
    Demo {
        /// Concurrent TCP streams (sizes from 1 byte to --max-stream-bytes).
        #[arg(long, default_value_t = 24)]
        streams: usize,
        #[arg(long, default_value_t = 8 << 20)]
        max_stream_bytes: usize,
        /// UDP datagrams to send (spread over the load time).
        #[arg(long, default_value_t = 6000)]
        datagrams: usize,
        /// Files dropped in BLUE's drop folder (sizes from 0 bytes to --max-file-bytes).
        #[arg(long, default_value_t = 60)]
        files: usize,
        #[arg(long, default_value_t = 16 << 20)]
        max_file_bytes: usize,
        /// Files uploaded to BLUE's HTTP vault.
        #[arg(long, default_value_t = 12)]
        uploads: usize,
        /// Uniform loss on each fiber, in percent (plus short bursts).
        #[arg(long, default_value_t = 0.2)]
        loss: f64,
        /// Repair in percent of a block's source symbols.
        #[arg(long, default_value_t = 15.0)]
        repair: f64,
        /// How long the load runs.
        #[arg(long, default_value_t = 30)]
        load_seconds: u64,
        /// Run the load without killing anything.
        #[arg(long)]
        no_failover: bool,
        /// Fiber rate in Mbit/s.
        #[arg(long, default_value_t = 1000.0)]
        rate_mbps: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
        /// After the checks, leave everything running and print each node's dashboard URL and the
        /// credentials; Ctrl-C stops it and removes every process and file.
        #[arg(long)]
        keep_running: bool,
    },
    /// Starts the full pair-of-pairs on loopback (no root: two blue-tx, two red-rx, four fiber-sims
    /// cross-connected, VIPs on 127.x, pair channels), keeps files dropping and a TCP and a UDP stream
    /// flowing, and in each trial kills -9 the active node of --side and starts it again as standby.
    /// Then compares both REDs' folders with what was dropped, byte for byte: prints files sent,
    /// delivered, lost and duplicated, takeover times, UDP datagrams lost and TCP streams aborted.
    /// Exits non-zero unless no file was lost or duplicated.
    Failover {
        #[arg(long, value_parser = ["blue", "red"])]
        side: String,
        #[arg(long, default_value_t = 5)]
        trials: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// One blue-tx and one red-rx on loopback (through fiber-sim only when loss is asked): pushes
    /// --bytes through a TCP channel from a fast source to a fast sink, verifies every byte, and
    /// prints throughput, CPU seconds and peak RSS of both daemons, blocks lost and kernel drops.
    /// `--sweep` runs MTU x repair x loss and writes BENCHMARKS.md with ratios to the raw loopback
    /// UDP rate measured in the same run.
    Bench {
        #[arg(long, default_value_t = 2 << 30)]
        bytes: u64,
        #[arg(long, default_value_t = 9000)]
        mtu: usize,
        /// Repair in percent of a block's source symbols.
        #[arg(long, default_value_t = 5.0)]
        repair: f64,
        /// Uniform loss on each fiber, in percent (runs through fiber-sim).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Mean burst length in datagrams (runs through fiber-sim).
        #[arg(long)]
        burst: Option<f64>,
        #[arg(long, value_parser = ["mirror", "stripe"], default_value = "mirror")]
        fibers: String,
        /// Wire rate per fiber asked of blue-tx, in Gbit/s (more than the machine can do shows pacing).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        #[arg(long)]
        sweep: bool,
        /// Turn RED's TCP spool off (streams go straight to the sink), to compare with it on.
        #[arg(long)]
        no_spool: bool,
        #[arg(long)]
        json: bool,
    },
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
    match Cli::parse().command {
        Command::Ha { netns, trials, json } => ha(netns, trials, json),
        Command::NsSink { listen, out } => helper(tests::nshelp::sink(listen, &out)),
        Command::NsSend { to, id, bytes, timeout_ms } => {
            helper(tests::nshelp::send(to, id, bytes, std::time::Duration::from_millis(timeout_ms)))
        }
        Command::Bench { bytes, mtu, repair, loss, burst, fibers, rate, sweep, no_spool, json } => {
            bench(bytes, mtu, repair, loss, burst, &fibers, rate, sweep, no_spool, json)
        }
        Command::NsAdvert { source, vhid, vip, key, replay, count, ttl } => {
            helper(tests::nshelp::advert(source, vhid, vip, key.as_deref(), replay, count, ttl))
        }
        Command::Demo {
            streams,
            max_stream_bytes,
            datagrams,
            files,
            max_file_bytes,
            uploads,
            loss,
            repair,
            load_seconds,
            no_failover,
            rate_mbps,
            seed,
            json,
            keep_running,
        } => {
            let options = DemoOptions {
                streams,
                max_stream_bytes,
                datagrams,
                files,
                max_file_bytes,
                uploads,
                keep_running,
                load_time: std::time::Duration::from_secs(load_seconds),
                failovers: !no_failover,
                link: LinkPlan {
                    loss_percent: loss,
                    burst: Some(tests::demo::DEMO_BURST),
                    repair_percent: repair,
                    rate_mbps,
                    seed,
                    ..LinkPlan::default()
                },
                ..DemoOptions::default()
            };
            demo(&options, json)
        }
        Command::Failover { side, trials, seed, json } => failover(side, trials, seed, json),
        Command::Outage { seconds, kind, rss_budget_mb, json } => outage(seconds, &kind, rss_budget_mb, json),
        Command::Roundtrip { bytes, files, datagrams, loss, burst, repair, mtu, interleave, seed, json } => {
            roundtrip(bytes, files, datagrams, loss, burst, repair, mtu, interleave, seed, json)
        }
    }
}

fn outage(seconds: u64, kind: &str, rss_budget_mb: u64, json: bool) -> ExitCode {
    if kind == "files" {
        eprintln!("diode-lab outage: files and vault channels are not spooled in this version: nothing to measure");
        return ExitCode::FAILURE;
    }
    if let Err(error) = tests::lab::install_interrupt_cleanup() {
        eprintln!("diode-lab: {error}");
        return ExitCode::FAILURE;
    }
    let plan = tests::outage::OutagePlan {
        seconds,
        tcp: matches!(kind, "tcp" | "all"),
        udp: matches!(kind, "udp" | "all"),
        rss_budget: rss_budget_mb << 20,
    };
    if !json {
        println!("diode-lab outage: every RED destination goes away for {seconds} s mid-run, then comes back");
    }
    let report = match tests::outage::run(plan) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("diode-lab outage: {error}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{}", report.json());
    } else {
        if let Some(tcp) = &report.tcp {
            println!(
                "tcp: {} streams sent ({:.1} MB), {} delivered whole ({} from the spool, {} repeats), {} lost ({} bytes), {} duplicated; spool peak {:.1} MB, empty {} after the return",
                tcp.sent,
                tcp.sent_bytes as f64 / 1e6,
                tcp.delivered,
                tcp.delivered_from_spool,
                tcp.repeats,
                tcp.lost,
                tcp.lost_bytes,
                tcp.duplicated,
                tcp.peak_spool_bytes as f64 / 1e6,
                tcp.drain_s.map_or("never".to_string(), |s| format!("{s:.1} s")),
            );
        }
        if let Some(udp) = &report.udp {
            println!(
                "udp (not spooled in this version): {} sent, {} delivered, {} lost, {} duplicated; RED counted {}",
                udp.sent, udp.delivered, udp.lost, udp.duplicated, udp.dropped_by_red
            );
        }
        println!("files: not measured (not spooled in this version)");
        println!(
            "red-rx peak RSS {:.1} MB of a {:.0} MB budget: {}",
            report.red_rss_peak as f64 / 1e6,
            report.plan.rss_budget as f64 / (1 << 20) as f64,
            if report.ok() { "OK" } else { "FAILED" }
        );
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn failover(side: String, trials: usize, seed: u64, json: bool) -> ExitCode {
    if let Err(error) = tests::lab::install_interrupt_cleanup() {
        eprintln!("diode-lab: {error}");
        return ExitCode::FAILURE;
    }
    let options = tests::failover::FailoverOptions { side, trials, seed, ..Default::default() };
    let report = match tests::failover::run(&options) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("diode-lab failover: {error}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        let value = serde_json::json!({
            "side": report.side,
            "trials": report.trials,
            "files_sent": report.files_sent,
            "files_delivered": report.files_delivered,
            "files_lost": report.files_lost,
            "files_duplicated": report.files_duplicated,
            "files_mismatched": report.files_mismatched,
            "takeover_ms_median": report.takeover_ms_median,
            "takeover_ms_max": report.takeover_ms_max,
            "udp_sent": report.udp_sent,
            "udp_lost": report.udp_lost,
            "tcp_streams": report.tcp_streams,
            "tcp_aborted": report.tcp_aborted,
            "tcp_false_complete": report.tcp_false_complete,
            "ok": report.ok,
        });
        println!("{value}");
    } else {
        println!("failover of the active {} node, {} trials", report.side, report.trials);
        println!(
            "  files     sent {:>6}  delivered {:>6}  lost {:>3}  duplicated {:>3}",
            report.files_sent, report.files_delivered, report.files_lost, report.files_duplicated
        );
        println!("  takeover  median {} ms, max {} ms", report.takeover_ms_median, report.takeover_ms_max);
        println!("  udp       sent {:>6}  lost {:>6} (counted, best effort)", report.udp_sent, report.udp_lost);
        println!(
            "  tcp       streams {:>4}  aborted {:>3} (reported as resets)  false complete {}",
            report.tcp_streams, report.tcp_aborted, report.tcp_false_complete
        );
        if !report.lost_names.is_empty() || !report.duplicated_names.is_empty() {
            println!("  lost: {:?}\n  duplicated: {:?}", report.lost_names, report.duplicated_names);
        }
        println!("  {}", if report.ok { "OK" } else { "FAILED" });
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn helper(result: tests::error::LabResult<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

fn ha(netns: bool, trials: u32, json: bool) -> ExitCode {
    if !netns {
        eprintln!("diode-lab ha: only --netns is implemented (the loopback pair runs in the test suite)");
        return ExitCode::from(2);
    }
    if let Err(error) = tests::lab::install_interrupt_cleanup() {
        eprintln!("diode-lab: {error}");
        return ExitCode::FAILURE;
    }
    let report = match tests::ha_lab::run(trials) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("diode-lab ha: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ok = report["ok"] == true;
    if json {
        let mut compact = report.clone();
        if let Some(object) = compact.as_object_mut() {
            object.remove("logs");
        }
        println!("{compact}");
    } else {
        for scenario in report["scenarios"].as_array().into_iter().flatten() {
            println!(
                "{:<5} {:<45} {:>8}  {}",
                if scenario["ok"] == true {
                    "ok"
                } else if scenario["skipped"] == true {
                    "SKIP"
                } else {
                    "FAIL"
                },
                scenario["name"].as_str().unwrap_or(""),
                scenario["takeover_ms"].as_u64().map_or("-".to_string(), |ms| format!("{ms} ms")),
                scenario["detail"].as_str().unwrap_or("")
            );
        }
        println!("namespaces left behind: {}", report["namespaces_left"]);
    }
    if !ok {
        if let Some(logs) = report["logs"].as_str() {
            eprintln!("{logs}");
        }
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn demo(options: &DemoOptions, json: bool) -> ExitCode {
    if let Err(error) = tests::lab::install_interrupt_cleanup() {
        eprintln!("diode-lab: {error}");
        return ExitCode::FAILURE;
    }
    if !json {
        println!(
            "diode-lab demo: a BLUE pair and a RED pair, four fiber-sims cross-connected ({} % loss, bursts, {} % repair); \
             {} TCP streams up to {} bytes, {} UDP datagrams, {} dropped files up to {} bytes, {} vault uploads over {} s{}",
            options.link.loss_percent,
            options.link.repair_percent,
            options.streams,
            options.max_stream_bytes,
            options.datagrams,
            options.files,
            options.max_file_bytes,
            options.uploads,
            options.load_time.as_secs(),
            if options.failovers { "; kill -9 of the active BLUE, then of the active RED" } else { "" }
        );
    }
    let report = match tests::demo::run(options) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("diode-lab demo: {error}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{}", report.json());
    } else {
        let row = |channel: &str, sent: String, delivered: String, intact: String| {
            println!("{channel:<8} {sent:>20} {delivered:>22} {intact:>24}");
        };
        row("channel", "sent".into(), "delivered".into(), "intact".into());
        row(
            "tcp",
            format!("{} streams", report.tcp_streams),
            format!("{:.1} MB", report.tcp_delivered_bytes as f64 / 1e6),
            format!("{} ({} resent)", report.tcp_intact_streams, report.tcp_resent),
        );
        row(
            "udp",
            format!("{} datagrams", report.udp_sent),
            format!("{} datagrams", report.udp_delivered),
            format!("{} lost, counted", report.udp_sent.saturating_sub(report.udp_delivered)),
        );
        let files = |check: &tests::demo::FilesCheck| {
            format!("{} ({} lost, {} twice)", check.delivered, check.lost, check.duplicated)
        };
        row(
            "files",
            format!("{} files", report.files.sent),
            format!("{} files", report.files.delivered),
            files(&report.files),
        );
        row(
            "vault",
            format!("{} uploads", report.vault.sent),
            format!("{} ({} via VIP)", report.vault.delivered, report.vault_downloaded),
            files(&report.vault),
        );
        println!();
        println!("{:<8} {:<10} {:<12} {:>12} {:>11}", "failover", "killed", "took over", "takeover", "files lost");
        for failover in &report.failovers {
            println!(
                "{:<8} {:<10} {:<12} {:>9} ms {:>11}",
                failover.side, failover.killed, failover.took_over, failover.takeover_ms, failover.files_lost
            );
        }
        if report.metrics_unbounded.is_empty() {
            println!("\n/metrics: every label value from a fixed table or the configuration");
        } else {
            println!("\n/metrics labels not bounded: {}", report.metrics_unbounded.join(", "));
        }
        println!(
            "\nfibers dropped {} datagrams; clean shutdown: {}; {:.1} s",
            report.fiber_dropped,
            report.clean_shutdown,
            report.elapsed.as_secs_f64()
        );
        println!(
            "{}",
            if report.ok() {
                "OK: every TCP stream, file and vault upload intact, each file exactly once, through both failovers"
            } else {
                "FAILED: not every TCP stream, file or vault upload intact, a failover did not happen, or a metrics label is unbounded"
            }
        );
    }
    if !report.ok() {
        eprintln!("{}", report.logs);
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[allow(clippy::too_many_arguments)]
fn roundtrip(
    bytes: usize,
    files: usize,
    datagrams: usize,
    loss: f64,
    burst: usize,
    repair: f64,
    mtu: usize,
    interleave: u16,
    seed: u64,
    json: bool,
) -> ExitCode {
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
    exit(report.ok())
}

#[allow(clippy::too_many_arguments)]
fn bench(
    bytes: u64,
    mtu: usize,
    repair: f64,
    loss: f64,
    burst: Option<f64>,
    fibers: &str,
    rate: f64,
    sweep: bool,
    no_spool: bool,
    json: bool,
) -> ExitCode {
    if let Err(error) = tests::lab::install_interrupt_cleanup() {
        eprintln!("diode-lab: {error}");
        return ExitCode::FAILURE;
    }
    if sweep {
        return match tests::bench::sweep(bytes, rate) {
            Ok((rows, text)) => {
                let path = std::path::Path::new("BENCHMARKS.md");
                if let Err(error) = std::fs::write(path, &text) {
                    eprintln!("diode-lab: cannot write {}: {error}", path.display());
                    return ExitCode::FAILURE;
                }
                print!("{text}");
                exit(rows.iter().all(|r| r.report.whole_or_reported()))
            }
            Err(error) => {
                eprintln!("diode-lab bench: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let mode = if fibers == "stripe" { "stripe" } else { "mirror" };
    let options = tests::bench::BenchOptions {
        bytes,
        mtu,
        repair_percent: repair,
        loss_percent: loss,
        burst,
        mode,
        rate_gbps: rate,
        spool: !no_spool,
    };
    match tests::bench::run(&options) {
        Ok(report) => {
            if json {
                println!("{}", report.json());
            } else {
                println!(
                    "{bytes} bytes, MTU {mtu}, repair {repair}%, loss {loss}%: {:.2} Gbit/s, intact {}, CPU {:.1} s blue + {:.1} s red ({:.2} s/GB), peak RSS {:.0} MB blue, {:.0} MB red, {} blocks lost, {} kernel drops",
                    report.throughput_gbps,
                    report.intact,
                    report.cpu_s_blue,
                    report.cpu_s_red,
                    report.cpu_s_per_gb(bytes),
                    report.rss_mb_blue,
                    report.rss_mb_red,
                    report.blocks_lost,
                    report.kernel_drops
                );
            }
            exit(report.whole_or_reported())
        }
        Err(error) => {
            eprintln!("diode-lab bench: {error}");
            ExitCode::FAILURE
        }
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
