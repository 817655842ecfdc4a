//! Stream reassembly: records of one channel, in block order, turned into stream events.
//!
//! Blocks reach this table strictly in sequence order, so records arrive in the order they were sent.
//! What remains to check is that nothing is missing: each record's `prev` must name the block that
//! carried the stream's previous record, each `Data` must start at the next expected byte, and `End`
//! must match the length and BLAKE3 of everything delivered. A lost block makes every open stream of the
//! channel suspect until a later record proves it had nothing in that block; a suspect stream that
//! stays silent past the suspect timeout is broken.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::event::{BreakReason, Event};
use crate::record::{Record, RecordReader};
use crate::stream_hash::StreamHasher;

/// Limits the stream table enforces.
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    pub max_open: usize,
    pub max_stream_len: u64,
    pub suspect_timeout: Duration,
}

struct StreamState {
    received: u64,
    hasher: StreamHasher,
    last_seq: u64,
    /// The lost block that made this stream suspect, and when the suspicion expires.
    suspect: Option<(u64, Instant)>,
}

/// Ids of recently finished streams, so late records for them are ignored rather than reported as
/// missed opens. Bounded: the oldest ids are forgotten first.
struct RecentIds {
    order: VecDeque<u64>,
    set: HashSet<u64>,
    capacity: usize,
}

impl RecentIds {
    fn new(capacity: usize) -> RecentIds {
        RecentIds { order: VecDeque::new(), set: HashSet::new(), capacity }
    }

    fn insert(&mut self, id: u64) {
        if self.set.insert(id) {
            self.order.push_back(id);
            if self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.set.contains(&id)
    }
}

/// Open streams of one channel.
pub(crate) struct StreamTable {
    channel: u16,
    open: HashMap<u64, StreamState>,
    finished: RecentIds,
}

const RECENT_IDS: usize = 4096;

impl StreamTable {
    pub(crate) fn new(channel: u16) -> StreamTable {
        StreamTable { channel, open: HashMap::new(), finished: RecentIds::new(RECENT_IDS) }
    }

    pub(crate) fn open_count(&self) -> usize {
        self.open.len()
    }

    fn broken(&mut self, stream: u64, reason: BreakReason, events: &mut VecDeque<Event>) {
        self.open.remove(&stream);
        self.finished.insert(stream);
        events.push_back(Event::StreamBroken { channel: self.channel, stream, reason });
    }

    /// Applies a verified block body. A body whose records do not parse breaks every open stream.
    pub(crate) fn apply_block(
        &mut self,
        seq: u64,
        body: &Bytes,
        limits: &StreamLimits,
        events: &mut VecDeque<Event>,
    ) -> Result<(), crate::wire::WireError> {
        let records: Result<Vec<Record<'_>>, _> = RecordReader::new(body).collect();
        let records = match records {
            Ok(records) => records,
            Err(error) => {
                self.break_all(BreakReason::MalformedBlock, events);
                return Err(error);
            }
        };
        for record in records {
            self.apply(seq, record, body, limits, events);
        }
        Ok(())
    }

    fn apply(
        &mut self,
        seq: u64,
        record: Record<'_>,
        body: &Bytes,
        limits: &StreamLimits,
        events: &mut VecDeque<Event>,
    ) {
        let channel = self.channel;
        if let Record::Datagrams { payloads } = record {
            for payload in payloads {
                events.push_back(Event::Datagram { channel, payload: body.slice_ref(payload) });
            }
            return;
        }
        if let Record::Open { stream, meta } = record {
            if self.open.contains_key(&stream) {
                self.broken(stream, BreakReason::DuplicateOpen, events);
            } else if self.finished.contains(stream) {
                // A reused id within one session is a sender fault; refuse it without disturbing others.
                events.push_back(Event::StreamBroken { channel, stream, reason: BreakReason::DuplicateOpen });
            } else if self.open.len() >= limits.max_open {
                self.finished.insert(stream);
                events.push_back(Event::StreamBroken { channel, stream, reason: BreakReason::TooManyStreams });
            } else if meta.size.is_some_and(|size| size > limits.max_stream_len) {
                self.finished.insert(stream);
                let reason = BreakReason::TooLarge { limit: limits.max_stream_len };
                events.push_back(Event::StreamBroken { channel, stream, reason });
            } else {
                let state = StreamState { received: 0, hasher: StreamHasher::new(), last_seq: seq, suspect: None };
                self.open.insert(stream, state);
                events.push_back(Event::StreamOpened { channel, stream, meta });
            }
            return;
        }
        let (Some(stream), Some(prev)) = (record.stream(), record_prev(&record)) else {
            return;
        };
        let Some(state) = self.open.get_mut(&stream) else {
            if !self.finished.contains(stream) {
                self.finished.insert(stream);
                events.push_back(Event::StreamBroken { channel, stream, reason: BreakReason::MissedOpen });
            }
            return;
        };
        if prev != state.last_seq {
            let reason = BreakReason::Gap { expected_prev: state.last_seq, found_prev: prev };
            self.broken(stream, reason, events);
            return;
        }
        state.last_seq = seq;
        state.suspect = None;
        match record {
            Record::Data { offset, bytes, .. } => {
                if offset != state.received {
                    let reason = BreakReason::OffsetMismatch { expected: state.received, found: offset };
                    self.broken(stream, reason, events);
                    return;
                }
                let received = state.received + bytes.len() as u64;
                if received > limits.max_stream_len {
                    self.broken(stream, BreakReason::TooLarge { limit: limits.max_stream_len }, events);
                    return;
                }
                state.received = received;
                if !bytes.is_empty() {
                    state.hasher.update(bytes);
                    events.push_back(Event::StreamData { channel, stream, offset, data: body.slice_ref(bytes) });
                }
            }
            Record::End { total_len, hash, .. } => {
                let received = state.received;
                let matches = state.hasher.finalize() == hash;
                if total_len != received {
                    self.broken(stream, BreakReason::LengthMismatch { announced: total_len, received }, events);
                } else if !matches {
                    self.broken(stream, BreakReason::HashMismatch, events);
                } else {
                    self.open.remove(&stream);
                    self.finished.insert(stream);
                    events.push_back(Event::StreamEnded { channel, stream, total_len, hash });
                }
            }
            Record::Abort { reason, .. } => self.broken(stream, BreakReason::SourceAborted(reason), events),
            Record::Open { .. } | Record::Datagrams { .. } => {}
        }
    }

    /// Blocks `first..=last` are lost: every open stream becomes suspect unless already.
    pub(crate) fn on_blocks_lost(&mut self, first: u64, now: Instant, limits: &StreamLimits) {
        for state in self.open.values_mut() {
            if state.suspect.is_none() {
                state.suspect = Some((first, now + limits.suspect_timeout));
            }
        }
    }

    /// A stream the sender says it finished (its manifest): true, once, when this table never heard
    /// of it, which is then remembered as finished so that a late record of it is ignored.
    pub(crate) fn first_news_of(&mut self, stream: u64) -> bool {
        if self.open.contains_key(&stream) || self.finished.contains(stream) {
            return false;
        }
        self.finished.insert(stream);
        true
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant, events: &mut VecDeque<Event>) {
        let expired: Vec<(u64, u64)> = self
            .open
            .iter()
            .filter_map(|(id, s)| s.suspect.filter(|(_, deadline)| *deadline <= now).map(|(seq, _)| (*id, seq)))
            .collect();
        for (stream, seq) in expired {
            self.broken(stream, BreakReason::BlockLost { seq }, events);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.open.values().filter_map(|s| s.suspect.map(|(_, deadline)| deadline)).min()
    }

    pub(crate) fn break_all(&mut self, reason: BreakReason, events: &mut VecDeque<Event>) {
        let mut ids: Vec<u64> = self.open.keys().copied().collect();
        ids.sort_unstable();
        for stream in ids {
            self.broken(stream, reason, events);
        }
    }
}

fn record_prev(record: &Record<'_>) -> Option<u64> {
    match record {
        Record::Data { prev, .. } | Record::End { prev, .. } | Record::Abort { prev, .. } => Some(*prev),
        Record::Open { .. } | Record::Datagrams { .. } => None,
    }
}
