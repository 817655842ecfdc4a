//! BLUE sources: TCP listeners and UDP receivers that turn what clients send into stream events.
//!
//! Each source sends [`SourceEvent`]s into a bounded channel. When the channel is full the source
//! waits, so a TCP client's reads pause (back-pressure all the way to the client) instead of memory
//! growing. A UDP source cannot pause its senders: when the channel is full it drops the datagram and
//! counts it, as a full UDP receive buffer would.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use diode_proto::{AbortReason, StreamMeta};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, info, warn, Instrument};

/// What a source hands to the channel's block builder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceEvent {
    Open { stream: u64, meta: StreamMeta },
    Data { stream: u64, bytes: Bytes },
    End { stream: u64 },
    Abort { stream: u64, reason: AbortReason },
    Datagram(Bytes),
}

/// Why a source refused traffic before it became a stream or a datagram on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceDrop {
    /// A datagram arrived while the channel's pipeline was full.
    PipelineFull,
    /// A connection arrived while the channel had `max_sessions` open.
    MaxSessions,
}

diode_proto::reasons!(SourceDrop { PipelineFull => "pipeline_full", MaxSessions => "max_sessions" });

/// Streams a source aborted, by reason.
pub type AbortCounts = diode_proto::AtomicReasonCounts<AbortReason, { AbortReason::LABELS.len() }>;

/// Counters of one source channel.
#[derive(Debug, Default)]
pub struct SourceStats {
    pub accepted: AtomicU64,
    /// Connections refused because the channel had `max_sessions` open.
    pub refused: AtomicU64,
    pub completed: AtomicU64,
    /// Streams aborted at the source, by reason.
    pub aborted: AbortCounts,
    pub bytes: AtomicU64,
    pub datagrams: AtomicU64,
    /// Datagrams dropped because the pipeline was full.
    pub datagrams_dropped: AtomicU64,
}

/// Read size per TCP read: large enough to fill blocks quickly, small enough to pause promptly.
const READ_CHUNK: usize = 64 * 1024;

/// Accepts TCP connections until `shutdown` turns true; each connection becomes one stream.
#[tracing::instrument(name = "channel", skip_all, fields(number = channel))]
pub async fn run_tcp_source(
    channel: u16,
    listener: TcpListener,
    max_sessions: usize,
    idle_timeout: Duration,
    events: mpsc::Sender<SourceEvent>,
    stats: Arc<SourceStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let sessions = Arc::new(Semaphore::new(max_sessions));
    let mut next_stream = 1u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (mut socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&sessions).try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            warn!(%peer, max_sessions, "connection refused: channel has max_sessions open");
            // Reset rather than close so the client sees a refusal, not an empty successful transfer.
            let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
            drop(socket);
            continue;
        };
        let _ = socket.set_nodelay(true);
        let stream = next_stream;
        next_stream += 1;
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        let events = events.clone();
        let stats = Arc::clone(&stats);
        let mut shutdown = shutdown.clone();
        let transfer = tracing::info_span!("stream", id = stream, %peer);
        tokio::spawn(
            async move {
                let _permit = permit;
                let meta = StreamMeta { peer: peer.to_string(), ..StreamMeta::default() };
                if events.send(SourceEvent::Open { stream, meta }).await.is_err() {
                    return;
                }
                debug!("stream opened");
                let mut buffer = BytesMut::with_capacity(READ_CHUNK);
                let outcome = loop {
                    buffer.reserve(READ_CHUNK);
                    let read = tokio::select! {
                        read = tokio::time::timeout(idle_timeout, socket.read_buf(&mut buffer)) => read,
                        _ = shutdown.changed() => break Err(AbortReason::ShuttingDown),
                    };
                    match read {
                        Err(_) => break Err(AbortReason::SourceTimeout),
                        Ok(Err(_)) => break Err(AbortReason::SourceReset),
                        Ok(Ok(0)) => break Ok(()),
                        Ok(Ok(n)) => {
                            stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
                            let bytes = buffer.split().freeze();
                            if events.send(SourceEvent::Data { stream, bytes }).await.is_err() {
                                return;
                            }
                        }
                    }
                };
                let event = match outcome {
                    Ok(()) => {
                        stats.completed.fetch_add(1, Ordering::Relaxed);
                        debug!("stream complete");
                        SourceEvent::End { stream }
                    }
                    Err(reason) => {
                        stats.aborted.add(reason);
                        info!(%reason, "stream aborted at the source");
                        SourceEvent::Abort { stream, reason }
                    }
                };
                let _ = events.send(event).await;
            }
            .instrument(transfer),
        );
    }
}

/// Binds a UDP socket for a source, joining a multicast group when asked.
pub fn bind_udp(
    listen: SocketAddr,
    multicast: Option<(IpAddr, Option<IpAddr>)>,
    recv_buffer: usize,
) -> std::io::Result<UdpSocket> {
    let domain = socket2::Domain::for_address(listen);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    let _ = socket.set_recv_buffer_size(recv_buffer);
    socket.set_nonblocking(true)?;
    if let Some((group, interface)) = multicast {
        // Bind the group's port on any address so datagrams to the group are delivered here.
        let any: SocketAddr = match group {
            IpAddr::V4(_) => SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), listen.port()),
            IpAddr::V6(_) => SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), listen.port()),
        };
        socket.bind(&any.into())?;
        match (group, interface) {
            (IpAddr::V4(group), Some(IpAddr::V4(interface))) => socket.join_multicast_v4(&group, &interface)?,
            (IpAddr::V4(group), _) => socket.join_multicast_v4(&group, &std::net::Ipv4Addr::UNSPECIFIED)?,
            (IpAddr::V6(group), _) => socket.join_multicast_v6(&group, 0)?,
        }
    } else {
        socket.bind(&listen.into())?;
    }
    UdpSocket::from_std(socket.into())
}

/// Receives datagrams until `shutdown`; each becomes one datagram record.
#[tracing::instrument(name = "channel", skip_all, fields(number = channel))]
pub async fn run_udp_source(
    channel: u16,
    socket: UdpSocket,
    events: mpsc::Sender<SourceEvent>,
    stats: Arc<SourceStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 65_536];
    loop {
        let received = tokio::select! {
            received = socket.recv_from(&mut buffer) => received,
            _ = shutdown.changed() => break,
        };
        match received {
            Ok((len, _peer)) => {
                stats.datagrams.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(len as u64, Ordering::Relaxed);
                if events.try_send(SourceEvent::Datagram(Bytes::copy_from_slice(&buffer[..len]))).is_err() {
                    let dropped = stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    if dropped.is_power_of_two() {
                        warn!(dropped, "UDP datagrams dropped: the link is slower than the source");
                    }
                }
            }
            Err(error) => {
                warn!(%error, "UDP receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
