//! red-rx configuration: node, receiver limits, fibers and sink channels, with checks that name the
//! file, the field and the reason.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use connectors::config::{
    check_identities, check_sink, check_spool, check_spools_apart, fingerprint, load_toml, parse_addr, CheckedSink,
    ConfigError, NodeConfig, SinkChannel,
};
use diode_proto::ReceiverConfig;
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedConfig {
    pub node: NodeConfig,
    /// Active/Standby pair membership; absent for a single node.
    pub ha: Option<ha_carp::driver::HaConfig>,
    #[serde(default)]
    pub receiver: ReceiverSection,
    #[serde(default, rename = "fiber")]
    pub fibers: Vec<FiberIn>,
    #[serde(default, rename = "channel")]
    pub channels: Vec<SinkChannel>,
    /// The management API and dashboard; absent means none.
    pub management: Option<chassis::management::ManagementConfig>,
    /// Keys whose tags are accepted (absent: CRC32 only, and tagged datagrams are refused).
    #[serde(default, rename = "link_key")]
    pub link_keys: Vec<connectors::config::LinkKeyConfig>,
    /// The pair channel to the other node of an HA pair (ledger replication, shadow decoding);
    /// absent: a standby delivers nothing and keeps nothing.
    pub pair: Option<ha_carp::pair::PairConfig>,
}

fn default_block_timeout_ms() -> u64 {
    500
}
fn default_blocks_in_flight() -> usize {
    512
}
/// 32 MiB: 46 full blocks at MTU 9000 (six times what 8-deep interleaving keeps in collection), and
/// with the fiber buffers and the sink queues red-rx stays near 64 MB when a sender overloads it.
fn default_bytes_in_flight() -> usize {
    32 << 20
}
fn default_suspect_timeout_s() -> u64 {
    15
}
fn default_max_block_bytes() -> u32 {
    8 << 20
}
fn default_max_open_streams() -> usize {
    1024
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverSection {
    /// A block not rebuilt this long after its first symbol is lost.
    #[serde(default = "default_block_timeout_ms")]
    pub block_timeout_ms: u64,
    /// Blocks held at once over all channels (bounds memory with max_block_bytes).
    #[serde(default = "default_blocks_in_flight")]
    pub max_blocks_in_flight: usize,
    /// Bytes those blocks may hold together; an incomplete block that later ones wait behind is
    /// given up early rather than letting memory grow.
    #[serde(default = "default_bytes_in_flight")]
    pub max_bytes_in_flight: usize,
    /// How long an open stream may stay silent after a block loss before it is aborted.
    #[serde(default = "default_suspect_timeout_s")]
    pub suspect_timeout_s: u64,
    #[serde(default = "default_max_block_bytes")]
    pub max_block_bytes: u32,
    #[serde(default = "default_max_open_streams")]
    pub max_open_streams: usize,
}

impl Default for ReceiverSection {
    fn default() -> ReceiverSection {
        ReceiverSection {
            block_timeout_ms: default_block_timeout_ms(),
            max_blocks_in_flight: default_blocks_in_flight(),
            max_bytes_in_flight: default_bytes_in_flight(),
            suspect_timeout_s: default_suspect_timeout_s(),
            max_block_bytes: default_max_block_bytes(),
            max_open_streams: default_max_open_streams(),
        }
    }
}

fn default_recv_buffer() -> usize {
    32 << 20
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiberIn {
    /// Where this fiber's datagrams arrive (`ip:port`).
    pub listen: String,
    #[serde(default = "default_recv_buffer")]
    pub recv_buffer: usize,
    /// Take the whole buffer even beyond the kernel's default cap (net.core.rmem_max) when the
    /// process has CAP_NET_ADMIN; without it the cap applies and a warning says how to raise it.
    #[serde(default = "default_force_buffer")]
    pub force_buffer: bool,
}

fn default_force_buffer() -> bool {
    true
}

#[derive(Clone, Debug)]
pub struct Checked {
    pub config: RedConfig,
    pub receiver: ReceiverConfig,
    pub fibers: Vec<SocketAddr>,
    pub sinks: Vec<CheckedSink>,
    pub fingerprint: [u8; 16],
    pub ha: Option<ha_carp::driver::DriverConfig>,
    pub management: Option<chassis::management::CheckedManagement>,
    /// The file this configuration came from (the management API exports and replaces it).
    pub path: std::path::PathBuf,
    pub pair: Option<ha_carp::pair::CheckedPair>,
}

pub fn load(path: &Path) -> Result<Checked, ConfigError> {
    let config: RedConfig = load_toml(path)?;
    check(path, config)
}

pub fn check(path: &Path, config: RedConfig) -> Result<Checked, ConfigError> {
    let err = |field: &str, reason: &str| ConfigError::new(path, field, reason);
    if config.node.name.is_empty() {
        return Err(err("node: name", "must not be empty"));
    }
    let r = &config.receiver;
    if r.block_timeout_ms == 0 {
        return Err(err("receiver: block_timeout_ms", "must be at least 1"));
    }
    if r.max_blocks_in_flight < 8 {
        return Err(err("receiver: max_blocks_in_flight", "must be at least 8"));
    }
    if r.max_block_bytes < diode_proto::fec::MIN_BLOCK_LEN as u32 {
        return Err(err("receiver: max_block_bytes", &format!("must be at least {}", diode_proto::fec::MIN_BLOCK_LEN)));
    }
    // Two of the largest blocks with their extra symbols, so one can wait behind another.
    let two_blocks = 2 * (r.max_block_bytes as usize + diode_proto::fec::MAX_EXTRA_SYMBOLS as usize * 65_536);
    if r.max_bytes_in_flight < two_blocks {
        return Err(err(
            "receiver: max_bytes_in_flight",
            &format!(
                "{} holds less than two blocks of max_block_bytes: give at least {two_blocks}",
                r.max_bytes_in_flight
            ),
        ));
    }
    if r.max_open_streams == 0 {
        return Err(err("receiver: max_open_streams", "must be at least 1"));
    }
    if config.fibers.is_empty() || config.fibers.len() > 2 {
        return Err(err(
            "fiber",
            &format!("{} fibers configured: give one or two [[fiber]] sections", config.fibers.len()),
        ));
    }
    let mut fibers = Vec::new();
    for (index, fiber) in config.fibers.iter().enumerate() {
        fibers.push(
            parse_addr(&fiber.listen)
                .map_err(|reason| ConfigError::new(path, format!("fiber {}: listen", index + 1), reason))?,
        );
    }
    check_identities(path, &config.channels)?;
    let state_dir = config.node.state_dir();
    let mut sinks = Vec::new();
    for channel in &config.channels {
        let mut sink = check_sink(path, channel)?;
        sink.spool = check_spool(path, channel, &state_dir)?;
        sinks.push(sink);
    }
    check_spools_apart(path, &sinks)?;
    let receiver = ReceiverConfig {
        max_block_len: r.max_block_bytes,
        max_blocks_in_flight: r.max_blocks_in_flight,
        max_bytes_in_flight: r.max_bytes_in_flight,
        channel_window: (r.max_blocks_in_flight / 2).max(4) as u64,
        max_channels: config.channels.len().max(1) * 2 + 8,
        block_timeout: Duration::from_millis(r.block_timeout_ms),
        stream_suspect_timeout: Duration::from_secs(r.suspect_timeout_s),
        max_open_streams: r.max_open_streams,
        auth: connectors::config::check_link_keys(path, &config.link_keys, None)?,
        ..ReceiverConfig::default()
    };
    let ha = match &config.ha {
        Some(section) => {
            let mut driver = section.check().map_err(|e| ConfigError::in_file(path, e))?;
            // A RED that takes the VIP back from a working peer has not decoded the beginning of the
            // files in flight (its shadow started when it did); its peer, now standby, holds them in
            // shadow and waits for an announcement that never comes: they would be lost.
            if config.pair.is_some() {
                if section.preempt == Some(true) {
                    return Err(ConfigError::new(
                        path,
                        "ha: preempt",
                        "must be false with a [pair]: a RED that takes the VIP back from a working peer would \
                         lose the files in flight (their beginning was decoded only by the peer)",
                    ));
                }
                driver.carp.preempt = false;
            }
            // Vault clients reach the pair through the VIP, which only the active node holds.
            for sink in &sinks {
                if let Some(listen) = sink.vault_listen.filter(|l| l.ip() != std::net::IpAddr::V4(driver.vip)) {
                    return Err(ConfigError::new(
                        path,
                        format!("channel {}: listen", sink.config.number),
                        format!("{listen} is not on the VIP {}: with [ha] the vault listens on the VIP", driver.vip),
                    ));
                }
            }
            Some(driver)
        }
        None => None,
    };
    let management = chassis::management::check_section(path, config.management.as_ref(), ha.as_ref().map(|h| h.vip))?;
    let pair_ha =
        config.ha.as_ref().zip(ha.as_ref()).map(|(section, driver)| (section.security_text.as_str(), driver.vip));
    let pair = ha_carp::pair::check_section(path, config.pair.as_ref(), "red", pair_ha)?;
    Ok(Checked {
        pair,
        fingerprint: fingerprint(&config.channels),
        receiver,
        fibers,
        sinks,
        ha,
        management,
        path: path.to_path_buf(),
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use connectors::config::parse_toml;

    fn checked(text: &str) -> Result<Checked, ConfigError> {
        let path = Path::new("red.toml");
        check(path, parse_toml(path, text)?)
    }

    #[test]
    fn a_channel_without_destination_is_named() {
        let text = "[node]\nname = \"red1\"\n[[fiber]]\nlisten = \"127.0.0.1:7001\"\n[[channel]]\nnumber = 3\nkind = \"tcp\"\nname = \"h\"\n";
        assert_eq!(checked(text).unwrap_err().to_string(), "red.toml: channel 3: has no destination");
        let with = format!("{text}[[channel.destination]]\naddress = \"127.0.0.1:6001\"\n");
        assert_eq!(checked(&with).map(|c| c.sinks.len()), Ok(1));
    }

    #[test]
    fn a_byte_budget_below_two_blocks_is_refused_by_name() {
        let base = "[node]\nname = \"red1\"\n[[fiber]]\nlisten = \"127.0.0.1:7001\"\n";
        let default = checked(base).unwrap();
        assert_eq!(default.receiver.max_bytes_in_flight, 32 << 20);
        let small = format!("{base}[receiver]\nmax_bytes_in_flight = 1000000\n");
        let error = checked(&small).unwrap_err();
        assert_eq!(error.field, "receiver: max_bytes_in_flight");
        assert!(error.to_string().contains("two blocks"), "{error}");
        let fitting = format!("{base}[receiver]\nmax_block_bytes = 1000000\nmax_bytes_in_flight = 5000000\n");
        assert_eq!(checked(&fitting).map(|c| c.receiver.max_bytes_in_flight), Ok(5_000_000));
    }

    #[test]
    fn a_red_pair_never_preempts() {
        let base = "[node]\nname = \"red1\"\n[[fiber]]\nlisten = \"127.0.0.1:7001\"\n\
                    [ha]\nvhid = 3\nvip = \"127.0.0.100\"\nsecurity_text = \"s\"\nbind = \"127.0.0.1:7100\"\n\
                    peers = [\"127.0.0.2:7100\"]\n";
        let pair = "[pair]\nlisten = \"127.0.0.1:7200\"\npeer = \"127.0.0.2:7200\"\n";
        let preempts = |text: &str| checked(text).map(|c| c.ha.map(|h| h.carp.preempt));
        assert_eq!(preempts(base), Ok(Some(true)), "without a pair the CARP default holds");
        assert_eq!(preempts(&format!("{base}{pair}")), Ok(Some(false)), "with a pair it does not preempt");
        let asked = base.replace("peers =", "preempt = true\npeers =");
        assert_eq!(preempts(&format!("{asked}{pair}")).unwrap_err().field, "ha: preempt");
        assert_eq!(preempts(&asked), Ok(Some(true)));
    }

    #[test]
    fn a_tcp_channel_spools_by_default_under_the_state_folder_and_its_fields_are_named() {
        let state = std::env::temp_dir().join(format!("red-config-spool-{}", std::process::id()));
        let base = format!(
            "[node]\nname = \"red1\"\nstate_dir = \"{}\"\n[[fiber]]\nlisten = \"127.0.0.1:7001\"\n\
             [[channel]]\nnumber = 3\nkind = \"tcp\"\nname = \"h\"\n[[channel.destination]]\naddress = \"127.0.0.1:6001\"\n",
            state.display()
        );
        let spool = checked(&base).unwrap().sinks[0].spool.clone().expect("on by default");
        assert_eq!(spool.folder, state.join("spool/channel-3"));
        assert_eq!(spool.max_age, Duration::from_secs(86_400));
        let off = checked(&format!("{base}[channel.spool]\nenabled = false\n")).unwrap();
        assert!(off.sinks[0].spool.is_none(), "enabled = false turns it off");
        let missing = checked(&format!("{base}[channel.spool]\nfolder = \"{}\"\n", state.join("nope").display()));
        let error = missing.unwrap_err();
        assert_eq!(error.field, "channel 3: spool: folder");
        assert!(error.to_string().contains("does not exist"), "{error}");
        let bad_age = checked(&format!("{base}[channel.spool]\nmax_age = \"3 weeks\"\n")).unwrap_err();
        assert_eq!(bad_age.field, "channel 3: spool: max_age");
        std::fs::write(&state, b"a file where the state folder should be").unwrap();
        let blocked = checked(&base).unwrap_err();
        assert_eq!(blocked.field, "node: state_dir");
        assert!(blocked.to_string().contains("not a folder"), "{blocked}");
        let _ = std::fs::remove_file(&state);
        // A spool where a files channel's deliveries land would let BLUE forge a stream.
        let out = state.with_extension("out");
        let files =
            format!("[[channel]]\nnumber = 4\nkind = \"files\"\nname = \"f\"\nfolder = \"{}\"\n", out.display());
        let inside = base.replace("[node]\nname", &format!("[node]\nstate_dir = \"{}\"\nname", out.display()));
        let inside = inside.replacen(&format!("state_dir = \"{}\"\n", state.display()), "", 1);
        let error = checked(&format!("{inside}{files}")).unwrap_err();
        assert_eq!(error.field, "channel 3: spool: folder");
        assert!(error.to_string().contains("output folder"), "{error}");
        let hidden = format!("{base}[channel.spool]\nfolder = \"{}\"\n{files}", out.join(".spool").display());
        std::fs::create_dir_all(out.join(".spool")).unwrap();
        assert!(checked(&hidden).is_ok(), "under a '.' name no delivered file reaches it");
        let _ = std::fs::remove_dir_all(&out);
        let udp = base.replace("kind = \"tcp\"", "kind = \"udp\"");
        assert!(checked(&udp).unwrap().sinks[0].spool.is_none());
        let asked = checked(&format!("{udp}[channel.spool]\nmax_bytes = 10000000\n")).unwrap_err();
        assert_eq!(asked.field, "channel 3: spool");
    }
}
