//! Which parts of a daemon's configuration the pair shares, and how a standby applies the active's.
//!
//! Shared: channels, destinations, FEC, link, receiver limits (everything that must agree for the
//! pair to behave as one). Local, never replicated: the node itself (name, status file, control
//! socket), the election (`[ha]`: priority, addresses), the management API, the fibers (each node
//! has its own ports), the pair channel, the link keys (key files are per-node paths), and per
//! channel the folders holding this node's own state (spool, output folder, quarantine, ledger,
//! sent and rejected folders).

use std::path::Path;

use connectors::config::ConfigError;

/// Top-level sections that belong to one node.
pub const LOCAL_SECTIONS: &[&str] = &["node", "ha", "management", "fiber", "pair", "link_key"];
/// Channel fields that name this node's own storage.
pub const LOCAL_CHANNEL_KEYS: &[&str] = &["spool", "folder", "quarantine", "ledger", "sent_folder", "rejected_folder"];

/// Why the active's configuration was not applied on this standby (told back to the active).
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{whose} configuration does not parse: {source}")]
    Parse {
        whose: &'static str,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot write the merged configuration: {0}")]
    Write(#[from] toml::ser::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {}", .0.field, .0.reason)]
    Refused(ConfigError),
    #[error("cannot save {path}: {source}")]
    Save {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn parse(text: &str, whose: &'static str) -> Result<toml::Table, ApplyError> {
    text.parse::<toml::Table>().map_err(|source| ApplyError::Parse { whose, source })
}

/// The configuration this node should run: the active's shared settings with this node's local
/// ones. A channel this node already has keeps its own storage folders; a new one takes the
/// active's.
pub fn merge(active: &str, own: &str) -> Result<String, ApplyError> {
    let active = parse(active, "the active's")?;
    let own = parse(own, "this node's")?;
    let mut merged = toml::Table::new();
    for (key, value) in &active {
        if !LOCAL_SECTIONS.contains(&key.as_str()) {
            merged.insert(key.clone(), value.clone());
        }
    }
    for (key, value) in &own {
        if LOCAL_SECTIONS.contains(&key.as_str()) {
            merged.insert(key.clone(), value.clone());
        }
    }
    let own_channels: Vec<&toml::Table> = own
        .get("channel")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_table)
        .collect();
    if let Some(channels) = merged.get_mut("channel").and_then(toml::Value::as_array_mut) {
        for channel in channels.iter_mut().filter_map(toml::Value::as_table_mut) {
            let number = channel.get("number").cloned();
            let Some(mine) = own_channels.iter().find(|c| c.get("number") == number.as_ref()) else { continue };
            for key in LOCAL_CHANNEL_KEYS {
                match mine.get(*key) {
                    Some(value) => channel.insert((*key).to_string(), value.clone()),
                    None => channel.remove(*key),
                };
            }
        }
    }
    Ok(toml::to_string(&merged)?)
}

/// Whether two configuration texts mean the same (formatting and comments aside).
pub fn same(a: &str, b: &str) -> bool {
    matches!((a.parse::<toml::Table>(), b.parse::<toml::Table>()), (Ok(a), Ok(b)) if a == b)
}

/// What became of the active's configuration on this standby.
#[derive(Debug, PartialEq, Eq)]
pub enum Applied {
    /// Nothing shared differs.
    Unchanged,
    /// Saved; the daemon must reload it.
    Changed,
}

/// Merges the active's configuration into this node's file at `path`, runs the daemon's own checks
/// (`check`) on the result, and saves it when it passes and differs. A refusal names the field.
pub fn apply(
    path: &Path,
    active: &str,
    check: impl Fn(&Path, &str) -> Result<(), ConfigError>,
) -> Result<Applied, ApplyError> {
    let own = std::fs::read_to_string(path).map_err(|source| ApplyError::Read { path: path.to_path_buf(), source })?;
    let merged = merge(active, &own)?;
    if same(&merged, &own) {
        return Ok(Applied::Unchanged);
    }
    check(path, &merged).map_err(ApplyError::Refused)?;
    chassis::runtime::save_config(path, &merged)
        .map_err(|source| ApplyError::Save { path: path.to_path_buf(), source })?;
    Ok(Applied::Changed)
}

/// The standby's handling of a `config` message: applies it (see [`apply`]), records the outcome in
/// the pair's counters, asks the daemon to reload when it changed, and returns the answer.
pub fn apply_on_standby(
    path: &Path,
    active: &str,
    stats: &super::PairStats,
    reload: &tokio::sync::Notify,
    check: impl Fn(&Path, &str) -> Result<(), ConfigError>,
) -> super::PairMessage {
    let result = apply(path, active, check);
    let reason = result.as_ref().err().map(ToString::to_string);
    if let Ok(mut refused) = stats.config_refused.lock() {
        refused.clone_from(&reason);
    }
    match result {
        Ok(Applied::Changed) => {
            tracing::info!("configuration replicated from the active: applying it now");
            stats.configs_applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            reload.notify_one();
        }
        Ok(Applied::Unchanged) => {}
        Err(ref reason) => {
            tracing::warn!(%reason, "ALARM the active's configuration is refused: this node keeps its own");
        }
    }
    super::PairMessage::ConfigResult { ok: reason.is_none(), reason }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACTIVE: &str = r#"
[node]
name = "blue1"
[ha]
skew = 0
bind = "127.0.0.1:1"
[management]
listen = "127.0.0.1:9001"
[link]
rate_mbps = 900.0
[[fiber]]
remote = "127.0.0.9:1"
[[channel]]
number = 1
kind = "vault"
name = "uploads"
spool = "/active/spool"
max_file_size = 5
[[channel]]
number = 2
kind = "tcp"
name = "new"
"#;

    const OWN: &str = r#"
[node]
name = "blue2"
[ha]
skew = 20
bind = "127.0.0.2:1"
[management]
listen = "127.0.0.2:9001"
[link]
rate_mbps = 500.0
[[fiber]]
remote = "127.0.0.9:2"
[[channel]]
number = 1
kind = "vault"
name = "old name"
spool = "/standby/spool"
"#;

    #[test]
    fn shared_settings_come_from_the_active_and_local_ones_stay() {
        let merged: toml::Table = merge(ACTIVE, OWN).unwrap().parse().unwrap();
        assert_eq!(merged["node"]["name"].as_str(), Some("blue2"));
        assert_eq!(merged["ha"]["skew"].as_integer(), Some(20));
        assert_eq!(merged["management"]["listen"].as_str(), Some("127.0.0.2:9001"));
        assert_eq!(merged["fiber"][0]["remote"].as_str(), Some("127.0.0.9:2"));
        assert_eq!(merged["link"]["rate_mbps"].as_float(), Some(900.0));
        let channels = merged["channel"].as_array().unwrap();
        assert_eq!(channels.len(), 2);
        assert_eq!(channels[0]["name"].as_str(), Some("uploads"));
        assert_eq!(channels[0]["max_file_size"].as_integer(), Some(5));
        assert_eq!(channels[0]["spool"].as_str(), Some("/standby/spool"));
        assert_eq!(channels[1]["name"].as_str(), Some("new"));
    }

    #[test]
    fn merging_twice_changes_nothing() {
        let merged = merge(ACTIVE, OWN).unwrap();
        assert!(same(&merge(ACTIVE, &merged).unwrap(), &merged));
        assert!(!same(&merged, OWN));
    }

    #[test]
    fn a_refused_configuration_is_not_saved() {
        let path = std::env::temp_dir().join(format!("replicated-{}.toml", std::process::id()));
        std::fs::write(&path, OWN).unwrap();
        let refuse = |p: &Path, _: &str| Err(ConfigError::new(p, "link: rate_mbps", "too fast"));
        assert_eq!(apply(&path, ACTIVE, refuse).unwrap_err().to_string(), "link: rate_mbps: too fast");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), OWN);
        assert_eq!(apply(&path, ACTIVE, |_, _| Ok(())).ok(), Some(Applied::Changed));
        assert_eq!(apply(&path, ACTIVE, |_, _| Ok(())).ok(), Some(Applied::Unchanged));
        let _ = std::fs::remove_file(path.with_extension("toml.bak"));
        std::fs::remove_file(path).unwrap();
    }
}
