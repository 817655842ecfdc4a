//! The `[pair]` section: where the pair channel listens and connects, and its timeouts and bounds.

use std::net::SocketAddr;
use std::time::Duration;

use connectors::config::FieldError;
use serde::Deserialize;

use super::wire::PairKey;

/// The pair channel's section of a daemon's configuration (`[pair]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairConfig {
    /// Where this node accepts its active peer's connection (`ip:port` on the data network).
    pub listen: String,
    /// Where the peer accepts this node's connection when this node is active.
    pub peer: String,
    /// How long an accepted file or a delivery waits for the standby's acknowledgement before it
    /// goes ahead without it (and the pair counts as not redundant).
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// BLUE: files the active reported sent are kept this long on the standby and resent after a
    /// takeover (RED's ledger recognises those already delivered).
    pub resend_window_s: Option<u64>,
    /// RED: verified files the standby keeps from its shadow decoding, waiting for the active to
    /// report them delivered (oldest dropped first, and counted, beyond this).
    pub shadow_files: Option<usize>,
}

fn default_ack_timeout_ms() -> u64 {
    2000
}

pub const DEFAULT_RESEND_WINDOW_S: u64 = 30;
pub const DEFAULT_SHADOW_FILES: usize = 1000;
/// A checked `[pair]` section.
#[derive(Clone, Debug)]
pub struct CheckedPair {
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    pub ack_timeout: Duration,
    pub resend_window: Duration,
    pub shadow_files: usize,
    pub key: PairKey,
}

impl PairConfig {
    /// Checks the section; `side` is "blue" or "red" (each has one field of its own), the security text
    /// comes from `[ha]`.
    pub fn check(&self, side: &str, security_text: &str) -> Result<CheckedPair, FieldError> {
        let field = |name: &str, reason: &dyn std::fmt::Display| FieldError::new(format!("pair.{name}"), reason);
        let listen = connectors::config::parse_addr(&self.listen).map_err(|e| field("listen", &e))?;
        let peer = connectors::config::parse_addr(&self.peer).map_err(|e| field("peer", &e))?;
        if listen == peer {
            return Err(field("peer", &"the peer's address is this node's own"));
        }
        if listen.ip().is_unspecified() {
            return Err(field("listen", &"give this node's data address, not 0.0.0.0"));
        }
        if !(100..=60_000).contains(&self.ack_timeout_ms) {
            return Err(field("ack_timeout_ms", &"must be between 100 and 60000"));
        }
        if side == "red" && self.resend_window_s.is_some() {
            return Err(field("resend_window_s", &"only blue-tx resends; red-rx has shadow_files"));
        }
        if side == "blue" && self.shadow_files.is_some() {
            return Err(field("shadow_files", &"only red-rx decodes in shadow; blue-tx has resend_window_s"));
        }
        let resend_window_s = self.resend_window_s.unwrap_or(DEFAULT_RESEND_WINDOW_S);
        if !(1..=86_400).contains(&resend_window_s) {
            return Err(field("resend_window_s", &"must be between 1 and 86400 seconds"));
        }
        let shadow_files = self.shadow_files.unwrap_or(DEFAULT_SHADOW_FILES);
        if !(1..=1_000_000).contains(&shadow_files) {
            return Err(field("shadow_files", &"must be between 1 and 1000000"));
        }
        if security_text.is_empty() {
            return Err(FieldError::new("ha.security_text", "the pair channel is authenticated with it: set one"));
        }
        Ok(CheckedPair {
            listen,
            peer,
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            resend_window: Duration::from_secs(resend_window_s),
            shadow_files,
            key: PairKey::from_security_text(security_text),
        })
    }
}

/// Checks a daemon's optional `[pair]` section against its `[ha]` (the security text and the VIP).
pub fn check_section(
    path: &std::path::Path,
    pair: Option<&PairConfig>,
    side: &str,
    ha: Option<(&str, std::net::Ipv4Addr)>,
) -> Result<Option<CheckedPair>, connectors::config::ConfigError> {
    let Some(pair) = pair else { return Ok(None) };
    let err = |field: String, reason: String| connectors::config::ConfigError::new(path, field, reason);
    let Some((security_text, vip)) = ha else {
        return Err(err("pair".into(), "the pair channel needs an [ha] section (its security text and VIP)".into()));
    };
    let checked = pair.check(side, security_text).map_err(|e| connectors::config::ConfigError::in_file(path, e))?;
    for (field, addr) in [("pair.listen", checked.listen), ("pair.peer", checked.peer)] {
        if addr.ip() == std::net::IpAddr::V4(vip) {
            return Err(err(
                field.into(),
                format!("{addr} is the VIP: the pair channel must reach the standby, which does not hold it"),
            ));
        }
    }
    Ok(Some(checked))
}
