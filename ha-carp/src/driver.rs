//! The thin driver around the state machine: sends and receives adverts, applies actions to the
//! machine (VIP through `hw`), and tells the daemon its role. All protocol decisions stay in
//! [`crate::machine`]; this module only moves bytes and time.
//!
//! Transports: CARP proper (IP protocol 112 to 224.0.0.18 with TTL 255 on a data interface, what
//! ucarp speaks) or UDP unicast to the peer (loopback mode and networks without multicast). VIP
//! modes: netlink (add/remove on the interface and announce with gratuitous ARP) or loopback (the VIP
//! is a 127.x address that always exists; only the master binds its listeners to it).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use connectors::config::FieldError;
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::advert::{self, Advert, AdvertError, AdvertKey};
use crate::machine::{Action, Carp, CarpConfig, Command, CommandRefused, State};

/// How adverts travel.
#[derive(Clone, Debug)]
pub enum Transport {
    /// UDP to the peers' addresses, received on `bind`.
    Udp { bind: SocketAddr, peers: Vec<SocketAddr> },
    /// IP protocol 112 multicast on the interface that has `source`.
    Carp { source: Ipv4Addr },
}

/// How the VIP is held.
#[derive(Clone, Debug)]
pub enum VipMode {
    /// The VIP is a loopback address; holding it means binding listeners to it.
    Loopback,
    /// Added to `interface` with `prefix` and announced with gratuitous ARP.
    Netlink { interface: String, prefix: u8 },
}

#[derive(Clone, Debug)]
pub struct DriverConfig {
    pub carp: CarpConfig,
    pub security_text: String,
    pub vip: Ipv4Addr,
    pub transport: Transport,
    pub vip_mode: VipMode,
    /// Start with preemption held (see [`Command::HoldPreemption`]): the daemon releases it once its
    /// pair channel has delivered the peer's state.
    pub hold_preemption: bool,
}

/// The node's role as the daemon needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Init,
    Standby,
    Active,
}

/// What the status page shows of the election.
#[derive(Clone, Debug, Default, Serialize)]
pub struct HaStatus {
    pub role: Option<Role>,
    pub demotion: u8,
    pub faults: Vec<String>,
    /// Whether this node would take the VIP from a worse master now (configured, and not held back
    /// while it waits for its peer's replicated state).
    pub preempts: bool,
    pub adverts_sent: u64,
    pub adverts_accepted: u64,
    pub adverts_ignored: std::collections::BTreeMap<&'static str, u64>,
    pub transitions: u64,
    pub last_error: Option<String>,
    /// When an advert from the peer was last accepted.
    #[serde(skip)]
    pub last_peer_advert: Option<std::time::Instant>,
    #[serde(skip)]
    pub interval: Duration,
}

impl HaStatus {
    /// Whether the pair would survive the loss of one node, as far as the election can tell, and why.
    /// CARP backups are silent, so an active node only knows of its standby from a recent advert (a
    /// preemption or a yield); otherwise it says "unknown" rather than guess.
    pub fn redundancy(&self) -> (&'static str, String) {
        let limit = self.interval * 3 + Duration::from_secs(1);
        let heard = self.last_peer_advert.is_some_and(|t| t.elapsed() <= limit);
        match self.role {
            _ if !self.faults.is_empty() => {
                ("not redundant", format!("this node has faults: {}", self.faults.join(", ")))
            }
            Some(Role::Standby) if heard => {
                ("redundant", "the active peer advertises and this standby is ready".into())
            }
            Some(Role::Standby) => ("not redundant", "no advert from an active peer".into()),
            Some(Role::Active) if heard => ("redundant", "a peer advertised recently".into()),
            Some(Role::Active) => ("unknown", "a CARP standby is silent; a [pair] channel confirms it".into()),
            Some(Role::Init) | None => ("not redundant", "the election has not settled".into()),
        }
    }
}

type CommandReply = oneshot::Sender<Result<(), CommandRefused>>;

/// What went wrong in the election's driver or with a command given to it.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error("HA is off on this node: nothing to demote or promote")]
    Off,
    #[error("the HA driver has stopped")]
    DriverStopped,
    #[error(transparent)]
    Refused(#[from] crate::machine::CommandRefused),
    #[error("the advert key: {0}")]
    Key(#[source] crate::advert::KeyError),
    #[error("the election's configuration: {0}")]
    Config(#[source] crate::machine::CarpConfigError),
    #[error("cannot open the advert transport: {0}")]
    Transport(#[source] std::io::Error),
    #[error("send advert: {0}")]
    SendAdvert(#[source] std::io::Error),
    #[error("the virtual IP: {0}")]
    Vip(#[source] hw::vip::VipError),
}

/// The daemon's side of a running driver.
#[derive(Clone)]
pub struct HaHandle {
    pub role: watch::Receiver<Role>,
    /// Counts the times this active node met another active node that then yielded.
    pub reasserts: watch::Receiver<u64>,
    commands: mpsc::Sender<(Command, CommandReply)>,
    status: Arc<Mutex<HaStatus>>,
}

impl HaHandle {
    pub async fn command(&self, command: Command) -> Result<(), HaError> {
        let (reply, answer) = oneshot::channel();
        self.commands.send((command, reply)).await.map_err(|_| HaError::DriverStopped)?;
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refused)) => Err(HaError::Refused(refused)),
            Err(_) => Err(HaError::DriverStopped),
        }
    }

    pub fn status(&self) -> HaStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Role {
    /// The role as a gauge value: 0 init, 1 standby, 2 active.
    pub fn gauge(self) -> f64 {
        match self {
            Role::Init => 0.0,
            Role::Standby => 1.0,
            Role::Active => 2.0,
        }
    }
}

/// Demotes (or promotes) through an owned handle, for callers that need a `'static` future.
pub async fn demote_or_promote(ha: Option<HaHandle>, demote: bool) -> Result<(), HaError> {
    let handle = ha.ok_or(HaError::Off)?;
    handle.command(if demote { Command::Demote } else { Command::Promote }).await
}

/// A received advert: its bytes (IP header stripped), sender, and IP TTL when the transport has one.
type Received = (Vec<u8>, Ipv4Addr, Option<u8>);

enum Wire {
    Udp(UdpSocket, Vec<SocketAddr>),
    /// The raw socket for sending, and what a receiving thread read from its twin.
    Carp(Arc<Socket>, tokio::sync::Mutex<mpsc::Receiver<Received>>),
}

impl Wire {
    fn open(transport: &Transport) -> std::io::Result<Wire> {
        match transport {
            Transport::Udp { bind, peers } => {
                let socket = std::net::UdpSocket::bind(bind)?;
                socket.set_nonblocking(true)?;
                Ok(Wire::Udp(UdpSocket::from_std(socket)?, peers.clone()))
            }
            Transport::Carp { source } => {
                let socket =
                    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(i32::from(advert::IP_PROTOCOL))))?;
                let group = Ipv4Addr::from(advert::MULTICAST_GROUP);
                socket.join_multicast_v4(&group, source)?;
                socket.set_multicast_if_v4(source)?;
                socket.set_multicast_ttl_v4(u32::from(advert::TTL))?;
                socket.set_ttl_v4(u32::from(advert::TTL))?;
                socket.set_multicast_loop_v4(false)?;
                socket.set_read_timeout(Some(Duration::from_millis(200)))?;
                let socket = Arc::new(socket);
                let (tx, rx) = mpsc::channel(64);
                let reader = Arc::clone(&socket);
                // Raw sockets are read on a thread of their own: blocking reads keep this safe and simple.
                std::thread::Builder::new().name("carp-rx".into()).spawn(move || read_raw(&reader, &tx))?;
                Ok(Wire::Carp(socket, tokio::sync::Mutex::new(rx)))
            }
        }
    }

    async fn send(&self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Wire::Udp(socket, peers) => {
                for peer in peers {
                    socket.send_to(bytes, peer).await?;
                }
                Ok(())
            }
            Wire::Carp(socket, _) => {
                let group = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(advert::MULTICAST_GROUP), 0));
                socket.send_to(bytes, &group.into()).map(|_| ())
            }
        }
    }

    /// The next advert.
    async fn recv(&self, buffer: &mut [u8]) -> std::io::Result<Received> {
        match self {
            Wire::Udp(socket, _) => {
                let (len, from) = socket.recv_from(buffer).await?;
                let source = match from {
                    SocketAddr::V4(v4) => *v4.ip(),
                    SocketAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                };
                Ok((buffer[..len].to_vec(), source, None))
            }
            Wire::Carp(_, received) => match received.lock().await.recv().await {
                Some(advert) => Ok(advert),
                None => std::future::pending().await,
            },
        }
    }
}

/// Reads IP protocol 112 packets: a raw socket hands over the IP header, whose length, TTL and
/// source are taken before the advert.
fn read_raw(socket: &Socket, out: &mpsc::Sender<Received>) {
    let mut buffer = [0u8; 2048];
    loop {
        match std::io::Read::read(&mut &*socket, &mut buffer) {
            Ok(len) if len >= 20 => {
                let header = (usize::from(buffer[0] & 0x0f) * 4).min(len);
                let source = Ipv4Addr::new(buffer[12], buffer[13], buffer[14], buffer[15]);
                if out.blocking_send((buffer[header..len].to_vec(), source, Some(buffer[8]))).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted
                ) =>
            {
                if out.is_closed() {
                    return;
                }
            }
            Err(error) => {
                warn!(%error, "CARP receive failed");
                return;
            }
        }
    }
}

/// Starts the driver on the current tokio runtime. Errors are those of opening the transport.
pub fn spawn(config: DriverConfig, initial_counter: u64, shutdown: watch::Receiver<bool>) -> Result<HaHandle, HaError> {
    let key =
        AdvertKey::new(config.security_text.as_bytes(), config.carp.vhid, config.vip.octets()).map_err(HaError::Key)?;
    let mut machine = Carp::new(config.carp.clone(), initial_counter).map_err(HaError::Config)?;
    if config.hold_preemption {
        let _ = machine.handle_command(std::time::Instant::now(), Command::HoldPreemption(true));
    }
    let wire = Wire::open(&config.transport).map_err(HaError::Transport)?;
    let (role_tx, role_rx) = watch::channel(Role::Init);
    let (reassert_tx, reassert_rx) = watch::channel(0u64);
    let (commands_tx, commands_rx) = mpsc::channel(8);
    let status = Arc::new(Mutex::new(HaStatus::default()));
    let outputs = Outputs { role: role_tx, reasserts: reassert_tx };
    tokio::spawn(run(machine, key, wire, config, outputs, commands_rx, Arc::clone(&status), shutdown));
    Ok(HaHandle { role: role_rx, reasserts: reassert_rx, commands: commands_tx, status })
}

/// What the driver tells the daemon.
struct Outputs {
    role: watch::Sender<Role>,
    reasserts: watch::Sender<u64>,
}

#[allow(clippy::too_many_arguments)]
async fn run(
    mut machine: Carp,
    key: AdvertKey,
    wire: Wire,
    config: DriverConfig,
    outputs: Outputs,
    mut commands: mpsc::Receiver<(Command, CommandReply)>,
    status: Arc<Mutex<HaStatus>>,
    mut shutdown: watch::Receiver<bool>,
) {
    // The state machine lives on std time; tokio's Instant converts to it.
    let start = Instant::now();
    machine.start(start.into_std());
    let _ = outputs.role.send(Role::Standby);
    let mut buffer = vec![0u8; 2048];
    loop {
        apply(&mut machine, &key, &wire, &config, &outputs, &status).await;
        let deadline = machine.poll_timeout().map(Instant::from_std);
        tokio::select! {
            received = wire.recv(&mut buffer) => {
                let now = Instant::now().into_std();
                match received {
                    Ok((bytes, source, ttl)) => {
                        match Advert::parse(&bytes, ttl, &key) {
                            Ok(advert) => {
                                let _ = machine.handle_advert(now, source, &advert);
                            }
                            Err(reason) => note_ignored(&mut machine, reason, source),
                        }
                    }
                    Err(error) => warn!(%error, "advert receive failed"),
                }
            }
            _ = sleep_until_opt(deadline) => machine.handle_timeout(Instant::now().into_std()),
            command = commands.recv() => {
                let Some((command, reply)) = command else { break };
                let result = machine.handle_command(Instant::now().into_std(), command);
                info!(?command, ?result, "HA command");
                let _ = reply.send(result);
            }
            _ = shutdown.changed() => break,
        }
    }
    // Leaving: hand over at once rather than after a master-down time, then release the VIP.
    if machine.state() == State::Master {
        let now = Instant::now().into_std();
        let _ = machine.handle_command(now, Command::Demote);
        let _ = machine.handle_command(now, Command::Demote);
        while let Some(action) = machine.poll_action() {
            if let Action::SendAdvert(advert) = action {
                let _ = wire.send(&advert.emit(&key)).await;
            }
        }
        release_vip(&config);
        let _ = outputs.role.send(Role::Standby);
    }
}

fn note_ignored(machine: &mut Carp, reason: AdvertError, source: Ipv4Addr) {
    // Wrong keys and replays are worth a log line; they also show in the counters.
    if matches!(reason, AdvertError::Hmac | AdvertError::Ttl) {
        warn!(%source, %reason, "advert ignored");
    }
    machine.record_ignored(reason);
}

fn release_vip(config: &DriverConfig) {
    if let VipMode::Netlink { interface, prefix } = &config.vip_mode {
        let vip = hw::vip::Vip { interface: interface.clone(), address: config.vip, prefix: *prefix };
        if let Err(error) = hw::vip::remove(&vip) {
            error!(%error, "cannot remove the VIP");
        }
    }
}

async fn apply(
    machine: &mut Carp,
    key: &AdvertKey,
    wire: &Wire,
    config: &DriverConfig,
    outputs: &Outputs,
    status: &Mutex<HaStatus>,
) {
    let role = &outputs.role;
    while let Some(action) = machine.poll_action() {
        let vip = match &config.vip_mode {
            VipMode::Netlink { interface, prefix } => {
                Some(hw::vip::Vip { interface: interface.clone(), address: config.vip, prefix: *prefix })
            }
            VipMode::Loopback => None,
        };
        let result: Result<(), HaError> = match action {
            Action::SendAdvert(advert) => wire.send(&advert.emit(key)).await.map_err(HaError::SendAdvert),
            Action::AddVip => vip.map_or(Ok(()), |vip| hw::vip::add(&vip).map_err(HaError::Vip)),
            Action::RemoveVip => vip.map_or(Ok(()), |vip| hw::vip::remove(&vip).map_err(HaError::Vip)),
            Action::AnnounceVip => {
                if let Some(vip) = vip {
                    // Repeated announcements take a little while: off the election's task.
                    tokio::task::spawn_blocking(move || {
                        if let Err(error) = hw::vip::announce(&vip, 3, Duration::from_millis(100)) {
                            warn!(%error, "gratuitous ARP failed");
                        }
                    });
                }
                Ok(())
            }
            Action::BecomeMaster => {
                info!(vip = %config.vip, "became ACTIVE");
                let _ = role.send(Role::Active);
                Ok(())
            }
            Action::Reassert => {
                warn!(vip = %config.vip, "another active node yielded to this one (healed partition)");
                outputs.reasserts.send_modify(|count| *count += 1);
                Ok(())
            }
            Action::BecomeBackup => {
                info!(vip = %config.vip, "became STANDBY");
                let _ = role.send(Role::Standby);
                Ok(())
            }
        };
        if let Err(error) = &result {
            error!(%error, "HA action failed");
        }
        if let Ok(mut shared) = status.lock() {
            if let Err(error) = result {
                shared.last_error = Some(error.to_string());
            }
        }
    }
    if let Ok(mut shared) = status.lock() {
        let stats = machine.stats();
        shared.role = Some(*role.borrow());
        shared.demotion = machine.demotion();
        shared.faults = machine.faults().map(|f| format!("{f:?}")).collect();
        shared.preempts = machine.preempts();
        shared.adverts_sent = stats.adverts_sent;
        if stats.adverts_accepted > shared.adverts_accepted {
            shared.last_peer_advert = Some(std::time::Instant::now());
        }
        shared.adverts_accepted = stats.adverts_accepted;
        shared.interval = config.carp.interval;
        shared.transitions = stats.became_master + stats.became_backup;
        shared.adverts_ignored =
            AdvertError::ALL.iter().map(|r| (r.label(), stats.ignored(*r))).filter(|(_, n)| *n > 0).collect();
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Answers one operator command line (`ha demote`, `ha promote`, `ha status`) for a daemon's control
/// socket: `ok: …`, `error: …`, or the status as JSON.
pub async fn answer(handle: &HaHandle, line: &str) -> String {
    let command = match line {
        "ha demote" => Command::Demote,
        "ha promote" => Command::Promote,
        "ha status" => return serde_json::to_string(&handle.status()).unwrap_or_default(),
        other => return format!("error: unknown command '{other}' (ha demote, ha promote, ha status)"),
    };
    match handle.command(command).await {
        Ok(()) => format!("ok: {line}"),
        Err(error) => format!("error: {error}"),
    }
}

/// The `[ha]` section of a daemon's configuration.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HaConfig {
    /// Virtual host id, the same on both nodes of the pair (1-255).
    pub vhid: u8,
    /// The pair's virtual IPv4 address.
    pub vip: String,
    /// The shared security text (1-19 bytes) that authenticates adverts.
    pub security_text: String,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Lower wins. Keep skews small with sub-second intervals (they share one byte).
    #[serde(default)]
    pub skew: u8,
    /// Take the VIP back from a worse master (default true; a daemon may choose otherwise when it
    /// is left out, see red-rx's pair rule).
    pub preempt: Option<bool>,
    #[serde(default)]
    pub transport: TransportKind,
    /// UDP transport: where this node receives adverts (`ip:port`).
    pub bind: Option<String>,
    /// UDP transport: where the peer receives them.
    #[serde(default)]
    pub peers: Vec<String>,
    /// CARP transport: this node's address on the data network.
    pub source: Option<String>,
    /// Netlink VIP mode: the data interface the VIP is added to. Absent: loopback mode.
    pub interface: Option<String>,
    #[serde(default = "default_prefix")]
    pub prefix: u8,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    #[default]
    Udp,
    Carp,
}

fn default_interval_ms() -> u64 {
    200
}
/// CARP nodes here preempt unless told otherwise: the preferred node is the one operators expect to
/// find active.
pub const DEFAULT_PREEMPT: bool = true;
fn default_prefix() -> u8 {
    24
}

fn parse_v4(field: &'static str, text: &str) -> Result<Ipv4Addr, FieldError> {
    text.parse().map_err(|_| FieldError::new(field, format!("'{text}' is not an IPv4 address")))
}

fn parse_socket(field: &'static str, text: &str) -> Result<SocketAddr, FieldError> {
    text.parse().map_err(|_| FieldError::new(field, format!("'{text}' is not an ip:port address")))
}

impl HaConfig {
    /// Checks the section; an error names the field and why.
    pub fn check(&self) -> Result<DriverConfig, FieldError> {
        let vip = parse_v4("ha: vip", &self.vip)?;
        AdvertKey::new(self.security_text.as_bytes(), self.vhid, vip.octets())
            .map_err(|e| FieldError::new("ha: security_text", e))?;
        if self.vhid == 0 {
            return Err(FieldError::new("ha: vhid", "must be between 1 and 255"));
        }
        let (transport, address) = match self.transport {
            TransportKind::Udp => {
                let bind = parse_socket(
                    "ha: bind",
                    self.bind.as_deref().ok_or_else(|| FieldError::new("ha: bind", "the UDP transport needs bind"))?,
                )?;
                if self.peers.is_empty() {
                    return Err(FieldError::new("ha: peers", "the UDP transport needs the peer's address"));
                }
                let peers = self.peers.iter().map(|p| parse_socket("ha: peers", p)).collect::<Result<Vec<_>, _>>()?;
                let address = match bind.ip() {
                    std::net::IpAddr::V4(v4) => v4,
                    std::net::IpAddr::V6(_) => return Err(FieldError::new("ha: bind", "must be an IPv4 address")),
                };
                (Transport::Udp { bind, peers }, address)
            }
            TransportKind::Carp => {
                let source = parse_v4(
                    "ha: source",
                    self.source
                        .as_deref()
                        .ok_or_else(|| FieldError::new("ha: source", "the CARP transport needs source"))?,
                )?;
                (Transport::Carp { source }, source)
            }
        };
        if self.prefix == 0 || self.prefix > 32 {
            return Err(FieldError::new("ha: prefix", "must be between 1 and 32"));
        }
        let carp = CarpConfig {
            vhid: self.vhid,
            interval: Duration::from_millis(self.interval_ms),
            skew: self.skew,
            preempt: self.preempt.unwrap_or(DEFAULT_PREEMPT),
            address,
        };
        carp.encoding().map_err(|e| FieldError::new("ha: interval_ms", e))?;
        let vip_mode = match &self.interface {
            Some(interface) => VipMode::Netlink { interface: interface.clone(), prefix: self.prefix },
            None => VipMode::Loopback,
        };
        Ok(DriverConfig {
            carp,
            security_text: self.security_text.clone(),
            vip,
            transport,
            vip_mode,
            hold_preemption: false,
        })
    }
}
