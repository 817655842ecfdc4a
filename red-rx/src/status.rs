//! What RED reports: the counters the protocol thread shares with the status writer, and one
//! snapshot of everything, [`RedSnapshot`], read once per report. The status file, the management
//! API's status and `/metrics` are all rendered from it (`manage.rs` renders the metrics), so a
//! counter is read in one place.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use connectors::config::ChannelKind;
use connectors::filesink::{FileFailure, FileSinkStats, Transfer};
use connectors::pool::{DestinationStatus, Pool};
use connectors::sink::{DatagramDrop, SinkStats, StreamAbort};
use connectors::store::{SpoolConfig, SpoolDrop, SpoolStats};
use diode_proto::{BreakCounts, LossCounts, Reason, ReasonCounts};
use ha_carp::driver::{HaHandle, HaStatus, Role};
use hw::fiber::RxCounters;
use serde::{Serialize, Serializer};
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
    /// Channels with a spool: what it holds, and the bounds its alarm is measured against.
    pub(crate) spool: Option<SpoolHandle>,
}

pub(crate) struct SpoolHandle {
    pub(crate) stats: Arc<SpoolStats>,
    pub(crate) config: SpoolConfig,
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
    /// Reads everything once, for one report.
    pub(crate) fn snapshot(&self, state: &str) -> RedSnapshot {
        let election = self.ha.as_ref().map(HaHandle::status);
        let mut snapshot = read(&self.checked, state, &self.shared, &self.sinks, &self.fibers, &self.warnings);
        snapshot.role = self.ha.as_ref().map_or(Role::Active, |h| *h.role.borrow());
        snapshot.transitions = election.as_ref().map_or(0, |e| e.transitions);
        snapshot.redundancy =
            ha_carp::pair::redundancy_json(election.as_ref().map(HaStatus::redundancy), self.pair.as_deref());
        snapshot.ha = election;
        snapshot.pair = self.pair.as_ref().map(|p| p.json());
        snapshot
    }

    /// The status object (the status file and `GET /api/v1/status`).
    pub(crate) fn status(&self, state: &str) -> serde_json::Value {
        serde_json::to_value(self.snapshot(state)).unwrap_or_else(|_| json!({"state": state}))
    }
}

/// Everything RED reports at one moment. Serialized, it is the status object; `manage.rs` renders
/// `/metrics` from the same value.
#[derive(Debug, Serialize)]
pub(crate) struct RedSnapshot {
    pub(crate) node: String,
    pub(crate) side: &'static str,
    pub(crate) state: String,
    pub(crate) role: Role,
    pub(crate) ha: Option<HaStatus>,
    pub(crate) standby_skipped: u64,
    pub(crate) shadowed: u64,
    pub(crate) fec: serde_json::Value,
    pub(crate) bytes_total: u64,
    pub(crate) session: Option<String>,
    pub(crate) epoch: Option<u32>,
    pub(crate) alarms: Vec<serde_json::Value>,
    pub(crate) fibers: Vec<FiberSnapshot>,
    pub(crate) receiver: ReceiverSnapshot,
    pub(crate) channels: Vec<ChannelSnapshot>,
    pub(crate) warnings: Vec<String>,
    pub(crate) redundancy: serde_json::Value,
    pub(crate) pair: Option<serde_json::Value>,
    /// Raised or not, in the order of `manage::ALARMS` (the metrics' `alarm{kind}`).
    #[serde(skip)]
    pub(crate) raised: [bool; 5],
    #[serde(skip)]
    pub(crate) transitions: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct FiberSnapshot {
    pub(crate) listen: String,
    pub(crate) datagrams: u64,
    pub(crate) bytes: u64,
    pub(crate) kernel_drops: u64,
    pub(crate) check_failures: u64,
    pub(crate) last_datagram_ms_ago: Option<u64>,
}

#[derive(Debug, Serialize)]
pub(crate) struct ReceiverSnapshot {
    pub(crate) blocks_without_decoder: u64,
    pub(crate) blocks_decoded: u64,
    pub(crate) blocks_lost: u64,
    #[serde(rename = "blocks_lost_by_reason", serialize_with = "nonzero")]
    pub(crate) blocks_lost_by: LossCounts,
    pub(crate) streams_ended: u64,
    #[serde(serialize_with = "nonzero")]
    pub(crate) streams_broken: BreakCounts,
    pub(crate) datagrams_delivered: u64,
    pub(crate) drops: BTreeMap<&'static str, u64>,
    /// The FEC advice's inputs the metrics show as numbers.
    #[serde(skip)]
    pub(crate) blocks_near_repair_limit: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct ChannelSnapshot {
    pub(crate) number: u16,
    pub(crate) name: String,
    pub(crate) kind: &'static str,
    pub(crate) streams_opened: u64,
    pub(crate) streams_completed: u64,
    #[serde(rename = "streams_aborted", serialize_with = "nonzero")]
    pub(crate) aborted: ReasonCounts<StreamAbort, { StreamAbort::LABELS.len() }>,
    pub(crate) bytes: u64,
    pub(crate) datagrams: u64,
    #[serde(serialize_with = "nonzero")]
    pub(crate) datagrams_dropped: ReasonCounts<DatagramDrop, { DatagramDrop::LABELS.len() }>,
    pub(crate) destinations: Option<Vec<DestinationStatus>>,
    pub(crate) files: Option<FilesSnapshot>,
    pub(crate) spool: Option<SpoolSnapshot>,
}

#[derive(Debug, Serialize)]
pub(crate) struct SpoolSnapshot {
    pub(crate) folder: String,
    pub(crate) bytes: u64,
    pub(crate) max_bytes: u64,
    pub(crate) items: u64,
    pub(crate) max_items: u64,
    pub(crate) oldest_age_s: u64,
    pub(crate) max_age_s: u64,
    pub(crate) peak_bytes: u64,
    pub(crate) delivered_from_spool: u64,
    /// Streams delivered again whole after a destination had taken part of them.
    pub(crate) repeats: u64,
    #[serde(serialize_with = "nonzero")]
    pub(crate) dropped: ReasonCounts<SpoolDrop, { SpoolDrop::LABELS.len() }>,
    /// New data of the channel was refused in the last minute: the spool had no room (or its disk failed).
    pub(crate) refusing: bool,
}

impl SpoolSnapshot {
    fn read(handle: &SpoolHandle) -> SpoolSnapshot {
        let (stats, config) = (&handle.stats, &handle.config);
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let now_ms = connectors::store::unix_ms();
        SpoolSnapshot {
            folder: config.folder.display().to_string(),
            bytes: load(&stats.bytes),
            max_bytes: config.max_bytes,
            items: load(&stats.items),
            max_items: config.max_items as u64,
            oldest_age_s: stats.oldest_age_s(now_ms),
            max_age_s: config.max_age.as_secs(),
            peak_bytes: load(&stats.peak_bytes),
            delivered_from_spool: load(&stats.delivered_from_spool),
            repeats: load(&stats.repeats),
            dropped: stats.dropped.snapshot(),
            refusing: stats.refusing(now_ms),
        }
    }

    /// Why the spool needs an operator soon: past 80 % of a bound, or its oldest item past half of
    /// `max_age` (the age at which it is dropped).
    fn high(&self) -> Option<String> {
        let percent = |used: u64, max: u64| used.saturating_mul(100) / max.max(1);
        if percent(self.bytes, self.max_bytes) >= 80 {
            return Some(format!(
                "{}% of max_bytes ({} of {})",
                percent(self.bytes, self.max_bytes),
                self.bytes,
                self.max_bytes
            ));
        }
        if percent(self.items, self.max_items) >= 80 {
            return Some(format!("{} of max_items {}", self.items, self.max_items));
        }
        if self.oldest_age_s >= self.max_age_s / 2 && self.items > 0 {
            return Some(format!(
                "the oldest item has waited {} s of the {} s max_age, after which it is dropped",
                self.oldest_age_s, self.max_age_s
            ));
        }
        None
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct FilesSnapshot {
    pub(crate) delivered: u64,
    pub(crate) delivered_bytes: u64,
    pub(crate) duplicates: u64,
    #[serde(serialize_with = "nonzero")]
    pub(crate) failed: ReasonCounts<FileFailure, { FileFailure::LABELS.len() }>,
    pub(crate) failed_total: u64,
    pub(crate) shadow_held: u64,
    pub(crate) shadow_evicted: u64,
    pub(crate) shadow_delivered: u64,
    pub(crate) peer_delivered: u64,
    pub(crate) unreplicated: u64,
    pub(crate) recent: Vec<Transfer>,
}

/// Reason counts as the status shows them: the labels counted at least once.
fn nonzero<R: Reason, const N: usize, S: Serializer>(counts: &ReasonCounts<R, N>, out: S) -> Result<S::Ok, S::Error> {
    counts.nonzero().serialize(out)
}

fn read(
    checked: &Checked,
    state: &str,
    shared: &Mutex<Shared>,
    sinks: &[SinkHandle],
    fibers: &[(SocketAddr, Arc<Mutex<RxCounters>>)],
    warnings: &[String],
) -> RedSnapshot {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let shared = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let now = Instant::now();
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
    let spools: Vec<Option<SpoolSnapshot>> = sinks.iter().map(|s| s.spool.as_ref().map(SpoolSnapshot::read)).collect();
    let (mut spool_high, mut spool_full) = (false, false);
    for (sink, spool) in sinks.iter().zip(&spools) {
        let Some(spool) = spool else { continue };
        if let Some(why) = spool.high() {
            spool_high = true;
            alarms.push(json!({
                "kind": "spool_high",
                "channel": sink.number,
                "message": format!("channel {} ({}): its spool holds {why}: a destination has been away long", sink.number, sink.name),
            }));
        }
        if spool.refusing {
            spool_full = true;
            alarms.push(json!({
                "kind": "spool_full",
                "channel": sink.number,
                "message": format!(
                    "channel {} ({}): the spool refused data in the last minute (streams_aborted: spool_full or spool_failed): it has no room until a destination takes what waits, or its disk fails",
                    sink.number, sink.name
                ),
            }));
        }
    }
    let fiber_counters: Vec<RxCounters> =
        fibers.iter().map(|(_, c)| c.lock().map(|c| c.clone()).unwrap_or_default()).collect();
    let kernel_drops = fiber_counters.iter().map(|c| c.kernel_drops).sum::<u64>();
    RedSnapshot {
        node: checked.config.node.name.clone(),
        side: "red",
        state: state.to_string(),
        role: Role::Active,
        ha: None,
        standby_skipped: shared.standby_skipped,
        shadowed: shared.shadowed,
        fec: crate::manage::fec_advice(&shared, kernel_drops),
        bytes_total: fiber_counters.iter().map(|c| c.bytes).sum(),
        session: shared.session.map(|(s, _)| format!("{s:016x}")),
        epoch: shared.session.map(|(_, e)| e),
        alarms,
        fibers: fibers
            .iter()
            .zip(&fiber_counters)
            .enumerate()
            .map(|(index, ((listen, _), c))| FiberSnapshot {
                listen: listen.to_string(),
                datagrams: c.datagrams,
                bytes: c.bytes,
                kernel_drops: c.kernel_drops,
                check_failures: shared.fiber_harmful_drops.get(index).copied().unwrap_or(0),
                last_datagram_ms_ago: c.last_datagram.map(|t| now.saturating_duration_since(t).as_millis() as u64),
            })
            .collect(),
        receiver: ReceiverSnapshot {
            blocks_without_decoder: shared.blocks_without_decoder,
            blocks_decoded: shared.blocks_decoded,
            blocks_lost: shared.blocks_lost,
            blocks_lost_by: shared.blocks_lost_by,
            streams_ended: shared.streams_ended,
            streams_broken: shared.streams_broken,
            datagrams_delivered: shared.datagrams_delivered,
            drops: shared.drops.clone(),
            blocks_near_repair_limit: shared.blocks_near_repair_limit,
        },
        channels: sinks
            .iter()
            .zip(spools)
            .map(|(s, spool)| ChannelSnapshot {
                number: s.number,
                name: s.name.clone(),
                kind: s.kind.as_str(),
                streams_opened: load(&s.stats.streams_opened),
                streams_completed: load(&s.stats.streams_completed),
                aborted: s.stats.aborted.snapshot(),
                bytes: load(&s.stats.bytes),
                datagrams: load(&s.stats.datagrams),
                datagrams_dropped: s.stats.datagrams_dropped.snapshot(),
                destinations: s.pool.as_ref().map(|p| p.status()),
                files: s.files.as_ref().map(|f| FilesSnapshot {
                    delivered: load(&f.delivered),
                    delivered_bytes: load(&f.delivered_bytes),
                    duplicates: load(&f.duplicates),
                    failed: f.failed.snapshot(),
                    failed_total: f.failed_total(),
                    shadow_held: load(&f.shadow_held),
                    shadow_evicted: load(&f.shadow_evicted),
                    shadow_delivered: load(&f.shadow_delivered),
                    peer_delivered: load(&f.peer_delivered),
                    unreplicated: load(&f.unreplicated),
                    recent: f.recent.lock().map(|r| r.iter().rev().take(20).cloned().collect()).unwrap_or_default(),
                }),
                spool,
            })
            .collect(),
        warnings: warnings.to_vec(),
        redundancy: serde_json::Value::Null,
        pair: None,
        raised: [
            shared.config_mismatch,
            !shared.unknown_channels.is_empty(),
            shared.stale_sender.is_some(),
            spool_high,
            spool_full,
        ],
        transitions: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chassis::management::Family;
    use diode_proto::{BreakReason, LossReason};

    fn sample(families: &[Family], name: &str, label: (&str, &str)) -> Option<f64> {
        let family = families.iter().find(|f| f.name == name)?;
        family
            .samples
            .iter()
            .find(|(labels, _)| labels.iter().any(|(k, v)| k == label.0 && v == label.1))
            .map(|(_, v)| *v)
    }

    #[test]
    fn the_status_and_the_metrics_show_the_same_snapshot() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../packaging/red-rx.toml"));
        let text = std::fs::read_to_string(path).unwrap();
        let checked = crate::config::check(path, connectors::config::parse_toml(path, &text).unwrap()).unwrap();
        let mut shared = Shared::default();
        shared.blocks_lost_by.add(LossReason::NeverSeen, 3);
        shared.blocks_lost = 3;
        shared.streams_broken.add(BreakReason::BlockLost { seq: 41 }, 2);
        shared.drops.insert("bad_tag", 5);
        shared.config_mismatch = true;
        let tcp = Arc::new(SinkStats::default());
        tcp.aborted.add(StreamAbort::NoDestination);
        let files = Arc::new(FileSinkStats::default());
        files.failed.add(FileFailure::HashMismatch);
        let sinks = vec![
            SinkHandle {
                number: 1,
                name: "historian".into(),
                kind: ChannelKind::Tcp,
                stats: tcp,
                pool: None,
                files: None,
                spool: None,
            },
            SinkHandle {
                number: 3,
                name: "reports".into(),
                kind: ChannelKind::Files,
                stats: Arc::new(SinkStats::default()),
                pool: None,
                files: Some(files),
                spool: None,
            },
        ];
        let snapshot = read(&checked, "running", &Mutex::new(shared), &sinks, &[], &[]);
        let status = serde_json::to_value(&snapshot).unwrap();
        let metrics = crate::manage::metric_families(&snapshot);

        assert_eq!(status["receiver"]["blocks_lost_by_reason"], json!({"never_seen": 3}));
        assert_eq!(sample(&metrics, "blocks_lost", ("reason", "never_seen")), Some(3.0));
        assert_eq!(sample(&metrics, "blocks_lost", ("reason", "hash_mismatch")), Some(0.0), "every cause is a series");
        assert_eq!(status["receiver"]["streams_broken"], json!({"block_lost": 2}));
        assert_eq!(sample(&metrics, "streams_broken", ("reason", "block_lost")), Some(2.0));
        assert_eq!(status["channels"][0]["streams_aborted"], json!({"no_destination": 1}));
        assert_eq!(sample(&metrics, "streams_aborted", ("reason", "no_destination")), Some(1.0));
        assert_eq!(status["channels"][1]["files"]["failed"], json!({"hash_mismatch": 1}));
        assert_eq!(sample(&metrics, "drops", ("where", "files")), Some(1.0));
        assert_eq!(sample(&metrics, "drops", ("reason", "bad_tag")), Some(5.0));
        assert_eq!(status["alarms"][0]["kind"], "config_mismatch");
        assert_eq!(sample(&metrics, "alarm", ("kind", "config_mismatch")), Some(1.0));
        assert_eq!(sample(&metrics, "alarm", ("kind", "stale_session")), Some(0.0));
        // Figures a reason carries never become a label.
        assert!(metrics
            .iter()
            .flat_map(|f| &f.samples)
            .all(|(labels, _)| labels.iter().all(|(_, v)| !v.contains("41"))));
    }
}
