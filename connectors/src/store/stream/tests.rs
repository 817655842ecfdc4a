//! The TCP spool against real sockets and a real folder: destinations that are down, that die
//! mid-stream, a spool that fills, and a folder read back after a restart.

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use diode_proto::StreamMeta;
use tokio::sync::{mpsc, watch};

use super::*;
use crate::config::{HealthConfig, HealthKind, PoolMode};
use crate::store::{SpoolConfig, SpoolFolder, SpoolStats};

const CHUNK: usize = 64 * 1024;

fn folder(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("spool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    path
}

fn config(folder: &Path, max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        folder: folder.to_path_buf(),
        max_bytes,
        max_items: 1000,
        max_age: Duration::from_secs(3600),
        sync_every: Duration::from_millis(50),
        parallel: 4,
        stall: Duration::from_secs(5),
        replay_rate: 1000,
    }
}

/// A port nothing listens on yet: bound, read, released.
fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
}

struct Running {
    events: mpsc::Sender<SinkEvent>,
    sink: Arc<SinkStats>,
    stats: Arc<SpoolStats>,
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<()>,
    scheduler: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Ends the writer (as the receiver's end does) and the scheduler (as shutdown does).
    async fn stop(self) {
        drop(self.events);
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        let _ = self.stop.send(true);
        let _ = self.scheduler.await;
    }
}

fn start(config: SpoolConfig, destination: SocketAddr) -> Running {
    let health = HealthConfig {
        kind: HealthKind::Tcp,
        interval_ms: 100,
        timeout_ms: 200,
        failures: 1,
        ..HealthConfig::default()
    };
    let pool = Pool::new(1, &[(destination, 1)], PoolMode::Failover, health);
    let (stop, shutdown) = watch::channel(false);
    tokio::spawn(Arc::clone(&pool).run_health_checks(shutdown.clone()));
    let (sink, stats) = (Arc::new(SinkStats::default()), Arc::new(SpoolStats::default()));
    let folder = SpoolFolder::open(config).unwrap_or_else(|e| panic!("{e}"));
    let spool = StreamSpool { channel: 1, folder, pool, sink: Arc::clone(&sink), stats: Arc::clone(&stats) };
    let (events, rx) = mpsc::channel(1024);
    let (thread, scheduler) =
        spawn_stream_spool(spool, rx, tokio::runtime::Handle::current(), shutdown).unwrap_or_else(|e| panic!("{e}"));
    Running { events, sink, stats, stop, thread, scheduler }
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

async fn send_stream(events: &mpsc::Sender<SinkEvent>, stream: u64, bytes: &[u8]) {
    let open = SinkEvent::Open {
        stream,
        meta: StreamMeta { peer: "198.18.0.9:4000".into(), ..StreamMeta::default() },
        session: 7,
        epoch: 1,
    };
    events.send(open).await.unwrap_or_else(|e| panic!("{e}"));
    for chunk in bytes.chunks(CHUNK) {
        events
            .send(SinkEvent::Data { stream, data: Bytes::copy_from_slice(chunk) })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let end = SinkEvent::End { stream, total_len: bytes.len() as u64, hash: *blake3::hash(bytes).as_bytes() };
    events.send(end).await.unwrap_or_else(|e| panic!("{e}"));
}

/// What a destination sees on each connection it accepts: the bytes, and whether it ended cleanly.
type Seen = Vec<(Vec<u8>, bool)>;

/// Listens on `addr` and records `connections` connections; `cut` makes the first one close after
/// that many bytes, as a destination that dies mid-stream.
fn destination(addr: SocketAddr, connections: usize, cut: Option<usize>) -> std::thread::JoinHandle<Seen> {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| panic!("{e}"));
    // A delivery that never comes ends the helper (and fails the test's assertions) instead of hanging it.
    let deadline = Instant::now() + Duration::from_secs(30);
    listener.set_nonblocking(true).unwrap_or_else(|e| panic!("{e}"));
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        while seen.len() < connections && Instant::now() < deadline {
            let mut connection = match listener.accept() {
                Ok((connection, _)) => connection,
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                Err(_) => break,
            };
            let _ = connection.set_nonblocking(false);
            let _ = connection.set_read_timeout(Some(Duration::from_secs(20)));
            let mut received = Vec::new();
            let mut buffer = vec![0u8; CHUNK];
            let clean = loop {
                match connection.read(&mut buffer) {
                    Ok(0) => break true,
                    Ok(n) => received.extend_from_slice(&buffer[..n]),
                    Err(_) => break false,
                }
                if seen.is_empty() && cut.is_some_and(|cut| received.len() >= cut) {
                    let _ = socket2::SockRef::from(&connection).set_linger(Some(Duration::ZERO));
                    break false;
                }
            };
            // A health check connects and closes at once: not a delivery.
            if !received.is_empty() || !clean {
                seen.push((received, clean));
            }
        }
        seen
    })
}

async fn join(thread: std::thread::JoinHandle<Seen>) -> Seen {
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|_| panic!("destination thread"))
}

async fn wait(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_destination_is_down_waits_on_disk_and_arrives_whole_when_it_returns() {
    let dir = folder("down");
    let addr = free_addr();
    let spool = start(config(&dir, 64 << 20), addr);
    let bytes = content(3 * 1024 * 1024 + 17, 1);
    send_stream(&spool.events, 1, &bytes).await;
    wait("the stream to be spooled", || spool.stats.bytes.load(Ordering::Relaxed) == bytes.len() as u64).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(spool.sink.streams_completed.load(Ordering::Relaxed), 0, "nothing delivered while down");
    let listening = destination(addr, 1, None);
    let seen = join(listening).await;
    assert_eq!(seen.len(), 1);
    assert!(seen[0].1, "closed cleanly");
    assert!(seen[0].0 == bytes, "every byte, in order ({} of {})", seen[0].0.len(), bytes.len());
    wait("the item to leave the spool", || spool.stats.bytes.load(Ordering::Relaxed) == 0).await;
    assert_eq!(spool.stats.delivered_from_spool.load(Ordering::Relaxed), 1);
    assert_eq!(spool.stats.repeats.load(Ordering::Relaxed), 0);
    assert_eq!(spool.sink.aborted_total(), 0);
    spool.stop().await;
    let left: Vec<_> =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")).flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|n| n == "LOCK" || n == ".quarantine"), "only the lock and quarantine remain: {left:?}");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_that_dies_mid_stream_gets_the_stream_again_whole_and_it_is_counted_a_repeat() {
    let dir = folder("cut");
    let addr = free_addr();
    let listening = destination(addr, 2, Some(256 * 1024));
    let spool = start(config(&dir, 64 << 20), addr);
    let bytes = content(2 * 1024 * 1024, 2);
    send_stream(&spool.events, 5, &bytes).await;
    let seen = join(listening).await;
    assert_eq!(seen.len(), 2, "two connections");
    assert!(!seen[0].1, "the first connection is never closed cleanly");
    assert!(seen[0].0.len() < bytes.len());
    assert!(seen[1].1 && seen[1].0 == bytes, "the second has the whole stream ({} bytes)", seen[1].0.len());
    wait("the repeat to be counted", || spool.stats.repeats.load(Ordering::Relaxed) == 1).await;
    assert_eq!(spool.sink.streams_completed.load(Ordering::Relaxed), 1);
    spool.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_aborts_the_stream_with_spool_full_and_takes_the_next_once_it_has_room() {
    let dir = folder("full");
    let addr = free_addr();
    let spool = start(config(&dir, 1 << 20), addr);
    send_stream(&spool.events, 1, &content(2 << 20, 3)).await;
    wait("the abort", || spool.sink.aborted.get(StreamAbort::SpoolFull) == 1).await;
    assert_eq!(spool.stats.dropped.get(SpoolDrop::SpoolFull), 1);
    assert_eq!(spool.stats.bytes.load(Ordering::Relaxed), 0, "the aborted stream's bytes are freed");
    let small = content(100_000, 4);
    send_stream(&spool.events, 2, &small).await;
    let seen = join(destination(addr, 1, None)).await;
    assert_eq!(seen.len(), 1, "the aborted stream never reaches the destination: only the next one");
    assert!(seen[0].1 && seen[0].0 == small);
    spool.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_left_in_the_folder_are_delivered_after_a_restart_and_a_corrupt_one_is_quarantined() {
    let dir = folder("restart");
    let addr = free_addr();
    let spool = start(config(&dir, 64 << 20), addr);
    let (first, second) = (content(500_000, 5), content(300_000, 6));
    send_stream(&spool.events, 1, &first).await;
    send_stream(&spool.events, 2, &second).await;
    // A third stream that never ends: still arriving when the process stops.
    spool
        .events
        .send(SinkEvent::Open { stream: 3, meta: StreamMeta::default(), session: 7, epoch: 1 })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    spool
        .events
        .send(SinkEvent::Data { stream: 3, data: Bytes::from_static(b"half") })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    wait("the streams to be spooled", || {
        spool.stats.bytes.load(Ordering::Relaxed) == (first.len() + second.len() + 4) as u64
    })
    .await;
    spool.stop().await;
    // Alter the second stream's bytes on disk, as a bad disk or a hand would.
    let mut altered = std::fs::read(dir.join(format!("{:020}.stream", 2))).unwrap_or_else(|e| panic!("{e}"));
    altered[1000] ^= 0xFF;
    std::fs::write(dir.join(format!("{:020}.stream", 2)), altered).unwrap_or_else(|e| panic!("{e}"));

    let listening = destination(addr, 1, None);
    let spool = start(config(&dir, 64 << 20), addr);
    let seen = join(listening).await;
    assert_eq!(seen.len(), 1);
    assert!(seen[0].1 && seen[0].0 == first, "the intact stream, whole");
    assert_eq!(spool.stats.dropped.get(SpoolDrop::Corrupt), 1);
    assert_eq!(spool.stats.dropped.get(SpoolDrop::IncompleteAtRestart), 1);
    wait("the delivery to be counted", || spool.stats.repeats.load(Ordering::Relaxed) == 1).await;
    let reason = std::fs::read_to_string(dir.join(".quarantine").join(format!("{:020}.reason", 2)))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(reason.contains("BLAKE3"), "the reason names the hash: {reason}");
    assert!(dir.join(".quarantine").join(format!("{:020}.stream", 2)).exists(), "the bytes are kept to look at");
    spool.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}
