//! The standby's side: it accepts its active's connection, applies what is pushed and answers.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{info, warn};

use connectors::replication::Refusal;
use connectors::spool::SpoolEntry;

use super::messages::PairMessage;
use super::stats::PairStats;
use super::wire::{handshake, Frame, Hello, PairError, PairKey, PairReader, HEARTBEAT};

/// Connections a standby serves at once.
const MAX_CONNECTIONS: usize = 4;

/// What the standby does with what its active pushes. Methods block (file system); they run on a
/// blocking thread.
pub trait PairHandler: Send + Sync + 'static {
    /// Where to write a replicated file's content before [`PairHandler::file_received`].
    fn file_path(&self, channel: u16, entry: &SpoolEntry) -> Result<PathBuf, Refusal>;
    /// The content is complete, synced, at `file_path`.
    fn file_received(&self, channel: u16, entry: SpoolEntry) -> Result<(), Refusal>;
    /// Any other message; the answer (if any) goes back to the active.
    fn message(&self, message: PairMessage) -> Option<PairMessage>;
    /// The active's connection ended (the standby may now have to take over).
    fn disconnected(&self) {}
}

/// A `true`/`false` mirror of "this node is active" for the pusher, from the daemon's role watch.
pub fn follow_active<R: Send + Sync + 'static>(
    mut role: watch::Receiver<R>,
    is_active: impl Fn(&R) -> bool + Send + 'static,
) -> watch::Receiver<bool> {
    let (active_tx, active_rx) = watch::channel(is_active(&role.borrow()));
    tokio::spawn(async move {
        while role.changed().await.is_ok() {
            let active = is_active(&role.borrow());
            if active_tx.send(active).is_err() {
                return;
            }
        }
    });
    active_rx
}

/// Resolves once `stop` says true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Accepts the active peer's connections on `listen` and hands what they carry to `handler`.
pub async fn serve_standby(
    listener: TcpListener,
    key: PairKey,
    node: String,
    side: &'static str,
    handler: Arc<dyn PairHandler>,
    stats: Arc<PairStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    // One active peer at a time is the rule; a few more cover a reconnect overlapping a dying
    // connection. Beyond that a stranger could only hold sockets open: refused at once and counted.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, from) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "pair channel accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            stats.refuse(&PairError::TooManyConnections);
            warn!(%from, "pair channel: too many connections at once, refused");
            continue;
        };
        let (key, node, handler, stats) = (key.clone(), node.clone(), Arc::clone(&handler), Arc::clone(&stats));
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = tokio::select! {
                result = apply(stream, &key, &node, side, &handler, &stats) => result,
                _ = stopped(&mut stop) => Ok(()),
            };
            stats.connected.store(false, Ordering::Relaxed);
            stats.synced.store(false, Ordering::Relaxed);
            stats.peer_exposed.store(false, Ordering::Relaxed);
            handler.disconnected();
            match result {
                Ok(()) => info!(%from, "pair channel from the active closed"),
                Err(error) => {
                    if error.is_refusal() {
                        stats.refuse(&error);
                        warn!(%from, %error, "ALARM pair channel refused");
                    } else {
                        info!(%from, %error, "pair channel from the active lost");
                    }
                }
            }
        });
    }
}

async fn apply(
    stream: TcpStream,
    key: &PairKey,
    node: &str,
    side: &'static str,
    handler: &Arc<dyn PairHandler>,
    stats: &Arc<PairStats>,
) -> Result<(), PairError> {
    let (hello, mut reader, mut writer) = handshake(stream, key, &Hello::new(node, side), false).await?;
    info!(peer_node = %hello.node, "pair channel up: the active replicates to this node");
    stats.connections.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut peer) = stats.peer_node.lock() {
        *peer = Some(hello.node);
    }
    stats.connected.store(true, Ordering::Relaxed);
    loop {
        // The active sends a heartbeat every HEARTBEAT: silence means it is gone, even if TCP has not noticed.
        let frame = tokio::time::timeout(HEARTBEAT * 4, reader.recv())
            .await
            .map_err(|_| PairError::Io(std::io::ErrorKind::TimedOut.into()))??;
        stats.frames_in.fetch_add(1, Ordering::Relaxed);
        stats.heard();
        let reply = match frame {
            Frame::Message(PairMessage::File { request, channel, entry, len }) => {
                let result = receive_file(&mut reader, handler, channel, entry, len).await?;
                if result.is_ok() {
                    stats.replicated.fetch_add(1, Ordering::Relaxed);
                    stats.replicated_bytes.fetch_add(len, Ordering::Relaxed);
                }
                let reason = result.as_ref().err().map(ToString::to_string);
                Some(PairMessage::Ack { request, ok: result.is_ok(), reason })
            }
            Frame::Message(PairMessage::Heartbeat { synced, exposed }) => {
                stats.synced.store(synced, Ordering::Relaxed);
                stats.peer_exposed.store(exposed, Ordering::Relaxed);
                Some(PairMessage::Heartbeat { synced, exposed })
            }
            Frame::Message(message) => {
                let handler = Arc::clone(handler);
                tokio::task::spawn_blocking(move || handler.message(message))
                    .await
                    .map_err(|e| PairError::BadMessage(e.to_string()))?
            }
            Frame::Data(_) => return Err(PairError::BadMessage("file content without a file".into())),
        };
        if let Some(reply) = reply {
            writer.send(&reply).await?;
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads a replicated file's content to the handler's path, syncs it and hands it over. The outer
/// error is the connection's; the inner one is this file's, answered to the active.
async fn receive_file(
    reader: &mut PairReader,
    handler: &Arc<dyn PairHandler>,
    channel: u16,
    entry: SpoolEntry,
    len: u64,
) -> Result<Result<(), Refusal>, PairError> {
    let (path, mut file) = match handler.file_path(channel, &entry) {
        Ok(path) => {
            let file = tokio::fs::File::create(&path).await.map_err(|e| Refusal::io("cannot create the replica", e));
            (Some(path), file)
        }
        Err(refusal) => (None, Err(refusal)),
    };
    let mut received = 0u64;
    let mut hasher = blake3::Hasher::new();
    while received < len {
        let Frame::Data(data) = reader.recv().await? else {
            return Err(PairError::BadMessage("a message in the middle of a file".into()));
        };
        if data.is_empty() {
            break;
        }
        received += data.len() as u64;
        hasher.update(&data);
        if let Ok(writing) = file.as_mut() {
            if let Err(error) = writing.write_all(&data).await {
                file = Err(Refusal::io("cannot write the replica", error));
            }
        }
    }
    let result = async {
        let mut file = file?;
        if received != len {
            return Err(Refusal::Short { received, len });
        }
        if let Some(expected) = &entry.blake3 {
            if *expected != hasher.finalize().to_hex().as_str() {
                return Err(Refusal::HashMismatch);
            }
        }
        file.flush().await.map_err(|e| Refusal::io("cannot write the replica", e))?;
        file.sync_all().await.map_err(|e| Refusal::io("cannot sync the replica", e))?;
        drop(file);
        let handler = Arc::clone(handler);
        tokio::task::spawn_blocking(move || handler.file_received(channel, entry))
            .await
            .map_err(|e| Refusal::Handler(e.to_string()))?
    }
    .await;
    if result.is_err() {
        if let Some(path) = &path {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
    Ok(result)
}
