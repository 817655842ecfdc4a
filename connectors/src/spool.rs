//! BLUE's spool: files accepted for transfer (taken from a drop folder or uploaded to the vault) wait
//! here, on disk, until they have been sent as many times as configured.
//!
//! An entry is two files named by its file id: `<id>.json` (the name, size, mtime and how it is to be
//! finished) and `<id>.data` (the content). The description is written first, then the content is
//! renamed in, then the folder is synced; an entry counts only when both exist. On start, a description
//! without content (a crash between the two steps: the source file is still where it was) and content
//! still being uploaded (`*.partial`) are removed. Because the id is chosen once and kept on disk, a
//! sender restart resends the same id and RED's ledger recognises what it already delivered.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use diode_proto::record::FILE_ID_LEN;
use diode_proto::{AbortReason, StreamMeta};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::sync::{mpsc, watch, Notify};
use tracing::{info, warn, Instrument};

use crate::ledger::sync_parent;
use crate::replication::Replication;
use crate::source::SourceEvent;

/// What becomes of a drop-folder file once it has been sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "folder")]
pub enum Finish {
    Delete,
    /// Moved under this folder, keeping its relative path.
    MoveTo(PathBuf),
}

/// The description of one spooled file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpoolEntry {
    pub id: String,
    /// Relative path as it will be sent.
    pub name: String,
    pub size: u64,
    pub mtime: Option<(i64, u32)>,
    /// BLAKE3 of the content when known at acceptance (vault uploads), hex.
    pub blake3: Option<String>,
    /// Where it came from (a client address or "drop folder").
    pub origin: String,
    /// Unix milliseconds when it was accepted; entries are sent oldest first.
    pub accepted_ms: u64,
    pub finish: Finish,
}

impl SpoolEntry {
    pub fn new(name: String, size: u64, mtime: Option<(i64, u32)>, origin: String, finish: Finish) -> SpoolEntry {
        SpoolEntry { id: new_file_id(), name, size, mtime, blake3: None, origin, accepted_ms: unix_ms(), finish }
    }

    pub fn file_id(&self) -> Option<[u8; FILE_ID_LEN]> {
        let bytes = hex::decode(&self.id).ok()?;
        bytes.try_into().ok()
    }
}

/// A random file id, as hex.
pub fn new_file_id() -> String {
    let mut id = [0u8; FILE_ID_LEN];
    if getrandom::fill(&mut id).is_err() {
        // Time and pid still make ids differ between files and restarts.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        id[..12].copy_from_slice(&nanos.to_le_bytes()[..12]);
        id[12..].copy_from_slice(&std::process::id().to_le_bytes());
    }
    hex::encode(id)
}

pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Counters of a spool, shown in the daemon's status.
#[derive(Debug, Default)]
pub struct SpoolStats {
    pub accepted: AtomicU64,
    pub accepted_bytes: AtomicU64,
    /// Files sent (each repeat counted once).
    pub sent: AtomicU64,
    pub sent_bytes: AtomicU64,
    /// Sends abandoned because the spooled content changed or could not be read.
    pub failed: AtomicU64,
    pub rejected: AtomicU64,
    /// Entries waiting now.
    pub waiting: AtomicU64,
    /// Entries copied here by the active peer (held for a takeover).
    pub replicas: AtomicU64,
    /// Accepted files the standby peer did not confirm holding (it was unreachable or refused).
    pub unreplicated: AtomicU64,
    /// The last files sent, rejected or failed, newest last.
    pub recent: Mutex<std::collections::VecDeque<SpoolTransfer>>,
}

/// One file's outcome, for the management API.
#[derive(Clone, Debug, Serialize)]
pub struct SpoolTransfer {
    pub id: String,
    pub name: String,
    pub size: u64,
    /// "sent", "rejected" or "retrying".
    pub state: &'static str,
    pub reason: Option<String>,
    pub at_ms: u64,
}

const RECENT_TRANSFERS: usize = 100;

impl SpoolStats {
    pub fn note(&self, id: &str, name: &str, size: u64, state: &'static str, reason: Option<String>) {
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT_TRANSFERS {
                recent.pop_front();
            }
            recent.push_back(SpoolTransfer { id: id.into(), name: name.into(), size, state, reason, at_ms: unix_ms() });
        }
    }
}

/// The spool folder of one channel.
#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
    pub stats: Arc<SpoolStats>,
    /// Woken whenever an entry is added.
    pub added: Arc<Notify>,
    /// Ids being sent right now (so a rescan does not start them twice).
    busy: Arc<Mutex<std::collections::HashSet<String>>>,
    /// With a pair: this spool's channel and the way to the standby.
    replication: Arc<OnceLock<(u16, Arc<dyn Replication>)>>,
    /// Ids accepted while the standby could not take a copy, and not copied since: sending one makes
    /// this node exposed (see [`Replication::sent_without_copy`]).
    without_copy: Arc<Mutex<std::collections::HashSet<String>>>,
}

impl Spool {
    /// Opens the spool folder, creating it, and clears what a crash left half-done.
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir)?;
        for item in std::fs::read_dir(dir)? {
            let path = item?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let stale = if let Some(id) = name.strip_suffix(".json") {
                !dir.join(format!("{id}.data")).exists()
            } else if name.ends_with(".partial") || name.ends_with(".json.tmp") {
                true
            } else if let Some(id) = name.strip_suffix(".data") {
                !dir.join(format!("{id}.json")).exists()
            } else {
                false
            };
            if stale {
                warn!(path = %path.display(), "removing an unfinished spool file left by a crash");
                std::fs::remove_file(&path)?;
            }
        }
        let spool = Spool {
            dir: dir.to_path_buf(),
            stats: Arc::new(SpoolStats::default()),
            added: Arc::new(Notify::new()),
            busy: Arc::default(),
            replication: Arc::default(),
            without_copy: Arc::default(),
        };
        spool.stats.waiting.store(spool.list().len() as u64, Ordering::Relaxed);
        Ok(spool)
    }

    pub fn data_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.data"))
    }

    fn json_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    /// A path to write an upload's content to before [`Spool::commit`].
    pub fn partial_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.partial"))
    }

    fn write_description(&self, entry: &SpoolEntry) -> std::io::Result<()> {
        let temporary = self.dir.join(format!("{}.json.tmp", entry.id));
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&serde_json::to_vec_pretty(entry).map_err(std::io::Error::other)?)?;
        file.sync_all()?;
        std::fs::rename(&temporary, self.json_path(&entry.id))
    }

    /// Has accepted files copied to the pair's standby before they count as accepted.
    pub fn set_replication(&self, channel: u16, replication: Arc<dyn Replication>) {
        let _ = self.replication.set((channel, replication));
    }

    /// Copies an accepted file (content at `path`) to the standby, when there is a pair. A standby
    /// that cannot be reached does not stop the active: the file is accepted, counted unreplicated,
    /// and the pair reports itself not redundant.
    pub async fn replicate(&self, entry: &SpoolEntry, path: &Path) {
        let Some((channel, replicator)) = self.replication.get() else { return };
        if let Err(reason) = replicator.copy_accepted(*channel, entry, path.to_path_buf()).await {
            self.stats.unreplicated.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut without_copy) = self.without_copy.lock() {
                without_copy.insert(entry.id.clone());
            }
            // Named by hand: vault uploads call this from handlers outside the channel's span.
            warn!(channel, id = %entry.id, name = %entry.name, %reason, "accepted without a copy on the standby");
        }
    }

    /// Takes `source` into the spool (same file system): the content is linked in, copied to the pair's
    /// standby, committed, and only then removed from where it was. A crash before the commit leaves
    /// the source in place; a crash after it and before the removal takes the file again (RED finds the
    /// same content under its name and does not deliver it twice). Call from a blocking thread.
    pub fn take(&self, source: &Path, entry: &SpoolEntry) -> std::io::Result<()> {
        let partial = self.partial_path(&entry.id);
        std::fs::hard_link(source, &partial)?;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.block_on(self.replicate(entry, &partial));
        }
        if let Err(error) = self.commit(entry) {
            let _ = std::fs::remove_file(&partial);
            return Err(error);
        }
        std::fs::remove_file(source)?;
        if let Some(parent) = source.parent() {
            let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(())
    }

    /// These entries are being copied to the standby (a connection's snapshot).
    pub fn copied(&self, ids: &[String]) {
        if let Ok(mut without_copy) = self.without_copy.lock() {
            for id in ids {
                without_copy.remove(id);
            }
        }
    }

    /// Commits a file the active peer copied here (at [`Spool::partial_path`], synced): held, not
    /// sent, until this node takes over.
    pub fn commit_replica(&self, entry: &SpoolEntry) -> std::io::Result<()> {
        let known = self.json_path(&entry.id).exists();
        self.write_description(entry)?;
        std::fs::rename(self.partial_path(&entry.id), self.data_path(&entry.id))?;
        sync_parent(&self.data_path(&entry.id))?;
        if !known {
            self.stats.replicas.fetch_add(1, Ordering::Relaxed);
            self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Forgets an entry without sending it (a replica the active sent long enough ago); nothing to do
    /// when it is not there. The description goes first: without it the content no longer counts, and a
    /// crash in between leaves only content, which the next start removes.
    pub fn remove(&self, id: &str) -> std::io::Result<()> {
        match std::fs::remove_file(self.json_path(id)) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        }
        std::fs::remove_file(self.data_path(id))?;
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Commits content already written (and synced) at [`Spool::partial_path`].
    pub fn commit(&self, entry: &SpoolEntry) -> std::io::Result<()> {
        self.write_description(entry)?;
        if let Err(error) = std::fs::rename(self.partial_path(&entry.id), self.data_path(&entry.id)) {
            let _ = std::fs::remove_file(self.json_path(&entry.id));
            return Err(error);
        }
        sync_parent(&self.data_path(&entry.id))?;
        self.note_added(entry);
        Ok(())
    }

    fn note_added(&self, entry: &SpoolEntry) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.accepted_bytes.fetch_add(entry.size, Ordering::Relaxed);
        self.stats.waiting.fetch_add(1, Ordering::Relaxed);
        self.added.notify_one();
    }

    /// Complete entries, oldest first.
    pub fn list(&self) -> Vec<SpoolEntry> {
        let mut entries = BTreeMap::new();
        let Ok(items) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        for item in items.flatten() {
            let path = item.path();
            let Some(id) = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if !self.data_path(id).exists() {
                continue;
            }
            match std::fs::read(&path).map(|bytes| serde_json::from_slice::<SpoolEntry>(&bytes)) {
                Ok(Ok(entry)) => {
                    entries.insert((entry.accepted_ms, entry.id.clone()), entry);
                }
                _ => warn!(path = %path.display(), "unreadable spool description: skipped"),
            }
        }
        entries.into_values().collect()
    }

    /// Finishes an entry that has been sent: deletes it, or moves its content to the configured folder.
    pub fn finish(&self, entry: &SpoolEntry) -> std::io::Result<()> {
        let data = self.data_path(&entry.id);
        match &entry.finish {
            Finish::Delete => std::fs::remove_file(&data)?,
            Finish::MoveTo(folder) => {
                let target = free_name(&folder.join(&entry.name));
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(&data, &target)?;
            }
        }
        std::fs::remove_file(self.json_path(&entry.id))?;
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Spool {
    /// Where entries given up go: `rejected` beside a spool folder named `spool` (a drop folder's
    /// `.diode/rejected`), else `<spool>.rejected`.
    pub fn rejected_dir(&self) -> PathBuf {
        match self.dir.file_name().and_then(|n| n.to_str()) {
            Some("spool") => self.dir.with_file_name("rejected"),
            _ => self.dir.with_extension("rejected"),
        }
    }

    /// Gives up an entry that cannot be sent as accepted: its content moves to [`Spool::rejected_dir`]
    /// under its name, with a `.reason.txt`, and it leaves the spool.
    pub fn reject(&self, entry: &SpoolEntry, reason: &str) -> std::io::Result<PathBuf> {
        let target = free_name(&self.rejected_dir().join(&entry.name));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(self.data_path(&entry.id), &target)?;
        let mut note = target.clone().into_os_string();
        note.push(".reason.txt");
        std::fs::write(note, format!("{reason}\n"))?;
        std::fs::remove_file(self.json_path(&entry.id))?;
        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        self.stats.note(&entry.id, &entry.name, entry.size, "rejected", Some(reason.to_string()));
        Ok(target)
    }
}

/// How many times an entry whose content is not what was accepted is tried before it is rejected:
/// each try sends it whole, and a file that keeps changing would be sent forever.
pub const MAX_CONTENT_TRIES: u32 = 3;

/// `path` if nothing is there, else `path` with " (2)", " (3)"… before the extension.
pub fn free_name(path: &Path) -> PathBuf {
    if !path.exists() {
        return path.to_path_buf();
    }
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("file").to_string();
    let extension = path.extension().and_then(|e| e.to_str()).map(|e| format!(".{e}")).unwrap_or_default();
    (2..)
        .map(|n| path.with_file_name(format!("{stem} ({n}){extension}")))
        .find(|candidate| !candidate.exists())
        .unwrap_or_else(|| path.to_path_buf())
}

/// Read size from the spool: a few blocks' worth, so a large file streams without sitting in memory.
const READ_CHUNK: usize = 256 * 1024;

/// Sends the spool's entries, oldest first, each `repeat` times, until `shutdown`. Stream ids count up
/// from 1: each call runs within one sender session (a term), where they are unique per channel.
#[tracing::instrument(name = "channel", skip_all, fields(number = channel))]
pub async fn run_spool_sender(
    channel: u16,
    spool: Spool,
    repeat: u32,
    events: mpsc::Sender<SourceEvent>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sender = SpoolSender { channel, spool, repeat, events, next_stream: 1, content_failures: HashMap::new() };
    loop {
        let entries = sender.spool.list();
        sender.content_failures.retain(|id, _| entries.iter().any(|e| &e.id == id));
        for entry in &entries {
            if *shutdown.borrow() {
                return;
            }
            if let Ok(mut busy) = sender.spool.busy.lock() {
                if !busy.insert(entry.id.clone()) {
                    continue;
                }
            }
            // Escaped: a dropped file's name may hold any byte but '/' and NUL.
            let span = tracing::info_span!("file", id = %entry.id, name = ?entry.name);
            sender.send_entry(entry, &mut shutdown).instrument(span).await;
        }
        // Sleep until something is added; the timeout retries failed entries and picks up entries
        // another process (the pair replication) put in the folder.
        tokio::select! {
            _ = sender.spool.added.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(if entries.is_empty() { 1 } else { 5 })) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// One term's sending of a spool: the stream ids it has used and the entries whose content failed.
struct SpoolSender {
    channel: u16,
    spool: Spool,
    repeat: u32,
    events: mpsc::Sender<SourceEvent>,
    next_stream: u64,
    content_failures: HashMap<String, u32>,
}

impl SpoolSender {
    /// Sends `entry` (marked busy by the caller) `repeat` times; a fully sent entry leaves the spool
    /// and is told to the standby, one whose content keeps failing is rejected.
    async fn send_entry(&mut self, entry: &SpoolEntry, shutdown: &mut watch::Receiver<bool>) {
        let spool = &self.spool;
        let mut sent_all = true;
        for copy in 0..self.repeat.max(1) {
            let stream = self.next_stream;
            self.next_stream += 1;
            match send_one(spool, entry, stream, &self.events, shutdown).await {
                Ok(()) => {
                    spool.stats.sent.fetch_add(1, Ordering::Relaxed);
                    spool.stats.sent_bytes.fetch_add(entry.size, Ordering::Relaxed);
                    info!(stream, size = entry.size, copy = copy + 1, "file sent");
                }
                Err(SendFailure::Stopped) => {
                    sent_all = false;
                    break;
                }
                Err(SendFailure::Content(reason)) => {
                    spool.stats.failed.fetch_add(1, Ordering::Relaxed);
                    sent_all = false;
                    let tries = self.content_failures.entry(entry.id.clone()).or_insert(0);
                    *tries += 1;
                    if *tries < MAX_CONTENT_TRIES {
                        spool.stats.note(&entry.id, &entry.name, entry.size, "retrying", Some(reason.clone()));
                        warn!(stream, %reason, "file not sent: will retry");
                        break;
                    }
                    let reason = format!("not sent after {MAX_CONTENT_TRIES} tries: {reason}");
                    match spool.reject(entry, &reason) {
                        Ok(target) => warn!(%reason, rejected = %target.display(), "file rejected"),
                        Err(error) => warn!(%reason, %error, "file rejected but could not be moved"),
                    }
                    self.content_failures.remove(&entry.id);
                    break;
                }
            }
        }
        if let Ok(mut busy) = spool.busy.lock() {
            busy.remove(&entry.id);
        }
        if sent_all {
            spool.stats.note(&entry.id, &entry.name, entry.size, "sent", None);
            if let Err(error) = spool.finish(entry) {
                warn!(%error, "cannot finish a sent spool entry");
            }
            if let Some((_, replicator)) = spool.replication.get() {
                replicator.sent(self.channel, &entry.id);
                if spool.without_copy.lock().is_ok_and(|mut ids| ids.remove(&entry.id)) {
                    replicator.sent_without_copy();
                }
            }
        }
    }
}

enum SendFailure {
    /// The pipeline or the term ended: the entry stays for the next term.
    Stopped,
    /// The content could not be read or is not what was accepted: the entry stays and is retried.
    Content(String),
}

async fn send_one(
    spool: &Spool,
    entry: &SpoolEntry,
    stream: u64,
    events: &mpsc::Sender<SourceEvent>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SendFailure> {
    let mut file =
        tokio::fs::File::open(spool.data_path(&entry.id)).await.map_err(|e| SendFailure::Content(e.to_string()))?;
    let meta = StreamMeta {
        peer: entry.origin.clone(),
        name: entry.name.clone(),
        size: Some(entry.size),
        mtime: entry.mtime,
        file_id: entry.file_id(),
    };
    events.send(SourceEvent::Open { stream, meta }).await.map_err(|_| SendFailure::Stopped)?;
    let mut sent = 0u64;
    let mut buffer = BytesMut::with_capacity(READ_CHUNK);
    let outcome = loop {
        buffer.reserve(READ_CHUNK);
        let read = tokio::select! {
            read = file.read_buf(&mut buffer) => read,
            _ = shutdown.changed() => break Err((AbortReason::ShuttingDown, SendFailure::Stopped)),
        };
        match read {
            Ok(0) => break Ok(()),
            Ok(n) => {
                sent += n as u64;
                if sent > entry.size {
                    break Err((AbortReason::SourceError, SendFailure::Content("the file grew in the spool".into())));
                }
                let bytes = buffer.split().freeze();
                if events.send(SourceEvent::Data { stream, bytes }).await.is_err() {
                    return Err(SendFailure::Stopped);
                }
            }
            Err(error) => break Err((AbortReason::SourceError, SendFailure::Content(error.to_string()))),
        }
    };
    let outcome = outcome.and_then(|()| {
        if sent == entry.size {
            Ok(())
        } else {
            let reason = format!("{sent} bytes in the spool, {} accepted", entry.size);
            Err((AbortReason::SourceError, SendFailure::Content(reason)))
        }
    });
    match outcome {
        Ok(()) => events.send(SourceEvent::End { stream }).await.map_err(|_| SendFailure::Stopped),
        Err((reason, failure)) => {
            let _ = events.send(SourceEvent::Abort { stream, reason }).await;
            Err(failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_between_the_two_steps_leaves_nothing_half_done() {
        let dir = std::env::temp_dir().join(format!("spool-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let spool = Spool::open(&dir).unwrap();
        let source = dir.with_extension("src");
        std::fs::write(&source, b"content").unwrap();
        let entry = SpoolEntry::new("a/b.txt".into(), 7, None, "drop folder".into(), Finish::Delete);
        spool.take(&source, &entry).unwrap();
        assert!(!source.exists());
        // Leftovers of crashes: a description whose content never moved in, and a partial upload.
        std::fs::write(dir.join("0011.json"), b"{}").unwrap();
        std::fs::write(dir.join("0022.partial"), b"half").unwrap();
        let reopened = Spool::open(&dir).unwrap();
        assert_eq!(reopened.list(), vec![entry.clone()]);
        assert!(!dir.join("0011.json").exists() && !dir.join("0022.partial").exists());
        assert_eq!(entry.file_id().map(hex::encode), Some(entry.id.clone()));
        reopened.finish(&entry).unwrap();
        assert!(reopened.list().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[tokio::test]
    async fn an_entry_whose_content_changed_is_rejected_after_a_bounded_number_of_tries() {
        let root = std::env::temp_dir().join(format!("spool-tries-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let spool = Spool::open(&root.join("spool")).unwrap();
        let source = root.join("report.csv");
        std::fs::write(&source, b"content that grew after it was taken").unwrap();
        // Accepted at 7 bytes: what is in the spool now is not what was accepted.
        let entry = SpoolEntry::new("reports/report.csv".into(), 7, None, "drop folder".into(), Finish::Delete);
        let (taker, taken) = (spool.clone(), entry.clone());
        tokio::task::spawn_blocking(move || taker.take(&source, &taken)).await.unwrap().unwrap();
        let (events, mut sent) = mpsc::channel(1024);
        let (_stop, shutdown) = watch::channel(false);
        let sender = tokio::spawn(run_spool_sender(2, spool.clone(), 1, events, shutdown));
        let mut opened = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !spool.list().is_empty() && tokio::time::Instant::now() < deadline {
            while let Ok(event) = sent.try_recv() {
                opened += u32::from(matches!(event, SourceEvent::Open { .. }));
            }
            // Skip the retry timer.
            spool.added.notify_one();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sender.abort();
        while let Ok(event) = sent.try_recv() {
            opened += u32::from(matches!(event, SourceEvent::Open { .. }));
        }
        assert!(spool.list().is_empty(), "the entry left the spool");
        assert_eq!(opened, MAX_CONTENT_TRIES, "sent whole {opened} times");
        let reason = std::fs::read_to_string(root.join("rejected/reports/report.csv.reason.txt")).unwrap();
        assert!(reason.contains("not sent after 3 tries"), "{reason}");
        assert_eq!(spool.stats.rejected.load(Ordering::Relaxed), 1);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn free_names_never_overwrite() {
        let dir = std::env::temp_dir().join(format!("free-name-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), b"1").unwrap();
        std::fs::write(dir.join("a (2).txt"), b"2").unwrap();
        assert_eq!(free_name(&dir.join("a.txt")), dir.join("a (3).txt"));
        assert_eq!(free_name(&dir.join("b")), dir.join("b"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
