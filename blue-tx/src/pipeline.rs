//! From source events to sealed blocks, and from each channel's blocks to the encoders in fair shares.
//!
//! Each channel has its own task with its [`BlockBuilder`]: it seals a block when it fills, when its
//! oldest byte has waited `flush` (the latency bound for a trickle), and sends keepalives for silent
//! streams. Sealed blocks wait in a small bounded queue per channel; when it is full the task stops
//! reading source events, the source channel fills, and TCP sources stop reading their sockets.
//!
//! The scheduler takes blocks from the channels by deficit round robin on their configured shares, so
//! a busy channel cannot starve the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connectors::source::SourceEvent;
use diode_proto::block::{BlockBuilder, SealedBlock};
use diode_proto::ManifestEntry;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::warn;

use crate::manifest::ManifestBook;

/// Counters of one channel's pipeline.
#[derive(Debug, Default)]
pub struct PipelineStats {
    pub blocks_sealed: AtomicU64,
    pub keepalives: AtomicU64,
    /// Source events the builder refused (a sender bug; should stay zero).
    pub refused_events: AtomicU64,
}

pub struct ChannelPipeline {
    pub channel: u16,
    pub max_block_len: usize,
    pub flush: Duration,
    pub keepalive: Duration,
    pub events: mpsc::Receiver<SourceEvent>,
    pub sealed: mpsc::Sender<SealedBlock>,
    pub ready: Arc<Notify>,
    pub stats: Arc<PipelineStats>,
    /// Files and vault channels: where each file's manifest entry goes once its end is in a block.
    pub manifest: Option<Arc<ManifestBook>>,
}

impl ChannelPipeline {
    /// Runs until the source side closes, then flushes what it holds.
    pub async fn run(mut self) {
        let mut builder = BlockBuilder::new(self.channel, self.max_block_len);
        let mut oldest_pending: Option<Instant> = None;
        let mut last_activity: HashMap<u64, Instant> = HashMap::new();
        let mut files: HashMap<u64, (String, [u8; 16])> = HashMap::new();
        let mut keepalive_timer = tokio::time::interval(self.keepalive);
        keepalive_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let flush_at = oldest_pending.map(|t| t + self.flush);
            tokio::select! {
                event = self.events.recv() => {
                    let Some(event) = event else { break };
                    let now = Instant::now();
                    self.apply(&mut builder, event, now, &mut last_activity, &mut files);
                    if builder.pending_bytes() == 0 {
                        oldest_pending = None;
                    } else if oldest_pending.is_none() {
                        oldest_pending = Some(now);
                    }
                }
                _ = sleep_until_opt(flush_at) => {
                    builder.flush();
                    oldest_pending = None;
                }
                _ = keepalive_timer.tick() => {
                    let now = Instant::now();
                    for (stream, last) in last_activity.iter_mut() {
                        if now.duration_since(*last) >= self.keepalive && builder.keepalive(*stream).is_ok() {
                            *last = now;
                            self.stats.keepalives.fetch_add(1, Ordering::Relaxed);
                            oldest_pending.get_or_insert(now);
                        }
                    }
                }
            }
            if !self.forward_sealed(&mut builder).await {
                return;
            }
        }
        builder.flush();
        self.forward_sealed(&mut builder).await;
    }

    fn apply(
        &self,
        builder: &mut BlockBuilder,
        event: SourceEvent,
        now: Instant,
        activity: &mut HashMap<u64, Instant>,
        files: &mut HashMap<u64, (String, [u8; 16])>,
    ) {
        let channel = self.channel;
        let result = match event {
            SourceEvent::Open { stream, meta } => {
                activity.insert(stream, now);
                if let (Some(_), Some(file_id)) = (&self.manifest, meta.file_id) {
                    files.insert(stream, (meta.name.clone(), file_id));
                }
                builder.open(stream, meta)
            }
            SourceEvent::Data { stream, bytes } => {
                activity.insert(stream, now);
                builder.data(stream, &bytes)
            }
            SourceEvent::End { stream } => {
                activity.remove(&stream);
                builder.end(stream).map(|summary| {
                    if let (Some(book), Some((name, file_id))) = (&self.manifest, files.remove(&stream)) {
                        book.add(
                            channel,
                            ManifestEntry::new(stream, summary.end_seq, summary.total_len, file_id, &name),
                        );
                    }
                })
            }
            SourceEvent::Abort { stream, reason } => {
                activity.remove(&stream);
                files.remove(&stream);
                builder.abort(stream, reason)
            }
            SourceEvent::Datagram(payload) => builder.datagram(&payload),
        };
        if let Err(error) = result {
            self.stats.refused_events.fetch_add(1, Ordering::Relaxed);
            warn!(channel, %error, "source event refused by the block builder");
        }
    }

    /// Hands sealed blocks to the scheduler, waiting while the channel's queue is full (this is where
    /// back-pressure starts). Returns false when the scheduler is gone.
    async fn forward_sealed(&self, builder: &mut BlockBuilder) -> bool {
        while let Some(block) = builder.pop_sealed() {
            self.stats.blocks_sealed.fetch_add(1, Ordering::Relaxed);
            if self.sealed.send(block).await.is_err() {
                return false;
            }
            self.ready.notify_one();
        }
        true
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// One channel's queue as the scheduler sees it.
pub struct Lane {
    pub channel: u16,
    pub share: u32,
    pub sealed: mpsc::Receiver<SealedBlock>,
    deficit: i64,
    closed: bool,
}

impl Lane {
    pub fn new(channel: u16, share: u32, sealed: mpsc::Receiver<SealedBlock>) -> Lane {
        Lane { channel, share, sealed, deficit: 0, closed: false }
    }
}

/// Bytes of credit a share of 1 earns per round: one full block of a typical configuration.
const QUANTUM: i64 = 128 * 1024;

/// Deficit round robin over the channels' sealed queues into the encoders' queue. Ends when every
/// channel is closed and drained.
pub async fn schedule(mut lanes: Vec<Lane>, ready: Arc<Notify>, encode: mpsc::Sender<SealedBlock>) {
    loop {
        let mut moved = false;
        for lane in lanes.iter_mut().filter(|l| !l.closed) {
            lane.deficit += QUANTUM * i64::from(lane.share);
            loop {
                match lane.sealed.try_recv() {
                    Ok(block) => {
                        lane.deficit -= block.content.len() as i64;
                        moved = true;
                        if encode.send(block).await.is_err() {
                            return;
                        }
                        if lane.deficit <= 0 {
                            break;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        // An idle channel keeps no credit: shares apply between channels that compete.
                        lane.deficit = lane.deficit.min(0);
                        break;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        lane.closed = true;
                        break;
                    }
                }
            }
        }
        if lanes.iter().all(|l| l.closed) {
            return;
        }
        if !moved {
            // Woken by any pipeline that sealed a block; the timeout covers a wake-up that raced.
            let _ = tokio::time::timeout(Duration::from_millis(20), ready.notified()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(channel: u16, seq: u64, len: usize) -> SealedBlock {
        SealedBlock { channel, seq, content: vec![0; len] }
    }

    #[tokio::test]
    async fn shares_divide_the_link_between_busy_channels() {
        let (tx1, rx1) = mpsc::channel(1000);
        let (tx2, rx2) = mpsc::channel(1000);
        for seq in 0..400 {
            tx1.send(block(1, seq, 64 * 1024)).await.unwrap_or_else(|_| unreachable!());
            tx2.send(block(2, seq, 64 * 1024)).await.unwrap_or_else(|_| unreachable!());
        }
        drop((tx1, tx2));
        let (encode_tx, mut encode_rx) = mpsc::channel(1);
        let lanes = vec![Lane::new(1, 3, rx1), Lane::new(2, 1, rx2)];
        tokio::spawn(schedule(lanes, Arc::new(Notify::new()), encode_tx));
        // While both are busy, channel 1 gets three blocks for each of channel 2's.
        let mut first = Vec::new();
        for _ in 0..200 {
            first.push(encode_rx.recv().await.map(|b| b.channel));
        }
        let ones = first.iter().filter(|c| **c == Some(1)).count();
        assert!((145..=155).contains(&ones), "channel 1 got {ones} of 200");
    }
}
