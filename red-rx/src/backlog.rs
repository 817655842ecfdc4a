//! What waits in red-rx for a sink whose queue is full, so that decoding never waits for a sink.
//!
//! The protocol lock is held while a batch of datagrams is decoded; a sink that blocked there would
//! stop every channel (and the fibers' kernel buffers would overflow). Instead, events a sink cannot
//! take now wait here, in order, per channel, up to the channel's `queue_bytes`. Past that bound the
//! channel alone pays: the stream whose data does not fit is broken with `sink_overloaded` (its
//! waiting data is dropped, and the sink is told if it already saw the stream open), and the oldest
//! waiting datagram is dropped and counted. A TCP channel's sink is its spool's writer, which only
//! writes to disk: it falls this far behind only when the spool's disk is slower than the link.

use std::collections::{HashSet, VecDeque};

use connectors::sink::{SinkEvent, StreamAbort};

/// What a sink's queue did with an event it was offered.
#[derive(Debug)]
pub(crate) enum Handoff {
    Taken,
    /// Its queue is full: the event comes back.
    Full(SinkEvent),
}

/// What the backlog did that the daemon counts and logs.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Overflow {
    /// A stream was broken: its data did not fit. `told`: the sink saw it open and gets a `Broken`
    /// (and counts it); otherwise the stream never reaches the sink and the daemon counts it.
    StreamCut { stream: u64, told: bool },
    /// The oldest waiting datagram was dropped to make room.
    DatagramDropped,
}

/// One channel's waiting events.
#[derive(Debug)]
pub(crate) struct Backlog {
    waiting: VecDeque<SinkEvent>,
    bytes: usize,
    limit: usize,
    /// Streams whose opening the sink has been handed (so a cut must tell it).
    handed_open: HashSet<u64>,
    /// Streams cut here: their later events are dropped.
    cut: HashSet<u64>,
}

fn stream_of(event: &SinkEvent) -> Option<u64> {
    match event {
        SinkEvent::Open { stream, .. }
        | SinkEvent::Data { stream, .. }
        | SinkEvent::End { stream, .. }
        | SinkEvent::Broken { stream, .. } => Some(*stream),
        _ => None,
    }
}

fn weight(event: &SinkEvent) -> usize {
    match event {
        SinkEvent::Data { data, .. } | SinkEvent::Datagram(data) => data.len(),
        _ => 0,
    }
}

impl Backlog {
    pub(crate) fn new(limit: usize) -> Backlog {
        Backlog { waiting: VecDeque::new(), bytes: 0, limit, handed_open: HashSet::new(), cut: HashSet::new() }
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Hands `event` to the sink through `try_send` (which gives the event back when the sink's queue
    /// is full), after whatever already waits; returns what overflowed.
    pub(crate) fn offer(&mut self, event: SinkEvent, try_send: &mut impl FnMut(SinkEvent) -> Handoff) -> Vec<Overflow> {
        let mut overflows = Vec::new();
        if let Some(stream) = stream_of(&event) {
            if self.cut.contains(&stream) {
                if matches!(event, SinkEvent::End { .. } | SinkEvent::Broken { .. }) {
                    self.cut.remove(&stream);
                }
                return overflows;
            }
        }
        self.drain(try_send);
        if self.waiting.is_empty() {
            match self.hand(event, try_send) {
                Handoff::Taken => return overflows,
                Handoff::Full(event) => self.push(event, &mut overflows),
            }
        } else {
            self.push(event, &mut overflows);
        }
        self.drain(try_send);
        overflows
    }

    /// One event to the sink, remembering which streams it has seen open.
    fn hand(&mut self, event: SinkEvent, try_send: &mut impl FnMut(SinkEvent) -> Handoff) -> Handoff {
        let stream = stream_of(&event);
        let opens = matches!(event, SinkEvent::Open { .. });
        let closes = matches!(event, SinkEvent::End { .. } | SinkEvent::Broken { .. });
        if let Handoff::Full(event) = try_send(event) {
            return Handoff::Full(event);
        }
        if let Some(stream) = stream {
            if opens {
                self.handed_open.insert(stream);
            } else if closes {
                self.handed_open.remove(&stream);
            }
        }
        Handoff::Taken
    }

    /// Hands the sink what waits, oldest first, until its queue is full again.
    pub(crate) fn drain(&mut self, try_send: &mut impl FnMut(SinkEvent) -> Handoff) {
        while let Some(event) = self.waiting.pop_front() {
            let len = weight(&event);
            if let Handoff::Full(event) = self.hand(event, try_send) {
                self.waiting.push_front(event);
                return;
            }
            self.bytes -= len;
        }
    }

    fn push(&mut self, event: SinkEvent, overflows: &mut Vec<Overflow>) {
        let len = weight(&event);
        if self.bytes + len > self.limit {
            match &event {
                SinkEvent::Datagram(_) => {
                    while self.bytes + len > self.limit {
                        let Some(index) = self.waiting.iter().position(|e| matches!(e, SinkEvent::Datagram(_))) else {
                            // Only stream data waits: the new datagram is the one dropped.
                            overflows.push(Overflow::DatagramDropped);
                            return;
                        };
                        if let Some(old) = self.waiting.remove(index) {
                            self.bytes -= weight(&old);
                        }
                        overflows.push(Overflow::DatagramDropped);
                    }
                }
                SinkEvent::Data { stream, .. } => {
                    let told = self.cut_stream(*stream);
                    overflows.push(Overflow::StreamCut { stream: *stream, told });
                    return;
                }
                _ => {}
            }
        }
        self.bytes += len;
        self.waiting.push_back(event);
    }

    /// Drops what waits of `stream` and tells the sink, if it saw the stream open, that it is broken.
    fn cut_stream(&mut self, stream: u64) -> bool {
        let mut opened_here = false;
        let mut freed = 0;
        self.waiting.retain(|event| {
            if stream_of(event) != Some(stream) {
                return true;
            }
            opened_here |= matches!(event, SinkEvent::Open { .. });
            freed += weight(event);
            false
        });
        self.bytes -= freed;
        self.cut.insert(stream);
        let told = !opened_here || self.handed_open.contains(&stream);
        if told {
            self.handed_open.remove(&stream);
            self.waiting.push_back(SinkEvent::Broken { stream, reason: StreamAbort::SinkOverloaded });
        }
        told
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// A sink that takes `room` events, then refuses until given more room.
    struct Sink {
        room: usize,
        got: Vec<SinkEvent>,
    }

    impl Sink {
        fn try_send(&mut self) -> impl FnMut(SinkEvent) -> Handoff + '_ {
            |event| {
                if self.room == 0 {
                    return Handoff::Full(event);
                }
                self.room -= 1;
                self.got.push(event);
                Handoff::Taken
            }
        }
    }

    fn open(stream: u64) -> SinkEvent {
        SinkEvent::Open { stream, meta: diode_proto::StreamMeta::default(), session: 1, epoch: 1 }
    }

    fn data(stream: u64, len: usize) -> SinkEvent {
        SinkEvent::Data { stream, data: Bytes::from(vec![7u8; len]) }
    }

    fn end(stream: u64) -> SinkEvent {
        SinkEvent::End { stream, total_len: 0, hash: [0; 32] }
    }

    fn describe(events: &[SinkEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                SinkEvent::Open { stream, .. } => format!("open {stream}"),
                SinkEvent::Data { stream, data } => format!("data {stream} {}", data.len()),
                SinkEvent::End { stream, .. } => format!("end {stream}"),
                SinkEvent::Broken { stream, reason } => format!("broken {stream} {}", reason.label()),
                SinkEvent::Datagram(d) => format!("datagram {}", d.len()),
                _ => "other".into(),
            })
            .collect()
    }

    #[test]
    fn events_wait_in_order_while_the_sink_is_full_and_go_once_it_has_room() {
        let mut backlog = Backlog::new(1000);
        let mut sink = Sink { room: 1, got: Vec::new() };
        for event in [open(1), data(1, 100), data(1, 200), end(1)] {
            assert!(backlog.offer(event, &mut sink.try_send()).is_empty());
        }
        assert_eq!(describe(&sink.got), ["open 1"]);
        assert_eq!(backlog.bytes(), 300);
        sink.room = 10;
        backlog.drain(&mut sink.try_send());
        assert_eq!(describe(&sink.got), ["open 1", "data 1 100", "data 1 200", "end 1"]);
        assert_eq!(backlog.bytes(), 0);
    }

    #[test]
    fn a_stream_that_does_not_fit_is_cut_and_the_sink_is_told_only_if_it_saw_it_open() {
        let mut backlog = Backlog::new(350);
        let mut sink = Sink { room: 1, got: Vec::new() };
        let mut overflows = Vec::new();
        for event in [open(1), data(1, 200), open(2), data(2, 100), data(1, 200), data(1, 5), end(1), data(2, 10)] {
            overflows.extend(backlog.offer(event, &mut sink.try_send()));
        }
        // Stream 1 was handed open and is cut when its next 200 bytes do not fit; stream 2 goes on.
        assert_eq!(overflows, [Overflow::StreamCut { stream: 1, told: true }]);
        sink.room = 10;
        backlog.drain(&mut sink.try_send());
        assert_eq!(describe(&sink.got), ["open 1", "open 2", "data 2 100", "broken 1 sink_overloaded", "data 2 10"]);
        // A cut stream that never reached the sink leaves no trace there.
        let mut backlog = Backlog::new(100);
        let mut sink = Sink { room: 0, got: Vec::new() };
        let mut overflows = Vec::new();
        for event in [open(3), data(3, 80), data(3, 80), end(3)] {
            overflows.extend(backlog.offer(event, &mut sink.try_send()));
        }
        assert_eq!(overflows, [Overflow::StreamCut { stream: 3, told: false }]);
        sink.room = 10;
        backlog.drain(&mut sink.try_send());
        assert!(sink.got.is_empty(), "{:?}", describe(&sink.got));
    }

    #[test]
    fn past_the_bound_the_oldest_datagram_is_dropped() {
        let mut backlog = Backlog::new(300);
        let mut sink = Sink { room: 0, got: Vec::new() };
        let mut overflows = Vec::new();
        for len in [100, 101, 102, 103] {
            overflows.extend(backlog.offer(SinkEvent::Datagram(Bytes::from(vec![0u8; len])), &mut sink.try_send()));
        }
        assert_eq!(overflows, [Overflow::DatagramDropped, Overflow::DatagramDropped]);
        sink.room = 10;
        backlog.drain(&mut sink.try_send());
        assert_eq!(describe(&sink.got), ["datagram 102", "datagram 103"]);
    }
}
