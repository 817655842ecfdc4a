//! Fiber links: one-way UDP sockets that stand in for an optical fiber's transmitter and receiver.
//!
//! [`FiberTx`] sends batches with `sendmmsg` (and UDP GSO where the kernel takes it); [`FiberRx`]
//! receives batches with `recvmmsg` (and UDP GRO) and has no way to send: the RED side cannot write to
//! a fiber because the type it holds has no such method.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::{self, Gather, RecvMeta};

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// A GRO buffer holds up to 64 KiB of coalesced datagrams.
const GRO_BUFFER: usize = 65_536;

/// Why a fiber could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum FiberError {
    #[error("cannot bind fiber receiver to {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot connect fiber transmitter to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("cannot configure fiber socket ({what}): {source}")]
    Configure { what: &'static str, source: io::Error },
}

/// A buffer the kernel granted smaller than asked, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferWarning {
    pub direction: &'static str,
    pub requested: usize,
    pub granted: usize,
    /// The sysctl that caps it and its current value.
    pub sysctl: &'static str,
    pub sysctl_value: Option<usize>,
}

impl std::fmt::Display for BufferWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} buffer: requested {} bytes, the kernel granted {} (capped by {} = {}); bursts beyond it are \
             dropped by the kernel. Fix: sysctl -w {}={}",
            self.direction,
            self.requested,
            self.granted,
            self.sysctl,
            self.sysctl_value.map_or_else(|| "unknown".to_string(), |v| v.to_string()),
            self.sysctl,
            self.requested
        )
    }
}

fn read_sysctl(name: &str) -> Option<usize> {
    let path = format!("/proc/sys/{}", name.replace('.', "/"));
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn configure<T>(what: &'static str, result: io::Result<T>) -> Result<T, FiberError> {
    result.map_err(|source| FiberError::Configure { what, source })
}

#[derive(Clone, Copy)]
enum Direction {
    Send,
    Receive,
}

/// Grows any UDP socket's receive buffer to `bytes`, beyond `net.core.rmem_max` where the process has
/// CAP_NET_ADMIN; returns a warning when the kernel still granted less.
pub fn grow_recv_buffer(socket: &Socket, bytes: usize) -> Result<Option<BufferWarning>, FiberError> {
    size_buffer(socket, Direction::Receive, bytes, true)
}

/// Asks for a socket buffer (forcing past the sysctl cap when allowed and asked) and returns a
/// warning when the kernel granted less.
fn size_buffer(
    socket: &Socket,
    direction: Direction,
    requested: usize,
    force: bool,
) -> Result<Option<BufferWarning>, FiberError> {
    let fd = socket.as_raw_fd();
    let (reported, name, sysctl) = match direction {
        Direction::Send => {
            let _ = socket.set_send_buffer_size(requested);
            if force {
                let _ = sys::force_send_buffer(fd, requested);
            }
            (configure("SO_SNDBUF", socket.send_buffer_size())?, "send", "net.core.wmem_max")
        }
        Direction::Receive => {
            let _ = socket.set_recv_buffer_size(requested);
            if force {
                let _ = sys::force_recv_buffer(fd, requested);
            }
            (configure("SO_RCVBUF", socket.recv_buffer_size())?, "receive", "net.core.rmem_max")
        }
    };
    // Linux reports twice the buffer it accounts (the doubling covers bookkeeping); halve it back.
    let granted = reported / 2;
    Ok((granted < requested).then(|| BufferWarning {
        direction: name,
        requested,
        granted,
        sysctl,
        sysctl_value: read_sysctl(sysctl),
    }))
}

/// Transmitter settings.
#[derive(Clone, Debug)]
pub struct TxConfig {
    pub remote: SocketAddr,
    /// Local address to send from (`None`: any).
    pub local: Option<SocketAddr>,
    pub send_buffer: usize,
    /// Exceed `net.core.wmem_max` with SO_SNDBUFFORCE when the process has CAP_NET_ADMIN.
    pub force_buffer: bool,
    /// Try UDP GSO (falls back to plain batches when the kernel refuses it).
    pub gso: bool,
}

impl TxConfig {
    pub fn new(remote: SocketAddr) -> TxConfig {
        TxConfig { remote, local: None, send_buffer: 4 << 20, force_buffer: false, gso: true }
    }
}

/// The sending end of a fiber.
pub struct FiberTx {
    socket: UdpSocket,
    gso: bool,
    warnings: Vec<BufferWarning>,
    sent_datagrams: u64,
    sent_bytes: u64,
}

impl FiberTx {
    pub fn open(config: &TxConfig) -> Result<FiberTx, FiberError> {
        let socket = Socket::new(Domain::for_address(config.remote), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|source| FiberError::Configure { what: "socket", source })?;
        let warnings =
            size_buffer(&socket, Direction::Send, config.send_buffer, config.force_buffer)?.into_iter().collect();
        if let Some(local) = config.local {
            socket.bind(&local.into()).map_err(|source| FiberError::Bind { addr: local, source })?;
        }
        socket.connect(&config.remote.into()).map_err(|source| FiberError::Connect { addr: config.remote, source })?;
        Ok(FiberTx { socket: socket.into(), gso: config.gso, warnings, sent_datagrams: 0, sent_bytes: 0 })
    }

    pub fn warnings(&self) -> &[BufferWarning] {
        &self.warnings
    }

    /// Whether GSO is in use (it is switched off for good after the kernel refuses it once).
    pub fn gso(&self) -> bool {
        self.gso
    }

    pub fn sent(&self) -> (u64, u64) {
        (self.sent_datagrams, self.sent_bytes)
    }

    /// Sends every datagram, in as few syscalls as the kernel allows. Blocks while the socket buffer is
    /// full (a fiber has no flow control; pacing upstream keeps that rare).
    pub fn send_batch<D: Gather>(&mut self, datagrams: &[D]) -> io::Result<()> {
        let mut done = 0;
        while done < datagrams.len() {
            match sys::send_batch(self.socket.as_raw_fd(), &datagrams[done..], self.gso) {
                Ok(sent) => {
                    self.sent_datagrams += sent as u64;
                    self.sent_bytes += datagrams[done..done + sent].iter().map(|d| d.byte_len() as u64).sum::<u64>();
                    done += sent;
                }
                Err(error) if self.gso && gso_refused(&error) => self.gso = false,
                // An ICMP "port unreachable" for an earlier datagram surfaced on this connected socket;
                // reporting it cleared it and nothing of this call was sent, so send again. A real fiber
                // cannot hear back at all: the receiver's absence must not stop the sender.
                Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Sends one datagram per syscall (the baseline the batched path is measured against).
    pub fn send_one(&mut self, datagram: &[u8]) -> io::Result<()> {
        loop {
            match sys::send_one(self.socket.as_raw_fd(), datagram) {
                Ok(_) => {
                    self.sent_datagrams += 1;
                    self.sent_bytes += datagram.len() as u64;
                    return Ok(());
                }
                // As in send_batch: an earlier datagram's ICMP error, cleared by reporting it.
                Err(error) if matches!(error.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::Interrupted) => {
                }
                Err(error) => return Err(error),
            }
        }
    }
}

fn gso_refused(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::EOPNOTSUPP | libc::ENOPROTOOPT))
}

/// Receiver settings.
#[derive(Clone, Debug)]
pub struct RxConfig {
    pub listen: SocketAddr,
    pub recv_buffer: usize,
    /// Exceed `net.core.rmem_max` with SO_RCVBUFFORCE when the process has CAP_NET_ADMIN.
    pub force_buffer: bool,
    /// Ask the kernel to coalesce datagrams (UDP GRO).
    pub gro: bool,
    /// Messages per `recvmmsg`.
    pub batch: usize,
    /// How long `recv_batch` waits for the first datagram.
    pub timeout: Duration,
}

impl RxConfig {
    pub fn new(listen: SocketAddr) -> RxConfig {
        RxConfig {
            listen,
            recv_buffer: 32 << 20,
            force_buffer: false,
            gro: true,
            batch: 32,
            timeout: Duration::from_millis(50),
        }
    }
}

/// Counters of a fiber receiver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RxCounters {
    pub datagrams: u64,
    pub bytes: u64,
    /// Datagrams larger than the receive buffer (cut by the kernel, dropped here).
    pub truncated: u64,
    /// Datagrams the kernel dropped because the socket buffer was full (SO_RXQ_OVFL).
    pub kernel_drops: u64,
    pub last_datagram: Option<Instant>,
}

/// The receiving end of a fiber. It has no send method, and its socket is never handed out:
///
/// ```compile_fail
/// fn reply(rx: &mut hw::FiberRx) {
///     rx.send_batch(&[b"anything".as_slice()]);
/// }
/// ```
pub struct FiberRx {
    socket: UdpSocket,
    buffers: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    /// (message, offset, length) of each datagram of the last batch.
    datagrams: Vec<(usize, usize, usize)>,
    warnings: Vec<BufferWarning>,
    counters: RxCounters,
    gro: bool,
}

impl FiberRx {
    pub fn open(config: &RxConfig) -> Result<FiberRx, FiberError> {
        let socket = Socket::new(Domain::for_address(config.listen), Type::DGRAM, Some(Protocol::UDP))
            .map_err(|source| FiberError::Configure { what: "socket", source })?;
        let warnings =
            size_buffer(&socket, Direction::Receive, config.recv_buffer, config.force_buffer)?.into_iter().collect();
        configure("SO_RXQ_OVFL", sys::enable_rxq_overflow(socket.as_raw_fd()))?;
        let gro = config.gro && sys::enable_gro(socket.as_raw_fd()).is_ok();
        configure("SO_RCVTIMEO", socket.set_read_timeout(Some(config.timeout.max(Duration::from_millis(1)))))?;
        socket.bind(&config.listen.into()).map_err(|source| FiberError::Bind { addr: config.listen, source })?;
        let buffer_len = if gro { GRO_BUFFER } else { MAX_DATAGRAM + 1 };
        let batch = config.batch.clamp(1, sys::MAX_MESSAGES);
        Ok(FiberRx {
            socket: socket.into(),
            buffers: vec![vec![0; buffer_len]; batch],
            meta: vec![RecvMeta::default(); batch],
            datagrams: Vec::with_capacity(batch * 8),
            warnings,
            counters: RxCounters::default(),
            gro,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub fn warnings(&self) -> &[BufferWarning] {
        &self.warnings
    }

    pub fn gro(&self) -> bool {
        self.gro
    }

    pub fn counters(&self) -> &RxCounters {
        &self.counters
    }

    /// Reads the socket's drop counter from /proc/net/udp: the kernel reports it with datagrams only,
    /// so a link that drops everything (or is idle) needs this to show its drops.
    pub fn refresh_kernel_drops(&mut self) -> io::Result<()> {
        if let Some(drops) = proc_udp_drops(self.local_addr()?)? {
            self.counters.kernel_drops = self.counters.kernel_drops.max(drops);
        }
        Ok(())
    }

    /// Waits up to the configured timeout for datagrams and returns the batch received (empty on
    /// timeout). GRO-coalesced messages are split back into their datagrams.
    pub fn recv_batch(&mut self, now: Instant) -> io::Result<Batch<'_>> {
        self.datagrams.clear();
        let received = match sys::recv_batch(self.socket.as_raw_fd(), &mut self.buffers, &mut self.meta) {
            Ok(n) => n,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(error) => return Err(error),
        };
        for (index, meta) in self.meta[..received].iter().enumerate() {
            if let Some(drops) = meta.drops {
                self.counters.kernel_drops = self.counters.kernel_drops.max(u64::from(drops));
            }
            if meta.truncated {
                self.counters.truncated += 1;
                continue;
            }
            let segment = meta.segment.unwrap_or(meta.len).max(1);
            let mut offset = 0;
            while offset < meta.len {
                let len = segment.min(meta.len - offset);
                self.datagrams.push((index, offset, len));
                self.counters.datagrams += 1;
                self.counters.bytes += len as u64;
                offset += len;
            }
        }
        if !self.datagrams.is_empty() {
            self.counters.last_datagram = Some(now);
        }
        Ok(Batch { buffers: &self.buffers, datagrams: &self.datagrams })
    }
}

/// The datagrams of one receive batch, borrowed from the receiver's buffers.
pub struct Batch<'a> {
    buffers: &'a [Vec<u8>],
    datagrams: &'a [(usize, usize, usize)],
}

impl<'a> Batch<'a> {
    pub fn len(&self) -> usize {
        self.datagrams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        let buffers = self.buffers;
        self.datagrams.iter().map(move |(index, offset, len)| &buffers[*index][*offset..*offset + *len])
    }
}

/// The drop counter of the UDP socket bound to `local`, from /proc/net/udp (or udp6): what the kernel
/// dropped before any datagram reached our code. `None` when no such socket is listed.
pub fn proc_udp_drops(local: SocketAddr) -> io::Result<Option<u64>> {
    let (path, address) = match local {
        SocketAddr::V4(v4) => {
            ("/proc/net/udp", format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()))
        }
        SocketAddr::V6(v6) => {
            let octets = v6.ip().octets();
            let words: String =
                octets.chunks(4).map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]]))).collect();
            ("/proc/net/udp6", format!("{words}:{:04X}", v6.port()))
        }
    };
    let table = std::fs::read_to_string(path)?;
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&address.as_str()) {
            return Ok(fields.last().and_then(|d| d.parse().ok()));
        }
    }
    Ok(None)
}
