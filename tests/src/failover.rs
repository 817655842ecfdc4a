//! `diode-lab failover`: kills the active node of one side again and again while files, a TCP stream
//! and a UDP stream flow, and checks that no accepted file was lost or delivered twice.
//!
//! Each trial waits until the pair is redundant (the standby connected and in sync), lets the load run
//! a random moment, kills the active node with SIGKILL, measures how long until its peer's election
//! reports it active, and starts the killed node again (it comes back as standby: no preemption).
//! At the end the load stops, everything in flight is given time to arrive, and the RED folders are
//! compared byte for byte with what was dropped: a file is lost when neither RED has it intact, and
//! duplicated when both have it or one has it twice.

use crate::error::{LabError, LabResult};
use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::folders::{file_content, visible_hashes, write_file};
use crate::lab::{loopback_net, stream_content, LinkPlan};
use crate::pairs::{elapsed_ms, PairsLab, PairsOptions};
use crate::roundtrip::Rng;

#[derive(Clone, Debug)]
pub struct FailoverOptions {
    /// "blue" or "red".
    pub side: String,
    pub trials: usize,
    /// One file dropped every this often.
    pub file_every: Duration,
    pub max_file_bytes: usize,
    /// How long after the end everything may take to arrive.
    pub drain: Duration,
    pub seed: u64,
}

impl Default for FailoverOptions {
    fn default() -> FailoverOptions {
        FailoverOptions {
            side: "blue".into(),
            trials: 5,
            file_every: Duration::from_millis(40),
            max_file_bytes: 2 << 20,
            drain: Duration::from_secs(60),
            seed: 1,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct FailoverReport {
    pub side: String,
    pub trials: usize,
    pub files_sent: usize,
    pub files_delivered: usize,
    pub files_lost: usize,
    pub files_duplicated: usize,
    /// Delivered files whose bytes differ from what was dropped (never allowed).
    pub files_mismatched: usize,
    pub takeover_ms_median: u64,
    pub takeover_ms_max: u64,
    pub takeover_ms: Vec<u64>,
    pub udp_sent: u64,
    pub udp_lost: u64,
    pub tcp_streams: u64,
    pub tcp_aborted: u64,
    /// Streams a destination saw end cleanly with the wrong content: never allowed.
    pub tcp_false_complete: u64,
    pub lost_names: Vec<String>,
    pub duplicated_names: Vec<String>,
    pub ok: bool,
}

/// A TCP stream the client wrote whole: id, length, BLAKE3.
type SentStream = (u64, u64, [u8; 32]);
/// Dropped files: relative name → (content id, length).
type Dropped = BTreeMap<String, (u64, usize)>;

/// The running load: files into the shared drop folder, TCP streams and UDP datagrams into BLUE's VIP.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    files: Arc<Mutex<Dropped>>,
    udp_sent: Arc<AtomicU64>,
    tcp_sent: Arc<Mutex<Vec<SentStream>>>,
}

impl Load {
    fn start(lab: &PairsLab, options: &FailoverOptions) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let files = Arc::new(Mutex::new(BTreeMap::new()));
        let udp_sent = Arc::new(AtomicU64::new(0));
        let tcp_sent = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        {
            let (stop, files, folder) = (Arc::clone(&stop), Arc::clone(&files), lab.drop_folder.clone());
            let (every, max, seed) = (options.file_every, options.max_file_bytes as u64, options.seed);
            threads.push(std::thread::spawn(move || {
                let mut rng = Rng(seed | 1);
                let mut id = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    id += 1;
                    // Mostly small files, some up to the maximum.
                    let len = if rng.below(10) == 0 { rng.below(max) } else { rng.below(64 << 10) } as usize;
                    let name = format!("batch{:03}/file{id:05}.bin", id / 100);
                    let hidden = folder.join(format!("batch{:03}/.file{id:05}.tmp", id / 100));
                    if write_file(&hidden, &file_content(id, len)).is_ok()
                        && std::fs::rename(&hidden, folder.join(&name)).is_ok()
                    {
                        if let Ok(mut files) = files.lock() {
                            files.insert(name, (id, len));
                        }
                    }
                    std::thread::sleep(every);
                }
            }));
        }
        {
            let (stop, sent, target) = (Arc::clone(&stop), Arc::clone(&udp_sent), lab.udp_listen);
            threads.push(std::thread::spawn(move || {
                let Ok(socket) = UdpSocket::bind((target.ip(), 0)) else { return };
                let mut seq = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    seq += 1;
                    let mut datagram = seq.to_be_bytes().to_vec();
                    datagram.resize(512, 0x5a);
                    // While no node holds the VIP the datagram goes nowhere: that is a counted loss too.
                    let _ = socket.send_to(&datagram, target);
                    sent.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }));
        }
        {
            let (stop, sent, target) = (Arc::clone(&stop), Arc::clone(&tcp_sent), lab.tcp_listen);
            threads.push(std::thread::spawn(move || {
                let mut id = 1u64 << 40;
                while !stop.load(Ordering::SeqCst) {
                    id += 1;
                    let len = 256 << 10;
                    if let Some(hash) = send_paced(target, id, len) {
                        if let Ok(mut sent) = sent.lock() {
                            sent.push((id, len as u64, hash));
                        }
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }));
        }
        Load { stop, threads, files, udp_sent, tcp_sent }
    }

    fn finish(self) -> (Dropped, u64, Vec<SentStream>) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads {
            let _ = thread.join();
        }
        let files = self.files.lock().map(|f| f.clone()).unwrap_or_default();
        let tcp = self.tcp_sent.lock().map(|t| t.clone()).unwrap_or_default();
        (files, self.udp_sent.load(Ordering::Relaxed), tcp)
    }
}

/// Sends one stream in 16 KiB writes over about a quarter second, so a failover can cut it; returns
/// its BLAKE3 when the whole stream was written and closed. (A stream is never given up half-way by
/// choice: closing it would be a clean end, and the diode would rightly deliver what it got.)
fn send_paced(target: SocketAddr, id: u64, len: usize) -> Option<[u8; 32]> {
    use std::io::Write;
    let content = stream_content(id, len);
    let mut connection = TcpStream::connect_timeout(&target, Duration::from_millis(500)).ok()?;
    for chunk in content.chunks(16 << 10) {
        connection.write_all(chunk).ok()?;
        std::thread::sleep(Duration::from_millis(15));
    }
    connection.shutdown(std::net::Shutdown::Write).ok()?;
    Some(*blake3::hash(&content).as_bytes())
}

/// Runs the trials on a fresh lab and reports.
pub fn run(options: &FailoverOptions) -> LabResult<FailoverReport> {
    if options.side != "blue" && options.side != "red" {
        return Err(LabError::unexpected(format!("--side {}: give blue or red", options.side)));
    }
    // Light uniform loss only: each RED hears the active BLUE on one fiber (the cross-connect), and a
    // file lost to a burst beyond the FEC budget would say nothing about failover.
    let link = LinkPlan { loss_percent: 0.1, burst: None, repair_percent: 10.0, ..LinkPlan::default() };
    let mut lab = PairsLab::start(loopback_net(), &PairsOptions { link, ..PairsOptions::default() })?;
    let side = options.side.as_str();
    let load = Load::start(&lab, options);
    let mut rng = Rng(options.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut takeovers = Vec::new();
    let mut failure = None;
    for trial in 0..options.trials {
        if !lab.wait_redundant(side, Duration::from_secs(30)) {
            failure = Some(LabError::unexpected(format!(
                "trial {}: the {side} pair did not become redundant again:\n{}",
                trial + 1,
                lab.logs()
            )));
            break;
        }
        std::thread::sleep(Duration::from_millis(300 + rng.below(900)));
        let Some(victim) = lab.active(side) else {
            failure = Some(LabError::unexpected(format!("trial {}: no single active {side} node", trial + 1)));
            break;
        };
        let survivor = 1 - victim;
        let killed = Instant::now();
        lab.nodes_mut(side)[victim].kill();
        if !lab.wait_active(side, survivor, Duration::from_secs(10)) {
            failure = Some(LabError::unexpected(format!(
                "trial {}: {side}{} did not take over:\n{}",
                trial + 1,
                survivor + 1,
                lab.logs()
            )));
            break;
        }
        takeovers.push(elapsed_ms(killed));
        lab.nodes_mut(side)[victim].start()?;
        eprintln!(
            "diode-lab failover: trial {}/{}: killed {side}{}, {side}{} active after {} ms",
            trial + 1,
            options.trials,
            victim + 1,
            survivor + 1,
            takeovers.last().copied().unwrap_or(0)
        );
    }
    // A last moment of load after the last takeover, then everything in flight may arrive.
    std::thread::sleep(Duration::from_secs(1));
    let (files, udp_sent, tcp_sent) = load.finish();
    let deadline = Instant::now() + options.drain;
    let expected: BTreeMap<String, (u64, [u8; 32])> = files
        .iter()
        .map(|(name, (id, len))| (name.clone(), (*len as u64, *blake3::hash(&file_content(*id, *len)).as_bytes())))
        .collect();
    let mut report = check(&lab, &expected);
    while report.files_lost > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        report = check(&lab, &expected);
    }
    // The hashes said which copies match; now every delivered file once more, byte for byte.
    for (name, (id, len)) in &files {
        let content = file_content(*id, *len);
        for folder in &lab.red_files {
            let path = folder.join(name);
            if path.exists() && std::fs::read(&path).ok().as_deref() != Some(content.as_slice()) {
                report.files_mismatched += 1;
            }
        }
    }
    // Datagrams and streams still in the pipeline get a moment too.
    std::thread::sleep(Duration::from_secs(1));
    let received = lab.tcp_sink.received.lock().map(|r| r.clone()).unwrap_or_default();
    report.tcp_streams = tcp_sent.len() as u64;
    report.tcp_aborted = tcp_sent
        .iter()
        .filter(|(id, len, hash)| !received.iter().any(|r| r.id == *id && r.clean && r.len == *len && r.hash == *hash))
        .count() as u64;
    report.tcp_false_complete = received
        .iter()
        .filter(|r| r.clean && r.len > 0)
        .filter(|r| !tcp_sent.iter().any(|(id, len, hash)| r.id == *id && r.len == *len && r.hash == *hash))
        .count() as u64;
    report.udp_sent = udp_sent;
    report.udp_lost = udp_sent.saturating_sub(lab.udp_sink.count() as u64);
    report.side = options.side.clone();
    report.trials = takeovers.len();
    let mut sorted = takeovers.clone();
    sorted.sort_unstable();
    report.takeover_ms_median = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
    report.takeover_ms_max = sorted.last().copied().unwrap_or(0);
    report.takeover_ms = takeovers;
    report.ok = failure.is_none()
        && report.trials == options.trials
        && report.files_lost == 0
        && report.files_duplicated == 0
        && report.files_mismatched == 0
        && report.tcp_false_complete == 0;
    let clean = lab.stop();
    if let Some(failure) = failure {
        return Err(failure);
    }
    if !report.ok {
        eprintln!("diode-lab failover: daemons stopped cleanly: {clean}; logs:\n{}", lab.logs());
    }
    Ok(report)
}

/// Compares both REDs' files folders (length and BLAKE3 of every byte) with what was dropped.
fn check(lab: &PairsLab, expected: &BTreeMap<String, (u64, [u8; 32])>) -> FailoverReport {
    let folders: Vec<BTreeMap<String, (u64, [u8; 32])>> = lab.red_files.iter().map(|f| visible_hashes(f)).collect();
    let mut report = FailoverReport { files_sent: expected.len(), ..FailoverReport::default() };
    for (name, sent) in expected {
        let copies = folders.iter().filter(|folder| folder.get(name) == Some(sent)).count();
        if copies == 0 {
            report.files_lost += 1;
            report.lost_names.push(name.clone());
        } else {
            report.files_delivered += 1;
        }
        if copies > 1 {
            report.files_duplicated += 1;
            report.duplicated_names.push(name.clone());
        }
    }
    // Anything else in a folder (a " (2)" copy, a file nobody dropped) is a duplicate or worse.
    for folder in &folders {
        for name in folder.keys().filter(|name| !expected.contains_key(*name)) {
            report.files_duplicated += 1;
            report.duplicated_names.push(name.clone());
        }
    }
    report
}
