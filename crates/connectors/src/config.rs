//! Channel configuration shared by both daemons, and the checks that turn a bad file into a message
//! naming the file, the field and the reason.
//!
//! A channel has the same number, kind and name on both sides; BLUE adds where it listens, RED where it
//! delivers. The channel table's fingerprint travels in beacons so RED can tell when the two sides
//! disagree.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem: which file, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(file: &Path, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError { file: file.display().to_string(), field: field.into(), reason: reason.into() }
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

/// The node section both daemons share.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    /// A JSON file rewritten every second with the daemon's state, counters and alarms.
    pub status_file: Option<std::path::PathBuf>,
    /// A Unix socket for local operator commands (`ha demote|promote|status`).
    pub control_socket: Option<std::path::PathBuf>,
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

impl ChannelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Tcp => "tcp",
            ChannelKind::Udp => "udp",
            ChannelKind::Files => "files",
            ChannelKind::Vault => "vault",
        }
    }
}

/// Parses `ip:port` with messages an operator can act on.
pub fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("'{text}' is not an address: expected ip:port"));
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = host.parse().map_err(|_| format!("'{host}' is not an IP address"))?;
    let port: u64 = port.parse().map_err(|_| format!("port '{port}' is not a number"))?;
    if port > u64::from(u16::MAX) {
        return Err(format!("port {port} out of range (0-65535)"));
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

/// A channel as BLUE sees it: where data comes in.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceChannel {
    pub number: u16,
    pub kind: ChannelKind,
    pub name: String,
    /// `ip:port` to listen on (TCP) or receive on (UDP).
    pub listen: String,
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
        if matches!(channel.kind(), ChannelKind::Files | ChannelKind::Vault) {
            return Err(ConfigError::new(
                path,
                field,
                format!("kind '{}' is not supported by this version yet", channel.kind().as_str()),
            ));
        }
    }
    Ok(())
}

/// A source channel after its checks: addresses parsed.
#[derive(Clone, Debug)]
pub struct CheckedSource {
    pub config: SourceChannel,
    pub listen: SocketAddr,
    pub multicast: Option<(IpAddr, Option<IpAddr>)>,
}

pub fn check_source(path: &Path, channel: &SourceChannel) -> Result<CheckedSource, ConfigError> {
    let field = format!("channel {}", channel.number);
    let listen =
        parse_addr(&channel.listen).map_err(|reason| ConfigError::new(path, format!("{field}: listen"), reason))?;
    let multicast = match (&channel.multicast_group, channel.kind) {
        (Some(group), ChannelKind::Udp) => {
            let group: IpAddr = group.parse().map_err(|_| {
                ConfigError::new(path, format!("{field}: multicast_group"), format!("'{group}' is not an IP address"))
            })?;
            if !group.is_multicast() {
                return Err(ConfigError::new(
                    path,
                    format!("{field}: multicast_group"),
                    format!("{group} is not a multicast address"),
                ));
            }
            let interface = match &channel.multicast_interface {
                Some(text) => Some(text.parse::<IpAddr>().map_err(|_| {
                    ConfigError::new(
                        path,
                        format!("{field}: multicast_interface"),
                        format!("'{text}' is not an IP address"),
                    )
                })?),
                None => None,
            };
            Some((group, interface))
        }
        (Some(_), _) => {
            return Err(ConfigError::new(
                path,
                format!("{field}: multicast_group"),
                "only UDP channels join multicast groups",
            ))
        }
        (None, _) => None,
    };
    if channel.max_sessions == 0 {
        return Err(ConfigError::new(path, format!("{field}: max_sessions"), "must be at least 1"));
    }
    if channel.share == 0 {
        return Err(ConfigError::new(path, format!("{field}: share"), "must be at least 1"));
    }
    if channel.flush_ms == 0 || channel.flush_ms > 10_000 {
        return Err(ConfigError::new(path, format!("{field}: flush_ms"), "must be between 1 and 10000"));
    }
    Ok(CheckedSource { config: channel.clone(), listen, multicast })
}

/// A sink channel after its checks.
#[derive(Clone, Debug)]
pub struct CheckedSink {
    pub config: SinkChannel,
    pub destinations: Vec<(SocketAddr, u32)>,
    pub health: HealthConfig,
    pub multicast_interface: Option<std::net::Ipv4Addr>,
}

pub fn check_sink(path: &Path, channel: &SinkChannel) -> Result<CheckedSink, ConfigError> {
    let field = format!("channel {}", channel.number);
    if channel.destinations.is_empty() {
        return Err(ConfigError::new(path, field, "has no destination"));
    }
    let mut destinations = Vec::new();
    for (index, destination) in channel.destinations.iter().enumerate() {
        let addr = parse_addr(&destination.address)
            .map_err(|reason| ConfigError::new(path, format!("{field}: destination {}", index + 1), reason))?;
        if addr.port() == 0 {
            return Err(ConfigError::new(
                path,
                format!("{field}: destination {}", index + 1),
                "port 0 is not a destination",
            ));
        }
        if destination.weight == 0 {
            return Err(ConfigError::new(
                path,
                format!("{field}: destination {}: weight", index + 1),
                "must be at least 1",
            ));
        }
        destinations.push((addr, destination.weight));
    }
    let health = channel.health.clone().unwrap_or_else(|| HealthConfig {
        kind: if channel.kind == ChannelKind::Udp { HealthKind::None } else { HealthKind::Tcp },
        ..HealthConfig::default()
    });
    if health.interval_ms == 0 || health.timeout_ms == 0 || health.failures == 0 {
        return Err(ConfigError::new(
            path,
            format!("{field}: health"),
            "interval_ms, timeout_ms and failures must be at least 1",
        ));
    }
    if health.kind == HealthKind::Http && !health.path.starts_with('/') {
        return Err(ConfigError::new(path, format!("{field}: health: path"), "must start with '/'"));
    }
    if channel.queue == 0 {
        return Err(ConfigError::new(path, format!("{field}: queue"), "must be at least 1"));
    }
    let multicast_interface = match &channel.multicast_interface {
        Some(text) => Some(text.parse().map_err(|_| {
            ConfigError::new(path, format!("{field}: multicast_interface"), format!("'{text}' is not an IPv4 address"))
        })?),
        None => None,
    };
    Ok(CheckedSink { config: channel.clone(), destinations, health, multicast_interface })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_parsed_with_actionable_errors() {
        assert_eq!(parse_addr("127.0.0.1:80"), Ok("127.0.0.1:80".parse().unwrap_or_else(|_| unreachable!())));
        assert_eq!(parse_addr("127.0.0.1:70000"), Err("port 70000 out of range (0-65535)".to_string()));
        assert_eq!(parse_addr("host:80"), Err("'host' is not an IP address".to_string()));
        assert_eq!(parse_addr("127.0.0.1"), Err("'127.0.0.1' is not an address: expected ip:port".to_string()));
    }

    fn sink(text: &str) -> Result<CheckedSink, ConfigError> {
        let channel: SinkChannel = parse_toml(Path::new("red.toml"), text)?;
        check_sink(Path::new("red.toml"), &channel)
    }

    #[test]
    fn a_sink_without_destination_is_refused_by_channel_number() {
        let error = sink("number = 3\nkind = \"tcp\"\nname = \"x\"").unwrap_err();
        assert_eq!(error.to_string(), "red.toml: channel 3: has no destination");
        let error = sink("number = 7\nkind = \"tcp\"\nname = \"x\"\n[[destination]]\naddress = \"127.0.0.1:70000\"")
            .unwrap_err();
        assert_eq!(error.to_string(), "red.toml: channel 7: destination 1: port 70000 out of range (0-65535)");
    }

    #[test]
    fn unknown_fields_are_refused_with_their_line() {
        let error = sink("number = 3\nkind = \"tcp\"\nname = \"x\"\ncolour = 1").unwrap_err();
        assert_eq!(error.field, "line 4");
        assert!(error.reason.contains("unknown field `colour`"), "{error}");
    }

    #[test]
    fn fingerprint_depends_on_the_table_not_its_order() {
        let a: SourceChannel =
            parse_toml(Path::new("a"), "number = 1\nkind = \"tcp\"\nname = \"a\"\nlisten = \"127.0.0.1:1\"")
                .unwrap_or_else(|e| unreachable!("{e}"));
        let mut b = a.clone();
        b.number = 2;
        b.name = "b".into();
        assert_eq!(fingerprint(&[a.clone(), b.clone()]), fingerprint(&[b.clone(), a.clone()]));
        let mut renamed = b.clone();
        renamed.name = "c".into();
        assert_ne!(fingerprint(&[a.clone(), b]), fingerprint(&[a, renamed]));
    }

    #[test]
    fn duplicate_numbers_and_names_are_refused() {
        let a: SourceChannel =
            parse_toml(Path::new("a"), "number = 1\nkind = \"tcp\"\nname = \"a\"\nlisten = \"127.0.0.1:1\"")
                .unwrap_or_else(|e| unreachable!("{e}"));
        let error = check_identities(Path::new("blue.toml"), &[a.clone(), a]).unwrap_err();
        assert_eq!(error.to_string(), "blue.toml: channel 1: channel number used twice");
    }
}
