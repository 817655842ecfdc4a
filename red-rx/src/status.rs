//! What RED reports: the counters the protocol thread shares with the status writer, and the status
//! object the status file and the management API both show.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use connectors::config::ChannelKind;
use connectors::filesink::FileSinkStats;
use connectors::pool::Pool;
use connectors::sink::SinkStats;
use diode_proto::{BreakCounts, LossCounts};
use ha_carp::driver::{HaHandle, Role};
use hw::fiber::RxCounters;
use serde_json::json;

use crate::config::Checked;

/// What the protocol thread shares with the status writer.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) session: Option<(u64, u32)>,
    /// A session refused as not newer than the live one, while its alarm holds.
    pub(crate) stale_sender: Option<diode_proto::receiver::StaleSender>,
    pub(crate) config_mismatch: bool,
    pub(crate) blue_fingerprint: Option<[u8; 16]>,
    pub(crate) unknown_channels: HashSet<u16>,
    pub(crate) streams_ended: u64,
    pub(crate) streams_broken: BreakCounts,
    pub(crate) blocks_lost: u64,
    pub(crate) blocks_lost_by: LossCounts,
    pub(crate) blocks_decoded: u64,
    pub(crate) blocks_without_decoder: u64,
    pub(crate) drops: BTreeMap<&'static str, u64>,
    pub(crate) datagrams_delivered: u64,
    pub(crate) fiber_harmful_drops: Vec<u64>,
    /// Events not delivered because this node was standby (from the delivery gate).
    pub(crate) standby_skipped: u64,
    /// Files opened while standby and decoded in shadow.
    pub(crate) shadowed: u64,
    /// FEC figures: source symbols of completed blocks, how many were rebuilt from repair, blocks that
    /// needed more than 90 % of their repair, and the repair the sender announces (symbols per block of
    /// how many source symbols).
    pub(crate) source_symbols: u64,
    pub(crate) source_symbols_missing: u64,
    pub(crate) blocks_near_repair_limit: u64,
    pub(crate) announced_repair: Option<(u32, u32)>,
}

pub(crate) struct SinkHandle {
    pub(crate) number: u16,
    pub(crate) name: String,
    pub(crate) kind: ChannelKind,
    pub(crate) stats: Arc<SinkStats>,
    /// TCP and UDP channels: their destinations.
    pub(crate) pool: Option<Arc<Pool>>,
    /// Files and vault channels: their output folder's counters.
    pub(crate) files: Option<Arc<FileSinkStats>>,
}

/// What the status file and the management API read: shared with the running daemon.
pub(crate) struct StatusView {
    pub(crate) checked: Arc<Checked>,
    pub(crate) shared: Arc<Mutex<Shared>>,
    pub(crate) sinks: Vec<SinkHandle>,
    pub(crate) fibers: Vec<(SocketAddr, Arc<Mutex<RxCounters>>)>,
    pub(crate) warnings: Vec<String>,
    pub(crate) ha: Option<HaHandle>,
    pub(crate) pair: Option<Arc<ha_carp::pair::PairStats>>,
    pub(crate) replicator: Option<ha_carp::pair::Replicator>,
}

impl StatusView {
    pub(crate) fn status(&self, state: &str) -> serde_json::Value {
        let mut status = status_json(
            &self.checked,
            state,
            &self.shared,
            &self.sinks,
            &self.fibers,
            &self.warnings,
            self.ha.as_ref(),
        );
        status["redundancy"] = self.redundancy();
        status["pair"] = json!(self.pair.as_ref().map(|p| p.json()));
        status
    }

    pub(crate) fn redundancy(&self) -> serde_json::Value {
        let election = self.ha.as_ref().map(|h| h.status().redundancy());
        ha_carp::pair::redundancy_json(election, self.pair.as_deref())
    }
}

fn status_json(
    checked: &Checked,
    state: &str,
    shared: &Mutex<Shared>,
    sinks: &[SinkHandle],
    fibers: &[(SocketAddr, Arc<Mutex<RxCounters>>)],
    warnings: &[String],
    ha: Option<&HaHandle>,
) -> serde_json::Value {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let Ok(shared) = shared.lock() else { return json!({"state": state}) };
    let mut alarms = Vec::new();
    if shared.config_mismatch {
        alarms.push(json!({
            "kind": "config_mismatch",
            "message": "BLUE's channel table differs from this RED's",
            "blue": shared.blue_fingerprint.map(hex::encode),
            "red": hex::encode(checked.fingerprint),
        }));
    }
    for channel in &shared.unknown_channels {
        alarms.push(json!({"kind": "unknown_channel", "channel": channel}));
    }
    let now = Instant::now();
    if let Some(stale) = shared.stale_sender {
        alarms.push(json!({
            "kind": "stale_session",
            "message": format!(
                "datagrams of session {:016x} (epoch {}), not newer than the live one, are being refused: a replay of a recording, or a sender that should have stopped",
                stale.session, stale.epoch
            ),
            "session": format!("{:016x}", stale.session),
            "epoch": stale.epoch,
            "last_refused_ms_ago": now.saturating_duration_since(stale.last_refused).as_millis() as u64,
        }));
    }
    json!({
        "node": checked.config.node.name,
        "side": "red",
        "state": state,
        "role": ha.map_or(Role::Active, |h| *h.role.borrow()),
        "ha": ha.map(HaHandle::status),
        "standby_skipped": shared.standby_skipped,
        "shadowed": shared.shadowed,
        "fec": crate::manage::fec_advice(
            &shared,
            fibers.iter().map(|(_, c)| c.lock().map_or(0, |c| c.kernel_drops)).sum::<u64>(),
        ),
        "bytes_total": fibers.iter().map(|(_, c)| c.lock().map_or(0, |c| c.bytes)).sum::<u64>(),
        "session": shared.session.map(|(s, _)| format!("{s:016x}")),
        "epoch": shared.session.map(|(_, e)| e),
        "alarms": alarms,
        "fibers": fibers.iter().enumerate().map(|(index, (listen, counters))| {
            let c = counters.lock().map(|c| c.clone()).unwrap_or_default();
            json!({
                "listen": listen.to_string(),
                "datagrams": c.datagrams,
                "bytes": c.bytes,
                "kernel_drops": c.kernel_drops,
                "check_failures": shared.fiber_harmful_drops.get(index).copied().unwrap_or(0),
                "last_datagram_ms_ago": c.last_datagram.map(|t| now.saturating_duration_since(t).as_millis() as u64),
            })
        }).collect::<Vec<_>>(),
        "receiver": {
            "blocks_without_decoder": shared.blocks_without_decoder,
            "blocks_decoded": shared.blocks_decoded,
            "blocks_lost": shared.blocks_lost,
            "blocks_lost_by_reason": shared.blocks_lost_by.iter().filter(|(_, n)| *n > 0).collect::<BTreeMap<_, _>>(),
            "streams_ended": shared.streams_ended,
            "streams_broken": shared.streams_broken.nonzero(),
            "datagrams_delivered": shared.datagrams_delivered,
            "drops": shared.drops,
        },
        "channels": sinks.iter().map(|s| json!({
            "number": s.number,
            "name": s.name,
            "kind": s.kind.as_str(),
            "streams_opened": load(&s.stats.streams_opened),
            "streams_completed": load(&s.stats.streams_completed),
            "streams_aborted": s.stats.aborted.snapshot().nonzero(),
            "bytes": load(&s.stats.bytes),
            "datagrams": load(&s.stats.datagrams),
            "datagrams_dropped": s.stats.datagrams_dropped.snapshot().nonzero(),
            "destinations": s.pool.as_ref().map(|p| p.status()),
            "files": s.files.as_ref().map(|f| json!({
                "delivered": load(&f.delivered),
                "delivered_bytes": load(&f.delivered_bytes),
                "duplicates": load(&f.duplicates),
                "failed": f.failed.snapshot().nonzero(),
                "failed_total": f.failed_total(),
                "shadow_held": load(&f.shadow_held),
                "shadow_evicted": load(&f.shadow_evicted),
                "shadow_delivered": load(&f.shadow_delivered),
                "peer_delivered": load(&f.peer_delivered),
                "unreplicated": load(&f.unreplicated),
                "recent": f.recent.lock().map(|r| r.iter().rev().take(20).cloned().collect::<Vec<_>>()).unwrap_or_default(),
            })),
        })).collect::<Vec<_>>(),
        "warnings": warnings,
    })
}
