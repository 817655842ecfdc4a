//! RED sinks: TCP and UDP destinations.
//!
//! A TCP stream is delivered on its own connection to a destination from the channel's pool. It is
//! closed cleanly only when the receiver reported it complete (length and BLAKE3 matched); every other
//! ending (a lost block, a source abort, no destination, a destination too slow, red-rx stopping or
//! dying) resets the connection: SO_LINGER 0 is set from the connect until the verified end, so the
//! destination never mistakes a truncated stream for a whole one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use diode_proto::{AtomicReasonCounts, BreakReason, StreamMeta};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tracing::{debug, info, warn, Instrument};

use crate::pool::Pool;

/// How a files sink answers the pair channel: once the delivery is in its ledger, or why not.
#[derive(Clone)]
pub struct Reply(pub std::sync::mpsc::SyncSender<Result<(), crate::replication::Refusal>>);

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
    /// Files and vault: the sender's manifest names a file every block of which was lost, so its
    /// stream never opened here (the file is named only by this).
    NeverArrived {
        stream: u64,
        name: String,
        size: u64,
        file_id: [u8; 16],
    },
    /// The stream will not complete; the reason is logged and counted under its label.
    Broken {
        stream: u64,
        reason: StreamAbort,
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

/// Why a sink ended a stream without delivering it whole. Each aborted stream has exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StreamAbort {
    #[error("the destination did not take the stream fast enough")]
    DestinationTooSlow,
    #[error("no destination was up")]
    NoDestination,
    #[error("the destination failed mid-stream")]
    DestinationFailed,
    #[error("this node became standby with the stream open")]
    BecameStandby,
    #[error("the channel's spool is full")]
    SpoolFull,
    #[error("the channel's spool failed to write or read it")]
    SpoolFailed,
    #[error("it waited in the spool past max_age")]
    Expired,
    #[error("the channel's sink fell behind decoding by more than its queue_bytes")]
    SinkOverloaded,
    #[error("{0}")]
    Broken(BreakReason),
}

diode_proto::reasons!(StreamAbort patterns {
    StreamAbort::DestinationTooSlow => "destination_too_slow",
    StreamAbort::NoDestination => "no_destination",
    StreamAbort::DestinationFailed => "destination_failed",
    StreamAbort::BecameStandby => "became_standby",
    StreamAbort::SpoolFull => "spool_full",
    StreamAbort::SpoolFailed => "spool_failed",
    StreamAbort::Expired => "expired",
    StreamAbort::SinkOverloaded => "sink_overloaded",
} wraps Broken(BreakReason));

/// Why a datagram was not handed to a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatagramDrop {
    NoDestination,
    SinkSocket,
    DestinationUnreachable,
    SendFailed,
    /// The channel's sink fell behind decoding by more than its queue: the oldest waiting was dropped.
    SinkOverloaded,
}

diode_proto::reasons!(DatagramDrop {
    NoDestination => "no_destination",
    SinkSocket => "sink_socket",
    DestinationUnreachable => "destination_unreachable",
    SendFailed => "send_failed",
    SinkOverloaded => "sink_overloaded",
});

pub type StreamAbortCounts = AtomicReasonCounts<StreamAbort, { StreamAbort::LABELS.len() }>;
pub type DatagramDropCounts = AtomicReasonCounts<DatagramDrop, { DatagramDrop::LABELS.len() }>;

/// Counters of one sink channel.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub streams_opened: AtomicU64,
    pub streams_completed: AtomicU64,
    pub bytes: AtomicU64,
    pub datagrams: AtomicU64,
    /// Aborted streams by reason; each aborted stream is counted once.
    pub aborted: StreamAbortCounts,
    /// Datagrams not delivered, by reason.
    pub datagrams_dropped: DatagramDropCounts,
}

impl SinkStats {
    pub fn aborted_total(&self) -> u64 {
        self.aborted.total()
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
    /// Tells the stream's task to reset its destination now, whatever it still has queued.
    abort: Arc<tokio::sync::Notify>,
}

/// Delivers a TCP channel's streams until the event channel closes.
#[tracing::instrument(name = "channel", skip_all, fields(number = channel))]
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
                let abort = Arc::new(tokio::sync::Notify::new());
                streams
                    .insert(*stream, StreamQueue { sender, waiting: Arc::clone(&waiting), abort: Arc::clone(&abort) });
                stats.streams_opened.fetch_add(1, Ordering::Relaxed);
                let task =
                    deliver_stream(StreamInput { events: rx, waiting, abort }, Arc::clone(&pool), Arc::clone(&stats));
                tokio::spawn(task.instrument(tracing::info_span!("stream", id = *stream, peer = %meta.peer)));
                continue;
            }
            SinkEvent::Data { stream, .. } | SinkEvent::End { stream, .. } | SinkEvent::Broken { stream, .. } => {
                *stream
            }
            SinkEvent::Datagram(_)
            | SinkEvent::NeverArrived { .. }
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
                // The task resets its destination at once (it may be stuck writing to it); it counts
                // nothing more for this stream.
                queue.abort.notify_one();
                warn!(
                    stream,
                    waiting_bytes = waiting,
                    limit_bytes = limits.bytes,
                    limit_events = limits.events,
                    "destination too slow: stream aborted"
                );
                stats.aborted.add(StreamAbort::DestinationTooSlow);
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
pub(crate) fn reset(connection: TcpStream) {
    let _ = socket2::SockRef::from(&connection).set_linger(Some(Duration::ZERO));
    drop(connection);
}

pub(crate) async fn connect(pool: &Pool) -> Option<(TcpStream, SocketAddr)> {
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

/// What a stream's task is fed.
struct StreamInput {
    events: mpsc::Receiver<SinkEvent>,
    waiting: Arc<AtomicUsize>,
    abort: Arc<tokio::sync::Notify>,
}

/// Runs inside the stream's span (its id and the sender's peer), itself inside the channel's.
async fn deliver_stream(input: StreamInput, pool: Arc<Pool>, stats: Arc<SinkStats>) {
    let StreamInput { mut events, waiting, abort } = input;
    // Not raced with the abort: a connect dropped half-way closes with a FIN, which a destination
    // would read as a clean end. Connected, every close is a reset.
    let Some((mut connection, destination)) = connect(&pool).await else {
        warn!("no destination up: stream aborted");
        stats.aborted.add(StreamAbort::NoDestination);
        // Consume the rest so the dispatcher never sees this queue fill.
        while events.recv().await.is_some() {}
        return;
    };
    debug!(%destination, "delivering stream");
    loop {
        let event = tokio::select! {
            biased;
            () = abort.notified() => {
                debug!(%destination, "stream aborted: destination connection reset");
                reset(connection);
                return;
            }
            event = events.recv() => event,
        };
        let Some(event) = event else { break };
        match event {
            SinkEvent::Data { data, .. } => {
                let written = tokio::select! {
                    biased;
                    // A stalled destination must not keep receiving an aborted stream.
                    () = abort.notified() => {
                        debug!(%destination, "stream aborted mid-write: destination connection reset");
                        reset(connection);
                        return;
                    }
                    written = connection.write_all(&data) => written,
                };
                if let Err(error) = written {
                    warn!(%destination, %error, "destination failed mid-stream: stream lost");
                    pool.report_failure(destination, &error.to_string());
                    stats.aborted.add(StreamAbort::DestinationFailed);
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
                        debug!(%destination, "stream delivered complete");
                    }
                    Err(error) => {
                        warn!(%destination, %error, "destination failed at the end: stream lost");
                        stats.aborted.add(StreamAbort::DestinationFailed);
                    }
                }
                return;
            }
            SinkEvent::Broken { reason, .. } => {
                info!(%destination, %reason, reason_label = reason.label(), "stream broken: destination connection reset");
                stats.aborted.add(reason);
                reset(connection);
                return;
            }
            SinkEvent::Open { .. }
            | SinkEvent::Datagram(_)
            | SinkEvent::NeverArrived { .. }
            | SinkEvent::Role { .. }
            | SinkEvent::PeerDelivered { .. }
            | SinkEvent::PeerLedger { .. } => {}
        }
    }
    // The channel closed without an end: shutting down, or the dispatcher gave up on this stream.
    reset(connection);
}

/// How long after a destination answered a datagram with "port unreachable" the datagrams sent to it
/// are counted as not delivered: UDP has no acknowledgement, and each datagram to a closed port draws
/// one such answer, which the kernel reports on the next send.
const REFUSED_FOR: Duration = Duration::from_millis(500);

/// One destination's socket, connected so that the kernel reports its ICMP errors.
struct UdpDestination {
    socket: UdpSocket,
    refused_at: Option<std::time::Instant>,
}

async fn udp_destination(
    addr: SocketAddr,
    multicast: (Option<u32>, Option<std::net::Ipv4Addr>),
) -> std::io::Result<UdpDestination> {
    let socket = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)).await?;
    let (multicast_ttl, multicast_interface) = multicast;
    if let Some(ttl) = multicast_ttl {
        let _ = socket.set_multicast_ttl_v4(ttl);
    }
    let _ = socket.set_multicast_loop_v4(true);
    if let Some(interface) = multicast_interface {
        if let Err(error) = socket2::SockRef::from(&socket).set_multicast_if_v4(&interface) {
            warn!(%addr, %interface, %error, "cannot send multicast through this interface");
        }
    }
    socket.connect(addr).await?;
    Ok(UdpDestination { socket, refused_at: None })
}

/// Delivers a UDP channel's datagrams until the event channel closes. A datagram counts as delivered
/// only when it was sent to a destination that has not refused one lately; the rest are counted by
/// reason (`no_destination`, `destination_unreachable`, `send_failed`, `sink_socket`).
#[tracing::instrument(name = "channel", skip_all, fields(number = channel))]
pub async fn run_udp_sink(
    channel: u16,
    mut events: mpsc::Receiver<SinkEvent>,
    pool: Arc<Pool>,
    multicast: (Option<u32>, Option<std::net::Ipv4Addr>),
    stats: Arc<SinkStats>,
) {
    let mut destinations: HashMap<SocketAddr, UdpDestination> = HashMap::new();
    while let Some(event) = events.recv().await {
        let SinkEvent::Datagram(payload) = event else { continue };
        let Some(addr) = pool.pick() else {
            stats.datagrams_dropped.add(DatagramDrop::NoDestination);
            continue;
        };
        let destination = match destinations.entry(addr) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => match udp_destination(addr, multicast).await {
                Ok(destination) => entry.insert(destination),
                Err(error) => {
                    warn!(%addr, %error, "cannot open a UDP socket to the destination: datagram dropped");
                    stats.datagrams_dropped.add(DatagramDrop::SinkSocket);
                    continue;
                }
            },
        };
        match destination.socket.send(&payload).await {
            Ok(_) if destination.refused_at.is_some_and(|at| at.elapsed() < REFUSED_FOR) => {
                stats.datagrams_dropped.add(DatagramDrop::DestinationUnreachable);
            }
            Ok(_) => {
                destination.refused_at = None;
                stats.datagrams.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
            }
            Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                if destination.refused_at.is_none() {
                    warn!(%addr, "UDP destination unreachable (port closed): its datagrams are counted as lost");
                }
                destination.refused_at = Some(std::time::Instant::now());
                stats.datagrams_dropped.add(DatagramDrop::DestinationUnreachable);
            }
            Err(error) => {
                debug!(%addr, %error, "datagram not delivered");
                stats.datagrams_dropped.add(DatagramDrop::SendFailed);
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
        stats.aborted.snapshot().nonzero().get(reason).copied().unwrap_or(0)
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
        while aborted(&stats, "destination_too_slow") == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(aborted(&stats, "destination_too_slow"), 1);
        // Joined off the runtime: the sink's tasks must run to reset the connection.
        let (received, outcome) = tokio::task::spawn_blocking(move || destination.join())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|_| panic!("destination thread"));
        assert!(received < sent, "the stream was cut short ({received} of {sent} bytes)");
        // The destination learns it by a reset, never a clean end it could take for the whole stream.
        assert_eq!(outcome, Err(std::io::ErrorKind::ConnectionReset));
        assert_eq!(stats.streams_completed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn an_aborted_stream_resets_a_slow_destination_at_once_and_counts_one_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        // Reads, but slowly (about 1.6 MB/s): what an overloaded historian does.
        let destination = std::thread::spawn(move || {
            let (mut connection, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            let mut buffer = vec![0u8; 16 * 1024];
            let mut received = 0usize;
            loop {
                match connection.read(&mut buffer) {
                    Ok(0) => return (received, Ok(Instant::now())),
                    Ok(n) => received += n,
                    Err(error) => return (received, Err((error.kind(), Instant::now()))),
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        // 16 MiB may wait: draining it at that pace would take ten seconds.
        let limits = StreamQueueLimits { events: 1_000_000, bytes: 16 << 20 };
        let (events, stats) = sink_to(addr, limits);
        events.send(open(9)).await.unwrap_or_else(|e| panic!("{e}"));
        for _ in 0..1024 {
            if events.send(data(9)).await.is_err() {
                break;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while aborted(&stats, "destination_too_slow") == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let aborted_at = Instant::now();
        // The rest of the stream, as the receiver would go on handing it over, and its end.
        for _ in 0..16 {
            let _ = events.send(data(9)).await;
        }
        let _ = events.send(SinkEvent::End { stream: 9, total_len: 0, hash: [0; 32] }).await;
        let (received, outcome) = tokio::task::spawn_blocking(move || destination.join())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|_| panic!("destination thread"));
        let (kind, reset_at) = outcome.expect_err("the destination is reset, never closed cleanly");
        assert_eq!(kind, std::io::ErrorKind::ConnectionReset);
        // Not after the queued megabytes drained (ten seconds at that pace): at once.
        let after = reset_at.saturating_duration_since(aborted_at);
        assert!(after < Duration::from_secs(3), "reset {after:?} after the abort, {received} bytes received");
        assert_eq!(stats.aborted_total(), 1, "one reason: {:?}", stats.aborted);
        assert_eq!(stats.streams_completed.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn datagrams_to_a_closed_port_are_counted_as_lost_not_delivered() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = closed.local_addr().unwrap_or_else(|e| panic!("{e}"));
        drop(closed);
        let health = HealthConfig { kind: crate::config::HealthKind::None, ..HealthConfig::default() };
        let pool = Pool::new(1, &[(addr, 1)], PoolMode::Failover, health);
        let stats = Arc::new(SinkStats::default());
        let (events, rx) = mpsc::channel(1024);
        let sink = tokio::spawn(run_udp_sink(1, rx, pool, (None, None), Arc::clone(&stats)));
        for _ in 0..100 {
            events.send(SinkEvent::Datagram(Bytes::from_static(b"reading"))).await.unwrap_or_else(|e| panic!("{e}"));
            // Time for each datagram's ICMP answer to come back, as between real readings.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        drop(events);
        sink.await.unwrap_or_else(|e| panic!("{e}"));
        let lost = stats.datagrams_dropped.get(DatagramDrop::DestinationUnreachable);
        let delivered = stats.datagrams.load(Ordering::Relaxed);
        assert_eq!(lost + delivered, 100);
        assert!(delivered <= 1, "{delivered} counted as delivered to a closed port");
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
