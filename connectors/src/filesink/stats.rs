//! What a files sink counts and remembers for the status page, and why a file was not delivered.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use diode_proto::AtomicReasonCounts;
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
    /// Files not delivered, by reason.
    pub failed: FileFailureCounts,
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

    pub fn failed_total(&self) -> u64 {
        self.failed.total()
    }
}

/// Why a file went to quarantine instead of its folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFailure {
    /// The stream broke before its end.
    Incomplete,
    NameRefused,
    TooLarge,
    HashMismatch,
    DiskFull,
    WriteError,
    /// No free name, or a folder in the way.
    PathConflict,
    /// Every block was lost; the sender's manifest named the file.
    NeverArrived,
}

diode_proto::reasons!(FileFailure {
    Incomplete => "incomplete",
    NameRefused => "name_refused",
    TooLarge => "too_large",
    HashMismatch => "hash_mismatch",
    DiskFull => "disk_full",
    WriteError => "write_error",
    PathConflict => "path_conflict",
    NeverArrived => "never_arrived",
});

pub type FileFailureCounts = AtomicReasonCounts<FileFailure, { FileFailure::LABELS.len() }>;

/// Why a file was not delivered: the reason for counters and a sentence for the reason file.
#[derive(Clone, Debug)]
pub(super) struct Failure {
    pub(super) kind: FileFailure,
    pub(super) reason: String,
}

impl Failure {
    pub(super) fn new(kind: FileFailure, reason: impl Into<String>) -> Failure {
        Failure { kind, reason: reason.into() }
    }

    pub(super) fn io(what: &str, error: &std::io::Error) -> Failure {
        let kind = if error.kind() == ErrorKind::StorageFull { FileFailure::DiskFull } else { FileFailure::WriteError };
        Failure::new(kind, format!("{what}: {error}"))
    }
}
