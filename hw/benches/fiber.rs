//! FiberTx → FiberRx on loopback: datagrams/s and Gbit/s for 1 472- and 8 972-byte payloads, sent one
//! per syscall, in sendmmsg batches, and in sendmmsg batches with UDP GSO; the ratio to the
//! one-per-syscall baseline is what matters (absolute figures depend on the machine). Then the pacer
//! driving a real FiberTx: the wire rate achieved against the rate asked for.
//!
//! `cargo bench -p hw --bench fiber` (set FIBER_BENCH_SECONDS to change the 2 s per case).

// A benchmark that cannot open its sockets has nothing to measure: failing loudly is the point.
#![allow(clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hw::fiber::{FiberRx, FiberTx, RxConfig, TxConfig};
use hw::pacer::{sleep_until, Pacer, IP_UDP_OVERHEAD, SENDER_BATCH_WAIT, SENDER_BURST};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    Batched,
    BatchedGso,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Single => "one per syscall",
            Mode::Batched => "sendmmsg x64",
            Mode::BatchedGso => "sendmmsg + GSO",
        }
    }
}

struct Figures {
    sent: u64,
    received: u64,
    kernel_drops: u64,
    seconds: f64,
}

fn run(payload: usize, mode: Mode, seconds: f64) -> Figures {
    let mut rx_config = RxConfig::new("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()));
    rx_config.recv_buffer = 64 << 20;
    rx_config.force_buffer = true;
    rx_config.timeout = Duration::from_millis(20);
    let mut rx = match FiberRx::open(&rx_config) {
        Ok(rx) => rx,
        Err(error) => panic!("cannot open receiver: {error}"),
    };
    let target = rx.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let done = Arc::new(AtomicBool::new(false));
    let receiver_done = Arc::clone(&done);
    let receiver = std::thread::spawn(move || {
        let mut idle_after_done = 0;
        while idle_after_done < 3 {
            let empty = rx.recv_batch(Instant::now()).map(|b| b.is_empty()).unwrap_or(true);
            if empty && receiver_done.load(Ordering::SeqCst) {
                idle_after_done += 1;
            }
        }
        rx.counters().clone()
    });
    let mut tx_config = TxConfig::new(target);
    tx_config.send_buffer = 16 << 20;
    tx_config.force_buffer = true;
    tx_config.gso = mode == Mode::BatchedGso;
    let mut tx = FiberTx::open(&tx_config).unwrap_or_else(|e| panic!("cannot open transmitter: {e}"));
    let datagram = vec![0xA5u8; payload];
    let batch: Vec<&[u8]> = (0..64).map(|_| datagram.as_slice()).collect();
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(seconds);
    let mut sent = 0u64;
    while Instant::now() < deadline {
        match mode {
            Mode::Single => {
                for _ in 0..64 {
                    tx.send_one(&datagram).unwrap_or_else(|e| panic!("send: {e}"));
                }
            }
            Mode::Batched | Mode::BatchedGso => tx.send_batch(&batch).unwrap_or_else(|e| panic!("send: {e}")),
        }
        sent += 64;
    }
    let elapsed = start.elapsed().as_secs_f64();
    done.store(true, Ordering::SeqCst);
    let counters = receiver.join().unwrap_or_else(|_| panic!("receiver thread"));
    Figures { sent, received: counters.datagrams, kernel_drops: counters.kernel_drops, seconds: elapsed }
}

/// CPU seconds this thread has used, from /proc (10 ms resolution; the runs last 2 s).
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the parenthesised name: state is the 3rd field, utime and stime the 14th and 15th.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let ticks: f64 = after_name.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// Sends through the pacer at `rate_bps` for `seconds` and returns the wire bit rate achieved and the
/// share of a core the sending thread used.
fn paced(rate_bps: u64, payload: usize, seconds: f64) -> (f64, f64) {
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let mut tx_config = TxConfig::new(sink.local_addr().unwrap_or_else(|e| panic!("{e}")));
    tx_config.gso = true;
    let mut tx = FiberTx::open(&tx_config).unwrap_or_else(|e| panic!("{e}"));
    let datagram = vec![0u8; payload];
    // As blue-tx's transmit thread does: a tight timer slack, its burst, and waits for a batch.
    hw::tighten_timer_slack();
    let cpu_before = thread_cpu_seconds();
    let start = Instant::now();
    let mut pacer = Pacer::new(rate_bps, IP_UDP_OVERHEAD, SENDER_BURST, start);
    let end = start + Duration::from_secs_f64(seconds);
    let mut wire_bits = 0u64;
    let mut batch: Vec<&[u8]> = Vec::with_capacity(64);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        sleep_until(pacer.ready_for_batch(now, payload, 64, SENDER_BATCH_WAIT));
        let now = Instant::now();
        while batch.len() < 64 && pacer.try_send(now, payload) {
            batch.push(&datagram);
            wire_bits += pacer.wire_bits(payload);
        }
        tx.send_batch(&batch).unwrap_or_else(|e| panic!("send: {e}"));
        batch.clear();
    }
    let elapsed = start.elapsed().as_secs_f64();
    (wire_bits as f64 / elapsed, (thread_cpu_seconds() - cpu_before) / elapsed)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs this too: keep that quick.
    let quick = std::env::args().any(|a| a == "--test") || !std::env::args().any(|a| a == "--bench");
    let seconds: f64 =
        std::env::var("FIBER_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(if quick { 0.1 } else { 2.0 });
    println!(
        "{:<7} {:<16} {:>12} {:>9} {:>12} {:>12} {:>8}",
        "payload", "mode", "sent dgram/s", "Gbit/s", "received", "kernel drop", "ratio"
    );
    for payload in [1_472usize, 8_972] {
        let mut baseline = None;
        for mode in [Mode::Single, Mode::Batched, Mode::BatchedGso] {
            let figures = run(payload, mode, seconds);
            let rate = figures.sent as f64 / figures.seconds;
            let gbps = rate * payload as f64 * 8.0 / 1e9;
            let base = *baseline.get_or_insert(rate);
            println!(
                "{:<7} {:<16} {:>12.0} {:>9.2} {:>12} {:>12} {:>7.2}x",
                payload,
                mode.label(),
                rate,
                gbps,
                figures.received,
                figures.kernel_drops,
                rate / base
            );
        }
    }
    println!();
    println!("{:<7} {:>14} {:>14} {:>8} {:>10}", "payload", "paced at", "achieved", "ratio", "CPU/core");
    for payload in [1_472usize, 8_972] {
        for rate in [50_000_000u64, 1_000_000_000, 5_000_000_000] {
            let (achieved, cpu) = paced(rate, payload, seconds.max(0.2));
            println!(
                "{:<7} {:>11.3} Gb {:>11.3} Gb {:>8.4} {:>10.2}",
                payload,
                rate as f64 / 1e9,
                achieved / 1e9,
                achieved / rate as f64,
                cpu
            );
        }
    }
}
