//! The few Linux calls that std and socket2 do not wrap: `sendmmsg` with UDP GSO, `recvmmsg` with
//! UDP GRO, the `SO_RXQ_OVFL` drop counter, `TCP_INFO`, and the allocator's trim and mmap thresholds.
//!
//! With `diode_proto`'s GF(256) kernels, this is the only module of the workspace with `unsafe`.
//! Every block builds the C structures on the stack from slices whose lifetimes outlive the call, and
//! reads back only what the kernel reports it wrote.

#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::RawFd;

/// `SOL_UDP` options (linux/udp.h); not exported by the libc crate for glibc targets.
const SOL_UDP: libc::c_int = 17;
const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// `SO_RXQ_OVFL` (asm-generic/socket.h).
const SO_RXQ_OVFL: libc::c_int = 40;

/// Most messages handed to one `sendmmsg`/`recvmmsg` call.
pub const MAX_MESSAGES: usize = 64;
/// Most datagrams in one `send_batch` call.
pub const MAX_SEND_DATAGRAMS: usize = 512;
/// The kernel's limit on segments in one GSO send (UDP_MAX_SEGMENTS).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// A GSO send must fit one UDP datagram before segmentation.
const MAX_GSO_BYTES: usize = 65_000;
const CMSG_SPACE: usize = 64;

fn set_int_option(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: `value` lives across the call and its size is passed with it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to report the socket's receive-queue drop counter with every datagram.
pub fn enable_rxq_overflow(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, libc::SOL_SOCKET, SO_RXQ_OVFL, 1)
}

/// Asks the kernel to coalesce received datagrams of one flow (UDP GRO).
pub fn enable_gro(fd: RawFd) -> io::Result<()> {
    set_int_option(fd, SOL_UDP, UDP_GRO, 1)
}

/// Forces a receive buffer beyond `net.core.rmem_max` (needs CAP_NET_ADMIN).
pub fn force_recv_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes.min(i32::MAX as usize) as libc::c_int)
}

/// Forces a send buffer beyond `net.core.wmem_max` (needs CAP_NET_ADMIN).
pub fn force_send_buffer(fd: RawFd, bytes: usize) -> io::Result<()> {
    set_int_option(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, bytes.min(i32::MAX as usize) as libc::c_int)
}

/// A datagram as the kernel gathers it: a head and a body that need not be contiguous, so a sender can
/// send a header it built beside a payload that stays where it was made instead of copying both into
/// one buffer (that copy was 5 % of blue-tx at MTU 1500).
pub trait Gather {
    fn parts(&self) -> [&[u8]; 2];

    /// Bytes on the wire (UDP payload), head and body together.
    fn byte_len(&self) -> usize {
        let [head, body] = self.parts();
        head.len() + body.len()
    }
}

impl Gather for &[u8] {
    fn parts(&self) -> [&[u8]; 2] {
        [self, &[]]
    }
}

impl Gather for [&[u8]; 2] {
    fn parts(&self) -> [&[u8]; 2] {
        *self
    }
}

/// Sends `datagrams` on a connected socket with as few syscalls as possible. With `gso`, runs of
/// equal-sized datagrams go out as one GSO message each (the kernel cuts them); without, one message
/// per datagram. Returns how many datagrams the kernel took (a prefix of `datagrams`).
pub fn send_batch<D: Gather>(fd: RawFd, datagrams: &[D], gso: bool) -> io::Result<usize> {
    let datagrams = &datagrams[..datagrams.len().min(MAX_SEND_DATAGRAMS)];
    if datagrams.is_empty() {
        return Ok(0);
    }
    // SAFETY: all-zero is a valid value for these plain C structs (null pointers, zero lengths).
    let mut iovecs: [libc::iovec; 2 * MAX_SEND_DATAGRAMS] = unsafe { zeroed() };
    let mut iovecs_used = 0;
    let mut headers: [libc::mmsghdr; MAX_MESSAGES] = unsafe { zeroed() };
    let mut controls = [[0u64; CMSG_SPACE / 8]; MAX_MESSAGES];
    // Datagrams covered by each message, to translate the kernel's message count back.
    let mut covered = [0usize; MAX_MESSAGES];
    let mut messages = 0;
    let mut next = 0;
    while next < datagrams.len() && messages < MAX_MESSAGES {
        let segment = datagrams[next].byte_len();
        let mut count = 1;
        if gso {
            let mut bytes = segment;
            while next + count < datagrams.len()
                && count < MAX_GSO_SEGMENTS
                && bytes + datagrams[next + count].byte_len() <= MAX_GSO_BYTES
                && datagrams[next + count].byte_len() == segment
            {
                bytes += segment;
                count += 1;
            }
            // A shorter datagram may end a GSO run (the kernel allows a short last segment).
            if next + count < datagrams.len()
                && count < MAX_GSO_SEGMENTS
                && datagrams[next + count].byte_len() < segment
                && bytes + datagrams[next + count].byte_len() <= MAX_GSO_BYTES
                && count > 1
            {
                count += 1;
            }
        }
        let first_iovec = iovecs_used;
        for part in datagrams[next..next + count].iter().flat_map(Gather::parts).filter(|p| !p.is_empty()) {
            iovecs[iovecs_used] = libc::iovec { iov_base: part.as_ptr() as *mut libc::c_void, iov_len: part.len() };
            iovecs_used += 1;
        }
        let header = &mut headers[messages].msg_hdr;
        header.msg_iov = iovecs[first_iovec..].as_mut_ptr();
        header.msg_iovlen = iovecs_used - first_iovec;
        if count > 1 {
            let control = &mut controls[messages];
            header.msg_control = control.as_mut_ptr().cast();
            // SAFETY: CMSG_SPACE of a u16 is far below the 64 bytes of `control`.
            header.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
            // SAFETY: msg_control points at `control`, sized above; CMSG_FIRSTHDR is non-null for a
            // control buffer at least one header long.
            unsafe {
                let cmsg = libc::CMSG_FIRSTHDR(header);
                (*cmsg).cmsg_level = SOL_UDP;
                (*cmsg).cmsg_type = UDP_SEGMENT;
                (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
            }
        }
        covered[messages] = count;
        messages += 1;
        next += count;
    }
    // SAFETY: `headers[..messages]` point into `iovecs` and `controls`, which outlive the call, and
    // the iovecs point into `datagrams`, borrowed for the whole function.
    let sent = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), messages as libc::c_uint, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(covered[..sent as usize].iter().sum())
}

/// Sends one datagram with one syscall (the unbatched baseline).
pub fn send_one(fd: RawFd, datagram: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length describe `datagram`, borrowed for the call.
    let rc = unsafe { libc::send(fd, datagram.as_ptr().cast(), datagram.len(), 0) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// One received message: its length, the GRO segment size when the kernel coalesced several
/// datagrams, and the socket's drop counter when the kernel reported it.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecvMeta {
    pub len: usize,
    pub segment: Option<usize>,
    pub drops: Option<u32>,
    pub truncated: bool,
}

/// Receives up to `buffers.len()` messages, waiting for the first (up to the socket's read timeout)
/// but not for the rest. Fills `meta[i]` for every message received and returns their number.
pub fn recv_batch(fd: RawFd, buffers: &mut [Vec<u8>], meta: &mut [RecvMeta]) -> io::Result<usize> {
    let count = buffers.len().min(meta.len()).min(MAX_MESSAGES);
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut iovecs: [libc::iovec; MAX_MESSAGES] = unsafe { zeroed() };
    let mut headers: [libc::mmsghdr; MAX_MESSAGES] = unsafe { zeroed() };
    let mut controls = [[0u64; CMSG_SPACE / 8]; MAX_MESSAGES];
    for i in 0..count {
        iovecs[i] = libc::iovec { iov_base: buffers[i].as_mut_ptr().cast(), iov_len: buffers[i].len() };
        let header = &mut headers[i].msg_hdr;
        header.msg_iov = &mut iovecs[i];
        header.msg_iovlen = 1;
        header.msg_control = controls[i].as_mut_ptr().cast();
        header.msg_controllen = CMSG_SPACE;
    }
    // SAFETY: every header points at an iovec over a live buffer and a live control array; the
    // timeout is null (the socket's SO_RCVTIMEO applies to the first message).
    let received = unsafe {
        libc::recvmmsg(fd, headers.as_mut_ptr(), count as libc::c_uint, libc::MSG_WAITFORONE, std::ptr::null_mut())
    };
    if received < 0 {
        return Err(io::Error::last_os_error());
    }
    let received = received as usize;
    for i in 0..received {
        let header = &headers[i].msg_hdr;
        let mut entry = RecvMeta {
            len: headers[i].msg_len as usize,
            truncated: header.msg_flags & libc::MSG_TRUNC != 0,
            ..RecvMeta::default()
        };
        // SAFETY: the kernel set msg_controllen to what it wrote into the control buffer; the CMSG
        // macros walk only within it, and each value is read unaligned from its data area.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(header);
            while !cmsg.is_null() {
                let data = libc::CMSG_DATA(cmsg);
                match ((*cmsg).cmsg_level, (*cmsg).cmsg_type) {
                    (libc::SOL_SOCKET, SO_RXQ_OVFL) => entry.drops = Some(std::ptr::read_unaligned(data.cast::<u32>())),
                    (SOL_UDP, UDP_GRO) => {
                        let size = std::ptr::read_unaligned(data.cast::<libc::c_int>());
                        if size > 0 {
                            entry.segment = Some(size as usize);
                        }
                    }
                    _ => {}
                }
                cmsg = libc::CMSG_NXTHDR(header, cmsg);
            }
        }
        meta[i] = entry;
    }
    Ok(received)
}

/// Sends `payload` (an ARP packet) on interface `ifindex` to the Ethernet broadcast address through a
/// packet socket; the kernel adds the Ethernet header.
pub fn send_arp_broadcast(fd: RawFd, ifindex: u32, payload: &[u8]) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_ll; the fields set below describe the broadcast target.
    let mut target: libc::sockaddr_ll = unsafe { zeroed() };
    target.sll_family = libc::AF_PACKET as u16;
    target.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
    target.sll_ifindex = ifindex as i32;
    target.sll_halen = 6;
    target.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: `payload` and `target` outlive the call and their sizes are passed with them.
    let rc = unsafe {
        libc::sendto(
            fd,
            payload.as_ptr().cast(),
            payload.len(),
            0,
            (&target as *const libc::sockaddr_ll).cast(),
            size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Binds a packet socket to one interface (so it sees only that interface's frames).
pub fn bind_packet(fd: RawFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut address: libc::sockaddr_ll = unsafe { zeroed() };
    address.sll_family = libc::AF_PACKET as u16;
    address.sll_protocol = protocol.to_be();
    address.sll_ifindex = ifindex as i32;
    // SAFETY: `address` outlives the call and its size is passed with it.
    let rc = unsafe {
        libc::bind(fd, (&address as *const libc::sockaddr_ll).cast(), size_of::<libc::sockaddr_ll>() as libc::socklen_t)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The index of a network interface by name.
pub fn interface_index(name: &str) -> io::Result<u32> {
    let name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(index)
    }
}

/// Tells glibc's allocator to keep up to `bytes` of freed memory instead of handing it back to the
/// kernel at once, and to serve allocations below `bytes` from the heap rather than from fresh
/// mappings. The data path allocates and frees a block-sized buffer for every block; with glibc's
/// defaults (128 KiB) the heap shrinks and regrows all the time, and every regrowth costs a page
/// fault and the kernel's zeroing per 4 KiB page: a tenth of red-rx's CPU at MTU 1500. Memory stays
/// bounded by what the daemon had in use at its peak. Returns false where the allocator refused or
/// is not glibc's.
pub fn keep_freed_memory(bytes: usize) -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt only stores the two tunables; it touches no memory of ours.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, value) == 1 && libc::mallopt(libc::M_MMAP_THRESHOLD, value) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = bytes;
        false
    }
}

/// Asks the kernel to wake the calling thread from its sleeps as close to the asked time as it can
/// (timer slack of 1 ns instead of the default 50 us). A pacer then sleeps through nearly all of
/// each wait instead of spinning to stay accurate. Returns false if the kernel refused.
pub fn tighten_timer_slack() -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes one integer and changes only this thread's timer slack.
    unsafe {
        libc::prctl(
            libc::PR_SET_TIMERSLACK,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        ) == 0
    }
}

/// Raises the calling thread's scheduling priority to `nice` (negative is more urgent). On Linux the
/// nice value belongs to each thread, and `setpriority(PRIO_PROCESS, 0)` sets the caller's. Needs
/// CAP_SYS_NICE to go below 0; the error says when the process lacks it.
pub fn raise_thread_priority(nice: i32) -> io::Result<()> {
    // SAFETY: setpriority takes plain integers and changes only the calling thread's nice value.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own_nice() -> i32 {
        // SAFETY: getpriority takes plain integers and reads the calling thread's nice value.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn thread_priority_belongs_to_the_calling_thread() {
        let before = own_nice();
        // Lowering the priority needs no privilege; it shows whose value setpriority changed.
        let inside =
            std::thread::spawn(|| raise_thread_priority(own_nice() + 3).map(|()| own_nice())).join().expect("thread");
        assert_eq!(inside.expect("lowering is always allowed"), before + 3);
        assert_eq!(own_nice(), before, "the other threads keep their priority");
    }
}

/// Where a TCP connection's sending side stands, from the kernel's `TCP_INFO`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpSendState {
    /// Bytes or our FIN are not acknowledged yet.
    InFlight,
    /// Our FIN was acknowledged, so every byte before it was: the peer's kernel has them all.
    Acknowledged,
    /// The connection is closed (after a reset, or both sides' FINs): ask the socket's error.
    Closed,
}

/// Reads `TCP_INFO` of a connected TCP socket.
pub fn tcp_send_state(fd: RawFd) -> io::Result<TcpSendState> {
    // SAFETY: `tcp_info` is plain integers, for which all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { zeroed() };
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes (the structure's size) into `info`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, (&mut info as *mut libc::tcp_info).cast(), &mut len)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // linux/tcp.h: TCP_FIN_WAIT2 = 5, TCP_TIME_WAIT = 6, TCP_CLOSE = 7.
    Ok(match info.tcpi_state {
        5 | 6 => TcpSendState::Acknowledged,
        7 => TcpSendState::Closed,
        _ => TcpSendState::InFlight,
    })
}
