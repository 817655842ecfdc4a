//! The checks a RED sink channel passes before it runs: destinations, health checks, and the output
//! folders with their state kept where no delivered name can reach.

use std::net::SocketAddr;
use std::path::Path;

use super::{
    only_for, parse_addr, ChannelKind, ConfigError, HealthConfig, HealthKind, SinkChannel, MIN_SINK_QUEUE_BYTES,
};

/// A sink channel after its checks.
#[derive(Clone, Debug)]
pub struct CheckedSink {
    pub config: SinkChannel,
    pub destinations: Vec<(SocketAddr, u32)>,
    pub health: HealthConfig,
    pub multicast_interface: Option<std::net::Ipv4Addr>,
    /// Files and vault channels: the output folder's settings.
    pub files: Option<crate::filesink::FileSinkConfig>,
    /// Vault channels: where the HTTP vault listens.
    pub vault_listen: Option<SocketAddr>,
    /// TCP channels with their spool on (see [`check_spool`], which the daemon's check runs with the
    /// node's state folder).
    pub spool: Option<crate::store::SpoolConfig>,
}

pub fn check_sink(path: &Path, channel: &SinkChannel) -> Result<CheckedSink, ConfigError> {
    let field = format!("channel {}", channel.number);
    let at = |name: &str| format!("{field}: {name}");
    let streams_to_destinations = matches!(channel.kind, ChannelKind::Tcp | ChannelKind::Udp);
    if streams_to_destinations && channel.destinations.is_empty() {
        return Err(ConfigError::new(path, field, "has no destination"));
    }
    if !streams_to_destinations && !channel.destinations.is_empty() {
        return Err(ConfigError::new(
            path,
            at("destination"),
            format!("a {} channel delivers to its folder, not to destinations", channel.kind.as_str()),
        ));
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
        return Err(ConfigError::new(path, at("health"), "interval_ms, timeout_ms and failures must be at least 1"));
    }
    if health.kind == HealthKind::Http && !health.path.starts_with('/') {
        return Err(ConfigError::new(path, at("health: path"), "must start with '/'"));
    }
    if channel.queue == 0 {
        return Err(ConfigError::new(path, at("queue"), "must be at least 1"));
    }
    if channel.queue_bytes < MIN_SINK_QUEUE_BYTES {
        return Err(ConfigError::new(
            path,
            at("queue_bytes"),
            format!("must be at least {MIN_SINK_QUEUE_BYTES} (a block's worth of stream data)"),
        ));
    }
    let multicast_interface = match &channel.multicast_interface {
        Some(text) => Some(text.parse().map_err(|_| {
            ConfigError::new(path, at("multicast_interface"), format!("'{text}' is not an IPv4 address"))
        })?),
        None => None,
    };
    let is_vault = channel.kind == ChannelKind::Vault;
    only_for(path, &at("folder"), channel.folder.is_some() && streams_to_destinations, "files and vault")?;
    only_for(path, &at("quarantine"), channel.quarantine.is_some() && streams_to_destinations, "files and vault")?;
    only_for(path, &at("ledger"), channel.ledger.is_some() && streams_to_destinations, "files and vault")?;
    only_for(path, &at("listen"), channel.listen.is_some() && !is_vault, "vault")?;
    only_for(path, &at("allow_delete"), channel.allow_delete && !is_vault, "vault")?;
    let files = if streams_to_destinations {
        None
    } else {
        let Some(folder) = channel.folder.clone() else {
            return Err(ConfigError::new(
                path,
                at("folder"),
                format!("a {} channel needs its output folder", channel.kind.as_str()),
            ));
        };
        if !folder.is_absolute() {
            return Err(ConfigError::new(
                path,
                at("folder"),
                format!("'{}' must be an absolute path", folder.display()),
            ));
        }
        if channel.ledger_entries == 0 {
            return Err(ConfigError::new(path, at("ledger_entries"), "must be at least 1"));
        }
        if channel.max_file_size == 0 {
            return Err(ConfigError::new(path, at("max_file_size"), "must be at least 1"));
        }
        let quarantine = channel.quarantine.clone().unwrap_or_else(|| folder.join(".quarantine"));
        let ledger = channel.ledger.clone().unwrap_or_else(|| folder.join(".ledger.jsonl"));
        for (field, state) in [("quarantine", &quarantine), ("ledger", &ledger)] {
            if let Some(reason) = reachable_by_deliveries(&folder, state) {
                return Err(ConfigError::new(path, at(field), reason));
            }
        }
        Some(crate::filesink::FileSinkConfig {
            channel: channel.number,
            quarantine,
            ledger,
            ledger_entries: channel.ledger_entries,
            on_failure: channel.on_failure,
            max_file_size: channel.max_file_size,
            folder,
        })
    };
    let vault_listen = match (&channel.listen, is_vault) {
        (Some(text), true) => Some(parse_addr(text).map_err(|reason| ConfigError::new(path, at("listen"), reason))?),
        (None, true) => {
            return Err(ConfigError::new(path, at("listen"), "a vault channel needs an address for its HTTP server"))
        }
        _ => None,
    };
    Ok(CheckedSink {
        config: channel.clone(),
        destinations,
        health,
        multicast_interface,
        files,
        vault_listen,
        spool: None,
    })
}

/// Refuses a spool folder inside a files or vault channel's output folder where a delivered name could
/// reach it: BLUE could then deliver a forged `<seq>.stream`, `.meta` and `.done`, which the next start
/// would hand to a TCP destination.
pub fn check_spools_apart(path: &Path, sinks: &[CheckedSink]) -> Result<(), ConfigError> {
    for sink in sinks {
        let Some(spool) = &sink.spool else { continue };
        for files in sinks.iter().filter_map(|s| s.files.as_ref()) {
            if let Some(reason) = reachable_by_deliveries(&files.folder, &spool.folder) {
                let field = format!("channel {}: spool: folder", sink.config.number);
                let reason = format!(
                    "{reason} (channel {}'s output folder; the default is under node: state_dir)",
                    files.channel
                );
                return Err(ConfigError::new(path, field, reason));
            }
        }
    }
    Ok(())
}

/// Why RED's own state at `state` could be written or read through a delivered name: inside the output
/// folder it must sit under a component starting with '.', which no accepted name has.
fn reachable_by_deliveries(folder: &Path, state: &Path) -> Option<String> {
    let relative = state.strip_prefix(folder).ok()?;
    let hidden = relative.components().next().is_some_and(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    (!hidden).then(|| {
        format!(
            "'{}' is inside the output folder where delivered files could reach it: use a name starting with '.' or a path outside",
            state.display()
        )
    })
}

/// The spool a TCP channel runs with (`None`: turned off, or a kind without one), its folder checked
/// writable: an explicit `folder` must exist, the default one (under `state_dir`) is created at start.
pub fn check_spool(
    path: &Path,
    channel: &SinkChannel,
    state_dir: &Path,
) -> Result<Option<crate::store::SpoolConfig>, ConfigError> {
    let at = |name: &str| format!("channel {}: spool: {name}", channel.number);
    if channel.kind != ChannelKind::Tcp {
        if channel.spool.as_ref().is_some_and(|s| s.enabled) {
            return Err(ConfigError::new(
                path,
                format!("channel {}: spool", channel.number),
                format!(
                    "this version spools tcp channels only (a {} channel {})",
                    channel.kind.as_str(),
                    if channel.kind == ChannelKind::Udp {
                        "sends to its destination as datagrams arrive"
                    } else {
                        "keeps its files in its output folder"
                    }
                ),
            ));
        }
        return Ok(None);
    }
    let section = channel.spool.clone().unwrap_or_default();
    if !section.enabled {
        return Ok(None);
    }
    let duration = |field: &str, text: &crate::store::DurationText| {
        text.parse().map_err(|e| ConfigError::new(path, at(field), e.to_string()))
    };
    let max_age = duration("max_age", &section.max_age)?;
    let stall = duration("stall", &section.stall)?;
    if max_age.is_zero() {
        return Err(ConfigError::new(path, at("max_age"), "must be at least 1 second"));
    }
    if stall.is_zero() {
        return Err(ConfigError::new(path, at("stall"), "must be at least 1 second"));
    }
    if section.max_bytes < MIN_SINK_QUEUE_BYTES as u64 {
        return Err(ConfigError::new(path, at("max_bytes"), format!("must be at least {MIN_SINK_QUEUE_BYTES}")));
    }
    for (field, value) in [
        ("max_items", section.max_items as u64),
        ("sync_ms", section.sync_ms),
        ("parallel", section.parallel as u64),
        ("replay_rate", u64::from(section.replay_rate)),
    ] {
        if value == 0 {
            return Err(ConfigError::new(path, at(field), "must be at least 1"));
        }
    }
    let (folder, field) = match &section.folder {
        Some(folder) => (folder.clone(), at("folder")),
        None => (state_dir.join("spool").join(format!("channel-{}", channel.number)), "node: state_dir".to_string()),
    };
    if !folder.is_absolute() {
        return Err(ConfigError::new(path, field, format!("'{}' must be an absolute path", folder.display())));
    }
    crate::store::check_writable(&folder, section.folder.is_none())
        .map_err(|problem| ConfigError::new(path, field, format!("spool folder: {problem}")))?;
    Ok(Some(crate::store::SpoolConfig {
        folder,
        max_bytes: section.max_bytes,
        max_items: section.max_items,
        max_age,
        sync_every: std::time::Duration::from_millis(section.sync_ms),
        parallel: section.parallel,
        stall,
        replay_rate: section.replay_rate,
    }))
}
