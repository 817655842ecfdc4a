//! Why a datagram or record was refused, as values a daemon turns into labelled metrics.

/// Why a received datagram was dropped. Every drop has exactly one reason and is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum DropReason {
    #[error("datagram shorter than its header")]
    TooShort,
    #[error("datagram length differs from header plus payload length")]
    LengthMismatch,
    #[error("wrong magic")]
    BadMagic,
    #[error("unsupported protocol version")]
    BadVersion,
    #[error("unknown datagram kind")]
    UnknownKind,
    #[error("unknown flag bits set")]
    UnknownFlags,
    #[error("reserved field is not zero")]
    NonZeroReserved,
    #[error("CRC32 mismatch")]
    BadChecksum,
    #[error("keyed tag mismatch")]
    BadTag,
    #[error("tag names a key that is not configured")]
    UnknownKey,
    #[error("untagged datagram on a keyed link")]
    MissingTag,
    #[error("source block number is not zero")]
    BadSourceBlockNumber,
    #[error("symbol size is zero or not a multiple of 8")]
    BadSymbolSize,
    #[error("block length is zero or needs too many symbols")]
    BadBlockLength,
    #[error("block larger than the receiver accepts")]
    BlockTooLarge,
    #[error("symbol disagrees with earlier symbols of its block on size or length")]
    InconsistentBlock,
    #[error("beacon body is malformed")]
    BadBeacon,
    #[error("manifest body is malformed")]
    BadManifest,
    #[error("epoch older than the current one")]
    StaleEpoch,
    #[error("session was replaced and is not accepted again")]
    RetiredSession,
    #[error("session is not newer than the live one (a replay, or an older sender)")]
    StaleSession,
    #[error("block sequence is before the point where the receiver joined")]
    BeforeJoin,
    #[error("block already delivered or given up")]
    BlockDone,
    #[error("symbol already received")]
    DuplicateSymbol,
    #[error("block has all the symbols it can use")]
    SurplusSymbol,
    #[error("too many blocks in flight")]
    InFlightLimit,
    #[error("too many channels")]
    ChannelLimit,
}

crate::reasons!(DropReason {
    TooShort => "too_short",
    LengthMismatch => "length_mismatch",
    BadMagic => "bad_magic",
    BadVersion => "bad_version",
    UnknownKind => "unknown_kind",
    UnknownFlags => "unknown_flags",
    NonZeroReserved => "non_zero_reserved",
    BadChecksum => "bad_checksum",
    BadTag => "bad_tag",
    UnknownKey => "unknown_key",
    MissingTag => "missing_tag",
    BadSourceBlockNumber => "bad_source_block_number",
    BadSymbolSize => "bad_symbol_size",
    BadBlockLength => "bad_block_length",
    BlockTooLarge => "block_too_large",
    InconsistentBlock => "inconsistent_block",
    BadBeacon => "bad_beacon",
    BadManifest => "bad_manifest",
    StaleEpoch => "stale_epoch",
    RetiredSession => "retired_session",
    StaleSession => "stale_session",
    BeforeJoin => "before_join",
    BlockDone => "block_done",
    DuplicateSymbol => "duplicate_symbol",
    SurplusSymbol => "surplus_symbol",
    InFlightLimit => "in_flight_limit",
    ChannelLimit => "channel_limit",
});

impl DropReason {
    /// Drops that are the normal cost of redundancy (mirror duplicates, late symbols of a finished
    /// block), as opposed to damage or attack.
    pub const fn is_benign(self) -> bool {
        matches!(self, DropReason::BlockDone | DropReason::DuplicateSymbol | DropReason::SurplusSymbol)
    }
}

/// One counter per [`DropReason`].
pub type DropCounters = crate::reason::ReasonCounts<DropReason, { DropReason::LABELS.len() }>;

impl DropCounters {
    /// Drops that are not benign (see [`DropReason::is_benign`]).
    pub fn harmful(&self) -> u64 {
        DropReason::ALL.iter().filter(|r| !r.is_benign()).map(|r| self.get(*r)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_label() {
        let mut counters = DropCounters::default();
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i, "ALL is in declaration order");
            counters.add(*reason, 1);
        }
        assert!(counters.iter().all(|(_, n)| n == 1));
        let labels: std::collections::HashSet<_> = DropReason::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }
}
