//! The sending side as sans-IO objects: records in, datagrams out.
//!
//! [`Framer`] is what every datagram of a session carries: the symbol headers, the beacons (with the
//! per-channel progress they announce, rotating when more channels are live than fit in one) and the
//! control datagrams. BLUE's transmitter, which encodes on a thread pool and paces onto real fibers,
//! frames with it; so does [`Sender`], which ties one [`BlockBuilder`] per channel, the
//! [`BlockEncoder`], the [`Interleaver`] and a `Framer` together for tests, benchmarks and
//! single-threaded senders. The framing the protocol tests exercise is the one production sends.

use std::collections::BTreeMap;

use crate::auth::LinkAuth;
use crate::beacon::{Beacon, ChannelProgress, FiberMode, SenderState};
use crate::block::BlockBuilder;
use crate::fec::{BlockEncoder, EncodedBlock, FecParams};
use crate::header::{write_datagram, Kind, Repr};
use crate::interleave::Interleaver;
use crate::manifest::Manifest;

/// What a sender needs to know about itself.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// New per start, so a receiver tells a restarted sender from a continuing one: a start stamp
    /// ([`crate::header::stamped_session`]) when `stamped`, so that it can also tell a replay of an
    /// older session from a newer one.
    pub session: u64,
    /// The session id is a start stamp (the header's `FLAG_STAMPED`).
    pub stamped: bool,
    /// Raised by every takeover; receivers follow the highest.
    pub epoch: u32,
    pub fec: FecParams,
    pub auth: LinkAuth,
    pub fiber_mode: FiberMode,
    pub config_fingerprint: [u8; 16],
    pub beacon_interval_ms: u16,
}

/// The framing of one sender session: symbol headers, beacons and control datagrams, and the
/// per-channel progress beacons announce.
#[derive(Clone, Debug)]
pub struct Framer {
    config: SenderConfig,
    /// Blocks whose every symbol has been handed out, per channel (what beacons announce).
    blocks_sent: BTreeMap<u16, u64>,
    beacons: u64,
}

impl Framer {
    pub fn new(config: SenderConfig) -> Framer {
        Framer { config, blocks_sent: BTreeMap::new(), beacons: 0 }
    }

    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// Beacons announce `channel` from now on, before its first block is sent.
    pub fn announce(&mut self, channel: u16) {
        self.blocks_sent.entry(channel).or_insert(0);
    }

    /// Blocks sent per channel, as beacons announce them.
    pub fn blocks_sent(&self) -> &BTreeMap<u16, u64> {
        &self.blocks_sent
    }

    /// The header of symbol `esi` of `block`.
    pub fn symbol_repr(&self, block: &EncodedBlock, esi: u32) -> Repr {
        Repr {
            kind: Kind::Symbol,
            session: self.config.session,
            epoch: self.config.epoch,
            channel: block.channel,
            block_seq: block.seq,
            esi,
            block_len: block.block_len,
            payload_len: block.symbol_size,
            key_id: self.config.auth.send_key_id(),
            stamped: self.config.stamped,
        }
    }

    /// Symbol `esi` of `block` has been handed out; whether it was the block's last, so that the
    /// block now counts as sent.
    pub fn symbol_sent(&mut self, block: &EncodedBlock, esi: u32) -> bool {
        let last = esi + 1 == block.symbol_count();
        if last {
            let sent = self.blocks_sent.entry(block.channel).or_insert(0);
            *sent = (*sent).max(block.seq + 1);
        }
        last
    }

    /// Writes a beacon datagram. With more live channels than one beacon holds, successive beacons
    /// announce successive groups of them, so every channel's tail is announced in turn.
    pub fn beacon(&mut self, timestamp_us: u64, state: SenderState, out: &mut Vec<u8>) {
        let max_channels = Beacon::max_channels(usize::from(self.config.fec.symbol_size));
        let live = self.blocks_sent.len();
        let offset = if live == 0 { 0 } else { (self.beacons as usize).wrapping_mul(max_channels) % live };
        let beacon = Beacon {
            timestamp_us,
            state,
            fiber_mode: self.config.fiber_mode,
            fec: self.config.fec,
            interval_ms: self.config.beacon_interval_ms,
            config_fingerprint: self.config.config_fingerprint,
            channels: self
                .blocks_sent
                .iter()
                .cycle()
                .skip(offset)
                .take(live.min(max_channels))
                .map(|(channel, blocks_sent)| ChannelProgress { channel: *channel, blocks_sent: *blocks_sent })
                .collect(),
        };
        self.beacons += 1;
        let mut body = Vec::with_capacity(beacon.encoded_len());
        beacon.emit(&mut body);
        self.control(Kind::Beacon, 0, &body, out);
    }

    /// Writes a manifest datagram naming files of `channel` that have been sent (their end records
    /// are in blocks already handed out). The caller keeps it within one symbol's size.
    pub fn manifest(&self, channel: u16, manifest: &Manifest, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(manifest.encoded_len());
        manifest.emit(&mut body);
        self.control(Kind::Manifest, channel, &body, out);
    }

    /// Writes a control datagram (beacon, manifest) of this session.
    pub fn control(&self, kind: Kind, channel: u16, body: &[u8], out: &mut Vec<u8>) {
        let config = &self.config;
        let repr = Repr::control(kind, channel, config.session, config.epoch, config.stamped, &config.auth, body);
        write_datagram(&repr, body, &config.auth, out);
    }
}

pub struct Sender {
    framer: Framer,
    encoder: BlockEncoder,
    builders: BTreeMap<u16, BlockBuilder>,
    interleaver: Interleaver<EncodedBlock>,
    /// Channel to take the next sealed block from, so busy channels take turns.
    next_channel: u16,
}

impl Sender {
    /// `config.fec` must have passed [`FecParams::validate`].
    pub fn new(config: SenderConfig) -> Sender {
        Sender {
            encoder: BlockEncoder::new(config.fec),
            interleaver: Interleaver::new(config.fec.interleave_depth),
            builders: BTreeMap::new(),
            next_channel: 0,
            framer: Framer::new(config),
        }
    }

    pub fn config(&self) -> &SenderConfig {
        self.framer.config()
    }

    /// The block builder of a channel, created on first use.
    pub fn channel(&mut self, id: u16) -> &mut BlockBuilder {
        let max_len = self.framer.config().fec.max_block_len();
        self.framer.announce(id);
        self.builders.entry(id).or_insert_with(|| BlockBuilder::new(id, max_len))
    }

    /// Seals every partially filled block so it goes out now.
    pub fn flush(&mut self) {
        for builder in self.builders.values_mut() {
            builder.flush();
        }
    }

    /// True when nothing is waiting to be sent.
    pub fn is_idle(&self) -> bool {
        self.interleaver.is_empty() && self.builders.values().all(|b| b.sealed_len() == 0)
    }

    fn refill(&mut self) {
        while self.interleaver.has_room() {
            let next = self
                .builders
                .range(self.next_channel..)
                .chain(self.builders.range(..self.next_channel))
                .find(|(_, b)| b.sealed_len() > 0)
                .map(|(id, _)| *id);
            let Some(id) = next else { return };
            self.next_channel = id.wrapping_add(1);
            let Some(block) = self.builders.get_mut(&id).and_then(BlockBuilder::pop_sealed) else { return };
            let encoded = self.encoder.encode(block.channel, block.seq, block.content);
            if let Err(back) = self.interleaver.push(encoded) {
                // Cannot happen after has_room(); keep the block rather than lose it.
                let _ = self.interleaver.push(back);
                return;
            }
        }
    }

    /// Writes the next datagram into `out`. `drain`: the caller has nothing more to add for now, so
    /// blocks in the interleaver go out even while it is not full. Returns false when nothing is ready.
    pub fn poll_datagram(&mut self, drain: bool, out: &mut Vec<u8>) -> bool {
        self.refill();
        let Some((block, esi)) = self.interleaver.next(drain) else {
            return false;
        };
        let Some(payload) = block.symbol(esi) else {
            return false;
        };
        let repr = self.framer.symbol_repr(block, esi);
        write_datagram(&repr, payload, &self.framer.config().auth, out);
        self.framer.symbol_sent(block, esi);
        true
    }

    /// Writes a beacon datagram (see [`Framer::beacon`]).
    pub fn beacon(&mut self, timestamp_us: u64, state: SenderState, out: &mut Vec<u8>) {
        self.framer.beacon(timestamp_us, state, out);
    }

    /// Writes a manifest datagram (see [`Framer::manifest`]).
    pub fn manifest(&self, channel: u16, manifest: &Manifest, out: &mut Vec<u8>) {
        self.framer.manifest(channel, manifest, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::Packet;

    fn framer(symbol_size: u16) -> Framer {
        Framer::new(SenderConfig {
            session: 9,
            stamped: true,
            epoch: 3,
            fec: FecParams { symbol_size, max_block_symbols: 1100, repair_basis_points: 1000, interleave_depth: 1 },
            auth: LinkAuth::none(),
            fiber_mode: FiberMode::Mirror,
            config_fingerprint: [0; 16],
            beacon_interval_ms: 100,
        })
    }

    fn announced(framer: &mut Framer) -> Vec<u16> {
        let mut datagram = Vec::new();
        framer.beacon(0, SenderState::Active, &mut datagram);
        let packet = Packet::new_checked(&datagram[..]).expect("a well-formed datagram");
        let beacon = Beacon::parse(packet.payload()).expect("a well-formed beacon");
        beacon.channels.iter().map(|c| c.channel).collect()
    }

    #[test]
    fn beacons_take_turns_when_more_channels_are_live_than_one_holds() {
        // A 64-byte symbol holds two channel entries: five channels need three beacons.
        let mut framer = framer(64);
        assert_eq!(Beacon::max_channels(64), 2);
        for channel in 1..=5 {
            framer.announce(channel);
        }
        let seen: Vec<Vec<u16>> = (0..3).map(|_| announced(&mut framer)).collect();
        assert_eq!(seen, [vec![1, 2], vec![3, 4], vec![5, 1]]);
    }

    #[test]
    fn a_block_counts_as_sent_after_its_last_symbol() {
        let mut framer = framer(64);
        let block = BlockEncoder::new(framer.config().fec).encode(4, 0, vec![7u8; 100]);
        let last = block.symbol_count() - 1;
        for esi in 0..last {
            assert!(!framer.symbol_sent(&block, esi));
        }
        assert_eq!(framer.blocks_sent().get(&4), None);
        assert!(framer.symbol_sent(&block, last));
        assert_eq!(framer.blocks_sent()[&4], 1);
        let repr = framer.symbol_repr(&block, last);
        assert_eq!((repr.session, repr.epoch, repr.channel, repr.esi, repr.stamped), (9, 3, 4, last, true));
    }
}
