//! Block content and the sender's block builder.
//!
//! ```text
//! +-----------------------------+------------------------------+
//! | records of one channel ...  | XXH3-128 of the records [16] |
//! +-----------------------------+------------------------------+
//! ```
//!
//! The hash is checked after every rebuild, before any record is read: a block that came out as the
//! wrong bytes (a corrupted symbol whose CRC32 still matched, symbols of two blocks mixed by a faulty
//! sender, a decoder bug) is treated as lost, never used. It is a checksum, not an authenticator: an
//! unkeyed hash cannot be one, whatever its strength. Authenticity comes from the keyed MAC on every
//! datagram, and the cryptographic end-to-end check is each stream's BLAKE3 in `End`. XXH3 costs a
//! fraction of a BLAKE3 pass, and every byte a diode carries passes this check once on each side.

use std::collections::{HashMap, VecDeque};

use crate::record::{
    AbortReason, Record, StreamMeta, DATAGRAMS_HEADER_LEN, DATAGRAM_ENTRY_HEADER_LEN, DATA_HEADER_LEN, NO_PREV,
};
use crate::stream_hash::StreamHasher;

pub const HASH_LEN: usize = 16;
/// Protocol version 1 sealed blocks with the BLAKE3 of the records, 32 bytes.
pub const LEGACY_HASH_LEN: usize = 32;

fn block_hash(body: &[u8]) -> [u8; HASH_LEN] {
    twox_hash::XxHash3_128::oneshot(body).to_be_bytes()
}

/// The records of a block whose symbols carried protocol `version`, if its hash matches: version 1
/// ([`crate::header::LEGACY_VERSION`]) sealed with BLAKE3, every later one with [`seal`].
pub fn open_version(content: &[u8], version: u8) -> Option<&[u8]> {
    if version == crate::header::LEGACY_VERSION {
        open_legacy(content)
    } else {
        open(content)
    }
}

fn open_legacy(content: &[u8]) -> Option<&[u8]> {
    let split = content.len().checked_sub(LEGACY_HASH_LEN)?;
    let (body, hash) = content.split_at(split);
    (blake3::hash(body).as_bytes() == hash).then_some(body)
}

/// Appends the hash of `body` to it, making it block content.
pub fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let hash = block_hash(&body);
    body.extend_from_slice(&hash);
    body
}

/// The records of a block whose hash matches, or `None`.
pub fn open(content: &[u8]) -> Option<&[u8]> {
    let split = content.len().checked_sub(HASH_LEN)?;
    let (body, hash) = content.split_at(split);
    (block_hash(body) == hash).then_some(body)
}

/// A block's content with its place in the channel's sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedBlock {
    pub channel: u16,
    pub seq: u64,
    pub content: Vec<u8>,
}

/// What the builder refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("stream {0} is already open")]
    AlreadyOpen(u64),
    #[error("stream {0} is not open")]
    NotOpen(u64),
    #[error("record does not fit in a block: {0}")]
    Limits(#[from] crate::wire::WireError),
    #[error("datagram of {len} bytes does not fit in a block")]
    DatagramTooLarge { len: usize },
}

struct SendStream {
    offset: u64,
    hasher: StreamHasher,
    last_seq: u64,
}

/// Summary of a finished stream, as the receiver will check it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamSummary {
    pub total_len: u64,
    pub hash: [u8; 32],
    /// The block that carries the end record (what a manifest entry names).
    pub end_seq: u64,
}

/// Cuts one channel's records into blocks.
///
/// Keeps each stream's offset, running BLAKE3 and the sequence of the block that carried its last
/// record (the `prev` link the receiver checks). Data larger than the room left is split across blocks.
/// Sealed blocks wait in a queue for [`BlockBuilder::pop_sealed`]; the caller bounds it by checking
/// [`BlockBuilder::sealed_len`] before pushing more.
pub struct BlockBuilder {
    channel: u16,
    next_seq: u64,
    max_body: usize,
    body: Vec<u8>,
    streams: HashMap<u64, SendStream>,
    sealed: VecDeque<SealedBlock>,
}

impl BlockBuilder {
    /// `max_block_len` is [`crate::fec::FecParams::max_block_len`], at least [`crate::fec::MIN_BLOCK_LEN`].
    pub fn new(channel: u16, max_block_len: usize) -> BlockBuilder {
        let max_body = max_block_len - HASH_LEN;
        BlockBuilder {
            channel,
            next_seq: 0,
            max_body,
            body: Vec::with_capacity(max_body + HASH_LEN),
            streams: HashMap::new(),
            sealed: VecDeque::new(),
        }
    }

    pub fn channel(&self) -> u16 {
        self.channel
    }

    /// Blocks sealed so far (the sequence of the block being filled).
    pub fn blocks_sealed(&self) -> u64 {
        self.next_seq
    }

    pub fn sealed_len(&self) -> usize {
        self.sealed.len()
    }

    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Bytes waiting in the block being filled.
    pub fn pending_bytes(&self) -> usize {
        self.body.len()
    }

    pub fn pop_sealed(&mut self) -> Option<SealedBlock> {
        self.sealed.pop_front()
    }

    /// Seals the block being filled, if it holds anything.
    pub fn flush(&mut self) {
        if self.body.is_empty() {
            return;
        }
        let body = std::mem::replace(&mut self.body, Vec::with_capacity(self.max_body + HASH_LEN));
        self.sealed.push_back(SealedBlock { channel: self.channel, seq: self.next_seq, content: seal(body) });
        self.next_seq += 1;
    }

    fn room(&self) -> usize {
        self.max_body - self.body.len()
    }

    fn make_room(&mut self, len: usize) {
        if self.room() < len {
            self.flush();
        }
    }

    fn push(&mut self, record: &Record<'_>) {
        self.make_room(record.encoded_len());
        record.emit(&mut self.body);
    }

    pub fn open(&mut self, stream: u64, meta: StreamMeta) -> Result<(), BuildError> {
        if self.streams.contains_key(&stream) {
            return Err(BuildError::AlreadyOpen(stream));
        }
        let record = Record::Open { stream, meta };
        record.check_limits()?;
        self.push(&record);
        self.streams.insert(stream, SendStream { offset: 0, hasher: StreamHasher::new(), last_seq: self.next_seq });
        Ok(())
    }

    /// Appends stream bytes, splitting them over as many blocks as they need.
    pub fn data(&mut self, stream: u64, mut bytes: &[u8]) -> Result<(), BuildError> {
        if !self.streams.contains_key(&stream) {
            return Err(BuildError::NotOpen(stream));
        }
        // An empty data record is a keepalive: it proves to the receiver that no record of this stream
        // was in a block it lost.
        loop {
            // Leave at least a useful slice per record rather than a header with a few bytes.
            if self.room() < DATA_HEADER_LEN + 64.min(bytes.len().max(1)) {
                self.flush();
            }
            let take = bytes.len().min(self.room() - DATA_HEADER_LEN);
            let (chunk, rest) = bytes.split_at(take);
            let seq = self.next_seq;
            let Some(state) = self.streams.get_mut(&stream) else {
                return Err(BuildError::NotOpen(stream));
            };
            let record = Record::Data { stream, prev: state.last_seq, offset: state.offset, bytes: chunk };
            state.offset += chunk.len() as u64;
            state.hasher.update(chunk);
            state.last_seq = seq;
            record.emit(&mut self.body);
            bytes = rest;
            if bytes.is_empty() {
                return Ok(());
            }
        }
    }

    /// An empty data record, so a receiver that lost a block learns this stream had nothing in it.
    pub fn keepalive(&mut self, stream: u64) -> Result<(), BuildError> {
        self.data(stream, &[])
    }

    /// Ends a stream with its length and BLAKE3.
    pub fn end(&mut self, stream: u64) -> Result<StreamSummary, BuildError> {
        let state = self.streams.get(&stream).ok_or(BuildError::NotOpen(stream))?;
        let (total_len, hash) = (state.offset, state.hasher.finalize());
        self.close(stream, |prev| Record::End { stream, prev, total_len, hash });
        // The end record sits in the block being filled (push sealed the previous one if it had to).
        Ok(StreamSummary { total_len, hash, end_seq: self.next_seq })
    }

    /// Ends a stream early; the receiver aborts its destination with this reason.
    pub fn abort(&mut self, stream: u64, reason: AbortReason) -> Result<(), BuildError> {
        if !self.streams.contains_key(&stream) {
            return Err(BuildError::NotOpen(stream));
        }
        self.close(stream, |prev| Record::Abort { stream, prev, reason });
        Ok(())
    }

    fn close(&mut self, stream: u64, record: impl FnOnce(u64) -> Record<'static>) {
        let prev = self.streams.remove(&stream).map_or(NO_PREV, |s| s.last_seq);
        self.push(&record(prev));
    }

    /// Packs a UDP payload; consecutive datagrams share one record while they fit.
    pub fn datagram(&mut self, payload: &[u8]) -> Result<(), BuildError> {
        let entry = DATAGRAM_ENTRY_HEADER_LEN + payload.len();
        if payload.len() > usize::from(u16::MAX) || DATAGRAMS_HEADER_LEN + entry > self.max_body {
            return Err(BuildError::DatagramTooLarge { len: payload.len() });
        }
        // Each datagram is its own record: simple to parse, and the 3-byte record header is small
        // beside any real UDP payload.
        self.push(&Record::Datagrams { payloads: vec![payload] });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fec::MIN_BLOCK_LEN;
    use crate::record::RecordReader;

    #[test]
    fn the_block_hash_is_standard_xxh3_128_big_endian() {
        // XXH3-128 of the empty input with seed 0, from the reference implementation's test vectors.
        assert_eq!(seal(Vec::new()), 0x99aa_06d3_0147_98d8_6001_c324_468d_497f_u128.to_be_bytes());
        let content = seal(b"records".to_vec());
        assert_eq!(open(&content), Some(&b"records"[..]));
        let mut corrupted = content.clone();
        corrupted[3] ^= 0x10;
        assert_eq!(open(&corrupted), None);
        assert_eq!(open(&content[..HASH_LEN - 1]), None);
    }

    #[test]
    fn version_1_blocks_open_with_their_blake3() {
        let mut legacy = b"records".to_vec();
        legacy.extend_from_slice(blake3::hash(b"records").as_bytes());
        assert_eq!(open_version(&legacy, crate::header::LEGACY_VERSION), Some(&b"records"[..]));
        assert_eq!(open_version(&legacy, crate::header::VERSION), None);
        let current = seal(b"records".to_vec());
        assert_eq!(open_version(&current, crate::header::VERSION), Some(&b"records"[..]));
        assert_eq!(open_version(&current, crate::header::LEGACY_VERSION), None);
    }

    #[test]
    fn sealed_content_opens_and_detects_tampering() {
        let content = seal(b"records".to_vec());
        assert_eq!(open(&content), Some(&b"records"[..]));
        let mut tampered = content.clone();
        tampered[0] ^= 1;
        assert_eq!(open(&tampered), None);
        assert_eq!(open(&content[..10]), None);
    }

    #[test]
    fn large_data_is_split_with_consistent_offsets_and_links() {
        let mut builder = BlockBuilder::new(4, MIN_BLOCK_LEN);
        builder.open(1, StreamMeta::default()).expect("opens");
        let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        builder.data(1, &payload).expect("open stream");
        let summary = builder.end(1).expect("open stream");
        assert_eq!(summary.total_len, 200_000);
        assert_eq!(summary.hash, *blake3::hash(&payload).as_bytes());

        builder.flush();
        let mut reassembled = Vec::new();
        let mut last_seq = None;
        while let Some(block) = builder.pop_sealed() {
            assert!(block.content.len() <= MIN_BLOCK_LEN);
            let body = open(&block.content).expect("hash matches");
            for record in RecordReader::new(body) {
                match record.expect("valid") {
                    Record::Data { prev, offset, bytes, .. } => {
                        assert_eq!(offset as usize, reassembled.len());
                        assert_eq!(Some(prev), last_seq.or(Some(0)));
                        reassembled.extend_from_slice(bytes);
                        last_seq = Some(block.seq);
                    }
                    Record::End { prev, .. } => assert_eq!(Some(prev), last_seq),
                    Record::Open { .. } => {}
                    other => unreachable!("unexpected {other:?}"),
                }
            }
        }
        assert!(reassembled == payload, "reassembled {} of {} bytes", reassembled.len(), payload.len());
    }

    #[test]
    fn builder_refuses_misuse() {
        let mut builder = BlockBuilder::new(1, MIN_BLOCK_LEN);
        assert_eq!(builder.data(9, b"x"), Err(BuildError::NotOpen(9)));
        builder.open(9, StreamMeta::default()).expect("opens");
        assert_eq!(builder.open(9, StreamMeta::default()), Err(BuildError::AlreadyOpen(9)));
        assert!(builder.datagram(&vec![0; 70_000]).is_err());
        builder.datagram(&vec![0; 65_535]).expect("largest datagram fits a minimal block");
    }
}
