//! The sending side as one sans-IO object: records in, datagrams out.
//!
//! It ties together one [`BlockBuilder`] per channel, the [`BlockEncoder`], the [`Interleaver`] and the
//! beacon. A daemon that encodes on a thread pool uses those parts directly; tests, benchmarks and
//! single-threaded senders use this.

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

pub struct Sender {
    config: SenderConfig,
    encoder: BlockEncoder,
    builders: BTreeMap<u16, BlockBuilder>,
    interleaver: Interleaver<EncodedBlock>,
    /// Blocks whose every symbol has been handed out, per channel (what beacons announce).
    blocks_sent: BTreeMap<u16, u64>,
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
            blocks_sent: BTreeMap::new(),
            next_channel: 0,
            config,
        }
    }

    pub fn config(&self) -> &SenderConfig {
        &self.config
    }

    /// The block builder of a channel, created on first use.
    pub fn channel(&mut self, id: u16) -> &mut BlockBuilder {
        let max_len = self.config.fec.max_block_len();
        self.blocks_sent.entry(id).or_insert(0);
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
        let (session, epoch, key_id) = (self.config.session, self.config.epoch, self.config.auth.send_key_id());
        let Some((block, esi)) = self.interleaver.next(drain) else {
            return false;
        };
        let Some(payload) = block.symbol(esi) else {
            return false;
        };
        let repr = Repr {
            kind: Kind::Symbol,
            session,
            epoch,
            channel: block.channel,
            block_seq: block.seq,
            esi,
            block_len: block.block_len,
            payload_len: block.symbol_size,
            key_id,
            stamped: self.config.stamped,
        };
        write_datagram(&repr, payload, &self.config.auth, out);
        if esi + 1 == block.symbol_count() {
            let (channel, seq) = (block.channel, block.seq);
            let sent = self.blocks_sent.entry(channel).or_insert(0);
            *sent = (*sent).max(seq + 1);
        }
        true
    }

    /// Writes a beacon datagram announcing the channels `channels` (all when `None`).
    pub fn beacon(&self, timestamp_us: u64, state: SenderState, out: &mut Vec<u8>) {
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
                .take(Beacon::max_channels(usize::from(self.config.fec.symbol_size)))
                .map(|(channel, blocks_sent)| ChannelProgress { channel: *channel, blocks_sent: *blocks_sent })
                .collect(),
        };
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

    fn control(&self, kind: Kind, channel: u16, body: &[u8], out: &mut Vec<u8>) {
        let config = &self.config;
        let repr = Repr::control(kind, channel, config.session, config.epoch, config.stamped, &config.auth, body);
        write_datagram(&repr, body, &self.config.auth, out);
    }
}
