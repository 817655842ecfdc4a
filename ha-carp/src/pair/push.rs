//! The active's side: the replicator its spool and file sinks ask, and the task that keeps the
//! connection to the standby and pushes requests over it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use connectors::ledger::LedgerEntry;
use connectors::replication::{Replicating, Replication, ReplicationError};
use connectors::spool::SpoolEntry;

use super::config::{CheckedPair, DEFAULT_RESEND_WINDOW_S};
use super::messages::PairMessage;
use super::stats::PairStats;
use super::wire::{handshake, Frame, Hello, PairError, PairReader, PairWriter, CHUNK, HEARTBEAT};

/// A configuration imported on this node goes to the standby at once when this node is the active
/// one of a pair. Whether it was handed to the pair channel.
pub fn push_imported_config(replicator: Option<&Replicator>, active: bool, text: &str) -> bool {
    match replicator {
        Some(replicator) if active => {
            replicator.notice(PairMessage::Config { toml: text.to_string() });
            true
        }
        _ => false,
    }
}

/// What the active asks of its standby.
pub enum Request {
    /// Fire and forget (sent notices, pending lists).
    Notice(PairMessage),
    /// A file to copy; answered once the standby has it on disk.
    File { channel: u16, entry: SpoolEntry, path: PathBuf, done: oneshot::Sender<Result<(), ReplicationError>> },
    /// A delivery to record; answered once the standby has it in its ledger (to a blocking caller).
    Delivered { channel: u16, entry: LedgerEntry, done: std::sync::mpsc::SyncSender<Result<(), ReplicationError>> },
}

/// Where the standby's answer to a request goes: an async caller's or a blocking caller's channel.
enum Done {
    Async(oneshot::Sender<Result<(), ReplicationError>>),
    Blocking(std::sync::mpsc::SyncSender<Result<(), ReplicationError>>),
}

impl Done {
    fn send(self, result: Result<(), ReplicationError>) {
        match self {
            Done::Async(done) => {
                let _ = done.send(result);
            }
            Done::Blocking(done) => {
                let _ = done.try_send(result);
            }
        }
    }
}

/// The active's handle to its standby. Cheap to clone; never blocks longer than the ack timeout.
#[derive(Clone)]
pub struct Replicator {
    requests: mpsc::Sender<Request>,
    pub stats: Arc<PairStats>,
    ack_timeout: Duration,
    resend_window: Duration,
}

impl Replicator {
    /// A replicator with no pusher behind it: every request fails at once, as with a standby that is
    /// unreachable (for tests of what uses one).
    pub fn unconnected() -> Replicator {
        let (requests, _) = mpsc::channel(1);
        Replicator {
            requests,
            stats: Arc::default(),
            ack_timeout: Duration::from_millis(100),
            resend_window: Duration::from_secs(DEFAULT_RESEND_WINDOW_S),
        }
    }

    /// Copies a file to the standby. `Err` says why it was not (the caller goes ahead: a pair without
    /// its standby keeps working, reported not redundant).
    pub async fn replicate_file(
        &self,
        channel: u16,
        entry: &SpoolEntry,
        path: PathBuf,
    ) -> Result<(), ReplicationError> {
        let (done, answer) = oneshot::channel();
        let request = Request::File { channel, entry: entry.clone(), path, done };
        let result = self.ask(request, answer, entry.size).await;
        self.count(&result, entry.size);
        result
    }

    /// Tells the standby a file is being delivered, waiting for its ledger to have it.
    pub fn replicate_delivery_blocking(&self, channel: u16, entry: LedgerEntry) -> Result<(), ReplicationError> {
        {
            // Checked under the lock `set_connected` takes: see there.
            let mut unannounced = self.stats.unannounced.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if !self.stats.connected.load(Ordering::Relaxed) {
                self.stats.unreplicated.fetch_add(1, Ordering::Relaxed);
                self.stats.remember_unannounced(&mut unannounced, channel, entry);
                return Err(ReplicationError::NotConnected);
            }
        }
        let remembered = entry.clone();
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        let result = match self.requests.try_send(Request::Delivered { channel, entry, done }) {
            Ok(()) => match answer.recv_timeout(self.ack_timeout) {
                Ok(result) => result,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(ReplicationError::NoAnswer),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ReplicationError::Closed),
            },
            Err(_) => Err(ReplicationError::QueueFull),
        };
        self.count(&result, 0);
        if let (Err(_), Ok(mut unannounced)) = (&result, self.stats.unannounced.lock()) {
            self.stats.remember_unannounced(&mut unannounced, channel, remembered);
        }
        result
    }

    /// Fire-and-forget notice; dropped (the periodic pending list repairs it) when the queue is full.
    pub fn notice(&self, message: PairMessage) {
        let _ = self.requests.try_send(Request::Notice(message));
    }

    async fn ask(
        &self,
        request: Request,
        answer: oneshot::Receiver<Result<(), ReplicationError>>,
        size: u64,
    ) -> Result<(), ReplicationError> {
        if !self.stats.connected.load(Ordering::Relaxed) {
            return Err(ReplicationError::NotConnected);
        }
        // Large files take their time on the wire: allow the timeout plus 10 ms per MB.
        let limit = self.ack_timeout + Duration::from_millis(size / 100_000);
        tokio::time::timeout(limit, async {
            self.requests.send(request).await.map_err(|_| ReplicationError::Closed)?;
            answer.await.map_err(|_| ReplicationError::Closed)?
        })
        .await
        .map_err(|_| ReplicationError::NoAnswer)?
    }

    fn count(&self, result: &Result<(), ReplicationError>, bytes: u64) {
        match result {
            Ok(()) => {
                self.stats.replicated.fetch_add(1, Ordering::Relaxed);
                self.stats.replicated_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.unreplicated.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl Replication for Replicator {
    fn copy_accepted(&self, channel: u16, entry: &SpoolEntry, content: PathBuf) -> Replicating<'_> {
        let entry = entry.clone();
        Box::pin(async move { self.replicate_file(channel, &entry, content).await })
    }

    fn sent(&self, channel: u16, id: &str) {
        self.notice(PairMessage::Sent { channel, id: id.to_string() });
    }

    fn sent_without_copy(&self) {
        self.stats.expose(self.resend_window);
    }

    fn announce_delivery(&self, channel: u16, entry: LedgerEntry) -> Result<(), ReplicationError> {
        self.replicate_delivery_blocking(channel, entry)
    }
}

/// What the active sends first on every new connection (the configuration, its pending files or its
/// ledger), produced fresh for each connection.
pub type Snapshot = Box<dyn Fn() -> Vec<Request> + Send + Sync>;

/// Creates the active's replicator and the task that keeps its connection: while `active` is true it
/// connects to the peer, sends the snapshot, then the requests as they come, and reads the answers.
pub fn spawn_pusher(
    pair: &CheckedPair,
    hello_node: String,
    side: &'static str,
    mut active: watch::Receiver<bool>,
    snapshot: Snapshot,
    stats: Arc<PairStats>,
) -> Replicator {
    let (requests_tx, mut requests) = mpsc::channel::<Request>(256);
    let replicator = Replicator {
        requests: requests_tx,
        stats: Arc::clone(&stats),
        ack_timeout: pair.ack_timeout,
        resend_window: pair.resend_window,
    };
    let (peer, key) = (pair.peer, pair.key.clone());
    tokio::spawn(async move {
        loop {
            // While standby, refuse requests at once rather than let callers wait on a timeout.
            while !*active.borrow() {
                tokio::select! {
                    changed = active.changed() => if changed.is_err() { return },
                    request = requests.recv() => match request {
                        Some(request) => refuse(request, || ReplicationError::NotActive),
                        None => return,
                    },
                }
            }
            let connection = async {
                let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(peer))
                    .await
                    .map_err(|_| PairError::Io(std::io::ErrorKind::TimedOut.into()))??;
                handshake(stream, &key, &Hello::new(&hello_node, side), true).await
            };
            let (hello, reader, writer) = match connection.await {
                Ok(parts) => parts,
                Err(error) => {
                    if error.is_refusal() {
                        stats.refuse(&error);
                        warn!(%peer, %error, "pair channel refused");
                    }
                    // Fail what waits, then try again shortly.
                    let retry = tokio::time::sleep(Duration::from_millis(500));
                    tokio::pin!(retry);
                    loop {
                        tokio::select! {
                            _ = &mut retry => break,
                            request = requests.recv() => match request {
                                Some(request) => refuse(request, || ReplicationError::Unreachable),
                                None => return,
                            },
                        }
                    }
                    continue;
                }
            };
            info!(%peer, peer_node = %hello.node, "pair channel up: replicating to the standby");
            stats.connections.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut node) = stats.peer_node.lock() {
                *node = Some(hello.node.clone());
            }
            stats.heard();
            stats.set_connected();
            let outcome = push(reader, writer, &mut requests, &mut active, &snapshot, &stats).await;
            stats.connected.store(false, Ordering::Relaxed);
            stats.synced.store(false, Ordering::Relaxed);
            match outcome {
                Ok(()) => info!(%peer, "pair channel closed"),
                Err(error) => {
                    if error.is_refusal() {
                        stats.refuse(&error);
                    }
                    warn!(%peer, %error, "pair channel lost");
                }
            }
            if requests.is_closed() {
                return;
            }
        }
    });
    replicator
}

fn refuse(request: Request, reason: impl Fn() -> ReplicationError) {
    match request {
        Request::Notice(_) => {}
        Request::File { done, .. } => Done::Async(done).send(Err(reason())),
        Request::Delivered { done, .. } => Done::Blocking(done).send(Err(reason())),
    }
}

type Waiting = Arc<Mutex<HashMap<u64, Done>>>;

async fn push(
    mut reader: PairReader,
    mut writer: PairWriter,
    requests: &mut mpsc::Receiver<Request>,
    active: &mut watch::Receiver<bool>,
    snapshot: &Snapshot,
    stats: &Arc<PairStats>,
) -> Result<(), PairError> {
    let waiting: Waiting = Arc::default();
    let answers = {
        let (waiting, stats) = (Arc::clone(&waiting), Arc::clone(stats));
        tokio::spawn(async move {
            loop {
                let frame = reader.recv().await?;
                stats.frames_in.fetch_add(1, Ordering::Relaxed);
                stats.heard();
                match frame {
                    Frame::Message(PairMessage::Ack { request, ok, reason }) => {
                        let done = waiting.lock().ok().and_then(|mut w| w.remove(&request));
                        if let Some(done) = done {
                            done.send(if ok {
                                Ok(())
                            } else {
                                Err(ReplicationError::Refused(reason.unwrap_or_default()))
                            });
                        }
                    }
                    Frame::Message(PairMessage::ConfigResult { ok, reason }) => {
                        if let Ok(mut refused) = stats.config_refused.lock() {
                            *refused = if ok { None } else { reason.clone() };
                        }
                        if let Some(reason) = reason.filter(|_| !ok) {
                            warn!(%reason, "ALARM the standby refused this node's configuration");
                        }
                    }
                    Frame::Message(PairMessage::Heartbeat { .. }) => {}
                    other => {
                        return Err::<(), PairError>(PairError::BadMessage(format!(
                            "unexpected from the standby: {other:?}"
                        )))
                    }
                }
            }
        })
    };
    let mut next_request = 1u64;
    let result = async {
        for request in snapshot() {
            send_request(&mut writer, request, &mut next_request, &waiting, stats).await?;
        }
        stats.synced.store(true, Ordering::Relaxed);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let message = PairMessage::Heartbeat { synced: true, exposed: stats.exposed() };
                    writer.send(&message).await?;
                    stats.frames_out.fetch_add(1, Ordering::Relaxed);
                    let heard = stats.last_heard.lock().ok().and_then(|l| *l);
                    if heard.is_some_and(|t| t.elapsed() > HEARTBEAT * 4) {
                        return Err(PairError::Io(std::io::ErrorKind::TimedOut.into()));
                    }
                }
                request = requests.recv() => match request {
                    Some(request) => send_request(&mut writer, request, &mut next_request, &waiting, stats).await?,
                    None => return Ok(()),
                },
                changed = active.changed() => {
                    if changed.is_err() || !*active.borrow() {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    answers.abort();
    for (_, done) in waiting.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default() {
        done.send(Err(ReplicationError::Closed));
    }
    result
}

async fn send_request(
    writer: &mut PairWriter,
    request: Request,
    next_request: &mut u64,
    waiting: &Waiting,
    stats: &PairStats,
) -> Result<(), PairError> {
    let id = *next_request;
    *next_request += 1;
    match request {
        Request::Notice(message) => {
            writer.send(&message).await?;
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
        }
        Request::Delivered { channel, entry, done } => {
            if let Ok(mut waiting) = waiting.lock() {
                waiting.insert(id, Done::Blocking(done));
            }
            writer.send(&PairMessage::Delivered { request: id, channel, entry }).await?;
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
        }
        Request::File { channel, entry, path, done } => {
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(error) => {
                    let _ = done.send(Err(ReplicationError::Unreadable { path, source: error }));
                    return Ok(());
                }
            };
            let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            if let Ok(mut waiting) = waiting.lock() {
                waiting.insert(id, Done::Async(done));
            }
            writer.send(&PairMessage::File { request: id, channel, entry, len }).await?;
            let mut left = len;
            let mut buffer = vec![0u8; CHUNK];
            while left > 0 {
                let want = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                // A file that shrank underneath is sent short: the standby sees the length wrong and refuses.
                let got = file.read(&mut buffer[..want]).await?;
                if got == 0 {
                    break;
                }
                writer.send_data(&buffer[..got]).await?;
                left -= got as u64;
            }
            if left > 0 {
                writer.send_data(&[]).await?;
            }
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}
