//! What the receiver reports to the daemon that drives it.

use bytes::Bytes;

use crate::beacon::Beacon;
use crate::manifest::ManifestEntry;
use crate::record::{AbortReason, StreamMeta};

/// Why a block could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// Its deadline passed with fewer symbols than decoding needs.
    Timeout { received: u32, needed: u32 },
    /// No symbol of it ever arrived (a gap before later blocks, or tail loss shown by a beacon).
    NeverSeen,
    /// It was rebuilt, but the hash of its records did not match the one it carries.
    HashMismatch,
    /// The sender ran so far ahead that the receive window had to move past it.
    WindowOverrun,
    /// It was still incomplete while the blocks behind it filled the receiver's byte budget
    /// (`max_bytes_in_flight`): given up before its deadline so later blocks can be delivered.
    MemoryLimit,
    /// The session ended (a sender restart or takeover) before the block completed.
    SessionReplaced,
}

impl LossReason {
    /// One label per variant; [`LossCounts`] keeps its counters in this order.
    pub const LABELS: [&'static str; 6] =
        ["too_few_symbols", "never_seen", "hash_mismatch", "window_overrun", "memory_limit", "session_replaced"];

    /// The metric label; the figures a variant carries stay in the log line.
    pub fn label(&self) -> &'static str {
        Self::LABELS[self.index()]
    }

    fn index(&self) -> usize {
        match self {
            LossReason::Timeout { .. } => 0,
            LossReason::NeverSeen => 1,
            LossReason::HashMismatch => 2,
            LossReason::WindowOverrun => 3,
            LossReason::MemoryLimit => 4,
            LossReason::SessionReplaced => 5,
        }
    }
}

/// Lost blocks by cause. The causes call for different remedies (more repair, a lower rate, a look
/// at a fiber), so the FEC advice and the metrics keep them apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossCounts {
    counts: [u64; LossReason::LABELS.len()],
}

impl LossCounts {
    pub fn add(&mut self, reason: LossReason, blocks: u64) {
        self.counts[reason.index()] += blocks;
    }

    /// Blocks lost for `reason` (any figures it carries do not matter).
    pub fn get(&self, reason: LossReason) -> u64 {
        self.counts[reason.index()]
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        LossReason::LABELS.iter().copied().zip(self.counts.iter().copied())
    }
}

/// Why a stream will not complete. A broken stream is never delivered as complete: a TCP destination is
/// reset, a file goes to quarantine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakReason {
    /// A block that may have held records of this stream was lost, and the stream did not show within
    /// the suspect timeout that it had nothing in it.
    BlockLost { seq: u64 },
    /// A record links to a block other than the one that carried the stream's previous record.
    Gap { expected_prev: u64, found_prev: u64 },
    /// Data arrived at an offset other than the next expected byte.
    OffsetMismatch { expected: u64, found: u64 },
    /// `End` announced another length than the bytes received.
    LengthMismatch { announced: u64, received: u64 },
    /// `End` announced another BLAKE3 than the bytes received.
    HashMismatch,
    /// Records arrived for a stream whose `Open` was never seen (lost, or sent before the receiver joined).
    MissedOpen,
    /// The channel already has as many open streams as configured.
    TooManyStreams,
    /// The stream is (or claims to be) larger than the configured limit.
    TooLarge { limit: u64 },
    /// The source ended the stream early.
    SourceAborted(AbortReason),
    /// The sender's session ended (restart or takeover) with the stream still open.
    SessionReplaced,
    /// A block decoded and verified but its records did not parse: the sender is faulty.
    MalformedBlock,
    /// The sender opened a stream id that was already open.
    DuplicateOpen,
}

impl BreakReason {
    /// The metric label (snake_case, a fixed set); the figures a variant carries stay in the log line.
    pub fn label(&self) -> &'static str {
        match self {
            BreakReason::BlockLost { .. } => "block_lost",
            BreakReason::Gap { .. } => "gap",
            BreakReason::OffsetMismatch { .. } => "offset_mismatch",
            BreakReason::LengthMismatch { .. } => "length_mismatch",
            BreakReason::HashMismatch => "hash_mismatch",
            BreakReason::MissedOpen => "missed_open",
            BreakReason::TooManyStreams => "too_many_streams",
            BreakReason::TooLarge { .. } => "too_large",
            BreakReason::SourceAborted(reason) => reason.label(),
            BreakReason::SessionReplaced => "session_replaced",
            BreakReason::MalformedBlock => "malformed_block",
            BreakReason::DuplicateOpen => "duplicate_open",
        }
    }
}

/// Conditions an operator must see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alarm {
    /// A session that was replaced is still sending: two senders at the same epoch (split brain) or a
    /// stale sender that did not stop.
    RetiredSessionActive { session: u64, epoch: u32 },
    /// Authentic datagrams of a session that is not newer than the live one were refused: a replay of
    /// a recorded session, or an older sender still running.
    StaleSessionRefused { session: u64, epoch: u32 },
}

/// One thing that happened, in the order it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new session (first contact, sender restart, or takeover at a higher epoch).
    SessionStarted {
        session: u64,
        epoch: u32,
        replaced: Option<(u64, u32)>,
    },
    /// A beacon of the current session (the daemon compares its fingerprint and FEC parameters).
    BeaconReceived {
        fiber: u8,
        beacon: Beacon,
    },
    /// Blocks `first..=last` of a channel are lost.
    BlocksLost {
        channel: u16,
        first: u64,
        last: u64,
        reason: LossReason,
    },
    StreamOpened {
        channel: u16,
        stream: u64,
        meta: StreamMeta,
    },
    /// The next bytes of a stream, in order.
    StreamData {
        channel: u16,
        stream: u64,
        offset: u64,
        data: Bytes,
    },
    /// The stream is complete: its length and BLAKE3 matched what the sender announced.
    StreamEnded {
        channel: u16,
        stream: u64,
        total_len: u64,
        hash: [u8; 32],
    },
    StreamBroken {
        channel: u16,
        stream: u64,
        reason: BreakReason,
    },
    /// The sender's manifest names a file whose every block this receiver has passed without ever
    /// hearing of its stream: its blocks were all lost (a burst or an outage longer than the repair).
    StreamNeverArrived {
        channel: u16,
        entry: ManifestEntry,
    },
    /// One UDP payload of a datagram channel.
    Datagram {
        channel: u16,
        payload: Bytes,
    },
    Alarm(Alarm),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loss_reason_is_counted_under_its_own_label() {
        let reasons = [
            LossReason::Timeout { received: 3, needed: 64 },
            LossReason::NeverSeen,
            LossReason::HashMismatch,
            LossReason::WindowOverrun,
            LossReason::MemoryLimit,
            LossReason::SessionReplaced,
        ];
        let mut counts = LossCounts::default();
        for (blocks, reason) in (1..).zip(reasons) {
            counts.add(reason, blocks);
        }
        for (blocks, reason) in (1..).zip(reasons) {
            assert_eq!(counts.get(reason), blocks, "{reason:?}");
        }
        let labels: std::collections::HashSet<_> = reasons.iter().map(LossReason::label).collect();
        assert_eq!(labels.len(), LossReason::LABELS.len());
        let labelled: Vec<_> = counts.iter().map(|(label, _)| label).collect();
        assert_eq!(
            labelled,
            reasons.iter().map(LossReason::label).collect::<Vec<_>>(),
            "iter pairs each count with its label"
        );
    }
}
