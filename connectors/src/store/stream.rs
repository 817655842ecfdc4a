//! TCP streams through the spool. Every stream of the channel is written to the spool as it is
//! decoded, and delivered from there: a destination that keeps up reads it as it arrives (nothing is
//! synced, and the item is gone once delivered), one that is down, slow or fails leaves it waiting on
//! disk, and it is delivered whole on a new connection once a destination is up.
//!
//! Two parts: the writer (a thread of its own, so a slow disk never holds a runtime worker) appends
//! the decoded bytes to the item and publishes its progress; the scheduler (a task) starts each item's
//! delivery in arrival order, at most `parallel` at once, and puts an item whose delivery failed back
//! at its place, so the oldest is tried first once a destination returns.
//!
//! A destination only ever sees a clean close when it got every byte of a verified stream; anything
//! else is a reset. A stream a destination had taken part of is delivered again from its first byte:
//! that is a repeat, counted and logged as such.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn, Instrument};

use super::{unix_ms, Ages, SpoolDrop, SpoolFolder, SpoolStats};
use crate::pool::Pool;
use crate::sink::{connect, reset, SinkEvent, SinkStats, StreamAbort};

/// Where a stream came from, kept beside its bytes (`<seq>.meta`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ItemMeta {
    stream: u64,
    session: String,
    epoch: u32,
    peer: String,
    arrived_ms: u64,
}

/// A verified stream's length and hash (`<seq>.done`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Done {
    len: u64,
    blake3: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Arriving,
    /// Verified whole by the receiver and written out.
    Complete,
    /// Will not be delivered (broken on the fiber, spool full, spool failed, expired).
    Dropped,
}

#[derive(Clone, Copy, Debug)]
struct Progress {
    written: u64,
    state: State,
}

/// One stream in the spool.
struct Item {
    seq: u64,
    meta: ItemMeta,
    /// Published by the writer, followed by the delivery.
    progress: watch::Sender<Progress>,
    /// A destination took part of this stream on an earlier connection (or may have, before a restart).
    repeat: AtomicBool,
    /// Its delivery had to wait (no destination, a failed attempt, or found at start).
    waited: AtomicBool,
    /// A delivery is taking it as it arrives: the writer does not sync it.
    live: AtomicBool,
    /// Delivered and removed: the writer forgets it.
    delivered: AtomicBool,
}

impl Item {
    fn progress(&self) -> Progress {
        *self.progress.borrow()
    }

    fn set(&self, progress: Progress) {
        self.progress.send_replace(progress);
    }
}

/// The files of one item.
struct Paths {
    data: PathBuf,
    meta: PathBuf,
    done: PathBuf,
}

fn paths(folder: &SpoolFolder, seq: u64) -> Paths {
    Paths {
        data: folder.path(&format!("{seq:020}.stream")),
        meta: folder.path(&format!("{seq:020}.meta")),
        done: folder.path(&format!("{seq:020}.done")),
    }
}

/// What the scheduler is told about a delivery that ended.
enum Outcome {
    Delivered,
    /// No destination, or one that failed or stalled: the item waits for the next attempt.
    Retry,
    /// Dropped while it was being delivered (the writer counted why), or shutting down.
    Gone,
    /// The spool could not read it back: dropped and counted here.
    Unreadable,
}

/// A channel's TCP spool: what the daemon wires between the receiver and the destinations.
pub struct StreamSpool {
    pub channel: u16,
    pub folder: SpoolFolder,
    pub pool: Arc<Pool>,
    pub sink: Arc<SinkStats>,
    pub stats: Arc<SpoolStats>,
}

/// Starts the writer thread and the scheduler task; the thread ends when `events` closes, the task
/// on `shutdown`. Items found in the folder are checked and queued first.
pub fn spawn_stream_spool(
    spool: StreamSpool,
    events: mpsc::Receiver<SinkEvent>,
    runtime: tokio::runtime::Handle,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(std::thread::JoinHandle<()>, tokio::task::JoinHandle<()>)> {
    let shared = Arc::new(Shared { spool, ages: Ages::default() });
    let (items_tx, items_rx) = mpsc::unbounded_channel();
    let recovered = recover(&shared);
    let next_seq = recovered.iter().map(|item| item.seq + 1).max().unwrap_or(1);
    let writer = Writer {
        shared: Arc::clone(&shared),
        items: items_tx,
        open: HashMap::new(),
        unsynced: Vec::new(),
        next_seq,
        last_sync: Instant::now(),
        full_alarm: false,
    };
    for item in recovered {
        let _ = writer.items.send(item);
    }
    let span = tracing::info_span!("channel", number = shared.spool.channel);
    let scheduler = runtime.spawn(run_scheduler(Arc::clone(&shared), items_rx, shutdown).instrument(span.clone()));
    let runtime_for_writer = runtime.clone();
    let thread = std::thread::Builder::new().name(format!("spool-{}", shared.spool.channel)).spawn(move || {
        let _channel = span.entered();
        writer.run(events, &runtime_for_writer);
    })?;
    Ok((thread, scheduler))
}

struct Shared {
    spool: StreamSpool,
    ages: Ages,
}

impl Shared {
    fn config(&self) -> &super::SpoolConfig {
        &self.spool.folder.config
    }

    /// Removes an item's files and its share of the spool.
    fn forget(&self, seq: u64, len: u64) {
        let files = paths(&self.spool.folder, seq);
        for path in [&files.data, &files.meta, &files.done] {
            let _ = std::fs::remove_file(path);
        }
        self.spool.stats.sub_bytes(len);
        self.ages.remove(seq, &self.spool.stats);
    }
}

/// Reads the folder back at start: complete items that verify are returned in order, the rest are
/// quarantined (corrupt) or removed (incomplete), each counted.
fn recover(shared: &Shared) -> Vec<Arc<Item>> {
    let folder = &shared.spool.folder;
    let stats = &shared.spool.stats;
    let mut seqs: Vec<u64> = match std::fs::read_dir(&folder.config.folder) {
        Ok(entries) => entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                let (stem, extension) = name.split_once('.')?;
                matches!(extension, "stream" | "meta" | "done").then(|| stem.parse().ok()).flatten()
            })
            .collect(),
        Err(error) => {
            error!(%error, "ALARM cannot read the spool folder");
            return Vec::new();
        }
    };
    seqs.sort_unstable();
    seqs.dedup();
    let mut recovered = Vec::new();
    for seq in seqs {
        let files = paths(folder, seq);
        let all = [files.data.clone(), files.meta.clone(), files.done.clone()];
        let stem = format!("{seq:020}");
        let meta: Option<ItemMeta> =
            std::fs::read(&files.meta).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
        let done_text = std::fs::read(&files.done).ok();
        let Some(meta) = meta else {
            warn!(seq, "spool item without a readable description: quarantined");
            folder.quarantine(&stem, &all, "the item's .meta is missing or not valid JSON");
            stats.dropped.add(SpoolDrop::Corrupt);
            continue;
        };
        let Some(done_text) = done_text else {
            info!(
                seq,
                stream = meta.stream,
                "a stream still arriving when red-rx stopped: removed (its rest will not come)"
            );
            for path in &all {
                let _ = std::fs::remove_file(path);
            }
            stats.dropped.add(SpoolDrop::IncompleteAtRestart);
            continue;
        };
        let verdict = match serde_json::from_slice::<Done>(&done_text) {
            Ok(done) => verify(&files.data, &done).map(|()| done.len),
            Err(error) => Err(Corruption::BadDone(error)),
        };
        match verdict {
            Ok(len) => {
                let (progress, _) = watch::channel(Progress { written: len, state: State::Complete });
                let item = Arc::new(Item {
                    seq,
                    meta,
                    progress,
                    // The previous process may have handed part of it to a destination.
                    repeat: AtomicBool::new(true),
                    waited: AtomicBool::new(true),
                    live: AtomicBool::new(false),
                    delivered: AtomicBool::new(false),
                });
                stats.add_bytes(len);
                shared.ages.insert(seq, item.meta.arrived_ms, stats);
                recovered.push(item);
            }
            Err(reason) => {
                error!(seq, stream = meta.stream, %reason, "ALARM a spooled stream does not verify: quarantined, not delivered");
                folder.quarantine(&stem, &all, &reason.to_string());
                stats.dropped.add(SpoolDrop::Corrupt);
            }
        }
    }
    if !recovered.is_empty() {
        info!(
            items = recovered.len(),
            bytes = stats.bytes.load(Ordering::Relaxed),
            "spooled streams found: delivering them first"
        );
    }
    recovered
}

/// Why a spooled stream found at start is not the stream that was verified.
#[derive(Debug, thiserror::Error)]
enum Corruption {
    #[error("the item's .done is not valid: {0}")]
    BadDone(serde_json::Error),
    #[error("the item's bytes cannot be read: {0}")]
    Unreadable(std::io::Error),
    #[error("truncated or extended: {found} bytes where {verified} were verified")]
    Length { found: u64, verified: u64 },
    #[error("{len} bytes whose BLAKE3 is not the {verified} verified")]
    Hash { len: u64, verified: String },
}

/// Whether the bytes at `data` are the stream `done` describes.
fn verify(data: &std::path::Path, done: &Done) -> Result<(), Corruption> {
    let mut file = File::open(data).map_err(Corruption::Unreadable)?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(Corruption::Unreadable)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        len += n as u64;
    }
    if len != done.len {
        return Err(Corruption::Length { found: len, verified: done.len });
    }
    if hasher.finalize().to_hex().as_str() != done.blake3 {
        return Err(Corruption::Hash { len, verified: done.blake3.clone() });
    }
    Ok(())
}

/// The writer thread's state.
struct Writer {
    shared: Arc<Shared>,
    items: mpsc::UnboundedSender<Arc<Item>>,
    /// Streams still arriving, by the receiver's stream id. Events of a stream not here (refused at
    /// its opening, or dropped) are ignored.
    open: HashMap<u64, OpenItem>,
    /// Items whose files may not be synced yet.
    unsynced: Vec<Arc<Item>>,
    next_seq: u64,
    last_sync: Instant,
    /// The spool-full alarm is raised (logged once per episode).
    full_alarm: bool,
}

struct OpenItem {
    item: Arc<Item>,
    file: File,
}

impl Writer {
    fn run(mut self, mut events: mpsc::Receiver<SinkEvent>, runtime: &tokio::runtime::Handle) {
        let sync_every = self.shared.config().sync_every;
        loop {
            let event = match events.try_recv() {
                Ok(event) => Some(event),
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    let wait = sync_every.saturating_sub(self.last_sync.elapsed()).max(Duration::from_millis(1));
                    match runtime.block_on(async { tokio::time::timeout(wait, events.recv()).await }) {
                        Ok(Some(event)) => Some(event),
                        Ok(None) => break,
                        Err(_) => None,
                    }
                }
            };
            if let Some(event) = event {
                self.handle(event);
            }
            if self.last_sync.elapsed() >= sync_every {
                self.sync();
            }
        }
        // What waits survives this process; streams still arriving are removed at the next start.
        self.sync();
    }

    fn handle(&mut self, event: SinkEvent) {
        match event {
            SinkEvent::Open { stream, meta, session, epoch } => self.open(stream, meta.peer, session, epoch),
            SinkEvent::Data { stream, data } => self.append(stream, &data),
            SinkEvent::End { stream, total_len, hash } => self.end(stream, total_len, hash),
            SinkEvent::Broken { stream, reason } => {
                if let Some(open) = self.open.remove(&stream) {
                    info!(stream, %reason, reason_label = reason.label(), "stream broken: not delivered");
                    self.drop_item(&open.item, reason, None);
                }
            }
            SinkEvent::Datagram(_)
            | SinkEvent::NeverArrived { .. }
            | SinkEvent::Role { .. }
            | SinkEvent::PeerDelivered { .. }
            | SinkEvent::PeerLedger { .. } => {}
        }
    }

    fn open(&mut self, stream: u64, peer: String, session: u64, epoch: u32) {
        let shared = Arc::clone(&self.shared);
        let (config, stats, sink) = (shared.config(), &shared.spool.stats, &shared.spool.sink);
        sink.streams_opened.fetch_add(1, Ordering::Relaxed);
        let items = stats.items.load(Ordering::Relaxed) as usize;
        if items >= config.max_items || stats.bytes.load(Ordering::Relaxed) >= config.max_bytes {
            self.refuse(stream, StreamAbort::SpoolFull, SpoolDrop::SpoolFull, "spool full: stream refused");
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let meta = ItemMeta { stream, session: format!("{session:016x}"), epoch, peer, arrived_ms: unix_ms() };
        let files = paths(&shared.spool.folder, seq);
        let created = serde_json::to_vec(&meta)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&files.meta, bytes))
            .and_then(|()| File::create(&files.data));
        let file = match created {
            Ok(file) => file,
            Err(error) => {
                let _ = std::fs::remove_file(&files.meta);
                let (abort, reason) = classify(&error);
                warn!(stream, %error, "cannot spool the stream");
                self.refuse(stream, abort, reason, "stream refused: the spool cannot take it");
                return;
            }
        };
        let (progress, _) = watch::channel(Progress { written: 0, state: State::Arriving });
        let item = Arc::new(Item {
            seq,
            meta,
            progress,
            repeat: AtomicBool::new(false),
            waited: AtomicBool::new(false),
            live: AtomicBool::new(false),
            delivered: AtomicBool::new(false),
        });
        shared.ages.insert(seq, item.meta.arrived_ms, stats);
        debug!(stream, seq, "stream spooled");
        self.unsynced.push(Arc::clone(&item));
        let _ = self.items.send(Arc::clone(&item));
        self.open.insert(stream, OpenItem { item, file });
    }

    fn refuse(&mut self, stream: u64, abort: StreamAbort, reason: SpoolDrop, message: &str) {
        let shared = &self.shared.spool;
        shared.stats.refused();
        shared.sink.aborted.add(abort);
        shared.stats.dropped.add(reason);
        if !self.full_alarm {
            let (bytes, items) =
                (shared.stats.bytes.load(Ordering::Relaxed), shared.stats.items.load(Ordering::Relaxed));
            error!(
                stream,
                bytes,
                items,
                reason = reason.label(),
                "ALARM {message} (streams of this channel are aborted until it has room)"
            );
            self.full_alarm = true;
        } else {
            debug!(stream, reason = reason.label(), "{message}");
        }
    }

    fn append(&mut self, stream: u64, data: &[u8]) {
        let Some(open) = self.open.get_mut(&stream) else { return };
        let config = self.shared.config();
        let stats = &self.shared.spool.stats;
        let len = data.len() as u64;
        let written = open.item.progress().written;
        let failure = if stats.bytes.load(Ordering::Relaxed) + len > config.max_bytes {
            Some((StreamAbort::SpoolFull, SpoolDrop::SpoolFull, "spool full mid-stream".to_string()))
        } else {
            open.file.write_all(data).err().map(|error| {
                let (abort, reason) = classify(&error);
                (abort, reason, error.to_string())
            })
        };
        if let Some((abort, reason, detail)) = failure {
            let open = self.open.remove(&stream).map(|o| o.item);
            if let Some(item) = open {
                error!(stream, written, detail = %detail, reason = reason.label(), "ALARM stream aborted: the spool cannot hold it");
                self.full_alarm = true;
                self.shared.spool.stats.refused();
                self.drop_item(&item, abort, Some(reason));
            }
            return;
        }
        stats.add_bytes(len);
        open.item.set(Progress { written: written + len, state: State::Arriving });
    }

    fn end(&mut self, stream: u64, total_len: u64, hash: [u8; 32]) {
        let Some(open) = self.open.remove(&stream) else { return };
        let written = open.item.progress().written;
        let files = paths(&self.shared.spool.folder, open.item.seq);
        let done = Done { len: total_len, blake3: hex::encode(hash) };
        let stored = if written == total_len {
            serde_json::to_vec(&done)
                .map_err(std::io::Error::other)
                .and_then(|bytes| std::fs::write(&files.done, bytes))
        } else {
            Err(std::io::Error::other(format!("{written} bytes spooled of the {total_len} verified")))
        };
        match stored {
            Ok(()) => {
                self.full_alarm = false;
                open.item.set(Progress { written, state: State::Complete });
            }
            Err(error) => {
                let (abort, reason) = classify(&error);
                error!(stream, %error, "ALARM cannot finish the spooled stream: aborted");
                self.drop_item(&open.item, abort, Some(reason));
            }
        }
    }

    /// Ends an item that will not be delivered: its delivery (if any) resets its destination.
    fn drop_item(&mut self, item: &Item, abort: StreamAbort, reason: Option<SpoolDrop>) {
        let written = item.progress().written;
        item.set(Progress { written, state: State::Dropped });
        self.shared.forget(item.seq, written);
        self.shared.spool.sink.aborted.add(abort);
        if let Some(reason) = reason {
            self.shared.spool.stats.dropped.add(reason);
        }
    }

    /// Syncs what waits for a destination: items neither delivered, dropped nor taken as they arrive.
    fn sync(&mut self) {
        self.last_sync = Instant::now();
        let folder = &self.shared.spool.folder;
        let mut synced_any = false;
        self.unsynced.retain(|item| {
            let progress = item.progress();
            if item.delivered.load(Ordering::Relaxed) || progress.state == State::Dropped {
                return false;
            }
            if item.live.load(Ordering::Relaxed) {
                return true;
            }
            let files = paths(folder, item.seq);
            for path in [&files.data, &files.meta, &files.done] {
                if let Ok(file) = File::open(path) {
                    let _ = file.sync_all();
                }
            }
            synced_any = true;
            // Still arriving: synced again at the next round, with what it gained.
            progress.state == State::Arriving
        });
        if synced_any {
            folder.sync_dir();
        }
    }
}

/// A full disk is the spool being full; any other error is the spool failing.
fn classify(error: &std::io::Error) -> (StreamAbort, SpoolDrop) {
    if error.kind() == std::io::ErrorKind::StorageFull || error.kind() == std::io::ErrorKind::QuotaExceeded {
        (StreamAbort::SpoolFull, SpoolDrop::SpoolFull)
    } else {
        (StreamAbort::SpoolFailed, SpoolDrop::SpoolFailed)
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a paused channel looks whether a destination is back.
const POLL: Duration = Duration::from_millis(100);

/// Starts deliveries oldest first, at most `parallel` at once; after a failed attempt it waits (with
/// backoff, and until the pool has a destination up) before the oldest waiting item is tried again.
async fn run_scheduler(
    shared: Arc<Shared>,
    mut items: mpsc::UnboundedReceiver<Arc<Item>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (config, pool) = (shared.config().clone(), Arc::clone(&shared.spool.pool));
    let mut queue: BTreeMap<u64, Arc<Item>> = BTreeMap::new();
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel::<(Arc<Item>, Outcome)>();
    let mut active = 0usize;
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut backoff = MIN_BACKOFF;
    let mut writer_alive = true;
    let mut expiry = tokio::time::interval(Duration::from_secs(1));
    loop {
        let now = tokio::time::Instant::now();
        if retry_at.is_some_and(|at| at <= now) {
            retry_at = if pool.any_up() { None } else { Some(now + POLL) };
        }
        if retry_at.is_none() {
            while active < config.parallel {
                let Some((_, item)) = queue.pop_first() else { break };
                active += 1;
                let (shared, outcomes, stop) = (Arc::clone(&shared), outcomes_tx.clone(), shutdown.clone());
                let span = tracing::info_span!("stream", id = item.meta.stream, peer = %item.meta.peer);
                tokio::spawn(
                    async move {
                        let outcome = deliver(&shared, &item, stop).await;
                        let _ = outcomes.send((item, outcome));
                    }
                    .instrument(span),
                );
            }
        }
        let paused_until = retry_at;
        tokio::select! {
            biased;
            _ = shutdown.changed() => return,
            item = items.recv(), if writer_alive => match item {
                Some(item) => {
                    // Arriving while the channel waits for a destination: it is delivered from the spool.
                    if retry_at.is_some() {
                        item.waited.store(true, Ordering::Relaxed);
                    }
                    queue.insert(item.seq, item);
                }
                None => writer_alive = false,
            },
            Some((item, outcome)) = outcomes.recv() => {
                active -= 1;
                match outcome {
                    Outcome::Delivered => {
                        backoff = MIN_BACKOFF;
                        delivered(&shared, &item);
                    }
                    Outcome::Retry => {
                        item.waited.store(true, Ordering::Relaxed);
                        queue.insert(item.seq, item);
                        retry_at = Some(tokio::time::Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    Outcome::Unreadable => {
                        shared.forget(item.seq, item.progress().written);
                        shared.spool.sink.aborted.add(StreamAbort::SpoolFailed);
                        shared.spool.stats.dropped.add(SpoolDrop::SpoolFailed);
                    }
                    Outcome::Gone => {}
                }
            }
            () = sleep_until(paused_until) => {}
            _ = expiry.tick() => expire(&shared, &mut queue, config.max_age),
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn delivered(shared: &Shared, item: &Item) {
    item.delivered.store(true, Ordering::Relaxed);
    let len = item.progress().written;
    shared.forget(item.seq, len);
    let (sink, stats) = (&shared.spool.sink, &shared.spool.stats);
    sink.streams_completed.fetch_add(1, Ordering::Relaxed);
    let repeat = item.repeat.load(Ordering::Relaxed);
    if repeat {
        stats.repeats.fetch_add(1, Ordering::Relaxed);
    }
    if item.waited.load(Ordering::Relaxed) {
        stats.delivered_from_spool.fetch_add(1, Ordering::Relaxed);
        let waited_s = unix_ms().saturating_sub(item.meta.arrived_ms) / 1000;
        info!(
            bytes = len,
            waited_s,
            repeat,
            "stream delivered from the spool{}",
            if repeat { " (a repeat: the destination had part of it on an earlier connection)" } else { "" }
        );
    } else {
        debug!(bytes = len, "stream delivered complete");
    }
}

/// Drops complete items that waited past `max_age` (an item still arriving is never expired).
fn expire(shared: &Shared, queue: &mut BTreeMap<u64, Arc<Item>>, max_age: Duration) {
    let now = unix_ms();
    let limit = max_age.as_millis() as u64;
    queue.retain(|_, item| {
        let old = now.saturating_sub(item.meta.arrived_ms) > limit;
        let progress = item.progress();
        if !old || progress.state != State::Complete {
            return true;
        }
        error!(
            stream = item.meta.stream,
            bytes = progress.written,
            "ALARM a spooled stream waited past max_age for a destination: dropped"
        );
        shared.forget(item.seq, progress.written);
        shared.spool.sink.aborted.add(StreamAbort::Expired);
        shared.spool.stats.dropped.add(SpoolDrop::Expired);
        false
    });
}

/// Per delivery running: with `parallel` of them, what reading back costs in memory.
const READ_CHUNK: usize = 64 * 1024;

/// One attempt at delivering `item`: connect, send it from its first byte, following the writer while
/// it still arrives, and close cleanly only once every byte of the verified stream was written.
async fn deliver(shared: &Shared, item: &Item, mut shutdown: watch::Receiver<bool>) -> Outcome {
    let (pool, sink, stall) = (&shared.spool.pool, &shared.spool.sink, shared.config().stall);
    // Opened before connecting, so a stream dropped while it waited never costs a destination a
    // connection that carries nothing.
    if item.progress().state == State::Dropped {
        return Outcome::Gone;
    }
    let files = paths(&shared.spool.folder, item.seq);
    let mut file = match tokio::fs::File::open(&files.data).await {
        Ok(file) => file,
        Err(_) if item.progress().state == State::Dropped => return Outcome::Gone,
        Err(error) => {
            error!(%error, "ALARM cannot read a spooled stream back: dropped");
            return Outcome::Unreadable;
        }
    };
    let Some((mut connection, destination)) = connect(pool).await else {
        if !item.waited.load(Ordering::Relaxed) {
            warn!("no destination up: the stream waits in the spool");
        }
        return Outcome::Retry;
    };
    debug!(%destination, "delivering stream");
    item.live.store(true, Ordering::Relaxed);
    let mut progress = item.progress.subscribe();
    let mut buffer = vec![0u8; READ_CHUNK];
    let mut sent = 0u64;
    let outcome = loop {
        let Progress { written, state } = *progress.borrow_and_update();
        if state == State::Dropped {
            break Outcome::Gone;
        }
        if sent < written {
            let want = (written - sent).min(READ_CHUNK as u64) as usize;
            let n = match file.read(&mut buffer[..want]).await {
                Ok(n) if n > 0 => n,
                Ok(_) | Err(_) if item.progress().state == State::Dropped => break Outcome::Gone,
                Ok(_) => {
                    error!(sent, written, "ALARM a spooled stream is shorter than what was written: dropped");
                    break Outcome::Unreadable;
                }
                Err(error) => {
                    error!(%error, "ALARM cannot read a spooled stream back: dropped");
                    break Outcome::Unreadable;
                }
            };
            let result = tokio::select! {
                biased;
                _ = shutdown.changed() => break Outcome::Gone,
                result = tokio::time::timeout(stall, connection.write_all(&buffer[..n])) => result,
            };
            match result {
                Ok(Ok(())) => {
                    sent += n as u64;
                    sink.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Ok(Err(error)) => {
                    warn!(%destination, %error, sent, "destination failed mid-stream: the stream waits in the spool and is delivered again whole");
                    pool.report_failure(destination, &error.to_string());
                    break Outcome::Retry;
                }
                Err(_) => {
                    warn!(%destination, sent, stall_s = stall.as_secs(), "destination took nothing for too long: the stream waits in the spool and is delivered again whole");
                    pool.report_failure(destination, "stalled mid-stream");
                    break Outcome::Retry;
                }
            }
            continue;
        }
        if state == State::Complete {
            // Verified whole and all written: close gracefully, so the destination reads every byte, then FIN.
            let _ = socket2::SockRef::from(&connection).set_linger(None);
            let closed = tokio::time::timeout(stall, connection.shutdown()).await;
            if matches!(closed, Ok(Ok(()))) && acknowledged(&mut connection, stall).await {
                item.live.store(false, Ordering::Relaxed);
                return Outcome::Delivered;
            }
            warn!(%destination, sent, "the destination did not acknowledge the end of the stream: it is delivered again whole");
            pool.report_failure(destination, "did not acknowledge the end of a stream");
            break Outcome::Retry;
        }
        tokio::select! {
            changed = progress.changed() => if changed.is_err() { break Outcome::Gone },
            _ = shutdown.changed() => break Outcome::Gone,
        }
    };
    item.live.store(false, Ordering::Relaxed);
    if sent > 0 && matches!(outcome, Outcome::Retry) {
        item.repeat.store(true, Ordering::Relaxed);
    }
    reset(connection);
    outcome
}

/// Waits (up to `stall`) until the destination's kernel acknowledged our FIN, and with it every byte
/// before it. Written is not delivered: a destination that resets after taking part of a stream may
/// leave the rest of it in our send buffer, and only its acknowledgement says the spool may forget it.
async fn acknowledged(connection: &mut tokio::net::TcpStream, stall: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let deadline = tokio::time::Instant::now() + stall;
    let mut scratch = [0u8; 4096];
    loop {
        match hw::tcp_send_state(connection.as_raw_fd()) {
            Ok(hw::TcpSendState::Acknowledged) => return true,
            // Both sides' FINs (no error), or a reset (its error is pending).
            Ok(hw::TcpSendState::Closed) => return matches!(connection.take_error(), Ok(None)),
            Ok(hw::TcpSendState::InFlight) => {}
            Err(_) => return false,
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        // A destination may answer or close; reading also surfaces a reset at once.
        match tokio::time::timeout(Duration::from_millis(5), connection.read(&mut scratch)).await {
            Ok(Err(_)) => return false,
            Ok(Ok(0)) => tokio::time::sleep(Duration::from_millis(5)).await,
            Ok(Ok(_)) | Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests;
