//! Channel configuration shared by both daemons, and the checks that turn a bad file into a message
//! naming the file, the field and the reason.
//!
//! A channel has the same number, kind and name on both sides; BLUE adds where it listens, RED where it
//! delivers. The channel table's fingerprint travels in beacons so RED can tell when the two sides
//! disagree.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod sink_checks;

pub use sink_checks::{check_sink, check_spool, check_spools_apart, CheckedSink};

/// A configuration problem: which file, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub reason: String,
}

/// A problem with one field, before the file it is in is known: [`ConfigError::in_file`] adds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl std::fmt::Display) -> FieldError {
        FieldError { field: field.into(), reason: reason.to_string() }
    }
}

impl ConfigError {
    pub fn in_file(file: &Path, error: FieldError) -> ConfigError {
        ConfigError::new(file, error.field, error.reason)
    }

    pub fn new(file: &Path, field: impl Into<String>, reason: impl std::fmt::Display) -> ConfigError {
        ConfigError { file: file.display().to_string(), field: field.into(), reason: reason.to_string() }
    }
}

/// Reads and parses a TOML file into `T` (which should deny unknown fields).
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, "file", format!("cannot read: {e}")))?;
    parse_toml(path, &text)
}

/// Parses TOML text; errors name the field toml could place, else the line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let field = match e.span() {
            Some(span) => {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!("line {line}")
            }
            None => "document".to_string(),
        };
        ConfigError::new(path, field, e.message().to_string())
    })
}

/// One `[[link_key]]`: a 32-byte key that authenticates every datagram on the fibers (keyed BLAKE3
/// tags instead of bare CRC32), named on the wire by its id. Configure the same keys on both sides;
/// during a rotation both the old and the new key are listed and BLUE's `send_key` picks the one it tags
/// with.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkKeyConfig {
    pub id: u8,
    /// 64 hex digits, or
    pub key: Option<String>,
    /// a file holding them (kept out of the configuration, readable by the daemon only).
    pub key_file: Option<PathBuf>,
}

impl std::fmt::Debug for LinkKeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("LinkKeyConfig").field("id", &self.id).field("key_file", &self.key_file).finish_non_exhaustive()
    }
}

/// Turns the `[[link_key]]` sections into the link's authentication. `send_key` is BLUE's choice (RED
/// passes `None` and accepts every listed key); without keys the link uses CRC32 only.
pub fn check_link_keys(
    path: &Path,
    keys: &[LinkKeyConfig],
    send_key: Option<u8>,
) -> Result<diode_proto::LinkAuth, ConfigError> {
    use diode_proto::auth::LinkKey;
    if keys.is_empty() {
        if let Some(id) = send_key {
            return Err(ConfigError::new(
                path,
                "link: send_key",
                format!("key {id} is set but no [[link_key]] is configured"),
            ));
        }
        return Ok(diode_proto::LinkAuth::none());
    }
    let mut parsed = Vec::new();
    for key in keys {
        let field = format!("link_key {}", key.id);
        let text = match (&key.key, &key.key_file) {
            (Some(text), None) => text.clone(),
            (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| {
                ConfigError::new(path, format!("{field}: key_file"), format!("cannot read {}: {e}", file.display()))
            })?,
            _ => return Err(ConfigError::new(path, field, "give exactly one of key and key_file")),
        };
        let text = text.trim();
        let bytes = (text.len() == 64).then(|| hex::decode(text).ok()).flatten();
        let Some(bytes) = bytes else {
            return Err(ConfigError::new(path, field, "a link key is 64 hex digits (32 bytes)"));
        };
        let mut key_bytes = [0u8; 32];
        key_bytes.copy_from_slice(&bytes);
        if key_bytes.iter().all(|b| *b == 0) {
            return Err(ConfigError::new(path, field, "an all-zero key protects nothing"));
        }
        parsed.push(LinkKey { id: key.id, key: key_bytes });
    }
    let send = match send_key {
        Some(id) => id,
        None if keys.len() == 1 => keys[0].id,
        // RED: any listed id; the sender's choice is checked per datagram.
        None => keys[0].id,
    };
    diode_proto::LinkAuth::keyed(parsed, send).map_err(|e| ConfigError::new(path, "link: send_key", e.to_string()))
}

/// The node section both daemons share.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    /// A JSON file rewritten every second with the daemon's state, counters and alarms.
    pub status_file: Option<std::path::PathBuf>,
    /// A Unix socket for local operator commands (`ha demote|promote|status`).
    pub control_socket: Option<std::path::PathBuf>,
    /// Where this node keeps its own state (RED's spools by default); [`DEFAULT_STATE_DIR`] when absent,
    /// the folder the systemd units' `StateDirectory=diode` gives.
    pub state_dir: Option<std::path::PathBuf>,
}

pub const DEFAULT_STATE_DIR: &str = "/var/lib/diode";

impl NodeConfig {
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }
}

/// What a channel carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    Tcp,
    Udp,
    Files,
    Vault,
}

diode_proto::reasons!(ChannelKind { Tcp => "tcp", Udp => "udp", Files => "files", Vault => "vault" });

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        self.label()
    }
}

/// Parses `ip:port` with messages an operator can act on.
/// Why a text is not an `ip:port` address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("'{0}' is not an address: expected ip:port")]
    NoPort(String),
    #[error("'{0}' is not an IP address")]
    BadIp(String),
    #[error("port '{0}' is not a number")]
    BadPort(String),
    #[error("port {0} out of range (0-65535)")]
    PortRange(u64),
}

pub fn parse_addr(text: &str) -> Result<SocketAddr, AddrError> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(AddrError::NoPort(text.to_string()));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().map_err(|_| AddrError::BadIp(host.to_string()))?;
    let port: u64 = port.parse().map_err(|_| AddrError::BadPort(port.to_string()))?;
    if port > u64::from(u16::MAX) {
        return Err(AddrError::PortRange(port));
    }
    Ok(SocketAddr::new(ip, port as u16))
}

fn default_max_sessions() -> usize {
    100
}
fn default_share() -> u32 {
    1
}
fn default_flush_ms() -> u64 {
    5
}
fn default_idle_timeout_s() -> u64 {
    300
}
fn default_settle_ms() -> u64 {
    2000
}
fn default_rescan_s() -> u64 {
    10
}
fn default_repeat() -> u32 {
    1
}
/// Default largest file a files or vault channel takes: 64 GiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 64 << 30;
fn default_max_file_size() -> u64 {
    DEFAULT_MAX_FILE_SIZE
}

/// What a files channel does with a file once it has been sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterSend {
    #[default]
    Delete,
    /// Move it to `sent_folder`, keeping its relative path.
    Move,
}

/// A channel as BLUE sees it: where data comes in.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceChannel {
    pub number: u16,
    pub kind: ChannelKind,
    pub name: String,
    /// `ip:port` to listen on (TCP, and HTTP for vault uploads) or receive on (UDP). Files channels have
    /// none.
    pub listen: Option<String>,
    /// UDP only: a multicast group to join.
    pub multicast_group: Option<String>,
    /// UDP only: the address of the interface to join the group on (default: any).
    pub multicast_interface: Option<String>,
    /// TCP only: most concurrent connections; more are refused.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Weight of the channel's share of the link when channels compete.
    #[serde(default = "default_share")]
    pub share: u32,
    /// Longest a partial block waits before it is sent anyway (the latency bound for a trickle).
    #[serde(default = "default_flush_ms")]
    pub flush_ms: u64,
    /// TCP only: a connection silent this long is aborted with reason "source timeout".
    #[serde(default = "default_idle_timeout_s")]
    pub idle_timeout_s: u64,
    /// Files only: the drop folder.
    pub folder: Option<PathBuf>,
    /// Files only: how long a file must stay unchanged (size and mtime) before it is taken.
    #[serde(default = "default_settle_ms")]
    pub settle_ms: u64,
    /// Files only: seconds between full rescans (besides the file system's change events).
    #[serde(default = "default_rescan_s")]
    pub rescan_s: u64,
    /// Files only: globs on the relative path; when given, only matching files are taken.
    #[serde(default)]
    pub include: Vec<String>,
    /// Files only: globs on the relative path of files to leave alone.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Files and vault: largest file taken; larger ones are rejected (drop folder) or refused (upload).
    #[serde(default = "default_max_file_size")]
    pub max_file_size: u64,
    /// Files only: what to do with a file once sent.
    #[serde(default)]
    pub after_send: AfterSend,
    /// Files only: where sent files go with `after_send = "move"` (default `<folder>/.diode/sent`).
    pub sent_folder: Option<PathBuf>,
    /// Files only: where rejected files go, each with a `.reason.txt` (default `<folder>/.diode/rejected`).
    pub rejected_folder: Option<PathBuf>,
    /// Files and vault: how many times each file is sent (for lossy links with no way to ask again).
    #[serde(default = "default_repeat")]
    pub repeat: u32,
    /// Files and vault: where accepted files wait until sent (default for files `<folder>/.diode/spool`,
    /// which keeps it on the drop folder's file system so taking a file is a rename).
    pub spool: Option<PathBuf>,
}

/// How a pool chooses among healthy destinations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// The first healthy destination in configured order.
    #[default]
    Failover,
    /// Healthy destinations in turn, in proportion to their weights.
    Balanced,
}

fn default_weight() -> u32 {
    1
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationConfig {
    pub address: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

/// How a destination's health is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthKind {
    /// TCP connect to the destination (or `port`).
    #[default]
    Tcp,
    /// HTTP GET of `path`, expecting `expect_status` and, if set, `expect_body` in the body.
    Http,
    /// Always healthy (UDP destinations with no way to ask).
    None,
}

fn default_interval_ms() -> u64 {
    3000
}
fn default_timeout_ms() -> u64 {
    3000
}
fn default_failures() -> u32 {
    2
}
fn default_path() -> String {
    "/".to_string()
}
fn default_status() -> u16 {
    200
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default)]
    pub kind: HealthKind,
    /// Port to check instead of the destination's own (for UDP destinations with a TCP health port).
    pub port: Option<u16>,
    #[serde(default = "default_path")]
    pub path: String,
    #[serde(default = "default_status")]
    pub expect_status: u16,
    pub expect_body: Option<String>,
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive failures that mark a destination down.
    #[serde(default = "default_failures")]
    pub failures: u32,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            kind: HealthKind::Tcp,
            port: None,
            path: default_path(),
            expect_status: default_status(),
            expect_body: None,
            interval_ms: default_interval_ms(),
            timeout_ms: default_timeout_ms(),
            failures: default_failures(),
        }
    }
}

impl HealthConfig {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

fn default_sink_queue() -> usize {
    1024
}
/// Below a block's worth of stream data, nearly every stream would be aborted: records wait while
/// its connection opens, and two full blocks' records would already be too many.
const MIN_SINK_QUEUE_BYTES: usize = 1 << 20;
/// 64 MiB: what 1024 events of 64 KiB records held before this limit existed, so a bulk stream keeps
/// the tolerance it had: 150 ms at 3.5 Gbit/s on top of the kernel's socket buffer. With 16 MiB, about
/// one bench run in a dozen on the 2-core machine lost its stream with nothing lost on the link, where
/// the sink's reader runs below red-rx's fiber threads in priority. What the limit changes is the worst
/// case: at MTU 9000, 1024 events could hold 590 MB.
fn default_sink_queue_bytes() -> usize {
    64 << 20
}

/// A channel as RED sees it: where data goes out.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkChannel {
    pub number: u16,
    pub kind: ChannelKind,
    pub name: String,
    #[serde(default)]
    pub mode: PoolMode,
    #[serde(default, rename = "destination")]
    pub destinations: Vec<DestinationConfig>,
    pub health: Option<HealthConfig>,
    /// UDP only: TTL of datagrams sent to a multicast destination.
    pub multicast_ttl: Option<u32>,
    /// UDP only: address of the interface multicast destinations are reached through.
    pub multicast_interface: Option<String>,
    /// Events a stream may have waiting for its destination before the stream is aborted as "destination
    /// too slow" (bounds memory when a destination stalls).
    #[serde(default = "default_sink_queue")]
    pub queue: usize,
    /// TCP only: bytes a stream may have waiting for its destination before it is aborted as
    /// "destination too slow". What a stalled destination costs red-rx in memory, per stream.
    #[serde(default = "default_sink_queue_bytes")]
    pub queue_bytes: usize,
    /// Files and vault: the output folder.
    pub folder: Option<PathBuf>,
    /// Files and vault: where files that cannot be delivered go (default `<folder>/.quarantine`).
    pub quarantine: Option<PathBuf>,
    #[serde(default)]
    pub on_failure: crate::filesink::OnFailure,
    /// Files and vault: the delivered-file ledger (default `<folder>/.ledger.jsonl`).
    pub ledger: Option<PathBuf>,
    /// Files and vault: how many deliveries the ledger remembers.
    #[serde(default = "default_ledger_entries")]
    pub ledger_entries: usize,
    /// Files and vault: largest file delivered; larger ones go to quarantine.
    #[serde(default = "default_max_file_size")]
    pub max_file_size: u64,
    /// Vault only: `ip:port` of the HTTP vault server (the RED VIP with HA).
    pub listen: Option<String>,
    /// Vault only: whether clients may delete delivered files.
    #[serde(default)]
    pub allow_delete: bool,
    /// TCP: the store-and-forward spool (on unless `enabled = false`).
    pub spool: Option<SpoolSection>,
}

fn default_true() -> bool {
    true
}
fn default_spool_max_bytes() -> u64 {
    4 << 30
}
fn default_spool_max_items() -> usize {
    100_000
}
fn default_spool_max_age() -> crate::store::DurationText {
    crate::store::DurationText::Text("24h".into())
}
fn default_spool_sync_ms() -> u64 {
    1000
}
/// Long-lived streams each hold a delivery for their life: a low limit would leave the ones behind
/// them waiting for good.
fn default_spool_parallel() -> usize {
    64
}
fn default_spool_stall() -> crate::store::DurationText {
    crate::store::DurationText::Seconds(15)
}
fn default_spool_replay_rate() -> u32 {
    10_000
}

/// `[channel.spool]` on RED: what the channel keeps on disk while its destinations cannot take it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    /// `false` turns the spool off: streams go straight to their destination (the in-memory queue of
    /// `queue_bytes`), and one whose destination is down or too slow is aborted.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Default `<node.state_dir>/spool/channel-<number>`, created at start.
    pub folder: Option<PathBuf>,
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: u64,
    #[serde(default = "default_spool_max_items")]
    pub max_items: usize,
    /// How long an item may wait for a destination (`"90s"`, `"15m"`, `"24h"`, `"7d"`, or seconds).
    #[serde(default = "default_spool_max_age")]
    pub max_age: crate::store::DurationText,
    /// How often what waits is synced to disk: a power loss can lose what arrived in this time.
    #[serde(default = "default_spool_sync_ms")]
    pub sync_ms: u64,
    /// Streams delivered at once, each on its own connection.
    #[serde(default = "default_spool_parallel")]
    pub parallel: usize,
    /// A destination that takes no byte for this long is given up on: the stream is delivered again
    /// whole on a new connection.
    #[serde(default = "default_spool_stall")]
    pub stall: crate::store::DurationText,
    /// UDP: datagrams per second replayed once a destination is back.
    #[serde(default = "default_spool_replay_rate")]
    pub replay_rate: u32,
}

impl Default for SpoolSection {
    fn default() -> SpoolSection {
        SpoolSection {
            enabled: true,
            folder: None,
            max_bytes: default_spool_max_bytes(),
            max_items: default_spool_max_items(),
            max_age: default_spool_max_age(),
            sync_ms: default_spool_sync_ms(),
            parallel: default_spool_parallel(),
            stall: default_spool_stall(),
            replay_rate: default_spool_replay_rate(),
        }
    }
}

fn default_ledger_entries() -> usize {
    100_000
}

/// A channel's identity, the part both sides must agree on.
pub trait ChannelIdentity {
    fn number(&self) -> u16;
    fn kind(&self) -> ChannelKind;
    fn name(&self) -> &str;
}

macro_rules! channel_identity {
    ($($channel:ty),*) => {$(
        impl ChannelIdentity for $channel {
            fn number(&self) -> u16 {
                self.number
            }
            fn kind(&self) -> ChannelKind {
                self.kind
            }
            fn name(&self) -> &str {
                &self.name
            }
        }
    )*};
}

channel_identity!(SourceChannel, SinkChannel);

/// The fingerprint of a channel table: BLAKE3 of the sorted (number, kind, name) lines, first 16 bytes.
/// Both sides compute it the same way; RED alarms when BLUE's beacon carries another one.
pub fn fingerprint<C: ChannelIdentity>(channels: &[C]) -> [u8; 16] {
    let lines: BTreeSet<String> =
        channels.iter().map(|c| format!("{} {} {}\n", c.number(), c.kind().as_str(), c.name())).collect();
    let mut hasher = blake3::Hasher::new();
    for line in &lines {
        hasher.update(line.as_bytes());
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

/// Checks what both sides require of a channel table: numbers from 1, unique numbers and names,
/// names that are short printable words, kinds this version supports.
pub fn check_identities<C: ChannelIdentity>(path: &Path, channels: &[C]) -> Result<(), ConfigError> {
    let mut numbers = BTreeSet::new();
    let mut names = BTreeSet::new();
    for channel in channels {
        let field = format!("channel {}", channel.number());
        if channel.number() == 0 {
            return Err(ConfigError::new(path, "channel 0", "channel numbers start at 1"));
        }
        if !numbers.insert(channel.number()) {
            return Err(ConfigError::new(path, field, "channel number used twice"));
        }
        let name = channel.name();
        if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(ConfigError::new(
                path,
                field,
                format!("name '{name}' must be 1 to 64 letters, digits, '-', '_' or '.'"),
            ));
        }
        if !names.insert(name.to_string()) {
            return Err(ConfigError::new(path, field, format!("name '{name}' used twice")));
        }
    }
    Ok(())
}

/// A source channel after its checks: addresses parsed, folders and globs resolved.
#[derive(Clone, Debug)]
pub struct CheckedSource {
    pub config: SourceChannel,
    /// Where TCP, UDP and vault channels listen; `None` for files channels.
    pub listen: Option<SocketAddr>,
    pub multicast: Option<(IpAddr, Option<IpAddr>)>,
    /// Files channels: the drop folder's settings.
    pub drop_folder: Option<crate::dropfolder::DropFolder>,
    /// Files and vault channels: the spool folder.
    pub spool: Option<PathBuf>,
}

fn globs(path: &Path, field: &str, patterns: &[String]) -> Result<globset::GlobSet, ConfigError> {
    let mut builder = globset::GlobSetBuilder::new();
    for pattern in patterns {
        let glob = globset::Glob::new(pattern)
            .map_err(|e| ConfigError::new(path, field, format!("'{pattern}' is not a glob: {e}")))?;
        builder.add(glob);
    }
    builder.build().map_err(|e| ConfigError::new(path, field, e.to_string()))
}

/// Refuses a setting given to a kind that has no use for it, so a typo in `kind` is not silently
/// ignored.
fn only_for(path: &Path, field: &str, given: bool, kinds: &str) -> Result<(), ConfigError> {
    if given {
        return Err(ConfigError::new(path, field, format!("only {kinds} channels have this setting")));
    }
    Ok(())
}

pub fn check_source(path: &Path, channel: &SourceChannel) -> Result<CheckedSource, ConfigError> {
    let field = format!("channel {}", channel.number);
    let at = |name: &str| format!("{field}: {name}");
    let kind = channel.kind;
    let listen = match (&channel.listen, kind) {
        (Some(text), ChannelKind::Tcp | ChannelKind::Udp | ChannelKind::Vault) => {
            Some(parse_addr(text).map_err(|reason| ConfigError::new(path, at("listen"), reason))?)
        }
        (None, ChannelKind::Tcp | ChannelKind::Udp | ChannelKind::Vault) => {
            return Err(ConfigError::new(
                path,
                at("listen"),
                format!("a {} channel needs an address to listen on", kind.as_str()),
            ))
        }
        (Some(_), ChannelKind::Files) => {
            return Err(ConfigError::new(path, at("listen"), "a files channel reads its folder and listens on nothing"))
        }
        (None, ChannelKind::Files) => None,
    };
    let multicast = match (&channel.multicast_group, kind) {
        (Some(group), ChannelKind::Udp) => {
            let group: IpAddr = group.parse().map_err(|_| {
                ConfigError::new(path, at("multicast_group"), format!("'{group}' is not an IP address"))
            })?;
            if !group.is_multicast() {
                return Err(ConfigError::new(
                    path,
                    at("multicast_group"),
                    format!("{group} is not a multicast address"),
                ));
            }
            let interface = match &channel.multicast_interface {
                Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                    ConfigError::new(path, at("multicast_interface"), format!("'{text}' is not an IP address"))
                })?),
                None => None,
            };
            Some((group, interface))
        }
        (Some(_), _) => {
            return Err(ConfigError::new(path, at("multicast_group"), "only UDP channels join multicast groups"))
        }
        (None, _) => None,
    };
    if channel.max_sessions == 0 {
        return Err(ConfigError::new(path, at("max_sessions"), "must be at least 1"));
    }
    if channel.share == 0 {
        return Err(ConfigError::new(path, at("share"), "must be at least 1"));
    }
    if channel.flush_ms == 0 || channel.flush_ms > 10_000 {
        return Err(ConfigError::new(path, at("flush_ms"), "must be between 1 and 10000"));
    }
    let files = kind == ChannelKind::Files;
    let takes_files = matches!(kind, ChannelKind::Files | ChannelKind::Vault);
    only_for(path, &at("folder"), channel.folder.is_some() && !files, "files")?;
    only_for(path, &at("include"), !channel.include.is_empty() && !files, "files")?;
    only_for(path, &at("exclude"), !channel.exclude.is_empty() && !files, "files")?;
    only_for(path, &at("sent_folder"), channel.sent_folder.is_some() && !files, "files")?;
    only_for(path, &at("rejected_folder"), channel.rejected_folder.is_some() && !files, "files")?;
    only_for(path, &at("after_send"), channel.after_send != AfterSend::Delete && !files, "files")?;
    only_for(path, &at("spool"), channel.spool.is_some() && !takes_files, "files and vault")?;
    only_for(path, &at("repeat"), channel.repeat != 1 && !takes_files, "files and vault")?;
    if channel.repeat == 0 || channel.repeat > 100 {
        return Err(ConfigError::new(path, at("repeat"), "must be between 1 and 100"));
    }
    if takes_files && channel.max_file_size == 0 {
        return Err(ConfigError::new(path, at("max_file_size"), "must be at least 1"));
    }
    let mut drop_folder = None;
    let spool = match kind {
        ChannelKind::Files => {
            let Some(folder) = channel.folder.clone() else {
                return Err(ConfigError::new(path, at("folder"), "a files channel needs its drop folder"));
            };
            if !folder.is_absolute() {
                return Err(ConfigError::new(
                    path,
                    at("folder"),
                    format!("'{}' must be an absolute path", folder.display()),
                ));
            }
            if channel.settle_ms > 3_600_000 {
                return Err(ConfigError::new(path, at("settle_ms"), "at most 3600000 (an hour)"));
            }
            if channel.rescan_s == 0 || channel.rescan_s > 3600 {
                return Err(ConfigError::new(path, at("rescan_s"), "must be between 1 and 3600"));
            }
            let private = folder.join(".diode");
            let finish = match channel.after_send {
                AfterSend::Delete => crate::spool::Finish::Delete,
                AfterSend::Move => {
                    crate::spool::Finish::MoveTo(channel.sent_folder.clone().unwrap_or_else(|| private.join("sent")))
                }
            };
            drop_folder = Some(crate::dropfolder::DropFolder {
                channel: channel.number,
                folder: folder.clone(),
                settle: Duration::from_millis(channel.settle_ms),
                rescan: Duration::from_secs(channel.rescan_s),
                include: globs(path, &at("include"), &channel.include)?,
                exclude: globs(path, &at("exclude"), &channel.exclude)?,
                max_file_size: channel.max_file_size,
                finish,
                rejected: channel.rejected_folder.clone().unwrap_or_else(|| private.join("rejected")),
            });
            Some(channel.spool.clone().unwrap_or_else(|| private.join("spool")))
        }
        ChannelKind::Vault => match &channel.spool {
            Some(spool) if spool.is_absolute() => Some(spool.clone()),
            Some(spool) => {
                return Err(ConfigError::new(
                    path,
                    at("spool"),
                    format!("'{}' must be an absolute path", spool.display()),
                ))
            }
            None => {
                return Err(ConfigError::new(path, at("spool"), "a vault channel needs a spool folder for uploads"))
            }
        },
        ChannelKind::Tcp | ChannelKind::Udp => None,
    };
    Ok(CheckedSource { config: channel.clone(), listen, multicast, drop_folder, spool })
}

#[cfg(test)]
mod tests;
