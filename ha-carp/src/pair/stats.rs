//! The pair channel's counters and state, and the redundancy the daemons report from them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use connectors::ledger::LedgerEntry;

use super::wire::{PairError, HEARTBEAT};

/// Deliveries without acknowledgement an active RED keeps for its next snapshot. Only the ones whose
/// ledger line was not yet written when the snapshot read the ledger matter, so a few are enough.
const MAX_UNANNOUNCED: usize = 4096;

/// Why a pair is not redundant right now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotInSync {
    #[error("the pair channel to the peer is down")]
    Down,
    #[error("the pair is still synchronising")]
    Synchronising,
    #[error("the standby refused the active's configuration: {0}")]
    ConfigRefused(String),
}

/// The pair channel's counters and state, for the status page and metrics.
#[derive(Debug, Default)]
pub struct PairStats {
    /// This node (active) has a connection to its standby, or (standby) its active is connected.
    pub connected: AtomicBool,
    /// The connection-time snapshot (configuration, files or ledger) is complete on both ends.
    pub synced: AtomicBool,
    pub connections: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Files (BLUE) or deliveries (RED) the standby acknowledged.
    pub replicated: AtomicU64,
    pub replicated_bytes: AtomicU64,
    /// Requests that went ahead without the standby (unreachable, refused, too slow).
    pub unreplicated: AtomicU64,
    /// Frames and connections refused, by reason.
    pub refused: Mutex<BTreeMap<&'static str, u64>>,
    pub last_heard: Mutex<Option<Instant>>,
    pub peer_node: Mutex<Option<String>>,
    /// Why the standby refused the last configuration, while it does.
    pub config_refused: Mutex<Option<String>>,
    pub configs_applied: AtomicU64,
    /// Active: until when files sent without a copy on the standby may still be in flight.
    pub exposed_until: Mutex<Option<Instant>>,
    /// Standby: the active's last heartbeat said it is exposed.
    pub peer_exposed: AtomicBool,
    /// RED active: deliveries that went ahead without the standby's acknowledgement, newest last, for
    /// the next connection's snapshot. The snapshot reads the ledger file too, but a delivery refused
    /// just before the connection came up may not have its ledger line yet when the file is read.
    pub(super) unannounced: Mutex<VecDeque<(u16, LedgerEntry)>>,
    /// Entries pushed out of `unannounced` by newer ones (long since in the ledger file).
    pub unannounced_forgotten: AtomicU64,
}

impl PairStats {
    pub fn refuse(&self, reason: &PairError) {
        if let Ok(mut refused) = self.refused.lock() {
            *refused.entry(reason.label()).or_insert(0) += 1;
        }
    }

    /// Active: a file accepted without a copy on the standby was sent; until `window` has passed it
    /// may still be on its way, and only this node has it.
    pub fn expose(&self, window: Duration) {
        if let Ok(mut until) = self.exposed_until.lock() {
            *until = Some(Instant::now() + window).max(*until);
        }
    }

    /// Marks the pair channel up. Under the lock of the unannounced deliveries, so a delivery either
    /// saw the channel up (and asks the standby) or is in the list the snapshot then takes.
    pub(super) fn set_connected(&self) {
        let _unannounced = self.unannounced.lock();
        self.connected.store(true, Ordering::Relaxed);
    }

    /// RED active: the deliveries made without the standby's acknowledgement since the last snapshot.
    pub fn take_unannounced(&self) -> Vec<(u16, LedgerEntry)> {
        self.unannounced.lock().map(|mut list| list.drain(..).collect()).unwrap_or_default()
    }

    pub(super) fn remember_unannounced(
        &self,
        list: &mut VecDeque<(u16, LedgerEntry)>,
        channel: u16,
        entry: LedgerEntry,
    ) {
        if list.len() >= MAX_UNANNOUNCED {
            list.pop_front();
            self.unannounced_forgotten.fetch_add(1, Ordering::Relaxed);
        }
        list.push_back((channel, entry));
    }

    pub fn exposed(&self) -> bool {
        self.exposed_until.lock().ok().and_then(|u| *u).is_some_and(|until| Instant::now() < until)
    }

    pub fn heard(&self) {
        if let Ok(mut last) = self.last_heard.lock() {
            *last = Some(Instant::now());
        }
    }

    /// Whether the link is up and in sync: heard from within three heartbeats, snapshot done, and the
    /// last configuration accepted. `Err` says why not.
    pub fn in_sync(&self) -> Result<(), NotInSync> {
        let heard = self.last_heard.lock().ok().and_then(|l| *l);
        if !self.connected.load(Ordering::Relaxed) || heard.is_none_or(|t| t.elapsed() > HEARTBEAT * 4) {
            return Err(NotInSync::Down);
        }
        if !self.synced.load(Ordering::Relaxed) {
            return Err(NotInSync::Synchronising);
        }
        if let Some(reason) = self.config_refused.lock().ok().and_then(|r| r.clone()) {
            return Err(NotInSync::ConfigRefused(reason));
        }
        Ok(())
    }

    /// Metric families of the pair channel, labelled with the node.
    pub fn families(&self, node: &str, redundant: bool) -> Vec<chassis::management::Family> {
        use chassis::management::{labels, Family};
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let base = || labels(&[("node", node)]);
        let refused = self
            .refused
            .lock()
            .map(|r| r.iter().map(|(reason, n)| (labels(&[("node", node), ("reason", reason)]), *n as f64)).collect())
            .unwrap_or_default();
        vec![
            Family::gauge(
                "pair_redundant",
                "1 while the pair would survive the loss of one node.",
                vec![(base(), f64::from(u8::from(redundant)))],
            ),
            Family::gauge(
                "pair_connected",
                "1 while the pair channel is up.",
                vec![(base(), f64::from(u8::from(self.connected.load(Ordering::Relaxed))))],
            ),
            Family::counter(
                "pair_replicated",
                "Files or deliveries the standby acknowledged.",
                vec![(base(), load(&self.replicated))],
            ),
            Family::counter(
                "pair_unreplicated",
                "Files or deliveries that went ahead without the standby.",
                vec![(base(), load(&self.unreplicated))],
            ),
            Family::counter("pair_refused", "Pair channel frames and connections refused, by reason.", refused),
        ]
    }

    pub fn json(&self) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "synced": self.synced.load(Ordering::Relaxed),
            "peer": self.peer_node.lock().ok().and_then(|p| p.clone()),
            "connections": load(&self.connections),
            "frames_in": load(&self.frames_in),
            "frames_out": load(&self.frames_out),
            "replicated": load(&self.replicated),
            "replicated_bytes": load(&self.replicated_bytes),
            "unreplicated": load(&self.unreplicated),
            "refused": self.refused.lock().map(|r| r.clone()).unwrap_or_default(),
            "configs_applied": load(&self.configs_applied),
            "config_refused": self.config_refused.lock().ok().and_then(|r| r.clone()),
            "exposed": self.exposed(),
            "unannounced_forgotten": load(&self.unannounced_forgotten),
            "peer_exposed": self.peer_exposed.load(Ordering::Relaxed),
        })
    }
}

/// Redundancy as the daemons report it (`{"state", "reason"}`): the election's view (`None`: HA is
/// off), corrected by the pair channel when there is one: a pair that cannot replicate is not
/// redundant, whatever the election says, and one in sync is.
pub fn redundancy_json(election: Option<(&'static str, String)>, pair: Option<&PairStats>) -> serde_json::Value {
    let (state, reason) = match (election, pair) {
        (None, _) => ("not redundant", "HA is off: a single node".to_string()),
        (Some(("not redundant", reason)), _) => ("not redundant", reason),
        (Some(election), None) => election,
        (Some(_), Some(pair)) => match pair.in_sync() {
            Ok(()) => ("redundant", "the peer is connected and in sync".to_string()),
            Err(reason) => ("not redundant", reason.to_string()),
        },
    };
    serde_json::json!({"state": state, "reason": reason})
}
