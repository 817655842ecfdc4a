//! RED's store-and-forward spool: what a channel cannot hand to a destination right now waits here, on
//! disk, and is delivered when one returns, oldest first.
//!
//! One folder per channel, held by one process at a time (an exclusive lock on `LOCK`). A TCP stream is
//! an item of three files named by its sequence number: `<seq>.meta` (where it came from, written when it
//! opens), `<seq>.stream` (its bytes, appended as they are decoded) and `<seq>.done` (its length and
//! BLAKE3, written once the receiver verified it whole). [`stream`] writes and delivers them.
//!
//! At start the folder is read back: a complete item whose bytes match its `.done` is delivered; one
//! whose bytes do not (truncated, altered) is moved to `.quarantine` with a reason and never delivered;
//! an item without `.done` was still arriving when the previous process stopped, and since the rest of
//! it will never come, it is removed and counted.
//!
//! Syncing: an item a destination is taking as it arrives is never synced (it is gone from the spool
//! before it would matter); what waits is synced in batches, every `sync_ms`. A killed process loses
//! nothing written (the page cache survives it); a power loss can lose what arrived in the last
//! `sync_ms` and had not been delivered, and an item left inconsistent by it fails its hash at start.

pub mod stream;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diode_proto::AtomicReasonCounts;
use serde::Deserialize;

/// Why something the spool was given was not delivered. Each dropped item has exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpoolDrop {
    /// The spool reached `max_bytes` (or `max_items`, or its disk is full).
    SpoolFull,
    /// It waited longer than `max_age` for a destination.
    Expired,
    /// The spool's disk failed to write or read it.
    SpoolFailed,
    /// It was still arriving when the previous red-rx stopped; the rest will never come.
    IncompleteAtRestart,
    /// Found at start not matching its recorded length or hash: quarantined.
    Corrupt,
}

diode_proto::reasons!(SpoolDrop {
    SpoolFull => "spool_full",
    Expired => "expired",
    SpoolFailed => "spool_failed",
    IncompleteAtRestart => "incomplete_at_restart",
    Corrupt => "corrupt",
});

pub type SpoolDropCounts = AtomicReasonCounts<SpoolDrop, { SpoolDrop::LABELS.len() }>;

/// A channel's spool settings, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct SpoolConfig {
    pub folder: PathBuf,
    pub max_bytes: u64,
    pub max_items: usize,
    pub max_age: Duration,
    /// How often what waits is synced to disk.
    pub sync_every: Duration,
    /// TCP: streams delivered at once, each on its own connection.
    pub parallel: usize,
    /// TCP: a destination that takes no byte for this long is given up on for this attempt; the
    /// stream is delivered again whole on a new connection.
    pub stall: Duration,
    /// UDP: datagrams per second replayed once a destination returns.
    pub replay_rate: u32,
}

/// What the spool holds and what became of it, per channel.
#[derive(Debug, Default)]
pub struct SpoolStats {
    pub bytes: AtomicU64,
    pub items: AtomicU64,
    /// When the oldest item waiting arrived (ms since the Unix epoch), 0 when none waits.
    pub oldest_unix_ms: AtomicU64,
    /// Items delivered after waiting in the spool (the destination was down, slow or failed).
    pub delivered_from_spool: AtomicU64,
    /// Streams delivered again whole on a new connection after a destination took part of them.
    pub repeats: AtomicU64,
    /// Largest `bytes` seen since start.
    pub peak_bytes: AtomicU64,
    pub dropped: SpoolDropCounts,
    /// When data was last refused for want of room or a failing disk (ms since the Unix epoch, 0: never).
    pub refused_at_ms: AtomicU64,
}

/// How long after its last refusal a spool still shows its "full" alarm.
pub const REFUSAL_ALARM: Duration = Duration::from_secs(60);

impl SpoolStats {
    pub fn add_bytes(&self, len: u64) {
        let now = self.bytes.fetch_add(len, Ordering::Relaxed) + len;
        self.peak_bytes.fetch_max(now, Ordering::Relaxed);
    }

    pub fn sub_bytes(&self, len: u64) {
        let _ = self.bytes.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| Some(b.saturating_sub(len)));
    }

    pub fn refused(&self) {
        self.refused_at_ms.store(unix_ms(), Ordering::Relaxed);
    }

    /// Whether data was refused within [`REFUSAL_ALARM`] of `now_ms`.
    pub fn refusing(&self, now_ms: u64) -> bool {
        let at = self.refused_at_ms.load(Ordering::Relaxed);
        at != 0 && now_ms.saturating_sub(at) < REFUSAL_ALARM.as_millis() as u64
    }

    /// Seconds the oldest waiting item has waited, at `now_ms`.
    pub fn oldest_age_s(&self, now_ms: u64) -> u64 {
        match self.oldest_unix_ms.load(Ordering::Relaxed) {
            0 => 0,
            oldest => now_ms.saturating_sub(oldest) / 1000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool folder {}: {source}", folder.display())]
    Folder { folder: PathBuf, source: std::io::Error },
    #[error("spool folder {} is in use by another process (its LOCK is held)", folder.display())]
    Locked { folder: PathBuf },
}

/// A channel's spool folder, locked for this process.
pub struct SpoolFolder {
    pub config: SpoolConfig,
    /// Held for the process's life: a second red-rx on the same folder would deliver twice.
    _lock: File,
}

impl SpoolFolder {
    /// Creates the folder if needed (its parent must exist) and takes its lock.
    pub fn open(config: SpoolConfig) -> Result<SpoolFolder, SpoolError> {
        let folder_error = |source| SpoolError::Folder { folder: config.folder.clone(), source };
        std::fs::create_dir_all(config.folder.join(".quarantine")).map_err(folder_error)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(config.folder.join("LOCK"))
            .map_err(|source| SpoolError::Folder { folder: config.folder.clone(), source })?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { folder: config.folder }),
            Err(std::fs::TryLockError::Error(source)) => return Err(folder_error(source)),
        }
        Ok(SpoolFolder { config, _lock: lock })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.config.folder.join(name)
    }

    /// Moves `files` (those that exist) to `.quarantine` beside a `<stem>.reason` file saying why.
    pub fn quarantine(&self, stem: &str, files: &[PathBuf], reason: &str) {
        let folder = self.config.folder.join(".quarantine");
        for file in files.iter().filter(|f| f.exists()) {
            if let Some(name) = file.file_name() {
                if let Err(error) = std::fs::rename(file, folder.join(name)) {
                    tracing::warn!(file = %file.display(), %error, "cannot move a spool file to quarantine: removed");
                    let _ = std::fs::remove_file(file);
                }
            }
        }
        if let Err(error) = std::fs::write(folder.join(format!("{stem}.reason")), format!("{reason}\n")) {
            tracing::warn!(%error, "cannot write the spool quarantine's reason file");
        }
    }

    /// Syncs the folder itself, so files created or removed in it survive a power loss.
    pub fn sync_dir(&self) {
        if let Ok(dir) = File::open(&self.config.folder) {
            let _ = dir.sync_all();
        }
    }
}

/// Why a folder cannot hold a spool.
#[derive(Debug, thiserror::Error)]
pub enum FolderProblem {
    #[error("'{}' does not exist (create it, or leave folder out for the default)", .0.display())]
    Missing(PathBuf),
    #[error("'{}' is in the way: it is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("no part of '{}' exists", .0.display())]
    NoAncestor(PathBuf),
    #[error("'{}' is not writable: {source}", folder.display())]
    NotWritable { folder: PathBuf, source: std::io::Error },
}

/// Whether `folder` can hold a spool: it exists (or an ancestor does, for a default folder that is
/// created at start) and this process may create files in it.
pub fn check_writable(folder: &Path, created_at_start: bool) -> Result<(), FolderProblem> {
    let existing = if folder.is_dir() {
        folder
    } else if created_at_start {
        match folder.ancestors().skip(1).find(|a| a.exists()) {
            Some(ancestor) if ancestor.is_dir() => ancestor,
            Some(ancestor) => return Err(FolderProblem::NotAFolder(ancestor.to_path_buf())),
            None => return Err(FolderProblem::NoAncestor(folder.to_path_buf())),
        }
    } else {
        return Err(FolderProblem::Missing(folder.to_path_buf()));
    };
    let probe = existing.join(format!(".spool-probe-{}", std::process::id()));
    match File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(source) => Err(FolderProblem::NotWritable { folder: existing.to_path_buf(), source }),
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("'{0}' is not a duration (give e.g. 90s, 15m, 24h, 7d)")]
    NotADuration(String),
    #[error("'{text}': unknown unit '{unit}' (s, m, h or d)")]
    UnknownUnit { text: String, unit: String },
}

/// Parses a duration given as whole seconds or with a unit: `90`, `"90s"`, `"15m"`, `"24h"`, `"7d"`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = number.parse().map_err(|_| DurationError::NotADuration(text.to_string()))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        "d" => value * 86_400,
        _ => return Err(DurationError::UnknownUnit { text: text.to_string(), unit: unit.to_string() }),
    };
    Ok(Duration::from_secs(seconds))
}

/// A duration in a configuration file: whole seconds or a string with a unit.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum DurationText {
    Seconds(u64),
    Text(String),
}

impl DurationText {
    pub fn parse(&self) -> Result<Duration, DurationError> {
        match self {
            DurationText::Seconds(seconds) => Ok(Duration::from_secs(*seconds)),
            DurationText::Text(text) => parse_duration(text),
        }
    }
}

/// The sequence numbers of the oldest waiting items, to keep `oldest_unix_ms` true as they leave.
#[derive(Debug, Default)]
pub(crate) struct Ages {
    waiting: Mutex<std::collections::BTreeMap<u64, u64>>,
}

impl Ages {
    pub(crate) fn insert(&self, seq: u64, arrived_ms: u64, stats: &SpoolStats) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert(seq, arrived_ms);
            Self::publish(&waiting, stats);
        }
    }

    pub(crate) fn remove(&self, seq: u64, stats: &SpoolStats) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&seq);
            Self::publish(&waiting, stats);
        }
    }

    fn publish(waiting: &std::collections::BTreeMap<u64, u64>, stats: &SpoolStats) {
        let oldest = waiting.values().min().copied().unwrap_or(0);
        stats.oldest_unix_ms.store(oldest, Ordering::Relaxed);
        stats.items.store(waiting.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_seconds_or_a_unit() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("soon"), Err(DurationError::NotADuration("soon".into())));
        assert!(parse_duration("3w").unwrap_err().to_string().contains("unknown unit"));
    }

    #[test]
    fn a_second_process_cannot_take_a_locked_folder() {
        let folder = std::env::temp_dir().join(format!("spool-lock-{}", std::process::id()));
        let config = SpoolConfig {
            folder: folder.clone(),
            max_bytes: 1 << 20,
            max_items: 10,
            max_age: Duration::from_secs(60),
            sync_every: Duration::from_millis(100),
            parallel: 1,
            stall: Duration::from_secs(5),
            replay_rate: 1000,
        };
        let first = SpoolFolder::open(config.clone()).unwrap_or_else(|e| panic!("{e}"));
        let second = SpoolFolder::open(config.clone());
        assert!(matches!(second, Err(SpoolError::Locked { .. })), "the lock is exclusive");
        drop(first);
        assert!(SpoolFolder::open(config).is_ok(), "released with its holder");
        let _ = std::fs::remove_dir_all(folder);
    }

    #[test]
    fn a_missing_explicit_folder_is_refused_and_a_default_one_needs_a_writable_parent() {
        let base = std::env::temp_dir().join(format!("spool-check-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap_or_else(|e| panic!("{e}"));
        let missing = base.join("nope");
        assert!(matches!(check_writable(&missing, false), Err(FolderProblem::Missing(_))));
        assert!(check_writable(&missing.join("deeper"), true).is_ok());
        assert!(check_writable(&base, false).is_ok());
        let file = base.join("a-file");
        std::fs::write(&file, b"x").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            matches!(check_writable(&file.join("spool"), true), Err(FolderProblem::NotAFolder(_))),
            "a file where the folder's parent should be"
        );
        let _ = std::fs::remove_dir_all(base);
    }
}
