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

crate::reasons!(LossReason patterns {
    LossReason::Timeout { .. } => "too_few_symbols",
    LossReason::NeverSeen => "never_seen",
    LossReason::HashMismatch => "hash_mismatch",
    LossReason::WindowOverrun => "window_overrun",
    LossReason::MemoryLimit => "memory_limit",
    LossReason::SessionReplaced => "session_replaced",
});

/// Lost blocks by cause. The causes call for different remedies (more repair, a lower rate, a look
/// at a fiber), so the FEC advice and the metrics keep them apart.
pub type LossCounts = crate::reason::ReasonCounts<LossReason, { LossReason::LABELS.len() }>;

/// Why a stream will not complete. A broken stream is never delivered as complete: a TCP destination is
/// reset, a file goes to quarantine. The message carries the figures; the label does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BreakReason {
    /// A block that may have held records of this stream was lost, and the stream did not show within
    /// the suspect timeout that it had nothing in it.
    #[error("block {seq}, which may have held records of the stream, was lost")]
    BlockLost { seq: u64 },
    /// A record links to a block other than the one that carried the stream's previous record.
    #[error("a record links to block {found_prev}, the stream's previous record was in block {expected_prev}")]
    Gap { expected_prev: u64, found_prev: u64 },
    /// Data arrived at an offset other than the next expected byte.
    #[error("data arrived at offset {found}, the next byte expected was {expected}")]
    OffsetMismatch { expected: u64, found: u64 },
    /// `End` announced another length than the bytes received.
    #[error("the end announced {announced} bytes, {received} arrived")]
    LengthMismatch { announced: u64, received: u64 },
    /// `End` announced another BLAKE3 than the bytes received.
    #[error("the BLAKE3 of the bytes received differs from the one the end announced")]
    HashMismatch,
    /// Records arrived for a stream whose `Open` was never seen (lost, or sent before the receiver joined).
    #[error("records arrived for a stream whose open was never seen")]
    MissedOpen,
    /// The channel already has as many open streams as configured.
    #[error("the channel already has as many open streams as configured")]
    TooManyStreams,
    /// The stream is (or claims to be) larger than the configured limit.
    #[error("larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    /// The source ended the stream early.
    #[error("the source ended the stream early ({0})")]
    SourceAborted(AbortReason),
    /// The sender's session ended (restart or takeover) with the stream still open.
    #[error("the sender's session ended with the stream still open")]
    SessionReplaced,
    /// A block decoded and verified but its records did not parse: the sender is faulty.
    #[error("a verified block's records did not parse (a faulty sender)")]
    MalformedBlock,
    /// The sender opened a stream id that was already open.
    #[error("the sender opened a stream id that was already open")]
    DuplicateOpen,
}

crate::reasons!(BreakReason patterns {
    BreakReason::BlockLost { .. } => "block_lost",
    BreakReason::Gap { .. } => "gap",
    BreakReason::OffsetMismatch { .. } => "offset_mismatch",
    BreakReason::LengthMismatch { .. } => "length_mismatch",
    BreakReason::HashMismatch => "hash_mismatch",
    BreakReason::MissedOpen => "missed_open",
    BreakReason::TooManyStreams => "too_many_streams",
    BreakReason::TooLarge { .. } => "too_large",
    BreakReason::SessionReplaced => "session_replaced",
    BreakReason::MalformedBlock => "malformed_block",
    BreakReason::DuplicateOpen => "duplicate_open",
} wraps SourceAborted(AbortReason));

/// Broken streams by cause.
pub type BreakCounts = crate::reason::ReasonCounts<BreakReason, { BreakReason::LABELS.len() }>;

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
