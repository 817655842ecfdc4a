//! What a files sink counts and remembers for the status page, and why a file was not delivered.

use std::collections::{BTreeMap, VecDeque};
use std::io::ErrorKind;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use serde::Serialize;

/// One finished transfer, for the status page.
#[derive(Clone, Debug, Serialize)]
pub struct Transfer {
    pub name: String,
    pub size: u64,
    /// "delivered", "duplicate" or "quarantined".
    pub state: &'static str,
    pub reason: Option<String>,
    pub path: Option<String>,
    pub at: u64,
}

/// Counters of a files or vault sink.
#[derive(Debug, Default)]
pub struct FileSinkStats {
    pub delivered: AtomicU64,
    pub delivered_bytes: AtomicU64,
    /// Files recognised in the ledger (repeats, resends) and not delivered again.
    pub duplicates: AtomicU64,
    /// Files not delivered, by reason label.
    pub failed: Mutex<BTreeMap<&'static str, u64>>,
    pub recent: Mutex<VecDeque<Transfer>>,
    /// HA: verified files held in shadow now, dropped from the shadow for lack of room, delivered
    /// from the shadow at a takeover, and deliveries the active peer reported.
    pub shadow_held: AtomicU64,
    pub shadow_evicted: AtomicU64,
    pub shadow_delivered: AtomicU64,
    pub peer_delivered: AtomicU64,
    /// HA: deliveries placed without the standby's acknowledgement.
    pub unreplicated: AtomicU64,
}

pub(super) const RECENT_TRANSFERS: usize = 100;

impl FileSinkStats {
    pub(super) fn note(&self, transfer: Transfer) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_TRANSFERS {
                recent.pop_front();
            }
            recent.push_back(transfer);
        }
    }

    pub(super) fn fail(&self, label: &'static str) {
        if let Ok(mut failed) = self.failed.lock() {
            *failed.entry(label).or_insert(0) += 1;
        }
    }

    pub fn failed_total(&self) -> u64 {
        self.failed.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

/// Why a file was not delivered: a label for counters and a sentence for the reason file.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub(super) label: &'static str,
    pub(super) reason: String,
}

impl Failure {
    pub(super) fn new(label: &'static str, reason: impl Into<String>) -> Failure {
        Failure { label, reason: reason.into() }
    }

    pub(super) fn io(what: &str, error: &std::io::Error) -> Failure {
        let label = if error.kind() == ErrorKind::StorageFull { "disk_full" } else { "write_error" };
        Failure::new(label, format!("{what}: {error}"))
    }
}
