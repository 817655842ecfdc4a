//! What BLUE's management API shows (status, transfers, metrics) and does (demote, promote, check an
//! imported configuration).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use chassis::management::{allow, labels, Family, HaFuture, LabelValues, Managed};
use connectors::config::{parse_toml, ChannelKind, ConfigError};
use connectors::source::SourceDrop;
use diode_proto::AbortReason;
use ha_carp::driver::{demote_or_promote, role_value, HaHandle};
use ha_carp::pair::PairError;
use serde_json::json;

use crate::config::Checked;
use crate::daemon::{status_json, Counters};

pub struct BlueManaged {
    pub(crate) checked: Arc<Checked>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) ha: Option<HaHandle>,
    pub(crate) transmitting: Arc<AtomicBool>,
    pub(crate) pair: Option<ha_carp::pair::Replicator>,
}

impl BlueManaged {
    fn redundancy(&self) -> serde_json::Value {
        let election = self.ha.as_ref().map(|h| h.status().redundancy());
        ha_carp::pair::redundancy_json(election, self.counters.pair.as_deref())
    }
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

fn load(a: &AtomicU64) -> f64 {
    a.load(Ordering::Relaxed) as f64
}

impl Managed for BlueManaged {
    fn status(&self) -> serde_json::Value {
        let state = if self.transmitting.load(Ordering::Relaxed) { "running" } else { "standby" };
        let mut status = status_json(
            &self.checked,
            state,
            self.transmitting.load(Ordering::Relaxed),
            &self.counters,
            self.ha.as_ref(),
        );
        status["bytes_total"] = json!(self.counters.transmit.wire_bytes.load(Ordering::Relaxed));
        status
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
        let tx = &self.counters.transmit;
        let node = self.checked.config.node.name.as_str();
        let base = || labels(&[("node", node), ("side", "blue")]);
        let per_channel = |f: &dyn Fn(&crate::daemon::ChannelCounters) -> Option<f64>| {
            self.counters
                .channels
                .iter()
                .filter_map(|c| {
                    f(c).map(|v| (labels(&[("node", node), ("channel", &c.name), ("kind", c.kind.as_str())]), v))
                })
                .collect::<Vec<_>>()
        };
        let mut families = vec![
            Family::counter(
                "wire_bytes",
                "Bytes sent on the fibers, headers and repair included.",
                vec![(base(), load(&tx.wire_bytes))],
            ),
            Family::counter("datagrams_sent", "Datagrams sent on the fibers.", vec![(base(), load(&tx.datagrams))]),
            Family::counter("blocks_sent", "Blocks encoded and sent.", vec![(base(), load(&tx.blocks))]),
            Family::counter("beacons_sent", "Beacons sent.", vec![(base(), load(&tx.beacons))]),
            Family::counter(
                "manifests_sent",
                "Manifest datagrams sent, naming files whose last block went out.",
                vec![(base(), load(&tx.manifests))],
            ),
            Family::counter(
                "manifest_overflowed",
                "Files never named in a manifest because too many were waiting.",
                vec![(base(), load(&tx.manifest_overflowed))],
            ),
            Family::counter("send_errors", "Fiber sends that failed.", vec![(base(), load(&tx.send_errors))]),
            Family::counter(
                "source_bytes",
                "Bytes accepted from sources.",
                per_channel(&|c| Some(load(&c.source.bytes))),
            ),
            Family::counter("streams_accepted", "Streams accepted.", per_channel(&|c| Some(load(&c.source.accepted)))),
            Family::counter(
                "streams_completed",
                "Streams completed at the source.",
                per_channel(&|c| Some(load(&c.source.completed))),
            ),
            Family::counter(
                "streams_aborted",
                "Streams aborted at the source, by reason.",
                self.counters
                    .channels
                    .iter()
                    .flat_map(|c| {
                        let counted = c.source.aborted.snapshot();
                        let name = c.name.as_str();
                        counted
                            .iter()
                            .filter(|(_, n)| *n > 0)
                            .map(|(reason, n)| {
                                (
                                    labels(&[
                                        ("node", node),
                                        ("channel", name),
                                        ("kind", c.kind.as_str()),
                                        ("reason", reason),
                                    ]),
                                    n as f64,
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect(),
            ),
            Family::counter(
                "drops",
                "Things not sent, by where and why.",
                self.counters
                    .channels
                    .iter()
                    .flat_map(|c| {
                        [
                            (
                                labels(&[
                                    ("node", node),
                                    ("where", "source"),
                                    ("reason", SourceDrop::PipelineFull.label()),
                                    ("channel", &c.name),
                                ]),
                                load(&c.source.datagrams_dropped),
                            ),
                            (
                                labels(&[
                                    ("node", node),
                                    ("where", "source"),
                                    ("reason", SourceDrop::MaxSessions.label()),
                                    ("channel", &c.name),
                                ]),
                                load(&c.source.refused),
                            ),
                        ]
                    })
                    .collect(),
            ),
            Family::counter(
                "files_sent",
                "Files sent (each copy).",
                per_channel(&|c| c.spool.as_ref().map(|s| load(&s.stats.sent))),
            ),
            Family::counter(
                "files_rejected",
                "Files rejected at the drop folder.",
                per_channel(&|c| c.spool.as_ref().map(|s| load(&s.stats.rejected))),
            ),
            Family::gauge(
                "files_waiting",
                "Files waiting in the spool.",
                per_channel(&|c| c.spool.as_ref().map(|s| load(&s.stats.waiting))),
            ),
            Family::gauge("ha_role", "0 init, 1 standby, 2 active.", vec![(base(), role_value(self.ha.as_ref()))]),
            Family::counter(
                "ha_transitions",
                "Role changes.",
                vec![(base(), self.ha.as_ref().map_or(0.0, |h| h.status().transitions as f64))],
            ),
            Family::gauge(
                "epoch",
                "Epoch of the current or last term.",
                vec![(base(), f64::from(self.counters.epoch.load(Ordering::Relaxed)))],
            ),
        ];
        if let Some(pair) = &self.counters.pair {
            families.extend(pair.families(node, self.redundancy()["state"] == "redundant"));
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
