//! The test's own side of the fiber: a red-rx started alone, and a raw sender built from the protocol
//! code that sends what a faulty or hostile BLUE could (any names, any sizes, old sessions, floods).

use crate::error::{IoContext, LabError, LabResult};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use diode_proto::beacon::SenderState;
use diode_proto::{FecParams, FiberMode, LinkAuth, Sender, SenderConfig, StreamMeta};

use crate::bins::binaries;
use crate::lab::{free_port, loopback_net, Lab, Proc};

/// A red-rx with no BLUE: its fiber addresses and status file.
pub struct LoneRed {
    pub red: Proc,
    pub fibers: Vec<SocketAddr>,
    pub status: PathBuf,
    pub log: PathBuf,
}

impl LoneRed {
    /// Starts red-rx with `sections` (channels, receiver limits) after its node and fibers.
    pub fn start(dir: &Path, sections: &str) -> LabResult<LoneRed> {
        let bins = binaries()?;
        let net = loopback_net();
        let ip = Lab::ip(net, 2);
        let fibers: Vec<SocketAddr> =
            (0..2).map(|_| free_port(ip).map(|p| SocketAddr::from((ip, p)))).collect::<Result<_, _>>()?;
        let status = dir.join("red-status.json");
        let mut toml = format!(
            "[node]\nname = \"red1\"\nstatus_file = \"{}\"\nstate_dir = \"{}\"\n",
            status.display(),
            dir.join("red-state").display()
        );
        for fiber in &fibers {
            toml += &format!("[[fiber]]\nlisten = \"{fiber}\"\n");
        }
        toml += sections;
        let config = dir.join("red.toml");
        std::fs::write(&config, toml).doing(|| format!("writing {}", config.display()))?;
        let log = config.with_extension("log");
        let red = Proc::run_daemon(&bins.red_rx, &config)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !status.exists() {
            if Instant::now() > deadline {
                return Err(LabError::unexpected(format!(
                    "red-rx did not start: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(LoneRed { red, fibers, status, log })
    }

    pub fn status(&self) -> serde_json::Value {
        Lab::status(&self.status)
    }

    /// The process's resident set now (VmRSS), in MB.
    pub fn rss_mb(&self) -> f64 {
        proc_kb(self.red.pid().unwrap_or(0), "VmRSS:") / 1024.0
    }
}

/// A field of /proc/PID/status in kB (NaN when unreadable).
pub fn proc_kb(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(f64::NAN)
}

/// A sender of raw protocol datagrams to a RED's fibers, paced so the kernel keeps them.
pub struct RawSender {
    pub sender: Sender,
    socket: UdpSocket,
    to: Vec<SocketAddr>,
    sent: u64,
    /// Every datagram sent, when recording (for replays).
    pub recorded: Option<Vec<Vec<u8>>>,
}

impl RawSender {
    /// A sender with a legacy (random, unstamped) session id and no link key.
    pub fn new(to: &[SocketAddr], session: u64, epoch: u32) -> LabResult<RawSender> {
        RawSender::with(to, session, false, epoch, LinkAuth::none())
    }

    /// A sender as blue-tx makes them: the session id stamped with `start_unix_ms`.
    pub fn stamped(to: &[SocketAddr], start_unix_ms: u64, epoch: u32, auth: LinkAuth) -> LabResult<RawSender> {
        let session = diode_proto::header::stamped_session(start_unix_ms, 0x5eed);
        RawSender::with(to, session, true, epoch, auth)
    }

    fn with(to: &[SocketAddr], session: u64, stamped: bool, epoch: u32, auth: LinkAuth) -> LabResult<RawSender> {
        let sender = Sender::new(SenderConfig {
            session,
            stamped,
            epoch,
            fec: FecParams::for_mtu(1500),
            auth,
            fiber_mode: FiberMode::Mirror,
            config_fingerprint: [0; 16],
            beacon_interval_ms: 100,
        });
        let socket = UdpSocket::bind("127.0.0.1:0").at("binding the raw sender")?;
        Ok(RawSender { sender, socket, to: to.to_vec(), sent: 0, recorded: None })
    }

    /// Sends one datagram to every fiber.
    pub fn send_raw(&mut self, datagram: &[u8]) {
        for target in &self.to {
            let _ = self.socket.send_to(datagram, target);
        }
        self.sent += 1;
        if self.sent.is_multiple_of(64) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends a beacon announcing what was sent so far.
    pub fn beacon(&mut self) {
        let mut datagram = Vec::new();
        self.sender.beacon(self.sent * 1000, SenderState::Active, &mut datagram);
        self.send_raw(&datagram);
        if let Some(recorded) = &mut self.recorded {
            recorded.push(datagram);
        }
    }

    /// Sends every sealed block's datagrams, then a few beacons so the receiver knows the tail.
    pub fn flush(&mut self) {
        self.sender.flush();
        self.beacon();
        let mut datagram = Vec::new();
        while self.sender.poll_datagram(true, &mut datagram) {
            let bytes = std::mem::take(&mut datagram);
            self.send_raw(&bytes);
            if let Some(recorded) = &mut self.recorded {
                recorded.push(bytes);
            }
        }
        for _ in 0..3 {
            self.beacon();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Queues one whole file on `channel` (flush to send it).
    pub fn file(&mut self, channel: u16, stream: u64, name: &str, bytes: &[u8], id: u8) -> LabResult<()> {
        let builder = self.sender.channel(channel);
        let meta = StreamMeta {
            name: name.to_string(),
            size: Some(bytes.len() as u64),
            file_id: Some([id; 16]),
            ..StreamMeta::default()
        };
        builder.open(stream, meta)?;
        builder.data(stream, bytes)?;
        builder.end(stream)?;
        Ok(())
    }

    /// Queues one whole TCP-like stream on `channel` (no name, no size, no file id).
    pub fn stream(&mut self, channel: u16, stream: u64, bytes: &[u8]) -> LabResult<()> {
        let builder = self.sender.channel(channel);
        builder.open(stream, StreamMeta { peer: "203.0.113.9:4000".into(), ..StreamMeta::default() })?;
        builder.data(stream, bytes)?;
        builder.end(stream)?;
        Ok(())
    }
}
