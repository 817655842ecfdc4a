//! RED sinks: TCP and UDP destinations.
//!
//! A TCP stream is delivered on its own connection to a destination from the channel's pool. It is
//! closed cleanly only when the receiver reported it complete (length and BLAKE3 matched); every other
//! ending (a lost block, a source abort, no destination, a destination too slow, red-rx stopping or
//! dying) resets the connection: SO_LINGER 0 is set from the connect until the verified end, so the
//! destination never mistakes a truncated stream for a whole one.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use diode_proto::StreamMeta;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, info, warn};

use crate::pool::Pool;

/// How a files sink answers the pair channel: once the delivery is in its ledger, or why not.
#[derive(Clone)]
pub struct Reply(pub std::sync::mpsc::SyncSender<Result<(), String>>);

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reply")
    }
}

/// What the receiver hands a channel's sink.
#[derive(Debug, Clone)]
pub enum SinkEvent {
    Open {
        stream: u64,
        meta: StreamMeta,
        /// The sender session and epoch the stream arrived in (kept in the files ledger).
        session: u64,
        epoch: u32,
    },
    Data {
        stream: u64,
        data: Bytes,
    },
    /// The stream is complete and verified: its length and BLAKE3 matched what the sender announced.
    End {
        stream: u64,
        total_len: u64,
        hash: [u8; 32],
    },
    /// The stream will not complete; the reason is logged and counted.
    Broken {
        stream: u64,
        reason: String,
    },
    Datagram(Bytes),
    /// HA with a pair (files and vault sinks): this node became active (`true`) or standby.
    Role {
        active: bool,
    },
    /// HA: the active peer is delivering this file; a standby records it and never delivers it.
    PeerDelivered {
        entry: crate::ledger::LedgerEntry,
        reply: Reply,
    },
    /// HA: a part of the active peer's ledger, sent on each new pair connection (`complete` on the last).
    PeerLedger {
        entries: Vec<crate::ledger::LedgerEntry>,
        complete: bool,
    },
}

/// Counters of one sink channel.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub streams_opened: AtomicU64,
    pub streams_completed: AtomicU64,
    pub bytes: AtomicU64,
    pub datagrams: AtomicU64,
    /// Aborted streams by reason.
    pub aborted: Mutex<BTreeMap<String, u64>>,
    /// Datagrams not delivered, by reason.
    pub datagrams_dropped: Mutex<BTreeMap<String, u64>>,
}

impl SinkStats {
    fn abort(&self, reason: &str) {
        if let Ok(mut map) = self.aborted.lock() {
            *map.entry(reason.to_string()).or_insert(0) += 1;
        }
    }

    fn drop_datagram(&self, reason: &str) {
        if let Ok(mut map) = self.datagrams_dropped.lock() {
            *map.entry(reason.to_string()).or_insert(0) += 1;
        }
    }

    pub fn aborted_total(&self) -> u64 {
        self.aborted.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

/// How long a connection to a destination may take before the next one is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How much a TCP stream may have waiting for its destination before it is aborted as "destination
/// too slow". A diode cannot ask BLUE to slow down, so a stalled destination either loses its stream
/// or grows red-rx's memory; these bound the memory. Both limits apply.
#[derive(Clone, Copy, Debug)]
pub struct StreamQueueLimits {
    pub events: usize,
    /// Stream bytes (the events' data). A queued slice keeps its decoded block alive, so this is what
    /// a stalled stream costs at most when its records fill their blocks, as bulk streams' do.
    pub bytes: usize,
}

struct StreamQueue {
    sender: mpsc::Sender<SinkEvent>,
    /// Bytes handed to the stream's task and not yet written to its destination.
    waiting: Arc<AtomicUsize>,
}

/// Delivers a TCP channel's streams until the event channel closes.
pub async fn run_tcp_sink(
    channel: u16,
    mut events: mpsc::Receiver<SinkEvent>,
    pool: Arc<Pool>,
    limits: StreamQueueLimits,
    stats: Arc<SinkStats>,
) {
    let mut streams: HashMap<u64, StreamQueue> = HashMap::new();
    while let Some(event) = events.recv().await {
        let stream = match &event {
            SinkEvent::Open { stream, meta, .. } => {
                let (sender, rx) = mpsc::channel(limits.events);
                let waiting = Arc::new(AtomicUsize::new(0));
                streams.insert(*stream, StreamQueue { sender, waiting: Arc::clone(&waiting) });
                stats.streams_opened.fetch_add(1, Ordering::Relaxed);
                let task = deliver_stream(
                    channel,
                    *stream,
                    meta.peer.clone(),
                    rx,
                    waiting,
                    Arc::clone(&pool),
                    Arc::clone(&stats),
                );
                tokio::spawn(task);
                continue;
            }
            SinkEvent::Data { stream, .. } | SinkEvent::End { stream, .. } | SinkEvent::Broken { stream, .. } => {
                *stream
            }
            SinkEvent::Datagram(_)
            | SinkEvent::Role { .. }
            | SinkEvent::PeerDelivered { .. }
            | SinkEvent::PeerLedger { .. } => continue,
        };
        let last = matches!(event, SinkEvent::End { .. } | SinkEvent::Broken { .. });
        let Some(queue) = streams.get(&stream) else { continue };
        let len = if let SinkEvent::Data { data, .. } = &event { data.len() } else { 0 };
        let waiting = queue.waiting.load(Ordering::Relaxed);
        // A stream with nothing waiting takes any one event, so a block larger than the limit still
        // gets through to a destination that keeps up.
        let sent = if waiting > 0 && waiting + len > limits.bytes {
            Err(TrySendError::Full(event))
        } else {
            queue.waiting.fetch_add(len, Ordering::Relaxed);
            queue.sender.try_send(event)
        };
        match sent {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                // Dropping the sender without an End makes the stream's task reset its connection.
                warn!(
                    channel,
                    stream,
                    waiting_bytes = waiting,
                    limit_bytes = limits.bytes,
                    limit_events = limits.events,
                    "destination too slow: stream aborted"
                );
                stats.abort("destination too slow");
                streams.remove(&stream);
                continue;
            }
            Err(TrySendError::Closed(_)) => {
                streams.remove(&stream);
                continue;
            }
        }
        if last {
            streams.remove(&stream);
        }
    }
}

/// Resets a connection: the destination sees an error, never a clean end.
fn reset(connection: TcpStream) {
    let _ = socket2::SockRef::from(&connection).set_linger(Some(Duration::ZERO));
    drop(connection);
}

async fn connect(pool: &Pool) -> Option<(TcpStream, SocketAddr)> {
    let mut tried = Vec::new();
    while let Some(addr) = pool.pick_excluding(&tried) {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(connection)) => {
                let _ = connection.set_nodelay(true);
                // Until the stream is verified complete, any close is a reset: if this process dies
                // or its runtime drops the task, the kernel sends RST, never a FIN that a destination
                // would take for a whole stream.
                let _ = socket2::SockRef::from(&connection).set_linger(Some(Duration::ZERO));
                return Some((connection, addr));
            }
            Ok(Err(error)) => pool.report_failure(addr, &error.to_string()),
            Err(_) => pool.report_failure(addr, "connect timed out"),
        }
        tried.push(addr);
    }
    None
}

async fn deliver_stream(
    channel: u16,
    stream: u64,
    peer: String,
    mut events: mpsc::Receiver<SinkEvent>,
    waiting: Arc<AtomicUsize>,
    pool: Arc<Pool>,
    stats: Arc<SinkStats>,
) {
    let Some((mut connection, destination)) = connect(&pool).await else {
        warn!(channel, stream, %peer, "no destination up: stream aborted");
        stats.abort("no destination");
        // Consume the rest so the dispatcher never sees this queue fill.
        while events.recv().await.is_some() {}
        return;
    };
    debug!(channel, stream, %peer, %destination, "delivering stream");
    while let Some(event) = events.recv().await {
        match event {
            SinkEvent::Data { data, .. } => {
                if let Err(error) = connection.write_all(&data).await {
                    warn!(channel, stream, %destination, %error, "destination failed mid-stream: stream lost");
                    pool.report_failure(destination, &error.to_string());
                    stats.abort("destination failed");
                    reset(connection);
                    while events.recv().await.is_some() {}
                    return;
                }
                stats.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                waiting.fetch_sub(data.len(), Ordering::Relaxed);
            }
            SinkEvent::End { .. } => {
                // Verified whole: close gracefully, so the destination reads every byte, then FIN.
                let _ = socket2::SockRef::from(&connection).set_linger(None);
                match connection.shutdown().await {
                    Ok(()) => {
                        stats.streams_completed.fetch_add(1, Ordering::Relaxed);
                        debug!(channel, stream, %destination, "stream delivered complete");
                    }
                    Err(error) => {
                        warn!(channel, stream, %destination, %error, "destination failed at the end: stream lost");
                        stats.abort("destination failed");
                    }
                }
                return;
            }
            SinkEvent::Broken { reason, .. } => {
                info!(channel, stream, %destination, %reason, "stream broken: destination connection reset");
                stats.abort(&reason);
                reset(connection);
                return;
            }
            SinkEvent::Open { .. }
            | SinkEvent::Datagram(_)
            | SinkEvent::Role { .. }
            | SinkEvent::PeerDelivered { .. }
            | SinkEvent::PeerLedger { .. } => {}
        }
    }
    // The channel closed without an end: shutting down, or the dispatcher gave up on this stream.
    reset(connection);
}

/// Delivers a UDP channel's datagrams until the event channel closes.
pub async fn run_udp_sink(
    channel: u16,
    mut events: mpsc::Receiver<SinkEvent>,
    pool: Arc<Pool>,
    multicast: (Option<u32>, Option<std::net::Ipv4Addr>),
    stats: Arc<SinkStats>,
) {
    let (multicast_ttl, multicast_interface) = multicast;
    let socket = match UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).await {
        Ok(socket) => socket,
        Err(error) => {
            warn!(channel, %error, "cannot open the UDP sink socket: the channel's datagrams are dropped");
            while let Some(event) = events.recv().await {
                if matches!(event, SinkEvent::Datagram(_)) {
                    stats.drop_datagram("sink socket");
                }
            }
            return;
        }
    };
    if let Some(ttl) = multicast_ttl {
        let _ = socket.set_multicast_ttl_v4(ttl);
    }
    let _ = socket.set_multicast_loop_v4(true);
    if let Some(interface) = multicast_interface {
        if let Err(error) = socket2::SockRef::from(&socket).set_multicast_if_v4(&interface) {
            warn!(channel, %interface, %error, "cannot send multicast through this interface");
        }
    }
    while let Some(event) = events.recv().await {
        let SinkEvent::Datagram(payload) = event else { continue };
        let Some(destination) = pool.pick() else {
            stats.drop_datagram("no destination");
            continue;
        };
        match socket.send_to(&payload, destination).await {
            Ok(_) => {
                stats.datagrams.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
            }
            Err(error) => {
                debug!(channel, %destination, %error, "datagram not delivered");
                stats.drop_datagram("send failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Instant;

    use super::*;
    use crate::config::{HealthConfig, PoolMode};

    const CHUNK: usize = 64 * 1024;

    /// A TCP sink for one destination, fed through its event queue like red-rx feeds it.
    fn sink_to(addr: SocketAddr, limits: StreamQueueLimits) -> (mpsc::Sender<SinkEvent>, Arc<SinkStats>) {
        let pool = Pool::new(1, &[(addr, 1)], PoolMode::Failover, HealthConfig::default());
        let stats = Arc::new(SinkStats::default());
        let (events, rx) = mpsc::channel(1024);
        tokio::spawn(run_tcp_sink(1, rx, pool, limits, Arc::clone(&stats)));
        (events, stats)
    }

    fn open(stream: u64) -> SinkEvent {
        SinkEvent::Open { stream, meta: StreamMeta::default(), session: 1, epoch: 1 }
    }

    fn data(stream: u64) -> SinkEvent {
        SinkEvent::Data { stream, data: Bytes::from(vec![0x5A; CHUNK]) }
    }

    fn aborted(stats: &SinkStats, reason: &str) -> u64 {
        stats.aborted.lock().map_or(0, |m| m.get(reason).copied().unwrap_or(0))
    }

    #[tokio::test]
    async fn a_stalled_destination_loses_its_stream_once_the_bytes_waiting_pass_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        // Accepts and never reads until the sink gave up, then reads what reached it.
        let destination = std::thread::spawn(move || {
            let (mut connection, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            std::thread::sleep(Duration::from_secs(2));
            let mut received = Vec::new();
            let outcome = connection.read_to_end(&mut received);
            (received.len(), outcome.map(|_| ()).map_err(|e| e.kind()))
        });
        let limits = StreamQueueLimits { events: 1_000_000, bytes: 1 << 20 };
        let (events, stats) = sink_to(addr, limits);
        events.send(open(7)).await.unwrap_or_else(|e| panic!("{e}"));
        // Far more than the kernel's socket buffers take: the rest must wait in red-rx.
        let sent = 1024 * CHUNK;
        for _ in 0..sent / CHUNK {
            if events.send(data(7)).await.is_err() {
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while aborted(&stats, "destination too slow") == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(aborted(&stats, "destination too slow"), 1);
        let (received, outcome) = destination.join().unwrap_or_else(|_| panic!("destination thread"));
        assert!(received < sent, "the stream was cut short ({received} of {sent} bytes)");
        // The destination learns it by a reset, never a clean end it could take for the whole stream.
        assert_eq!(outcome, Err(std::io::ErrorKind::ConnectionReset));
        assert_eq!(stats.streams_completed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_destination_that_keeps_up_gets_every_byte_through_a_queue_smaller_than_the_stream() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let destination = std::thread::spawn(move || {
            let (mut connection, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            let mut received = Vec::new();
            connection.read_to_end(&mut received).map(|_| received.len()).map_err(|e| e.kind())
        });
        let limits = StreamQueueLimits { events: 1024, bytes: 8 << 20 };
        let (events, stats) = sink_to(addr, limits);
        events.send(open(3)).await.unwrap_or_else(|e| panic!("{e}"));
        // 32 MiB, four times the limit, at about 1 Gbit/s, the pace of a link rather than of memory.
        let chunks = 512;
        for n in 0..chunks {
            events.send(data(3)).await.unwrap_or_else(|e| panic!("{e}"));
            if n % 2 == 1 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        let end = SinkEvent::End { stream: 3, total_len: (chunks * CHUNK) as u64, hash: [0; 32] };
        events.send(end).await.unwrap_or_else(|e| panic!("{e}"));
        let received = tokio::task::spawn_blocking(move || destination.join())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|_| panic!("destination thread"));
        assert_eq!(received, Ok(chunks * CHUNK));
        assert_eq!(stats.aborted_total(), 0);
        assert_eq!(stats.streams_completed.load(Ordering::Relaxed), 1);
    }
}
