//! A deterministic link between a [`Sender`] and a [`Receiver`]: the test decides which datagram is
//! lost, duplicated, reordered or corrupted, and time is a fake clock.

#![allow(dead_code, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use diode_proto::header::{Kind, Packet, Repr};
use diode_proto::{
    BreakReason, Event, FecParams, FiberMode, LinkAuth, Receiver, ReceiverConfig, Sender, SenderConfig, SenderState,
};

pub fn fec(repair_basis_points: u16, interleave_depth: u16) -> FecParams {
    FecParams { symbol_size: 1024, max_block_symbols: 72, repair_basis_points, interleave_depth }
}

pub fn sender(session: u64, epoch: u32, fec: FecParams) -> Sender {
    sender_with(session, false, epoch, fec)
}

/// A sender as blue-tx makes them: its session id is stamped with its start time.
pub fn stamped_sender(start_unix_ms: u64, epoch: u32, fec: FecParams) -> Sender {
    sender_with(diode_proto::header::stamped_session(start_unix_ms, 7), true, epoch, fec)
}

fn sender_with(session: u64, stamped: bool, epoch: u32, fec: FecParams) -> Sender {
    Sender::new(SenderConfig {
        session,
        stamped,
        epoch,
        fec,
        auth: LinkAuth::none(),
        fiber_mode: FiberMode::Mirror,
        config_fingerprint: [0xAA; 16],
        beacon_interval_ms: 100,
    })
}

/// Every datagram a sender emits until idle (draining at the end).
pub fn drain(sender: &mut Sender) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    sender.flush();
    while sender.poll_datagram(true, &mut buf) {
        out.push(buf.clone());
    }
    out
}

pub fn header(datagram: &[u8]) -> Repr {
    let packet = Packet::new_checked(datagram).unwrap();
    Repr::parse(&packet, &LinkAuth::none()).unwrap()
}

pub fn is_symbol(datagram: &[u8]) -> bool {
    header(datagram).kind == Kind::Symbol
}

/// What the receiver delivered, per (channel, stream).
#[derive(Default, Debug)]
pub struct Delivered {
    pub bytes: BTreeMap<(u16, u64), Vec<u8>>,
    pub names: HashMap<(u16, u64), String>,
    pub ended: BTreeMap<(u16, u64), [u8; 32]>,
    pub broken: BTreeMap<(u16, u64), BreakReason>,
    pub datagrams: BTreeMap<u16, Vec<Vec<u8>>>,
    pub events: Vec<Event>,
}

impl Delivered {
    pub fn absorb(&mut self, receiver: &mut Receiver) {
        while let Some(event) = receiver.poll_event() {
            match &event {
                Event::StreamOpened { channel, stream, meta } => {
                    self.names.insert((*channel, *stream), meta.name.clone());
                    self.bytes.entry((*channel, *stream)).or_default();
                }
                Event::StreamData { channel, stream, offset, data } => {
                    let buf = self.bytes.entry((*channel, *stream)).or_default();
                    assert_eq!(*offset as usize, buf.len(), "data delivered out of order");
                    buf.extend_from_slice(data);
                }
                Event::StreamEnded { channel, stream, hash, total_len } => {
                    let buf = &self.bytes[&(*channel, *stream)];
                    assert_eq!(buf.len() as u64, *total_len);
                    assert_eq!(blake3::hash(buf).as_bytes(), hash, "ended with a hash that does not match its bytes");
                    assert!(!self.broken.contains_key(&(*channel, *stream)));
                    self.ended.insert((*channel, *stream), *hash);
                }
                Event::StreamBroken { channel, stream, reason } => {
                    assert!(!self.ended.contains_key(&(*channel, *stream)), "broken after ended");
                    self.broken.insert((*channel, *stream), *reason);
                }
                Event::Datagram { channel, payload } => {
                    self.datagrams.entry(*channel).or_default().push(payload.to_vec())
                }
                _ => {}
            }
            self.events.push(event);
        }
    }

    pub fn ended_intact(&self, channel: u16, stream: u64, expected: &[u8]) -> bool {
        self.ended.contains_key(&(channel, stream)) && self.bytes.get(&(channel, stream)).is_some_and(|b| b == expected)
    }

    pub fn lost_blocks(&self) -> u64 {
        self.events
            .iter()
            .map(|e| match e {
                Event::BlocksLost { first, last, .. } => last - first + 1,
                _ => 0,
            })
            .sum()
    }
}

/// A receiver on a fake clock.
pub struct Rig {
    pub receiver: Receiver,
    pub now: Instant,
    pub delivered: Delivered,
}

impl Rig {
    pub fn new(config: ReceiverConfig) -> Rig {
        Rig { receiver: Receiver::new(config), now: Instant::now(), delivered: Delivered::default() }
    }

    pub fn config() -> ReceiverConfig {
        ReceiverConfig {
            block_timeout: Duration::from_millis(200),
            stream_suspect_timeout: Duration::from_secs(2),
            ..ReceiverConfig::default()
        }
    }

    /// Feeds datagrams one per 10 µs on `fiber`.
    pub fn feed<'a>(&mut self, fiber: u8, datagrams: impl IntoIterator<Item = &'a Vec<u8>>) {
        for datagram in datagrams {
            self.now += Duration::from_micros(10);
            let _ = self.receiver.handle_datagram(self.now, fiber, datagram);
            self.delivered.absorb(&mut self.receiver);
        }
    }

    /// Advances the clock by `by`, firing every timeout on the way.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        while let Some(deadline) = self.receiver.poll_timeout().filter(|d| *d <= end) {
            self.now = self.now.max(deadline);
            self.receiver.handle_timeout(self.now);
            self.delivered.absorb(&mut self.receiver);
        }
        self.now = end;
        self.receiver.handle_timeout(self.now);
        self.delivered.absorb(&mut self.receiver);
    }

    pub fn beacon(&mut self, sender: &mut Sender) {
        let mut buf = Vec::new();
        sender.beacon(0, SenderState::Active, &mut buf);
        self.feed(0, [&buf]);
    }
}

/// Deterministic pseudo-random bytes.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}
