//! What BLUE reports: one snapshot of everything, [`BlueSnapshot`], read once per report. The status
//! file, the management API's status and `/metrics` are all rendered from it (`manage.rs` renders
//! the metrics), so a counter is read in one place.

use std::sync::atomic::{AtomicU64, Ordering};

use diode_proto::{AbortReason, Reason, ReasonCounts};
use ha_carp::driver::{HaHandle, HaStatus, Role};
use serde::{Serialize, Serializer};
use serde_json::json;

use crate::config::Checked;
use crate::daemon::Counters;

/// Everything BLUE reports at one moment. Serialized, it is the status object.
#[derive(Debug, Serialize)]
pub(crate) struct BlueSnapshot {
    pub(crate) node: String,
    pub(crate) side: &'static str,
    pub(crate) state: String,
    pub(crate) role: Role,
    pub(crate) ha: Option<HaStatus>,
    pub(crate) transmitting: bool,
    pub(crate) terms: u64,
    pub(crate) session: String,
    pub(crate) epoch: u32,
    pub(crate) fibers: Vec<FiberSnapshot>,
    pub(crate) alarms: Vec<serde_json::Value>,
    pub(crate) transmit: TransmitSnapshot,
    pub(crate) channels: Vec<ChannelSnapshot>,
    pub(crate) warnings: Vec<String>,
    pub(crate) pair: Option<serde_json::Value>,
    pub(crate) redundancy: serde_json::Value,
    /// Bytes on the fibers, headers and repair included (as `transmit.wire_bytes`, for the dashboard).
    pub(crate) bytes_total: u64,
    #[serde(skip)]
    pub(crate) transitions: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct FiberSnapshot {
    pub(crate) remote: String,
    pub(crate) interface: Option<String>,
    pub(crate) up: bool,
    pub(crate) rate_mbps: f64,
    pub(crate) send_errors: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct TransmitSnapshot {
    pub(crate) datagrams: u64,
    pub(crate) wire_bytes: u64,
    pub(crate) blocks: u64,
    pub(crate) beacons: u64,
    pub(crate) manifests: u64,
    pub(crate) manifest_overflowed: u64,
    pub(crate) send_errors: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChannelSnapshot {
    pub(crate) number: u16,
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) accepted: u64,
    /// Connections refused because the channel had `max_sessions` open.
    pub(crate) refused: u64,
    pub(crate) completed: u64,
    pub(crate) aborted: u64,
    #[serde(serialize_with = "nonzero")]
    pub(crate) aborted_by_reason: ReasonCounts<AbortReason, { AbortReason::LABELS.len() }>,
    pub(crate) bytes: u64,
    pub(crate) datagrams: u64,
    /// Datagrams dropped because the pipeline was full.
    pub(crate) datagrams_dropped: u64,
    pub(crate) blocks_sealed: u64,
    pub(crate) files: Option<SpoolSnapshot>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SpoolSnapshot {
    pub(crate) accepted: u64,
    pub(crate) accepted_bytes: u64,
    pub(crate) sent: u64,
    pub(crate) sent_bytes: u64,
    pub(crate) rejected: u64,
    pub(crate) failed: u64,
    pub(crate) waiting: u64,
    pub(crate) replicas: u64,
    pub(crate) unreplicated: u64,
}

/// Reason counts as the status shows them: the labels counted at least once.
fn nonzero<R: Reason, const N: usize, S: Serializer>(counts: &ReasonCounts<R, N>, out: S) -> Result<S::Ok, S::Error> {
    counts.nonzero().serialize(out)
}

/// What an operator must see on BLUE: a fiber interface down, HA faults or errors.
fn alarms(checked: &Checked, election: Option<&HaStatus>) -> Vec<serde_json::Value> {
    let mut alarms = Vec::new();
    for interface in checked.config.fibers.iter().filter_map(|f| f.interface.as_deref()) {
        if !hw::link::interface_up(interface) {
            alarms.push(json!({"kind": "fiber_down", "message": format!("fiber interface {interface} is down")}));
        }
    }
    if let Some(status) = election {
        if !status.faults.is_empty() {
            alarms.push(json!({"kind": "ha_fault", "message": status.faults.join(", ")}));
        }
        if let Some(error) = &status.last_error {
            alarms.push(json!({"kind": "ha_error", "message": error}));
        }
    }
    alarms
}

/// Reads everything once, for one report.
pub(crate) fn snapshot(
    checked: &Checked,
    state: &str,
    transmitting: bool,
    counters: &Counters,
    ha: Option<&HaHandle>,
) -> BlueSnapshot {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let tx = &counters.transmit;
    let election = ha.map(HaHandle::status);
    BlueSnapshot {
        node: checked.config.node.name.clone(),
        side: "blue",
        state: state.to_string(),
        role: ha.map_or(Role::Active, |h| *h.role.borrow()),
        transmitting,
        terms: load(&counters.terms),
        session: format!("{:016x}", load(&counters.session)),
        epoch: counters.epoch.load(Ordering::Relaxed),
        fibers: checked
            .fibers
            .iter()
            .zip(&checked.config.fibers)
            .map(|((remote, _), fiber)| FiberSnapshot {
                remote: remote.to_string(),
                interface: fiber.interface.clone(),
                up: fiber.interface.as_deref().is_none_or(hw::link::interface_up),
                rate_mbps: checked.config.link.rate_mbps,
                send_errors: load(&tx.send_errors),
            })
            .collect(),
        alarms: alarms(checked, election.as_ref()),
        transmit: TransmitSnapshot {
            datagrams: load(&tx.datagrams),
            wire_bytes: load(&tx.wire_bytes),
            blocks: load(&tx.blocks),
            beacons: load(&tx.beacons),
            manifests: load(&tx.manifests),
            manifest_overflowed: load(&tx.manifest_overflowed),
            send_errors: load(&tx.send_errors),
        },
        channels: counters
            .channels
            .iter()
            .map(|c| ChannelSnapshot {
                number: c.number,
                name: c.name.clone(),
                kind: c.kind.as_str(),
                accepted: load(&c.source.accepted),
                refused: load(&c.source.refused),
                completed: load(&c.source.completed),
                aborted: c.source.aborted.total(),
                aborted_by_reason: c.source.aborted.snapshot(),
                bytes: load(&c.source.bytes),
                datagrams: load(&c.source.datagrams),
                datagrams_dropped: load(&c.source.datagrams_dropped),
                blocks_sealed: load(&c.pipeline.blocks_sealed),
                files: c.spool.as_ref().map(|spool| SpoolSnapshot {
                    accepted: load(&spool.stats.accepted),
                    accepted_bytes: load(&spool.stats.accepted_bytes),
                    sent: load(&spool.stats.sent),
                    sent_bytes: load(&spool.stats.sent_bytes),
                    rejected: load(&spool.stats.rejected),
                    failed: load(&spool.stats.failed),
                    waiting: load(&spool.stats.waiting),
                    replicas: load(&spool.stats.replicas),
                    unreplicated: load(&spool.stats.unreplicated),
                }),
            })
            .collect(),
        warnings: counters.warnings.lock().map(|w| w.clone()).unwrap_or_default(),
        pair: counters.pair.as_ref().map(|p| p.json()),
        redundancy: ha_carp::pair::redundancy_json(
            election.as_ref().map(HaStatus::redundancy),
            counters.pair.as_deref(),
        ),
        bytes_total: load(&tx.wire_bytes),
        transitions: election.as_ref().map_or(0, |e| e.transitions),
        ha: election,
    }
}

/// The status object (the status file and `GET /api/v1/status`).
pub(crate) fn status_json(
    checked: &Checked,
    state: &str,
    transmitting: bool,
    counters: &Counters,
    ha: Option<&HaHandle>,
) -> serde_json::Value {
    serde_json::to_value(snapshot(checked, state, transmitting, counters, ha))
        .unwrap_or_else(|_| json!({"state": state}))
}
