//! Fiber links and the simulator over real sockets on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::panic)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hw::fiber::{proc_udp_drops, FiberRx, FiberTx, RxConfig, TxConfig};
use hw::forwarder::{Forwarder, ForwarderConfig};
use hw::sim::SimConfig;

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn receiver(gro: bool) -> FiberRx {
    let mut config = RxConfig::new(any_port());
    config.gro = gro;
    config.recv_buffer = 4 << 20;
    config.force_buffer = true;
    config.timeout = Duration::from_millis(20);
    FiberRx::open(&config).unwrap()
}

/// Receives until `count` datagrams arrived or two seconds passed.
fn collect(rx: &mut FiberRx, count: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut out = Vec::new();
    while out.len() < count && Instant::now() < deadline {
        out.extend(rx.recv_batch(Instant::now()).unwrap().iter().map(<[u8]>::to_vec));
    }
    out
}

fn numbered(count: u32, len: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            let mut d = vec![(i % 251) as u8; len];
            d[..4].copy_from_slice(&i.to_be_bytes());
            d
        })
        .collect()
}

fn round_trip(gso: bool, gro: bool) {
    let mut rx = receiver(gro);
    let mut config = TxConfig::new(rx.local_addr().unwrap());
    config.gso = gso;
    let mut tx = FiberTx::open(&config).unwrap();
    // Equal sizes (GSO runs), a short one ending a run, and a beacon-sized one in the middle.
    let mut datagrams = numbered(300, 1_444);
    datagrams[100].truncate(500);
    datagrams[200].truncate(102);
    let slices: Vec<&[u8]> = datagrams.iter().map(Vec::as_slice).collect();
    tx.send_batch(&slices).unwrap();
    let got = collect(&mut rx, datagrams.len());
    assert_eq!(got, datagrams, "gso {gso} gro {gro}: every datagram, intact, in order, with its own boundaries");
    assert_eq!(tx.sent(), (300, datagrams.iter().map(|d| d.len() as u64).sum()));
    assert_eq!(rx.counters().datagrams, 300);
}

#[test]
fn batch_round_trip_without_offloads() {
    round_trip(false, false);
}

#[test]
fn batch_round_trip_with_gso_and_gro_keeps_datagram_boundaries() {
    round_trip(true, true);
}

/// Header and payload sent from separate buffers arrive as one datagram each, with and without GSO
/// (which cuts the gathered bytes by segment size, not by buffer).
#[test]
fn datagrams_gathered_from_two_parts_arrive_whole() {
    for gso in [false, true] {
        let mut rx = receiver(true);
        let mut config = TxConfig::new(rx.local_addr().unwrap());
        config.gso = gso;
        let mut tx = FiberTx::open(&config).unwrap();
        let mut datagrams = numbered(200, 1_444);
        datagrams[150].truncate(300);
        // Heads of varied lengths, including none at all and a body-less datagram.
        let split_at = |i: usize, d: &Vec<u8>| if i == 7 { d.len() } else { (i * 13) % 48 };
        let parts: Vec<[&[u8]; 2]> = datagrams
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let (head, body) = d.split_at(split_at(i, d));
                [head, body]
            })
            .collect();
        tx.send_batch(&parts).unwrap();
        let got = collect(&mut rx, datagrams.len());
        assert_eq!(got, datagrams, "gso {gso}: each datagram is its head then its body");
        assert_eq!(tx.sent(), (200, datagrams.iter().map(|d| d.len() as u64).sum()));
    }
}

#[test]
fn one_datagram_per_syscall_also_arrives() {
    let mut rx = receiver(false);
    let mut tx = FiberTx::open(&TxConfig::new(rx.local_addr().unwrap())).unwrap();
    for datagram in numbered(10, 100) {
        tx.send_one(&datagram).unwrap();
    }
    assert_eq!(collect(&mut rx, 10), numbered(10, 100));
}

#[test]
fn a_receive_buffer_beyond_rmem_max_is_reported_with_the_sysctl_to_set() {
    let mut config = RxConfig::new(any_port());
    config.recv_buffer = 1 << 30;
    let rx = FiberRx::open(&config).unwrap();
    let warning = rx.warnings().first().expect("1 GiB exceeds net.core.rmem_max here");
    assert_eq!(warning.sysctl, "net.core.rmem_max");
    assert!(warning.granted < warning.requested);
    let text = warning.to_string();
    assert!(text.contains("sysctl -w net.core.rmem_max=1073741824"), "{text}");

    let mut small = RxConfig::new(any_port());
    small.recv_buffer = 64 << 10;
    assert!(FiberRx::open(&small).unwrap().warnings().is_empty());
}

#[test]
fn kernel_drops_are_counted_from_so_rxq_ovfl_and_proc_net_udp() {
    let mut config = RxConfig::new(any_port());
    config.recv_buffer = 4096;
    config.gro = false;
    config.timeout = Duration::from_millis(20);
    let mut rx = FiberRx::open(&config).unwrap();
    let addr = rx.local_addr().unwrap();
    let mut tx = FiberTx::open(&TxConfig::new(addr)).unwrap();
    let flood = numbered(200, 1_000);
    let slices: Vec<&[u8]> = flood.iter().map(Vec::as_slice).collect();
    tx.send_batch(&slices).unwrap();
    let from_proc = proc_udp_drops(addr).unwrap().expect("the socket is listed in /proc/net/udp");
    assert!(from_proc > 100, "a 4 KiB buffer cannot hold 200 kB: {from_proc} drops");
    let received = collect(&mut rx, 200).len() as u64;
    assert_eq!(received + from_proc, 200);
    // The kernel stamps each datagram with the drop count at the time it was queued: the next one
    // after the flood carries it.
    tx.send_batch(&[b"after the flood".as_slice()]).unwrap();
    assert_eq!(collect(&mut rx, 1).len(), 1);
    assert_eq!(rx.counters().kernel_drops, from_proc, "SO_RXQ_OVFL agrees with /proc/net/udp");

    // A silent link still shows its drops, read from /proc.
    let mut quiet = FiberRx::open(&config).unwrap();
    let quiet_addr = quiet.local_addr().unwrap();
    let mut flooder = FiberTx::open(&TxConfig::new(quiet_addr)).unwrap();
    flooder.send_batch(&slices).unwrap();
    quiet.refresh_kernel_drops().unwrap();
    assert!(quiet.counters().kernel_drops > 100);
}

#[test]
fn transmitter_keeps_going_when_nobody_listens() {
    // A closed port answers with ICMP errors; a fiber transmitter must not stop for them.
    let closed = UdpSocket::bind(any_port()).unwrap().local_addr().unwrap();
    let mut tx = FiberTx::open(&TxConfig::new(closed)).unwrap();
    let datagrams = numbered(50, 200);
    for chunk in datagrams.chunks(10) {
        let slices: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        tx.send_batch(&slices).unwrap();
    }
}

fn forwarder(sim: SimConfig) -> (Forwarder, FiberRx, FiberTx) {
    let rx = receiver(false);
    let forwarder = Forwarder::spawn(ForwarderConfig {
        listen: any_port(),
        forward: rx.local_addr().unwrap(),
        control: None,
        stats_json: None,
        sim,
    })
    .unwrap();
    let tx = FiberTx::open(&TxConfig::new(forwarder.local_addr())).unwrap();
    (forwarder, rx, tx)
}

fn send_paced(tx: &mut FiberTx, datagrams: &[Vec<u8>]) {
    // Small batches with pauses: the forwarder's own socket buffer must not be what drops.
    for chunk in datagrams.chunks(50) {
        let slices: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
        tx.send_batch(&slices).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn forwarder_applies_seeded_loss_and_accounts_for_every_datagram() {
    let (forwarder, mut rx, mut tx) = forwarder(SimConfig { loss: 0.2, seed: 42, ..SimConfig::default() });
    let datagrams = numbered(2_000, 300);
    send_paced(&mut tx, &datagrams);
    let got = collect(&mut rx, 2_000);
    let stats = forwarder.stop().unwrap();
    assert_eq!(stats.received, 2_000);
    assert_eq!(stats.forwarded, got.len() as u64);
    assert_eq!(stats.received, stats.forwarded + stats.dropped_loss);
    // 2 000 trials at 20 %: standard deviation 18; allow 5 sigma.
    assert!((stats.dropped_loss as i64 - 400).abs() < 90, "{stats:?}");
    assert!(got.iter().all(|d| datagrams.contains(d)), "nothing altered");
}

#[test]
fn forwarder_cut_and_restore() {
    let (forwarder, mut rx, mut tx) = forwarder(SimConfig::default());
    let before = numbered(100, 64);
    send_paced(&mut tx, &before);
    assert_eq!(collect(&mut rx, 100).len(), 100);
    forwarder.cut();
    std::thread::sleep(Duration::from_millis(20));
    send_paced(&mut tx, &numbered(100, 64));
    assert!(collect(&mut rx, 1).is_empty(), "nothing crosses a cut fiber");
    forwarder.restore();
    std::thread::sleep(Duration::from_millis(20));
    send_paced(&mut tx, &before);
    assert_eq!(collect(&mut rx, 100), before);
    let stats = forwarder.stop().unwrap();
    assert_eq!(stats.dropped_cut, 100);
}

fn fiber_sim_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fiber-sim"))
}

#[test]
fn fiber_sim_process_forwards_writes_stats_on_sigusr1_and_exit() {
    let mut rx = receiver(false);
    let dir = std::env::temp_dir().join(format!("fiber-sim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stats_path = dir.join("stats.json");
    // Pick a free port for the simulator to listen on.
    let listen = UdpSocket::bind(any_port()).unwrap().local_addr().unwrap();
    let mut child = Command::new(fiber_sim_binary())
        .args(["--listen", &listen.to_string(), "--forward", &rx.local_addr().unwrap().to_string()])
        .args(["--duplicate", "100", "--seed", "5", "--stats-json", stats_path.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    // Wait until it listens: its first stderr line says so.
    std::thread::sleep(Duration::from_millis(300));
    let mut tx = FiberTx::open(&TxConfig::new(listen)).unwrap();
    send_paced(&mut tx, &numbered(50, 100));
    assert_eq!(collect(&mut rx, 100).len(), 100, "every datagram twice");

    // SAFETY-free: signals go only to the child this test started, by its PID.
    let signal = |sig| Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
    assert!(signal("USR1").success());
    let deadline = Instant::now() + Duration::from_secs(2);
    while !stats_path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats_path).unwrap()).unwrap();
    assert_eq!(stats["duplicated"], 50);

    // SIGUSR2 pulls the fiber.
    assert!(signal("USR2").success());
    std::thread::sleep(Duration::from_millis(100));
    send_paced(&mut tx, &numbered(10, 100));
    assert!(collect(&mut rx, 1).is_empty());

    assert!(signal("TERM").success());
    let status = child.wait().unwrap();
    assert!(status.success());
    let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats_path).unwrap()).unwrap();
    assert_eq!(stats["received"], 60);
    assert_eq!(stats["dropped_cut"], 10);
    assert_eq!(stats["forwarded"], 100);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fiber_sim_refuses_bad_options_with_the_option_named() {
    let output = Command::new(fiber_sim_binary())
        .args(["--listen", "127.0.0.1:0", "--forward", "127.0.0.1:9", "--loss", "150"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--loss 150"), "{stderr}");

    let help = Command::new(fiber_sim_binary()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for option in [
        "--loss",
        "--ge-p",
        "--ge-r",
        "--reorder",
        "--duplicate",
        "--corrupt",
        "--rate-mbps",
        "--queue-bytes",
        "--delay-ms",
        "--cut-at",
        "--cut-for",
        "--control",
        "--seed",
        "--stats-json",
        "SIGUSR1",
        "SIGUSR2",
    ] {
        assert!(text.contains(option), "--help does not explain {option}");
    }
}

#[test]
fn control_socket_cuts_restores_and_reports() {
    let mut rx = receiver(false);
    let control_addr = UdpSocket::bind(any_port()).unwrap().local_addr().unwrap();
    let forwarder = Forwarder::spawn(ForwarderConfig {
        listen: any_port(),
        forward: rx.local_addr().unwrap(),
        control: Some(control_addr),
        stats_json: None,
        sim: SimConfig::default(),
    })
    .unwrap();
    let mut tx = FiberTx::open(&TxConfig::new(forwarder.local_addr())).unwrap();
    let operator = UdpSocket::bind(any_port()).unwrap();
    operator.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let command = |text: &str| {
        operator.send_to(text.as_bytes(), control_addr).unwrap();
        let mut reply = [0u8; 512];
        let len = operator.recv(&mut reply).unwrap();
        String::from_utf8_lossy(&reply[..len]).to_string()
    };
    assert_eq!(command("cut"), "ok\n");
    send_paced(&mut tx, &numbered(20, 64));
    assert!(collect(&mut rx, 1).is_empty());
    assert_eq!(command("restore"), "ok\n");
    send_paced(&mut tx, &numbered(20, 64));
    assert_eq!(collect(&mut rx, 20).len(), 20);
    let stats: serde_json::Value = serde_json::from_str(&command("stats")).unwrap();
    assert_eq!(stats["dropped_cut"], 20);
    assert_eq!(stats["forwarded"], 20);
    assert!(command("explode").starts_with("unknown command"));
    forwarder.stop().unwrap();
}
