//! The fiber simulator as a running forwarder: datagrams in on one UDP socket, through [`LinkSim`],
//! out to another address. Used by the `fiber-sim` binary and, in-process, by tests.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::fiber::{FiberRx, FiberTx, RxConfig, TxConfig};
use crate::sim::{LinkSim, SimConfig, SimStats};

/// Shared switches between the forwarding loop and whoever controls it (a test, signal handlers, the
/// control socket).
#[derive(Debug, Default)]
pub struct Control {
    /// The fiber is pulled while set.
    pub cut: AtomicBool,
    pub stop: AtomicBool,
    /// Write the stats file at the next turn of the loop (SIGUSR1).
    pub dump: AtomicBool,
    /// Flip `cut` at the next turn of the loop (SIGUSR2).
    pub toggle_cut: AtomicBool,
    stats: Mutex<SimStats>,
}

impl Control {
    pub fn stats(&self) -> SimStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Where the forwarder listens and sends, and what it reports.
#[derive(Clone, Debug)]
pub struct ForwarderConfig {
    pub listen: SocketAddr,
    pub forward: SocketAddr,
    /// A UDP socket that accepts the text commands `cut`, `restore` and `stats` (answered with JSON).
    pub control: Option<SocketAddr>,
    pub stats_json: Option<PathBuf>,
    pub sim: SimConfig,
}

/// A forwarder running on its own thread.
pub struct Forwarder {
    control: Arc<Control>,
    local: SocketAddr,
    thread: Option<JoinHandle<io::Result<SimStats>>>,
}

impl Forwarder {
    /// Binds the sockets and starts forwarding. Errors from binding come back here, not later.
    pub fn spawn(config: ForwarderConfig) -> io::Result<Forwarder> {
        Forwarder::spawn_with(config, Arc::new(Control::default()))
    }

    /// As [`Forwarder::spawn`], with switches the caller already holds (signal handlers registered on them).
    pub fn spawn_with(config: ForwarderConfig, control: Arc<Control>) -> io::Result<Forwarder> {
        config.sim.validate().map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut rx_config = RxConfig::new(config.listen);
        rx_config.timeout = Duration::from_millis(1);
        rx_config.gro = false;
        // The simulator must not add losses of its own: take a large buffer where the process may.
        rx_config.force_buffer = true;
        let rx = FiberRx::open(&rx_config).map_err(io::Error::other)?;
        let local = rx.local_addr()?;
        let mut tx_config = TxConfig::new(config.forward);
        tx_config.gso = false;
        tx_config.force_buffer = true;
        let tx = FiberTx::open(&tx_config).map_err(io::Error::other)?;
        let control_socket = match config.control {
            Some(addr) => {
                let socket = UdpSocket::bind(addr)?;
                socket.set_nonblocking(true)?;
                Some(socket)
            }
            None => None,
        };
        let shared = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("fiber-sim".into())
            .spawn(move || run(rx, tx, control_socket, config, &shared))?;
        Ok(Forwarder { control, local, thread: Some(thread) })
    }

    /// The address datagrams are received on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn cut(&self) {
        self.control.cut.store(true, Ordering::SeqCst);
    }

    pub fn restore(&self) {
        self.control.cut.store(false, Ordering::SeqCst);
    }

    pub fn stats(&self) -> SimStats {
        self.control.stats()
    }

    /// Stops the forwarder and returns its final counts.
    pub fn stop(mut self) -> io::Result<SimStats> {
        self.control.stop.store(true, Ordering::SeqCst);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("fiber-sim thread panicked")),
            None => Ok(self.control.stats()),
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes the counts as one JSON object, atomically (temporary file, then rename).
pub fn write_stats(path: &std::path::Path, stats: &SimStats) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(stats).map_err(io::Error::other)?;
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, json)?;
    std::fs::rename(&temporary, path)
}

fn run(
    mut rx: FiberRx,
    mut tx: FiberTx,
    control_socket: Option<UdpSocket>,
    config: ForwarderConfig,
    control: &Control,
) -> io::Result<SimStats> {
    let mut sim = LinkSim::new(config.sim.clone(), Instant::now());
    let mut outgoing: Vec<Vec<u8>> = Vec::with_capacity(64);
    let mut command = [0u8; 64];
    while !control.stop.load(Ordering::SeqCst) {
        if control.toggle_cut.swap(false, Ordering::SeqCst) {
            control.cut.fetch_xor(true, Ordering::SeqCst);
        }
        if let Some(socket) = &control_socket {
            while let Ok((len, peer)) = socket.recv_from(&mut command) {
                let reply = match std::str::from_utf8(&command[..len]).map(str::trim) {
                    Ok("cut") => {
                        control.cut.store(true, Ordering::SeqCst);
                        "ok\n".to_string()
                    }
                    Ok("restore") => {
                        control.cut.store(false, Ordering::SeqCst);
                        "ok\n".to_string()
                    }
                    Ok("stats") => serde_json::to_string(sim.stats()).unwrap_or_default(),
                    _ => "unknown command: use cut, restore or stats\n".to_string(),
                };
                let _ = socket.send_to(reply.as_bytes(), peer);
            }
        }
        sim.set_cut(control.cut.load(Ordering::SeqCst));
        let now = Instant::now();
        for datagram in rx.recv_batch(now)?.iter() {
            sim.push(now, datagram.to_vec());
        }
        let now = Instant::now();
        while let Some(datagram) = sim.pop_ready(now) {
            outgoing.push(datagram);
            if outgoing.len() == outgoing.capacity() {
                flush(&mut tx, &mut outgoing)?;
            }
        }
        flush(&mut tx, &mut outgoing)?;
        if let Ok(mut shared) = control.stats.lock() {
            shared.clone_from(sim.stats());
        }
        if control.dump.swap(false, Ordering::SeqCst) {
            if let Some(path) = &config.stats_json {
                write_stats(path, sim.stats())?;
            }
        }
    }
    // Deliver what is still on the link before stopping, as a fiber would.
    let deadline = Instant::now() + Duration::from_secs(1);
    while sim.in_flight() > 0 && Instant::now() < deadline {
        let now = Instant::now();
        while let Some(datagram) = sim.pop_ready(now) {
            outgoing.push(datagram);
        }
        flush(&mut tx, &mut outgoing)?;
        std::thread::sleep(Duration::from_micros(200));
    }
    let stats = sim.stats().clone();
    if let Ok(mut shared) = control.stats.lock() {
        shared.clone_from(&stats);
    }
    if let Some(path) = &config.stats_json {
        write_stats(path, &stats)?;
    }
    Ok(stats)
}

fn flush(tx: &mut FiberTx, outgoing: &mut Vec<Vec<u8>>) -> io::Result<()> {
    if outgoing.is_empty() {
        return Ok(());
    }
    let slices: Vec<&[u8]> = outgoing.iter().map(Vec::as_slice).collect();
    tx.send_batch(&slices)?;
    outgoing.clear();
    Ok(())
}
