//! blue-tx configuration: node, FEC, link, fibers and source channels, with checks that name the file,
//! the field and the reason.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use connectors::config::{
    check_identities, check_source, fingerprint, load_toml, parse_addr, CheckedSource, ConfigError, NodeConfig,
    SourceChannel,
};
use diode_proto::{FecParams, FiberMode};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlueConfig {
    pub node: NodeConfig,
    /// Active/Standby pair membership; absent for a single node.
    pub ha: Option<ha_carp::driver::HaConfig>,
    #[serde(default)]
    pub fec: FecConfig,
    #[serde(default)]
    pub link: LinkConfig,
    #[serde(default, rename = "fiber")]
    pub fibers: Vec<FiberOut>,
    #[serde(default, rename = "channel")]
    pub channels: Vec<SourceChannel>,
    /// The management API and dashboard; absent means none.
    pub management: Option<chassis::management::ManagementConfig>,
    /// Keys that authenticate every datagram (absent: CRC32 only).
    #[serde(default, rename = "link_key")]
    pub link_keys: Vec<connectors::config::LinkKeyConfig>,
    /// The pair channel to the other node of an HA pair (replication); absent: no replication.
    pub pair: Option<ha_carp::pair::PairConfig>,
}

fn default_mtu() -> usize {
    1500
}
fn default_repair() -> f64 {
    5.0
}
fn default_block_symbols() -> u16 {
    64
}
fn default_interleave() -> u16 {
    8
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FecConfig {
    /// MTU of the fiber links; the symbol size is the largest that fits.
    #[serde(default = "default_mtu")]
    pub mtu: usize,
    /// Repair symbols per block, in percent of a full block's source symbols.
    #[serde(default = "default_repair")]
    pub repair_percent: f64,
    /// Source symbols of a full block.
    #[serde(default = "default_block_symbols")]
    pub block_symbols: u16,
    /// Blocks whose symbols are interleaved on the wire.
    #[serde(default = "default_interleave")]
    pub interleave: u16,
}

impl Default for FecConfig {
    fn default() -> FecConfig {
        FecConfig {
            mtu: default_mtu(),
            repair_percent: default_repair(),
            block_symbols: default_block_symbols(),
            interleave: default_interleave(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeConfig {
    #[default]
    Mirror,
    Stripe,
}

fn default_rate() -> f64 {
    1000.0
}
fn default_beacon_ms() -> u64 {
    100
}
fn default_queue_blocks() -> usize {
    16
}
fn default_keepalive_s() -> u64 {
    5
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkConfig {
    #[serde(default)]
    pub mode: ModeConfig,
    /// Wire rate of each fiber in Mbit/s (IP and UDP headers and repair symbols included).
    #[serde(default = "default_rate")]
    pub rate_mbps: f64,
    #[serde(default = "default_beacon_ms")]
    pub beacon_interval_ms: u64,
    /// The epoch this sender starts at (raised by takeovers once HA exists).
    #[serde(default)]
    pub epoch: u32,
    /// Sealed blocks a channel may have waiting for the encoder before its sources pause.
    #[serde(default = "default_queue_blocks")]
    pub queue_blocks: usize,
    /// An open stream silent this long gets an empty record, so a receiver that lost a block learns
    /// quickly that the stream had nothing in it.
    #[serde(default = "default_keepalive_s")]
    pub keepalive_s: u64,
    /// With several `[[link_key]]`s (a rotation), the id of the one datagrams are tagged with.
    pub send_key: Option<u8>,
}

impl Default for LinkConfig {
    fn default() -> LinkConfig {
        LinkConfig {
            mode: ModeConfig::Mirror,
            rate_mbps: default_rate(),
            beacon_interval_ms: default_beacon_ms(),
            epoch: 0,
            queue_blocks: default_queue_blocks(),
            keepalive_s: default_keepalive_s(),
            send_key: None,
        }
    }
}

fn default_send_buffer() -> usize {
    8 << 20
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiberOut {
    /// Where the fiber's far end listens (`ip:port`).
    pub remote: String,
    /// Local address to send from.
    pub local: Option<String>,
    /// The network interface of this fiber: when it reports down, this node is demoted (HA), so a
    /// peer with working fibers takes over.
    pub interface: Option<String>,
    #[serde(default = "default_send_buffer")]
    pub send_buffer: usize,
    /// Take the whole buffer even beyond the kernel's default cap (net.core.wmem_max) when the
    /// process has CAP_NET_ADMIN; without it the cap applies and a warning says how to raise it.
    #[serde(default = "default_force_buffer")]
    pub force_buffer: bool,
}

fn default_force_buffer() -> bool {
    true
}

/// A configuration that passed every check.
#[derive(Clone, Debug)]
pub struct Checked {
    pub config: BlueConfig,
    pub fec: FecParams,
    pub mode: FiberMode,
    pub rate_bps: u64,
    pub fibers: Vec<(SocketAddr, Option<SocketAddr>)>,
    pub sources: Vec<CheckedSource>,
    pub fingerprint: [u8; 16],
    pub beacon_interval: Duration,
    pub ha: Option<ha_carp::driver::DriverConfig>,
    pub management: Option<chassis::management::CheckedManagement>,
    pub auth: diode_proto::LinkAuth,
    /// The file this configuration came from (the management API exports and replaces it).
    pub path: std::path::PathBuf,
    pub pair: Option<ha_carp::pair::CheckedPair>,
}

pub fn load(path: &Path) -> Result<Checked, ConfigError> {
    let config: BlueConfig = load_toml(path)?;
    check(path, config)
}

pub fn check(path: &Path, config: BlueConfig) -> Result<Checked, ConfigError> {
    let err = |field: &str, reason: String| ConfigError::new(path, field, reason);
    if config.node.name.is_empty() {
        return Err(err("node: name", "must not be empty".into()));
    }
    let fec_config = &config.fec;
    let symbol_size = FecParams::symbol_size_for_mtu(fec_config.mtu).map_err(|e| err("fec: mtu", e.to_string()))?;
    if !(0.0..=100.0).contains(&fec_config.repair_percent) {
        return Err(err("fec: repair_percent", format!("{} is not between 0 and 100", fec_config.repair_percent)));
    }
    let fec = FecParams {
        symbol_size,
        max_block_symbols: fec_config.block_symbols,
        repair_basis_points: (fec_config.repair_percent * 100.0).round() as u16,
        interleave_depth: fec_config.interleave,
    };
    fec.validate().map_err(|e| err("fec", e.to_string()))?;
    let link = &config.link;
    if !link.rate_mbps.is_finite() || link.rate_mbps <= 0.0 || link.rate_mbps > 100_000.0 {
        return Err(err("link: rate_mbps", format!("{} is not between 0 and 100000", link.rate_mbps)));
    }
    if link.beacon_interval_ms == 0 || link.beacon_interval_ms > 10_000 {
        return Err(err("link: beacon_interval_ms", "must be between 1 and 10000".into()));
    }
    if link.queue_blocks == 0 {
        return Err(err("link: queue_blocks", "must be at least 1".into()));
    }
    if link.keepalive_s == 0 {
        return Err(err("link: keepalive_s", "must be at least 1".into()));
    }
    if config.fibers.is_empty() || config.fibers.len() > 2 {
        return Err(err(
            "fiber",
            format!("{} fibers configured: give one or two [[fiber]] sections", config.fibers.len()),
        ));
    }
    let mode = match link.mode {
        ModeConfig::Mirror => FiberMode::Mirror,
        ModeConfig::Stripe => FiberMode::Stripe,
    };
    let mut fibers = Vec::new();
    for (index, fiber) in config.fibers.iter().enumerate() {
        let field = format!("fiber {}", index + 1);
        let remote = parse_addr(&fiber.remote).map_err(|r| ConfigError::new(path, format!("{field}: remote"), r))?;
        let local = match &fiber.local {
            Some(text) => Some(parse_addr(text).map_err(|r| ConfigError::new(path, format!("{field}: local"), r))?),
            None => None,
        };
        fibers.push((remote, local));
    }
    check_identities(path, &config.channels)?;
    let sources = config.channels.iter().map(|c| check_source(path, c)).collect::<Result<Vec<_>, _>>()?;
    let ha = match &config.ha {
        Some(section) => {
            let mut driver = section.check().map_err(|e| ConfigError::in_file(path, e))?;
            // A node that returns must not take the VIP back before its pair channel has brought the
            // files its peer accepted meanwhile (replicate.rs releases the hold).
            driver.hold_preemption = config.pair.is_some();
            // Clients reach the pair through the VIP: only the active node holds it and listens there.
            for source in sources.iter().filter(|s| s.multicast.is_none()) {
                if let Some(listen) = source.listen.filter(|l| l.ip() != std::net::IpAddr::V4(driver.vip)) {
                    return Err(ConfigError::new(
                        path,
                        format!("channel {}: listen", source.config.number),
                        format!("{listen} is not on the VIP {}: with [ha] sources listen on the VIP", driver.vip),
                    ));
                }
            }
            Some(driver)
        }
        None => None,
    };
    // Stripe spreads symbols over both fibers, so the wire rate is the sum; mirror sends everything twice.
    let per_fiber = (link.rate_mbps * 1e6) as u64;
    let rate_bps = if mode == FiberMode::Stripe { per_fiber * fibers.len() as u64 } else { per_fiber };
    let management = chassis::management::check_section(path, config.management.as_ref(), ha.as_ref().map(|h| h.vip))?;
    if config.link_keys.len() > 1 && link.send_key.is_none() {
        return Err(err("link: send_key", "several [[link_key]]s: say which one datagrams are tagged with".into()));
    }
    let auth = connectors::config::check_link_keys(path, &config.link_keys, link.send_key)?;
    let pair_ha =
        config.ha.as_ref().zip(ha.as_ref()).map(|(section, driver)| (section.security_text.as_str(), driver.vip));
    let pair = ha_carp::pair::check_section(path, config.pair.as_ref(), "blue", pair_ha)?;
    Ok(Checked {
        pair,
        management,
        auth,
        path: path.to_path_buf(),
        fingerprint: fingerprint(&config.channels),
        beacon_interval: Duration::from_millis(link.beacon_interval_ms),
        fec,
        mode,
        rate_bps,
        fibers,
        sources,
        ha,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use connectors::config::parse_toml;

    fn checked(text: &str) -> Result<Checked, ConfigError> {
        let path = Path::new("blue.toml");
        check(path, parse_toml(path, text)?)
    }

    const MINIMAL: &str = r#"
[node]
name = "blue1"
[[fiber]]
remote = "127.0.0.1:7000"
[[channel]]
number = 1
kind = "tcp"
name = "historian"
listen = "127.0.0.1:5001"
"#;

    #[test]
    fn a_minimal_file_gets_working_defaults() {
        let checked = checked(MINIMAL).unwrap_or_else(|e| unreachable!("{e}"));
        assert_eq!(checked.fec.symbol_size, 1416);
        assert_eq!(checked.fec.repair_basis_points, 500);
        assert_eq!(checked.rate_bps, 1_000_000_000);
        assert_eq!(checked.sources.len(), 1);
    }

    #[test]
    fn wrong_fields_are_named() {
        let error = checked(&MINIMAL.replace("127.0.0.1:5001", "127.0.0.1:70000")).unwrap_err();
        assert_eq!(error.to_string(), "blue.toml: channel 1: listen: port 70000 out of range (0-65535)");
        let error = checked(&MINIMAL.replace("[[fiber]]\nremote = \"127.0.0.1:7000\"\n", "")).unwrap_err();
        assert_eq!(error.field, "fiber");
        let error = checked(&format!("{MINIMAL}[fec]\nrepair_percent = 120\n")).unwrap_err();
        assert_eq!(error.to_string(), "blue.toml: fec: repair_percent: 120 is not between 0 and 100");
    }
}
