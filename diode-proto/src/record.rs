//! Records: what a block carries. All records of a block belong to one channel.
//!
//! ```text
//! Open      1 | stream u64 | flags u8 | size u64 | mtime s i64 | mtime ns u32
//!             | peer len u16 | peer (UTF-8) | name len u16 | name (UTF-8) | [file id 16]
//! Data      2 | stream u64 | prev u64 | offset u64 | len u32 | bytes
//! Datagrams 3 | count u16 | count x (len u16 | bytes)
//! End       4 | stream u64 | prev u64 | total length u64 | BLAKE3 of the stream [32]
//! Abort     5 | stream u64 | prev u64 | reason u16
//! ```
//!
//! `prev` is the sequence of the block that carried the stream's previous record (its `Open` for the
//! first one). A receiver that last saw the stream in another block knows a block with records of this
//! stream was lost, even when the lost record was the `End`. Open flags: bit 0 size present, bit 1 mtime
//! present, bit 2 file id present (then 16 bytes follow the name); other bits must be zero, and an absent
//! size or mtime must be encoded as zero. Every length is checked against the bytes that remain and against
//! the limits below before anything is read.

use crate::wire::{Reader, WireError};

pub const KIND_OPEN: u8 = 1;
pub const KIND_DATA: u8 = 2;
pub const KIND_DATAGRAMS: u8 = 3;
pub const KIND_END: u8 = 4;
pub const KIND_ABORT: u8 = 5;

/// Longest peer address text (an IPv6 address with port and zone fits).
pub const MAX_PEER_LEN: usize = 128;
/// Longest file name or relative path carried in `Open`.
pub const MAX_NAME_LEN: usize = 4096;
/// Most datagrams packed in one record.
pub const MAX_DATAGRAMS_PER_RECORD: usize = 4096;

const OPEN_FLAG_SIZE: u8 = 0x01;
const OPEN_FLAG_MTIME: u8 = 0x02;
const OPEN_FLAG_FILE_ID: u8 = 0x04;
/// Length of a file id.
pub const FILE_ID_LEN: usize = 16;

pub const DATA_HEADER_LEN: usize = 1 + 8 + 8 + 8 + 4;
pub const END_LEN: usize = 1 + 8 + 8 + 8 + 32;
pub const ABORT_LEN: usize = 1 + 8 + 8 + 2;
pub const DATAGRAMS_HEADER_LEN: usize = 1 + 2;
pub const DATAGRAM_ENTRY_HEADER_LEN: usize = 2;

/// Sentinel `prev` meaning "no earlier record" (only an `Open` has none).
pub const NO_PREV: u64 = u64::MAX;

/// Why a source ended a stream early.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AbortReason {
    SourceReset,
    SourceTimeout,
    OverBudget,
    TooLarge,
    ShuttingDown,
    SourceError,
    /// A code this version does not know, kept so it can be logged.
    Other(u16),
}

crate::reasons!(AbortReason patterns {
    AbortReason::SourceReset => "source_reset",
    AbortReason::SourceTimeout => "source_timeout",
    AbortReason::OverBudget => "source_over_budget",
    AbortReason::TooLarge => "source_too_large",
    AbortReason::ShuttingDown => "source_shutting_down",
    AbortReason::SourceError => "source_error",
    AbortReason::Other(_) => "source_aborted_other",
});

impl std::fmt::Display for AbortReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AbortReason::Other(code) => write!(f, "{} (code {code})", self.label()),
            _ => f.write_str(self.label()),
        }
    }
}

impl AbortReason {
    pub const fn to_wire(self) -> u16 {
        match self {
            AbortReason::SourceReset => 1,
            AbortReason::SourceTimeout => 2,
            AbortReason::OverBudget => 3,
            AbortReason::TooLarge => 4,
            AbortReason::ShuttingDown => 5,
            AbortReason::SourceError => 6,
            AbortReason::Other(code) => code,
        }
    }

    pub const fn from_wire(code: u16) -> AbortReason {
        match code {
            1 => AbortReason::SourceReset,
            2 => AbortReason::SourceTimeout,
            3 => AbortReason::OverBudget,
            4 => AbortReason::TooLarge,
            5 => AbortReason::ShuttingDown,
            6 => AbortReason::SourceError,
            other => AbortReason::Other(other),
        }
    }
}

/// What a stream is: where it came from and, for files, what it is called.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamMeta {
    /// The source peer (`ip:port`), empty when not applicable.
    pub peer: String,
    /// File name or relative path as the source gave it; untrusted, sanitised by the sink.
    pub name: String,
    /// Total size when known in advance (files), `None` for open-ended streams.
    pub size: Option<u64>,
    /// Modification time (seconds and nanoseconds since the Unix epoch).
    pub mtime: Option<(i64, u32)>,
    /// Identity of a file across repeats, sender restarts and takeovers: the receiver's ledger uses it to
    /// deliver each file once. Chosen by the sender when it takes the file.
    pub file_id: Option<[u8; FILE_ID_LEN]>,
}

/// One record, borrowing its bytes from the decoded block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Open { stream: u64, meta: StreamMeta },
    Data { stream: u64, prev: u64, offset: u64, bytes: &'a [u8] },
    Datagrams { payloads: Vec<&'a [u8]> },
    End { stream: u64, prev: u64, total_len: u64, hash: [u8; 32] },
    Abort { stream: u64, prev: u64, reason: AbortReason },
}

impl Record<'_> {
    /// Bytes this record takes on the wire.
    pub fn encoded_len(&self) -> usize {
        match self {
            Record::Open { meta, .. } => {
                1 + 8
                    + 1
                    + 8
                    + 8
                    + 4
                    + 2
                    + meta.peer.len()
                    + 2
                    + meta.name.len()
                    + meta.file_id.map_or(0, |_| FILE_ID_LEN)
            }
            Record::Data { bytes, .. } => DATA_HEADER_LEN + bytes.len(),
            Record::Datagrams { payloads } => {
                DATAGRAMS_HEADER_LEN + payloads.iter().map(|p| DATAGRAM_ENTRY_HEADER_LEN + p.len()).sum::<usize>()
            }
            Record::End { .. } => END_LEN,
            Record::Abort { .. } => ABORT_LEN,
        }
    }

    /// Checks the limits a receiver enforces, so a sender never emits what a receiver refuses.
    pub fn check_limits(&self) -> Result<(), WireError> {
        match self {
            Record::Open { meta, .. } => {
                if meta.peer.len() > MAX_PEER_LEN {
                    return Err(WireError::TooLong { what: "peer", len: meta.peer.len(), max: MAX_PEER_LEN });
                }
                if meta.name.len() > MAX_NAME_LEN {
                    return Err(WireError::TooLong { what: "name", len: meta.name.len(), max: MAX_NAME_LEN });
                }
            }
            Record::Data { bytes, .. } => {
                if u32::try_from(bytes.len()).is_err() {
                    return Err(WireError::TooLong { what: "data", len: bytes.len(), max: u32::MAX as usize });
                }
            }
            Record::Datagrams { payloads } => {
                if payloads.is_empty() || payloads.len() > MAX_DATAGRAMS_PER_RECORD {
                    return Err(WireError::BadCount { what: "datagrams", count: payloads.len() });
                }
                if let Some(p) = payloads.iter().find(|p| p.len() > usize::from(u16::MAX)) {
                    return Err(WireError::TooLong { what: "datagram", len: p.len(), max: usize::from(u16::MAX) });
                }
            }
            Record::End { .. } | Record::Abort { .. } => {}
        }
        Ok(())
    }

    /// Appends the record to `out`. Call [`Record::check_limits`] first: lengths are written as the
    /// field widths allow.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Record::Open { stream, meta } => {
                out.push(KIND_OPEN);
                out.extend_from_slice(&stream.to_be_bytes());
                let mut flags = 0;
                if meta.size.is_some() {
                    flags |= OPEN_FLAG_SIZE;
                }
                if meta.mtime.is_some() {
                    flags |= OPEN_FLAG_MTIME;
                }
                if meta.file_id.is_some() {
                    flags |= OPEN_FLAG_FILE_ID;
                }
                out.push(flags);
                out.extend_from_slice(&meta.size.unwrap_or(0).to_be_bytes());
                let (secs, nanos) = meta.mtime.unwrap_or((0, 0));
                out.extend_from_slice(&secs.to_be_bytes());
                out.extend_from_slice(&nanos.to_be_bytes());
                put_text(out, &meta.peer);
                put_text(out, &meta.name);
                if let Some(id) = &meta.file_id {
                    out.extend_from_slice(id);
                }
            }
            Record::Data { stream, prev, offset, bytes } => {
                out.push(KIND_DATA);
                out.extend_from_slice(&stream.to_be_bytes());
                out.extend_from_slice(&prev.to_be_bytes());
                out.extend_from_slice(&offset.to_be_bytes());
                out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                out.extend_from_slice(bytes);
            }
            Record::Datagrams { payloads } => {
                out.push(KIND_DATAGRAMS);
                out.extend_from_slice(&(payloads.len() as u16).to_be_bytes());
                for payload in payloads {
                    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                    out.extend_from_slice(payload);
                }
            }
            Record::End { stream, prev, total_len, hash } => {
                out.push(KIND_END);
                out.extend_from_slice(&stream.to_be_bytes());
                out.extend_from_slice(&prev.to_be_bytes());
                out.extend_from_slice(&total_len.to_be_bytes());
                out.extend_from_slice(hash);
            }
            Record::Abort { stream, prev, reason } => {
                out.push(KIND_ABORT);
                out.extend_from_slice(&stream.to_be_bytes());
                out.extend_from_slice(&prev.to_be_bytes());
                out.extend_from_slice(&reason.to_wire().to_be_bytes());
            }
        }
    }

    /// The stream a record belongs to (`None` for datagrams).
    pub fn stream(&self) -> Option<u64> {
        match self {
            Record::Open { stream, .. }
            | Record::Data { stream, .. }
            | Record::End { stream, .. }
            | Record::Abort { stream, .. } => Some(*stream),
            Record::Datagrams { .. } => None,
        }
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text.as_bytes());
}

fn get_text<'a>(reader: &mut Reader<'a>, what: &'static str, max: usize) -> Result<String, WireError> {
    let len = usize::from(reader.u16()?);
    if len > max {
        return Err(WireError::TooLong { what, len, max });
    }
    let bytes = reader.bytes(len)?;
    core::str::from_utf8(bytes).map(str::to_owned).map_err(|_| WireError::NotUtf8 { what })
}

/// Parses the records of a block body one after another.
pub struct RecordReader<'a> {
    reader: Reader<'a>,
    failed: bool,
}

impl<'a> RecordReader<'a> {
    pub fn new(body: &'a [u8]) -> RecordReader<'a> {
        RecordReader { reader: Reader::new(body), failed: false }
    }

    fn read_one(&mut self) -> Result<Record<'a>, WireError> {
        let r = &mut self.reader;
        let kind = r.u8()?;
        match kind {
            KIND_OPEN => {
                let stream = r.u64()?;
                let flags = r.u8()?;
                if flags & !(OPEN_FLAG_SIZE | OPEN_FLAG_MTIME | OPEN_FLAG_FILE_ID) != 0 {
                    return Err(WireError::BadFlags { what: "open", flags });
                }
                let size = r.u64()?;
                let secs = r.i64()?;
                let nanos = r.u32()?;
                if nanos >= 1_000_000_000 {
                    return Err(WireError::BadValue { what: "mtime nanoseconds" });
                }
                // Absent fields must be zero, so every record has exactly one encoding.
                if flags & OPEN_FLAG_SIZE == 0 && size != 0 {
                    return Err(WireError::BadValue { what: "size without its flag" });
                }
                if flags & OPEN_FLAG_MTIME == 0 && (secs != 0 || nanos != 0) {
                    return Err(WireError::BadValue { what: "mtime without its flag" });
                }
                let peer = get_text(r, "peer", MAX_PEER_LEN)?;
                let name = get_text(r, "name", MAX_NAME_LEN)?;
                let file_id = match flags & OPEN_FLAG_FILE_ID {
                    0 => None,
                    _ => Some(r.array::<FILE_ID_LEN>()?),
                };
                let meta = StreamMeta {
                    peer,
                    name,
                    size: (flags & OPEN_FLAG_SIZE != 0).then_some(size),
                    mtime: (flags & OPEN_FLAG_MTIME != 0).then_some((secs, nanos)),
                    file_id,
                };
                Ok(Record::Open { stream, meta })
            }
            KIND_DATA => {
                let stream = r.u64()?;
                let prev = r.u64()?;
                let offset = r.u64()?;
                let len = r.u32()? as usize;
                let bytes = r.bytes(len)?;
                if offset.checked_add(len as u64).is_none() {
                    return Err(WireError::BadValue { what: "data offset" });
                }
                Ok(Record::Data { stream, prev, offset, bytes })
            }
            KIND_DATAGRAMS => {
                let count = usize::from(r.u16()?);
                if count == 0 || count > MAX_DATAGRAMS_PER_RECORD {
                    return Err(WireError::BadCount { what: "datagrams", count });
                }
                // Each entry takes at least its length field: refuse counts the body cannot hold
                // before allocating for them.
                if count * DATAGRAM_ENTRY_HEADER_LEN > r.remaining() {
                    return Err(WireError::Truncated);
                }
                let mut payloads = Vec::with_capacity(count);
                for _ in 0..count {
                    let len = usize::from(r.u16()?);
                    payloads.push(r.bytes(len)?);
                }
                Ok(Record::Datagrams { payloads })
            }
            KIND_END => {
                let stream = r.u64()?;
                let prev = r.u64()?;
                let total_len = r.u64()?;
                let hash = r.array::<32>()?;
                Ok(Record::End { stream, prev, total_len, hash })
            }
            KIND_ABORT => {
                let stream = r.u64()?;
                let prev = r.u64()?;
                let reason = AbortReason::from_wire(r.u16()?);
                Ok(Record::Abort { stream, prev, reason })
            }
            other => Err(WireError::UnknownRecord { kind: other }),
        }
    }
}

impl<'a> Iterator for RecordReader<'a> {
    type Item = Result<Record<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.reader.remaining() == 0 {
            return None;
        }
        let result = self.read_one();
        self.failed = result.is_err();
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Record<'static>> {
        vec![
            Record::Open {
                stream: 9,
                meta: StreamMeta {
                    peer: "127.0.0.1:4000".into(),
                    name: "dir/report.pdf".into(),
                    size: Some(1234),
                    mtime: Some((1_700_000_000, 5)),
                    file_id: Some([0xab; FILE_ID_LEN]),
                },
            },
            Record::Open { stream: 10, meta: StreamMeta::default() },
            Record::Data { stream: 9, prev: 3, offset: 0, bytes: b"hello" },
            Record::Datagrams { payloads: vec![b"a", b"", b"ccc"] },
            Record::End { stream: 9, prev: 3, total_len: 5, hash: [7; 32] },
            Record::Abort { stream: 10, prev: 4, reason: AbortReason::Other(999) },
        ]
    }

    #[test]
    fn records_round_trip_back_to_back() {
        let mut out = Vec::new();
        for record in samples() {
            record.check_limits().expect("sample records are within limits");
            let before = out.len();
            record.emit(&mut out);
            assert_eq!(out.len() - before, record.encoded_len());
        }
        let parsed: Vec<_> = RecordReader::new(&out).collect::<Result<_, _>>().expect("parses");
        assert_eq!(parsed, samples());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        for record in samples() {
            let mut out = Vec::new();
            record.emit(&mut out);
            for len in 1..out.len() {
                let results: Vec<_> = RecordReader::new(&out[..len]).collect();
                assert!(results.last().is_some_and(Result::is_err), "{record:?} cut at {len}");
            }
        }
    }

    #[test]
    fn oversized_names_and_bad_counts_are_refused() {
        let long =
            Record::Open { stream: 1, meta: StreamMeta { name: "x".repeat(MAX_NAME_LEN + 1), ..Default::default() } };
        assert!(long.check_limits().is_err());
        let mut out = Vec::new();
        long.emit(&mut out);
        assert!(matches!(RecordReader::new(&out).next(), Some(Err(WireError::TooLong { what: "name", .. }))));

        // A count of 4096 datagrams with only a few bytes behind it.
        let bogus = [KIND_DATAGRAMS, 0x10, 0x00, 0, 1, 0xAA];
        assert_eq!(RecordReader::new(&bogus).next(), Some(Err(WireError::Truncated)));
        assert_eq!(RecordReader::new(&[0x77]).next(), Some(Err(WireError::UnknownRecord { kind: 0x77 })));
    }

    #[test]
    fn absent_open_fields_must_be_zero_so_encoding_is_canonical() {
        let mut out = Vec::new();
        Record::Open { stream: 2, meta: StreamMeta::default() }.emit(&mut out);
        // The size field (bytes 10..18) carries a value although its flag is clear.
        out[17] = 16;
        assert_eq!(RecordReader::new(&out).next(), Some(Err(WireError::BadValue { what: "size without its flag" })));
    }

    #[test]
    fn abort_reasons_round_trip_including_unknown_codes() {
        for code in 0..=20u16 {
            assert_eq!(AbortReason::from_wire(code).to_wire(), code);
        }
    }
}
