//! A loopback lab: blue-tx, red-rx and one fiber-sim per fiber as real processes, with in-process TCP
//! and UDP sources and sinks that record exactly what crossed.
//!
//! Every lab takes its own 127.x.y.0/24 corner of the loopback range, so labs running in parallel never
//! collide on ports, and cleans up its processes (by PID, SIGTERM then SIGKILL) and its temporary
//! folder when dropped, whether the run succeeded, failed or panicked.

use crate::error::{IoContext, LabError, LabResult};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bins::{binaries, Binaries};

/// Processes and folders to clean up if the lab is interrupted (Ctrl-C, SIGTERM), when destructors
/// do not run.
static INTERRUPT_CLEANUP: Mutex<(Vec<u32>, Vec<PathBuf>)> = Mutex::new((Vec::new(), Vec::new()));

/// On SIGINT or SIGTERM: stop every process the lab started (by PID), remove its folders, exit 130.
pub fn install_interrupt_cleanup() -> LabResult<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .at("cannot handle signals")?;
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let (pids, dirs) = INTERRUPT_CLEANUP.lock().map(|g| g.clone()).unwrap_or_default();
            for pid in &pids {
                send_signal(*pid, libc::SIGTERM);
            }
            std::thread::sleep(Duration::from_millis(500));
            for dir in &dirs {
                let _ = std::fs::remove_dir_all(dir);
            }
            eprintln!("diode-lab: interrupted; stopped {} processes and removed the lab's files", pids.len());
            std::process::exit(130);
        }
    });
    Ok(())
}

/// Sends `signal` to `pid`, which must be a child this lab started and has not yet reaped.
fn send_signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) takes plain integers; the PID is one of this lab's own children.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

fn track_pid(pid: u32, add: bool) {
    if let Ok(mut guard) = INTERRUPT_CLEANUP.lock() {
        guard.0.retain(|p| *p != pid);
        if add {
            guard.0.push(pid);
        }
    }
}

fn track_dir(dir: &Path, add: bool) {
    if let Ok(mut guard) = INTERRUPT_CLEANUP.lock() {
        guard.1.retain(|d| d != dir);
        if add {
            guard.1.push(dir.to_path_buf());
        }
    }
}

/// A process the lab started; stopped (SIGTERM, then SIGKILL after a grace time) when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path) -> LabResult<Proc> {
        // Appended, so a restarted process adds to its predecessor's log instead of erasing it.
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .doing(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .doing(|| format!("cannot start {name} ({})", program.display()))?;
        track_pid(child.id(), true);
        Ok(Proc { name: name.to_string(), child: Some(child) })
    }

    /// Runs a daemon (`blue-tx` or `red-rx`) with `config`, logging beside it (`x.toml` → `x.log`).
    pub fn run_daemon(program: &Path, config: &Path) -> LabResult<Proc> {
        let name = config.file_stem().map_or_else(|| "daemon".into(), |s| s.to_string_lossy().to_string());
        Proc::spawn(
            &name,
            program,
            &["run".into(), "--config".into(), config.display().to_string()],
            &config.with_extension("log"),
        )
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid() {
            send_signal(pid, signal);
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Asks the process to stop and waits up to `grace` before killing it. Returns whether it exited
    /// cleanly (status 0) on its own.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        track_pid(child.id(), false);
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        self.child = Some(child);
        self.signal(libc::SIGTERM);
        let Some(mut child) = self.child.take() else { return false };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// Kills the process at once (SIGKILL), as a power cut would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            track_pid(child.id(), false);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// A temporary folder removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> LabResult<TempDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let unique = format!("{prefix}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst));
        let path = std::env::temp_dir().join(unique);
        std::fs::create_dir_all(&path).doing(|| format!("cannot create {}", path.display()))?;
        track_dir(&path, true);
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        track_dir(&self.0, false);
        // DIODE_LAB_KEEP=1 keeps configurations, logs and status files for a post-mortem.
        if std::env::var_os("DIODE_LAB_KEEP").is_some() {
            eprintln!("diode-lab: kept {}", self.0.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A /24 of loopback addresses of the lab's own, claimed for the rest of this process's life with a
/// lock file under the temporary folder, so no other lab on the machine (another test binary, a
/// `diode-lab` run, a test harness that outlived its parent) can be on the same addresses and ports.
/// The process id only picks where the search starts; a claim dies with its process.
pub fn loopback_net() -> [u8; 3] {
    static CLAIMED: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // 127.64.0.0 to 127.127.255.0: 16,384 nets, none of them 127.0.0.x.
    const NETS: u64 = 1 << 14;
    let folder = std::env::temp_dir().join("diode-lab-nets");
    let _ = std::fs::create_dir_all(&folder);
    let start = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9) % NETS;
    let net_of = |n: u64| [127, 0x40 | (n >> 8) as u8, (n & 0xff) as u8];
    for _ in 0..NETS {
        let n = (start + NEXT.fetch_add(1, Ordering::SeqCst)) % NETS;
        let net = net_of(n);
        let path = folder.join(format!("{}.{}.{}", net[0], net[1], net[2]));
        let Ok(file) = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path) else {
            continue;
        };
        if try_lock_exclusive(&file) {
            CLAIMED.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(file);
            return net;
        }
    }
    // Every net claimed (16,384 labs at once): share one rather than fail; ports still differ.
    net_of(start)
}

/// flock(2) without waiting: true when this process now holds the file's exclusive lock.
fn try_lock_exclusive(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) takes a descriptor this function borrows for the call, and plain flags.
    #[allow(unsafe_code)]
    let result = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    result == 0
}

/// A free port on `ip` for TCP or UDP (the same port is then free for both on loopback in practice).
/// The kernel may offer a port it just offered again once the probe closed, so the ports this process
/// already handed out are skipped: two listeners of one lab never get the same one.
pub fn free_port(ip: Ipv4Addr) -> LabResult<u16> {
    static HANDED_OUT: Mutex<Vec<(Ipv4Addr, u16)>> = Mutex::new(Vec::new());
    for _ in 0..100 {
        let tcp = TcpListener::bind((ip, 0)).doing(|| format!("cannot bind {ip}"))?;
        let port = tcp.local_addr().doing(|| format!("address of a listener on {ip}"))?.port();
        drop(tcp);
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if !handed_out.contains(&(ip, port)) {
            handed_out.push((ip, port));
            return Ok(port);
        }
    }
    Err(LabError::unexpected(format!("no fresh free port on {ip}")))
}

/// One stream as the TCP sink received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// The stream's id: its first 8 bytes.
    pub id: u64,
    pub len: u64,
    pub hash: [u8; 32],
    /// Ended with a clean close (FIN); false when it was reset.
    pub clean: bool,
}

/// A TCP destination that records every connection: id, length, BLAKE3, and how it ended.
pub struct TcpSink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpSink {
    /// Listens on `addr`; with port 0 the kernel picks a free one at the bind itself, which no other
    /// socket can take in between (`addr` then holds the port it chose).
    pub fn start(addr: SocketAddr) -> LabResult<TcpSink> {
        let listener = TcpListener::bind(addr).doing(|| format!("TCP sink cannot listen on {addr}"))?;
        let addr = listener.local_addr().doing(|| format!("TCP sink address on {addr}"))?;
        listener.set_nonblocking(true).at("TCP sink non-blocking")?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink_received, sink_stop) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !sink_stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((connection, _)) => {
                        let received = Arc::clone(&sink_received);
                        std::thread::spawn(move || {
                            let record = read_stream(connection);
                            if let Ok(mut all) = received.lock() {
                                all.push(record);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(TcpSink { addr, received, stop, thread: Some(thread) })
    }

    /// Streams received so far (connections that carried data; health checks carry none).
    pub fn streams(&self) -> usize {
        self.received.lock().map(|r| r.iter().filter(|s| s.len > 0).count()).unwrap_or(0)
    }

    /// Stops accepting: the port closes, as when the destination server dies.
    pub fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn read_stream(mut connection: TcpStream) -> Received {
    let _ = connection.set_read_timeout(Some(Duration::from_secs(120)));
    let mut hasher = blake3::Hasher::new();
    let mut head = Vec::with_capacity(8);
    let mut len = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    let clean = loop {
        match connection.read(&mut buffer) {
            Ok(0) => break true,
            Ok(n) => {
                if head.len() < 8 {
                    let take = (8 - head.len()).min(n);
                    head.extend_from_slice(&buffer[..take]);
                }
                hasher.update(&buffer[..n]);
                len += n as u64;
            }
            // A signal is not the peer resetting the stream.
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        }
    };
    let mut id = [0u8; 8];
    id[..head.len()].copy_from_slice(&head);
    Received { id: u64::from_be_bytes(id), len, hash: *hasher.finalize().as_bytes(), clean }
}

/// Deterministic stream content: 8 bytes of id, then pseudo-random bytes.
pub fn stream_content(id: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len.max(8));
    out.extend_from_slice(&id.to_be_bytes());
    let mut state = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len.max(8));
    out
}

/// Sends one stream to a TCP source and closes it cleanly. Returns its length and BLAKE3.
pub fn send_stream(addr: SocketAddr, id: u64, len: usize) -> LabResult<(u64, [u8; 32])> {
    let content = stream_content(id, len);
    let mut connection = connect_retry(addr, Duration::from_secs(10))?;
    connection.write_all(&content).doing(|| format!("stream {id}: write"))?;
    connection.shutdown(Shutdown::Write).doing(|| format!("stream {id}: shutdown"))?;
    Ok((content.len() as u64, *blake3::hash(&content).as_bytes()))
}

/// Connects, retrying while the listener is not up yet.
pub fn connect_retry(addr: SocketAddr, limit: Duration) -> LabResult<TcpStream> {
    let deadline = Instant::now() + limit;
    loop {
        match TcpStream::connect(addr) {
            Ok(connection) => return Ok(connection),
            Err(error) if Instant::now() >= deadline => {
                return Err(LabError::unexpected(format!("cannot connect to {addr}: {error}")))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// A UDP destination that keeps what it receives.
pub struct UdpSink {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpSink {
    /// Receives on `addr`; with `group`, joins that multicast group on 127.0.0.1 (loopback).
    pub fn start(addr: SocketAddr, group: Option<Ipv4Addr>) -> LabResult<UdpSink> {
        let socket = match group {
            Some(group) => {
                let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, addr.port())).at("UDP sink")?;
                socket
                    .join_multicast_v4(&group, &Ipv4Addr::LOCALHOST)
                    .doing(|| format!("UDP sink cannot join {group}"))?;
                socket
            }
            None => UdpSocket::bind(addr).doing(|| format!("UDP sink cannot bind {addr}"))?,
        };
        socket.set_read_timeout(Some(Duration::from_millis(20))).at("UDP sink read timeout")?;
        // RED releases a decoded block's datagrams at once: a destination with the default buffer would
        // drop some of them, and the lab must count only the diode's losses.
        // A shortfall (not root) only makes the lab's own losses possible, which the tests would show.
        let _ = hw::fiber::grow_recv_buffer(&socket2::SockRef::from(&socket), 16 << 20);
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sink_received, sink_stop) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buffer = vec![0u8; 65_536];
            while !sink_stop.load(Ordering::SeqCst) {
                if let Ok(n) = socket.recv(&mut buffer) {
                    if let Ok(mut all) = sink_received.lock() {
                        all.push(buffer[..n].to_vec());
                    }
                }
            }
        });
        Ok(UdpSink { addr, received, stop, thread: Some(thread) })
    }

    pub fn count(&self) -> usize {
        self.received.lock().map(|r| r.len()).unwrap_or(0)
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the link between the two daemons does.
#[derive(Clone, Debug)]
pub struct LinkPlan {
    pub loss_percent: f64,
    /// Gilbert-Elliott (enter %, leave %) burst loss, when set.
    pub burst: Option<(f64, f64)>,
    pub repair_percent: f64,
    pub rate_mbps: f64,
    pub seed: u64,
    /// Fiber MTU the symbol size is derived from.
    pub mtu: usize,
    /// "mirror" or "stripe".
    pub mode: &'static str,
    /// BLUE sends straight to RED, without fiber-sim processes (no loss possible): for benchmarks.
    pub direct: bool,
}

impl Default for LinkPlan {
    fn default() -> LinkPlan {
        LinkPlan {
            loss_percent: 0.0,
            burst: None,
            repair_percent: 5.0,
            rate_mbps: 1000.0,
            seed: 1,
            mtu: 1500,
            mode: "mirror",
            direct: false,
        }
    }
}

/// A channel of the lab: its BLUE listen address and its RED destinations (files and vault channels
/// give their folders in the extra lines; a files channel's `listen` is not used).
#[derive(Clone, Debug)]
pub struct ChannelPlan {
    pub number: u16,
    pub kind: &'static str,
    pub name: String,
    pub listen: SocketAddr,
    pub multicast_group: Option<Ipv4Addr>,
    pub destinations: Vec<SocketAddr>,
    /// Extra TOML lines for the RED channel (health, mode).
    pub red_extra: String,
    /// Extra TOML lines for the BLUE channel (max_sessions, share, flush_ms).
    pub blue_extra: String,
}

/// Whole sections appended to each daemon's configuration.
#[derive(Clone, Debug, Default)]
pub struct LabExtra {
    pub blue: String,
    pub red: String,
}

/// A running BLUE → fiber-sim ×2 → RED topology on loopback.
pub struct Lab {
    pub dir: TempDir,
    pub net: [u8; 3],
    pub blue: Proc,
    pub red: Proc,
    pub fibers: Vec<Proc>,
    pub blue_status: PathBuf,
    pub red_status: PathBuf,
    pub bins: Binaries,
}

impl Lab {
    /// An address of this lab's /24 (host part `host`).
    pub fn ip(net: [u8; 3], host: u8) -> Ipv4Addr {
        Ipv4Addr::new(net[0], net[1], net[2], host)
    }

    /// Writes the configurations and starts fiber-sims, red-rx and blue-tx; returns once both daemons
    /// report their status (they are listening).
    pub fn start(
        net: [u8; 3],
        link: &LinkPlan,
        channels: &[ChannelPlan],
        red_channels_override: Option<&[ChannelPlan]>,
    ) -> LabResult<Lab> {
        Lab::start_with(net, link, channels, red_channels_override, &LabExtra::default())
    }

    /// [`Lab::start`] with extra configuration sections (`[management]`, say) for each daemon.
    pub fn start_with(
        net: [u8; 3],
        link: &LinkPlan,
        channels: &[ChannelPlan],
        red_channels_override: Option<&[ChannelPlan]>,
        extra: &LabExtra,
    ) -> LabResult<Lab> {
        let bins = binaries()?;
        let dir = TempDir::new("diode-lab")?;
        let blue_ip = Lab::ip(net, 1);
        let red_ip = Lab::ip(net, 2);
        let sim_ip = Lab::ip(net, 3);
        let mut fibers = Vec::new();
        let mut blue_fibers = String::new();
        let mut red_fibers = String::new();
        for index in 0..2u16 {
            let red_port = free_port(red_ip)?;
            red_fibers += &format!("[[fiber]]\nlisten = \"{red_ip}:{red_port}\"\n");
            if link.direct {
                blue_fibers += &format!("[[fiber]]\nremote = \"{red_ip}:{red_port}\"\n");
                continue;
            }
            let sim_port = free_port(sim_ip)?;
            blue_fibers += &format!("[[fiber]]\nremote = \"{sim_ip}:{sim_port}\"\n");
            let mut args = vec![
                "--listen".to_string(),
                format!("{sim_ip}:{sim_port}"),
                "--forward".to_string(),
                format!("{red_ip}:{red_port}"),
                "--loss".to_string(),
                link.loss_percent.to_string(),
                "--seed".to_string(),
                (link.seed + u64::from(index)).to_string(),
                "--stats-json".to_string(),
                dir.path().join(format!("fiber{}.json", index + 1)).display().to_string(),
            ];
            if let Some((enter, leave)) = link.burst {
                args.extend(["--ge-p".to_string(), enter.to_string(), "--ge-r".to_string(), leave.to_string()]);
            }
            let log = dir.path().join(format!("fiber{}.log", index + 1));
            fibers.push(Proc::spawn(&format!("fiber-sim {}", index + 1), &bins.fiber_sim, &args, &log)?);
        }
        let blue_status = dir.path().join("blue-status.json");
        let red_status = dir.path().join("red-status.json");
        let mut blue_toml = format!(
            "[node]\nname = \"blue1\"\nstatus_file = \"{}\"\n\n[fec]\nrepair_percent = {}\nmtu = {}\n\n[link]\nrate_mbps = {}\nmode = \"{}\"\n\n{blue_fibers}\n",
            blue_status.display(),
            link.repair_percent,
            link.mtu,
            link.rate_mbps,
            link.mode
        );
        for channel in channels {
            blue_toml += &format!(
                "[[channel]]\nnumber = {}\nkind = \"{}\"\nname = \"{}\"\n",
                channel.number, channel.kind, channel.name
            );
            // A files channel reads its drop folder (in `blue_extra`) and listens on nothing.
            if channel.kind != "files" {
                blue_toml += &format!("listen = \"{}\"\n", channel.listen);
            }
            if let Some(group) = channel.multicast_group {
                blue_toml += &format!("multicast_group = \"{group}\"\nmulticast_interface = \"127.0.0.1\"\n");
            }
            blue_toml += &channel.blue_extra;
            blue_toml += "\n";
        }
        let mut red_toml = format!(
            "[node]\nname = \"red1\"\nstatus_file = \"{}\"\nstate_dir = \"{}\"\n\n{red_fibers}\n",
            red_status.display(),
            red_status.with_file_name("red-state").display()
        );
        for channel in red_channels_override.unwrap_or(channels) {
            red_toml += &format!(
                "[[channel]]\nnumber = {}\nkind = \"{}\"\nname = \"{}\"\n{}\n",
                channel.number, channel.kind, channel.name, channel.red_extra
            );
            for destination in &channel.destinations {
                red_toml += &format!("[[channel.destination]]\naddress = \"{destination}\"\n");
            }
            red_toml += "\n";
        }
        blue_toml += &extra.blue;
        red_toml += &extra.red;
        let blue_config = dir.path().join("blue.toml");
        let red_config = dir.path().join("red.toml");
        std::fs::write(&blue_config, blue_toml).doing(|| format!("writing {}", blue_config.display()))?;
        std::fs::write(&red_config, red_toml).doing(|| format!("writing {}", red_config.display()))?;
        let red = Proc::run_daemon(&bins.red_rx, &red_config)?;
        let blue = Proc::run_daemon(&bins.blue_tx, &blue_config)?;
        let lab = Lab { dir, net, blue, red, fibers, blue_status, red_status, bins };
        lab.wait_for_status(Duration::from_secs(20))?;
        let _ = blue_ip;
        Ok(lab)
    }

    fn wait_for_status(&self, limit: Duration) -> LabResult<()> {
        let deadline = Instant::now() + limit;
        while !(self.blue_status.exists() && self.red_status.exists()) {
            if Instant::now() >= deadline {
                return Err(LabError::unexpected(format!(
                    "daemons did not start within {limit:?}:\nblue: {}\nred: {}",
                    self.log("blue.log"),
                    self.log("red.log")
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// The last lines of one of the lab's logs.
    pub fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn read_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    pub fn status(path: &Path) -> serde_json::Value {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    pub fn red_status(&self) -> serde_json::Value {
        Lab::status(&self.red_status)
    }

    pub fn blue_status(&self) -> serde_json::Value {
        Lab::status(&self.blue_status)
    }

    /// Starts red-rx again on its configuration (after a kill or a stop) and waits for its status.
    pub fn restart_red(&mut self) -> LabResult<()> {
        let _ = std::fs::remove_file(&self.red_status);
        self.red = Proc::run_daemon(&self.bins.red_rx, &self.dir.path().join("red.toml"))?;
        self.wait_for_status(Duration::from_secs(20))
    }

    /// Stops everything in order (sources first: blue, then the fibers, then red) and reports
    /// whether every process exited cleanly.
    pub fn stop(&mut self) -> bool {
        let mut clean = self.blue.stop(Duration::from_secs(10));
        for fiber in &mut self.fibers {
            clean &= fiber.stop(Duration::from_secs(5));
        }
        clean &= self.red.stop(Duration::from_secs(10));
        clean
    }
}

/// Polls `done` every 50 ms until it holds or `limit` passes; returns whether it held.
pub fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A vault channel (number 3): uploads on this lab's BLUE address, downloads (deletes allowed) on its
/// RED address; returns the plan and the download address.
pub fn vault_channel(net: [u8; 3], spool: &Path, out: &Path, blue_extra: &str) -> LabResult<(ChannelPlan, SocketAddr)> {
    let blue_ip = Lab::ip(net, 1);
    let red_ip = Lab::ip(net, 2);
    let download = SocketAddr::from((red_ip, free_port(red_ip)?));
    let plan = ChannelPlan {
        number: 3,
        kind: "vault",
        name: "vault".into(),
        listen: SocketAddr::from((blue_ip, free_port(blue_ip)?)),
        multicast_group: None,
        destinations: Vec::new(),
        red_extra: format!("folder = \"{}\"\nlisten = \"{download}\"\nallow_delete = true\n", out.display()),
        blue_extra: format!("spool = \"{}\"\n{blue_extra}", spool.display()),
    };
    Ok((plan, download))
}
