//! RED output folders (files channels, and the folder behind a vault): verified files appear under
//! their names atomically, exactly once; everything else goes to quarantine with a reason.
//!
//! A stream is written to `<folder>/.part/<session>-<epoch>-<stream>.part` while it arrives, hashed as
//! it is written. At `End` the sink checks the length and BLAKE3 against what the sender announced,
//! syncs the file, sets its mtime, and links it into place under its sanitised name (a hard link
//! never replaces an existing file, so a collision gets " (2)", " (3)"… and a different file is never
//! overwritten; a file already there with the same content counts as this delivery). The delivery is
//! then recorded in the ledger. A stream that cannot complete (a lost block, a hash mismatch, a name
//! refused, too large, a full disk) never shows under its name: its part goes to the quarantine folder
//! with a `.reason.json`, or is removed, as configured.
//!
//! With an HA pair the sink also follows the node's role. A standby decodes in shadow: verified files
//! wait in `<folder>/.shadow/` (at most `shadow_files`, oldest dropped first and counted) until the
//! active reports them delivered, and become deliveries of this node if it takes over first. The
//! active announces each delivery to the standby before placing it and keeps the announcement
//! (`.part/<stem>.ready.json`) until the file is in place: a node that dies in between finishes the
//! delivery when it restarts, if the peer's ledger says the peer counted on it (and drops it if not,
//! since the peer then delivered the file itself).
//!
//! The sink runs on its own thread: file system calls block, and a slow disk must not stall the
//! protocol thread (its queue to the sink is bounded, so back-pressure reaches the receiver instead).

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use diode_proto::StreamMeta;
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use crate::ledger::{sync_parent, Ledger, LedgerEntry};
use crate::names::{sanitize, SafePath};
use crate::replication::{Refusal, Replication};
use crate::sink::{Reply, SinkEvent};

mod ready;
mod stats;

use ready::*;
pub use ready::{check_ready_note, NoteRefused, Ready};
use stats::*;
pub use stats::{FileFailure, FileFailureCounts, FileSinkStats, Transfer};

/// What happens to a file that cannot be delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Kept in the quarantine folder with a reason file, for an operator to look at.
    #[default]
    Quarantine,
    /// Removed; the reason is logged and counted.
    Delete,
}

#[derive(Clone, Debug)]
pub struct FileSinkConfig {
    pub channel: u16,
    pub folder: PathBuf,
    pub quarantine: PathBuf,
    pub ledger: PathBuf,
    pub ledger_entries: usize,
    pub on_failure: OnFailure,
    pub max_file_size: u64,
}

/// A files sink's part in an HA pair.
#[derive(Clone)]
pub struct FileSinkPair {
    /// This node's name, recorded with its deliveries.
    pub node: String,
    pub shadow_files: usize,
    /// The way to the standby (the pair channel).
    pub replication: Arc<dyn Replication>,
}

struct Incoming {
    meta: StreamMeta,
    session: u64,
    epoch: u32,
    target: Result<SafePath, Failure>,
    state: State,
}

enum State {
    Writing {
        file: File,
        part: PathBuf,
        hasher: Box<blake3::Hasher>,
        written: u64,
    },
    /// Already delivered according to the ledger: the bytes are dropped.
    Duplicate,
    /// Failed before the end: the bytes are dropped, the failure is reported at the end.
    Failed(Failure),
}

pub struct FileSink {
    config: FileSinkConfig,
    part_dir: PathBuf,
    ledger: Ledger,
    streams: HashMap<u64, Incoming>,
    stats: Arc<FileSinkStats>,
    pair: Option<FileSinkPair>,
    /// Without a pair always; with one, while the node is active.
    active: bool,
    shadow_dir: PathBuf,
    shadow: VecDeque<Ready>,
    /// Deliveries begun before a crash, waiting for the peer's ledger (or a takeover) to settle them.
    pending: Vec<Ready>,
    /// File ids quarantined lately, oldest first: a file BLUE sends again and again (it keeps changing,
    /// or `repeat` copies of a bad one) leaves one copy to look at, not one per try.
    quarantined_ids: VecDeque<String>,
}

/// How many quarantined file ids are remembered to keep one copy each.
const QUARANTINED_IDS: usize = 4096;

impl FileSink {
    /// Opens the folders and the ledger, and removes part files a previous run left (they are this
    /// node's own, and were never visible), except deliveries it had announced (see the module
    /// documentation). With a pair the sink starts as a standby.
    pub fn open(
        config: FileSinkConfig,
        stats: Arc<FileSinkStats>,
        pair: Option<FileSinkPair>,
    ) -> std::io::Result<FileSink> {
        let part_dir = config.folder.join(".part");
        let shadow_dir = config.folder.join(".shadow");
        std::fs::create_dir_all(&config.folder)?;
        std::fs::create_dir_all(&part_dir)?;
        if pair.is_some() {
            std::fs::create_dir_all(&shadow_dir)?;
        }
        std::fs::create_dir_all(&config.quarantine)?;
        let mut pending = Vec::new();
        for item in std::fs::read_dir(&part_dir)?.flatten() {
            let path = item.path();
            let Some(note_name) = path.file_name().and_then(|n| n.to_str()).filter(|n| n.ends_with(".ready.json"))
            else {
                continue;
            };
            match load_ready_note(&path, note_name, &part_dir) {
                Ok(ready) => pending.push(ready),
                Err(reason) => {
                    // Only the note goes: whatever it names outside this folder is not ours to touch.
                    warn!(note = %path.display(), %reason, "ALARM refusing a delivery announcement left in the part folder");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let keep: Vec<PathBuf> = pending.iter().flat_map(|r| [r.part.clone(), ready_note(&r.part)]).collect();
        for item in std::fs::read_dir(&part_dir)?.flatten() {
            if !keep.contains(&item.path()) {
                warn!(part = %item.path().display(), "removing a part file left by an earlier run");
                let _ = std::fs::remove_file(item.path());
            }
        }
        // Shadow copies of an earlier run may be stale (the active went on delivering): the active's
        // ledger and BLUE's resends are what count after a restart.
        for item in std::fs::read_dir(&shadow_dir).into_iter().flatten().flatten() {
            let _ = std::fs::remove_file(item.path());
        }
        let ledger = Ledger::open(&config.ledger, config.ledger_entries)?;
        info!(folder = %config.folder.display(), remembered = ledger.len(), pending = pending.len(), "output folder ready");
        let active = pair.is_none();
        let mut sink = FileSink {
            config,
            part_dir,
            ledger,
            streams: HashMap::new(),
            stats,
            pair,
            active,
            shadow_dir,
            shadow: VecDeque::new(),
            pending,
            quarantined_ids: VecDeque::new(),
        };
        if sink.pair.is_none() {
            sink.settle_pending(None);
        }
        Ok(sink)
    }

    pub fn handle(&mut self, event: SinkEvent) {
        match event {
            SinkEvent::Open { stream, meta, session, epoch } => {
                let _file = file_span(stream, &meta.name).entered();
                self.open_stream(stream, meta, session, epoch)
            }
            SinkEvent::Data { stream, data } => self.write(stream, &data),
            SinkEvent::End { stream, total_len, hash } => {
                if let Some(incoming) = self.streams.remove(&stream) {
                    let _file = file_span(stream, &incoming.meta.name).entered();
                    self.finish(stream, incoming, total_len, hash);
                }
            }
            SinkEvent::Broken { stream, reason, .. } => {
                if let Some(incoming) = self.streams.remove(&stream) {
                    let _file = file_span(stream, &incoming.meta.name).entered();
                    self.fail(
                        stream,
                        incoming,
                        Failure::new(FileFailure::Incomplete, format!("stream broken: {reason}")),
                    );
                }
            }
            SinkEvent::NeverArrived { stream, name, size, file_id } => {
                let _file = file_span(stream, &name).entered();
                self.never_arrived(stream, &name, size, file_id)
            }
            SinkEvent::Datagram(_) => {}
            SinkEvent::Role { active } => self.set_role(active),
            SinkEvent::PeerDelivered { entry, reply } => self.peer_delivered(entry, Some(reply)),
            SinkEvent::PeerLedger { entries, complete } => self.peer_ledger(entries, complete),
        }
    }

    /// The sender's manifest names a file of which nothing reached this node. Delivered already
    /// (another copy, or by the peer), it is not news; on a standby the active may well have it.
    /// Otherwise it is reported like any undelivered file, with a reason file in quarantine that
    /// names it, since no part of it exists here.
    fn never_arrived(&mut self, stream: u64, name: &str, size: u64, file_id: [u8; 16]) {
        let id = hex::encode(file_id);
        if self.ledger.contains(&id) {
            debug!("a copy of this file never arrived, but the file is delivered");
            return;
        }
        if !self.active {
            info!(size, "standby: every block of this file was lost here; the active delivers it if it has it");
            return;
        }
        let failure = Failure::new(
            FileFailure::NeverArrived,
            "every block of the file was lost on the fiber (a burst or an outage beyond the repair); the sender's manifest named it",
        );
        let file = Undelivered { stream, name, size, session: String::new(), epoch: 0, file_id: Some(id) };
        self.give_up(&file, None, &failure);
    }

    fn set_role(&mut self, active: bool) {
        if active == self.active || self.pair.is_none() {
            return;
        }
        self.active = active;
        if !active {
            info!("standby: verified files are held in shadow");
            return;
        }
        self.settle_pending(None);
        let held = std::mem::take(&mut self.shadow);
        self.stats.shadow_held.store(0, Ordering::Relaxed);
        info!(held = held.len(), "active: delivering what the shadow holds");
        for ready in held {
            if self.ledger.contains(&ready.entry.id) {
                let _ = std::fs::remove_file(&ready.part);
                continue;
            }
            self.stats.shadow_delivered.fetch_add(1, Ordering::Relaxed);
            let _file = file_span(ready.entry.stream, &ready.name).entered();
            self.deliver(ready);
        }
    }

    /// The active peer is delivering `entry`: record it so this node never delivers it, and drop
    /// any copy of it this node holds or is receiving.
    fn peer_delivered(&mut self, entry: LedgerEntry, reply: Option<Reply>) {
        let id = entry.id.clone();
        let result = if entry.is_well_formed() {
            self.ledger.record(entry).map(|_| ()).map_err(|e| Refusal::io("cannot write the ledger", e))
        } else {
            Err(Refusal::MalformedDelivery)
        };
        if result.is_ok() {
            self.stats.peer_delivered.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(position) = self.shadow.iter().position(|r| r.entry.id == id) {
            if let Some(ready) = self.shadow.remove(position) {
                let _ = std::fs::remove_file(&ready.part);
                self.stats.shadow_held.fetch_sub(1, Ordering::Relaxed);
            }
        }
        for (stream, incoming) in &mut self.streams {
            if Self::ledger_key(&incoming.meta, incoming.session, incoming.epoch, *stream) == id {
                if let State::Writing { part, .. } = &incoming.state {
                    let _ = std::fs::remove_file(part);
                }
                incoming.state = State::Duplicate;
            }
        }
        if let Some(reply) = reply {
            let _ = reply.0.send(result);
        }
    }

    /// A part of the active peer's ledger, on a new pair connection: settles what this node left
    /// pending, then records the rest.
    fn peer_ledger(&mut self, entries: Vec<LedgerEntry>, complete: bool) {
        self.settle_pending(Some((&entries, complete)));
        for entry in entries {
            if !self.ledger.contains(&entry.id) {
                self.peer_delivered(entry, None);
            }
        }
    }

    /// Finishes or drops deliveries announced before a crash. With the peer's ledger: finish those
    /// the peer recorded as this node's, drop the others (the peer never heard of them, or delivered
    /// them itself). Without it (no pair, or a takeover): finish them all.
    fn settle_pending(&mut self, peer: Option<(&[LedgerEntry], bool)>) {
        let own = self.pair.as_ref().map(|p| p.node.clone()).unwrap_or_default();
        for ready in std::mem::take(&mut self.pending) {
            let finish = match peer {
                None => true,
                Some((entries, complete)) => match entries.iter().find(|e| e.id == ready.entry.id) {
                    Some(entry) => entry.node == own,
                    None if !complete => {
                        // Maybe in a later part of the peer's ledger.
                        self.pending.push(ready);
                        continue;
                    }
                    None => false,
                },
            };
            let _file = file_span(ready.entry.stream, &ready.name).entered();
            if finish {
                info!("finishing a delivery announced before a restart");
                self.deliver(ready);
            } else {
                info!("dropping a delivery the peer did not count on");
                let _ = std::fs::remove_file(&ready.part);
                let _ = std::fs::remove_file(ready_note(&ready.part));
            }
        }
    }

    /// Standby: keeps a verified file in the shadow, oldest dropped beyond the limit.
    fn hold(&mut self, mut ready: Ready) {
        let limit = self.pair.as_ref().map_or(0, |p| p.shadow_files);
        let held = self.shadow_dir.join(format!("{}.data", ready.entry.id));
        if let Err(error) = std::fs::rename(&ready.part, &held) {
            warn!(%error, "cannot keep a file in shadow");
            let _ = std::fs::remove_file(&ready.part);
            return;
        }
        ready.part = held;
        debug!(name = %ready.name, "held in shadow");
        self.shadow.push_back(ready);
        self.stats.shadow_held.fetch_add(1, Ordering::Relaxed);
        while self.shadow.len() > limit {
            let Some(dropped) = self.shadow.pop_front() else { break };
            let _ = std::fs::remove_file(&dropped.part);
            self.stats.shadow_held.fetch_sub(1, Ordering::Relaxed);
            self.stats.shadow_evicted.fetch_add(1, Ordering::Relaxed);
            warn!(name = %dropped.name, "shadow full: dropped the oldest file held");
        }
    }

    fn ledger_key(meta: &StreamMeta, session: u64, epoch: u32, stream: u64) -> String {
        match &meta.file_id {
            Some(id) => hex::encode(id),
            // Without an id from the sender only this very stream can be recognised.
            None => format!("{session:016x}-{epoch}-{stream}"),
        }
    }

    fn open_stream(&mut self, stream: u64, meta: StreamMeta, session: u64, epoch: u32) {
        let target =
            sanitize(&meta.name).map_err(|e| Failure::new(FileFailure::NameRefused, format!("name refused: {e}")));
        let key = Self::ledger_key(&meta, session, epoch, stream);
        let state = if self.ledger.contains(&key) {
            State::Duplicate
        } else if let Some(size) = meta.size.filter(|s| *s > self.config.max_file_size) {
            let limit = self.config.max_file_size;
            State::Failed(Failure::new(FileFailure::TooLarge, format!("announced {size} bytes, the limit is {limit}")))
        } else {
            let part = self.part_dir.join(format!("{session:016x}-{epoch}-{stream}.part"));
            match File::create(&part) {
                Ok(file) => State::Writing { file, part, hasher: Box::default(), written: 0 },
                Err(error) => State::Failed(Failure::io("cannot create the part file", &error)),
            }
        };
        debug!("file opened");
        self.streams.insert(stream, Incoming { meta, session, epoch, target, state });
    }

    fn write(&mut self, stream: u64, data: &[u8]) {
        let Some(incoming) = self.streams.get_mut(&stream) else { return };
        let State::Writing { file, part, hasher, written } = &mut incoming.state else { return };
        let failure = if *written + data.len() as u64 > self.config.max_file_size {
            Some(Failure::new(
                FileFailure::TooLarge,
                format!("more than the limit of {} bytes", self.config.max_file_size),
            ))
        } else {
            match file.write_all(data) {
                Ok(()) => {
                    hasher.update(data);
                    *written += data.len() as u64;
                    None
                }
                Err(error) => Some(Failure::io("cannot write the part file", &error)),
            }
        };
        if let Some(failure) = failure {
            // Free the space at once: on a full disk the next files must not fail too.
            let _ = std::fs::remove_file(&*part);
            incoming.state = State::Failed(failure);
        }
    }

    fn finish(&mut self, stream: u64, incoming: Incoming, total_len: u64, hash: [u8; 32]) {
        let key = Self::ledger_key(&incoming.meta, incoming.session, incoming.epoch, stream);
        let (file, part, hasher, written) = match incoming.state {
            State::Duplicate => return self.duplicate(&incoming.meta),
            State::Failed(ref failure) => {
                let failure = failure.clone();
                return self.fail(stream, incoming, failure);
            }
            State::Writing { ref file, ref part, ref hasher, written } => {
                (file, part.clone(), hasher.finalize(), written)
            }
        };
        if written != total_len || *hasher.as_bytes() != hash {
            let reason = format!(
                "{written} bytes with BLAKE3 {}, the sender announced {total_len} bytes and {}",
                hasher.to_hex(),
                hex::encode(hash)
            );
            return self.fail(stream, incoming, Failure::new(FileFailure::HashMismatch, reason));
        }
        if let Err(error) = file.sync_all() {
            return self.fail(stream, incoming, Failure::io("cannot sync the part file", &error));
        }
        if let Some((secs, nanos)) = incoming.meta.mtime {
            let mtime = UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos);
            let _ = file.set_modified(mtime);
        }
        // A refused name fails here, before anything is held or announced (placing sanitises it again).
        if let Err(failure) = &incoming.target {
            let failure = failure.clone();
            return self.fail(stream, incoming, failure);
        }
        if self.ledger.contains(&key) {
            // Another copy of the same file finished first.
            let _ = std::fs::remove_file(&part);
            return self.duplicate(&incoming.meta);
        }
        let entry = LedgerEntry {
            id: key,
            blake3: hex::encode(hash),
            session: format!("{:016x}", incoming.session),
            epoch: incoming.epoch,
            stream,
            path: String::new(),
            size: written,
            delivered_at: 0,
            node: self.pair.as_ref().map(|p| p.node.clone()).unwrap_or_default(),
        };
        let ready = Ready { entry, name: incoming.meta.name.clone(), part };
        if self.active {
            self.deliver(ready);
        } else {
            self.hold(ready);
        }
    }

    /// Places a verified file and records it. With a pair the standby hears of it first, and the
    /// announcement stays on disk until the file is in place.
    fn deliver(&mut self, mut ready: Ready) {
        if self.ledger.contains(&ready.entry.id) {
            let _ = std::fs::remove_file(&ready.part);
            let meta = StreamMeta { name: ready.name.clone(), size: Some(ready.entry.size), ..StreamMeta::default() };
            return self.duplicate(&meta);
        }
        let target = match sanitize(&ready.name) {
            Ok(target) => target,
            Err(error) => {
                let failure = Failure::new(FileFailure::NameRefused, format!("name refused: {error}"));
                return self.fail_ready(ready, failure);
            }
        };
        let note = ready_note(&ready.part);
        if let Some(pair) = &self.pair {
            ready.entry.node.clone_from(&pair.node);
            let written =
                serde_json::to_vec(&ready).map_err(std::io::Error::other).and_then(|bytes| write_synced(&note, &bytes));
            if let Err(error) = written {
                warn!(%error, "cannot keep the delivery's announcement");
            }
            if let Err(reason) = pair.replication.announce_delivery(self.config.channel, ready.entry.clone()) {
                self.stats.unreplicated.fetch_add(1, Ordering::Relaxed);
                debug!(%reason, "delivered without the standby's acknowledgement");
            }
        }
        let mut hash = [0u8; 32];
        if let Ok(bytes) = hex::decode(&ready.entry.blake3) {
            hash.copy_from_slice(&bytes[..32.min(bytes.len())]);
        }
        let placed = match self.place(&ready.part, &target, ready.entry.size, &hash) {
            Ok(placed) => placed,
            Err(failure) => {
                let _ = std::fs::remove_file(&note);
                return self.fail_ready(ready, failure);
            }
        };
        let _ = std::fs::remove_file(&ready.part);
        let size = ready.entry.size;
        ready.entry.path.clone_from(&placed);
        ready.entry.delivered_at = unix_now();
        if let Err(error) = self.ledger.record(ready.entry) {
            // The file is in place; without its ledger line a resend would be delivered again.
            error!(%error, "ALARM cannot write the delivered-file ledger");
        }
        let _ = std::fs::remove_file(&note);
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        self.stats.delivered_bytes.fetch_add(size, Ordering::Relaxed);
        self.stats.note(Transfer {
            name: ready.name.clone(),
            size,
            state: "delivered",
            reason: None,
            path: Some(placed.clone()),
            at: unix_now(),
        });
        info!(path = %placed, size, "file delivered");
    }

    fn fail_ready(&mut self, ready: Ready, failure: Failure) {
        let file = Undelivered {
            stream: ready.entry.stream,
            name: &ready.name,
            size: ready.entry.size,
            session: ready.entry.session.clone(),
            epoch: ready.entry.epoch,
            file_id: Some(ready.entry.id.clone()),
        };
        self.give_up(&file, Some(ready.part.clone()), &failure);
    }

    /// Links the verified part file into place under the first free variant of its name. A file
    /// already there with the same length and BLAKE3 is this file, delivered before the ledger line was
    /// written (a crash in between): it is not delivered twice.
    fn place(&self, part: &Path, target: &SafePath, len: u64, hash: &[u8; 32]) -> Result<String, Failure> {
        for attempt in 1..=1000u32 {
            let candidate = if attempt == 1 { target.clone() } else { target.with_suffix(&format!(" ({attempt})")) };
            let path = self.config.folder.join(candidate.to_path());
            if let Some(parent) = path.parent() {
                if let Err(error) = std::fs::create_dir_all(parent) {
                    let kind = if error.kind() == ErrorKind::StorageFull {
                        FileFailure::DiskFull
                    } else {
                        FileFailure::PathConflict
                    };
                    return Err(Failure::new(kind, format!("cannot create the folder {}: {error}", parent.display())));
                }
            }
            match std::fs::hard_link(part, &path) {
                Ok(()) => {
                    let _ = sync_parent(&path);
                    return Ok(candidate.as_text());
                }
                Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                    if same_content(&path, len, hash) {
                        return Ok(candidate.as_text());
                    }
                }
                Err(error) => return Err(Failure::io("cannot link the file into place", &error)),
            }
        }
        Err(Failure::new(FileFailure::PathConflict, "1000 files already have this name"))
    }

    fn duplicate(&mut self, meta: &StreamMeta) {
        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        self.stats.note(Transfer {
            name: meta.name.clone(),
            size: meta.size.unwrap_or(0),
            state: "duplicate",
            reason: Some("already delivered (ledger)".into()),
            path: None,
            at: unix_now(),
        });
        info!("file already delivered: not delivered again");
    }

    fn fail(&mut self, stream: u64, incoming: Incoming, failure: Failure) {
        let part = match incoming.state {
            State::Writing { part, file, .. } => {
                drop(file);
                Some(part)
            }
            State::Duplicate | State::Failed(_) => None,
        };
        let file = Undelivered {
            stream,
            name: &incoming.meta.name,
            size: incoming.meta.size.unwrap_or(0),
            session: format!("{:016x}", incoming.session),
            epoch: incoming.epoch,
            file_id: incoming.meta.file_id.map(hex::encode),
        };
        self.give_up(&file, part, &failure);
    }

    /// Quarantines (or removes) what arrived of a file that will not be delivered, and reports it.
    fn give_up(&mut self, file: &Undelivered<'_>, part: Option<PathBuf>, failure: &Failure) {
        self.stats.failed.add(failure.kind);
        let mut kept = None;
        let again = file.file_id.as_ref().is_some_and(|id| self.quarantined_ids.contains(id));
        if again {
            info!("this file is already in quarantine: this copy is not kept");
        } else if self.config.on_failure == OnFailure::Quarantine {
            if let Some(id) = &file.file_id {
                if self.quarantined_ids.len() == QUARANTINED_IDS {
                    self.quarantined_ids.pop_front();
                }
                self.quarantined_ids.push_back(id.clone());
            }
            let stem = format!("{}-c{}-s{}", unix_now(), self.config.channel, file.stream);
            let note = QuarantineNote {
                name: file.name,
                reason: &failure.reason,
                label: failure.kind.label(),
                session: file.session.clone(),
                epoch: file.epoch,
                stream: file.stream,
                file_id: file.file_id.clone(),
                content: None,
            };
            kept = self.quarantine(&stem, part.as_deref(), note);
        }
        if let Some(part) = &part {
            let _ = std::fs::remove_file(part);
        }
        self.stats.note(Transfer {
            name: file.name.to_string(),
            size: file.size,
            state: "quarantined",
            reason: Some(failure.reason.clone()),
            path: kept.clone(),
            at: unix_now(),
        });
        warn!(reason = %failure.reason, quarantined = ?kept, "file not delivered");
    }

    /// Moves what arrived (if anything) and a reason file to the quarantine folder. The content is kept
    /// only when it is complete enough to be worth looking at, i.e. whenever there is a part file.
    fn quarantine(&self, stem: &str, part: Option<&Path>, mut note: QuarantineNote<'_>) -> Option<String> {
        if let Some(part) = part {
            let data = self.config.quarantine.join(format!("{stem}.data"));
            if std::fs::rename(part, &data).is_ok() {
                note.content = Some(format!("{stem}.data"));
            }
        }
        let path = self.config.quarantine.join(format!("{stem}.reason.json"));
        let written = serde_json::to_vec_pretty(&note)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&path, bytes));
        match written {
            Ok(()) => Some(path.display().to_string()),
            Err(error) => {
                warn!(%error, "cannot write the quarantine reason file");
                None
            }
        }
    }
}

/// A file that will not be delivered, as the quarantine note and the transfers list describe it.
struct Undelivered<'a> {
    stream: u64,
    name: &'a str,
    size: u64,
    /// Hex, as in the ledger.
    session: String,
    epoch: u32,
    file_id: Option<String>,
}

#[derive(Serialize)]
struct QuarantineNote<'a> {
    name: &'a str,
    reason: &'a str,
    label: &'static str,
    session: String,
    epoch: u32,
    stream: u64,
    file_id: Option<String>,
    /// The quarantined content's file name, when it was kept.
    content: Option<String>,
}

pub(super) fn same_content(path: &Path, len: u64, hash: &[u8; 32]) -> bool {
    let Ok(mut file) = File::open(path) else { return false };
    if file.metadata().map(|m| m.len()).ok() != Some(len) {
        return false;
    }
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buffer[..n]);
            }
            Err(_) => return false,
        }
    }
    hasher.finalize().as_bytes() == hash
}

/// The span of one file's transfer: every line logged while handling it names the stream and the file.
/// The name is BLUE's, untrusted: logged escaped, so it cannot forge log lines.
fn file_span(stream: u64, name: &str) -> tracing::Span {
    tracing::info_span!("file", stream, name = ?name)
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Runs a file sink on its own thread until the event channel closes.
pub fn spawn_file_sink(
    config: FileSinkConfig,
    mut events: mpsc::Receiver<SinkEvent>,
    stats: Arc<FileSinkStats>,
    pair: Option<FileSinkPair>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let channel = config.channel;
    // Every line the sink logs, from opening its folder on, names its channel.
    let span = tracing::info_span!("channel", number = channel);
    let mut sink = span.in_scope(|| FileSink::open(config, stats, pair))?;
    std::thread::Builder::new().name(format!("files-{channel}")).spawn(move || {
        let _channel = span.entered();
        while let Some(event) = events.blocking_recv() {
            sink.handle(event);
        }
    })
}

#[cfg(test)]
mod tests;
