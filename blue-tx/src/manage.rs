//! What BLUE's management API shows (status, transfers, metrics) and does (demote, promote, check an
//! imported configuration).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chassis::management::{allow, labels, Family, HaFuture, LabelValues, Managed};
use connectors::config::{parse_toml, ChannelKind, ConfigError};
use connectors::source::SourceDrop;
use diode_proto::AbortReason;
use ha_carp::driver::{demote_or_promote, HaHandle};
use ha_carp::pair::PairError;
use serde_json::json;

use crate::config::Checked;
use crate::daemon::Counters;
use crate::status::{snapshot, BlueSnapshot, ChannelSnapshot};

pub struct BlueManaged {
    pub(crate) checked: Arc<Checked>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) ha: Option<HaHandle>,
    pub(crate) transmitting: Arc<AtomicBool>,
    pub(crate) pair: Option<ha_carp::pair::Replicator>,
}

impl BlueManaged {
    fn snapshot(&self) -> BlueSnapshot {
        let transmitting = self.transmitting.load(Ordering::Relaxed);
        let state = if transmitting { "running" } else { "standby" };
        snapshot(&self.checked, state, transmitting, &self.counters, self.ha.as_ref())
    }
}

/// `/metrics`, rendered from the same snapshot the status shows.
pub(crate) fn metric_families(snapshot: &BlueSnapshot) -> Vec<Family> {
    let node = snapshot.node.as_str();
    let base = || labels(&[("node", node), ("side", "blue")]);
    let at = |channel: &ChannelSnapshot, extra: &[(&str, &str)]| {
        let mut l = labels(&[("node", node), ("channel", &channel.name), ("kind", channel.kind)]);
        l.extend(labels(extra));
        l
    };
    let per_channel = |value: &dyn Fn(&ChannelSnapshot) -> Option<u64>| {
        snapshot.channels.iter().filter_map(|c| value(c).map(|v| (at(c, &[]), v as f64))).collect::<Vec<_>>()
    };
    let tx = &snapshot.transmit;
    let single = |value: u64| vec![(base(), value as f64)];
    let aborted = snapshot
        .channels
        .iter()
        .flat_map(|c| {
            c.aborted_by_reason
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(move |(reason, n)| (at(c, &[("reason", reason)]), n as f64))
        })
        .collect();
    let drops = snapshot
        .channels
        .iter()
        .flat_map(|c| {
            [(SourceDrop::PipelineFull, c.datagrams_dropped), (SourceDrop::MaxSessions, c.refused)].map(
                |(reason, n)| {
                    (
                        labels(&[
                            ("node", node),
                            ("where", "source"),
                            ("reason", reason.label()),
                            ("channel", &c.name),
                        ]),
                        n as f64,
                    )
                },
            )
        })
        .collect();
    vec![
        Family::counter("wire_bytes", "Bytes sent on the fibers, headers and repair included.", single(tx.wire_bytes)),
        Family::counter("datagrams_sent", "Datagrams sent on the fibers.", single(tx.datagrams)),
        Family::counter("blocks_sent", "Blocks encoded and sent.", single(tx.blocks)),
        Family::counter("beacons_sent", "Beacons sent.", single(tx.beacons)),
        Family::counter(
            "manifests_sent",
            "Manifest datagrams sent, naming files whose last block went out.",
            single(tx.manifests),
        ),
        Family::counter(
            "manifest_overflowed",
            "Files never named in a manifest because too many were waiting.",
            single(tx.manifest_overflowed),
        ),
        Family::counter("send_errors", "Fiber sends that failed.", single(tx.send_errors)),
        Family::counter("source_bytes", "Bytes accepted from sources.", per_channel(&|c| Some(c.bytes))),
        Family::counter("streams_accepted", "Streams accepted.", per_channel(&|c| Some(c.accepted))),
        Family::counter("streams_completed", "Streams completed at the source.", per_channel(&|c| Some(c.completed))),
        Family::counter("streams_aborted", "Streams aborted at the source, by reason.", aborted),
        Family::counter("drops", "Things not sent, by where and why.", drops),
        Family::counter("files_sent", "Files sent (each copy).", per_channel(&|c| c.files.as_ref().map(|f| f.sent))),
        Family::counter(
            "files_rejected",
            "Files rejected at the drop folder.",
            per_channel(&|c| c.files.as_ref().map(|f| f.rejected)),
        ),
        Family::gauge(
            "files_waiting",
            "Files waiting in the spool.",
            per_channel(&|c| c.files.as_ref().map(|f| f.waiting)),
        ),
        Family::gauge("ha_role", "0 init, 1 standby, 2 active.", vec![(base(), snapshot.role.gauge())]),
        Family::counter("ha_transitions", "Role changes.", single(snapshot.transitions)),
        Family::gauge("epoch", "Epoch of the current or last term.", vec![(base(), f64::from(snapshot.epoch))]),
    ]
}

/// Every value BLUE's `/metrics` labels can take where the code fixes them (see [`LabelValues`]).
pub fn fixed_label_values() -> LabelValues {
    let mut values = LabelValues::new();
    allow(&mut values, "side", &["blue"]);
    allow(&mut values, "where", &["source"]);
    allow(&mut values, "kind", &ChannelKind::LABELS);
    allow(&mut values, "reason", &AbortReason::LABELS);
    allow(&mut values, "reason", &SourceDrop::LABELS);
    allow(&mut values, "reason", &PairError::LABELS);
    values
}

impl Managed for BlueManaged {
    fn status(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or_default()
    }

    fn transfers(&self) -> serde_json::Value {
        let mut transfers = Vec::new();
        for channel in &self.counters.channels {
            let Some(spool) = &channel.spool else { continue };
            for entry in spool.list() {
                transfers.push(json!({
                    "channel": channel.name,
                    "name": entry.name,
                    "size": entry.size,
                    "id": entry.id,
                    "state": "waiting to be sent",
                    "origin": entry.origin,
                }));
            }
            if let Ok(recent) = spool.stats.recent.lock() {
                transfers.extend(recent.iter().rev().map(|t| {
                    json!({
                        "channel": channel.name,
                        "name": t.name,
                        "size": t.size,
                        "id": t.id,
                        "state": t.state,
                        "reason": t.reason,
                    })
                }));
            }
        }
        json!({"transfers": transfers})
    }

    fn metrics(&self) -> Vec<Family> {
        let snapshot = self.snapshot();
        let mut families = metric_families(&snapshot);
        if let Some(pair) = &self.counters.pair {
            families.extend(pair.families(&snapshot.node, snapshot.redundancy["state"] == "redundant"));
        }
        families
    }

    fn ha_command(&self, demote: bool) -> HaFuture {
        let ha = self.ha.clone();
        Box::pin(async move { Ok(demote_or_promote(ha, demote).await?) })
    }

    fn config_path(&self) -> &Path {
        &self.checked.path
    }

    fn check_config(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        crate::config::check(path, parse_toml(path, text)?).map(|_| ())
    }

    fn config_imported(&self, text: &str) -> bool {
        let active = self.ha.as_ref().is_some_and(|h| *h.role.borrow() == ha_carp::driver::Role::Active);
        ha_carp::pair::push_imported_config(self.pair.as_ref(), active, text)
    }
}
