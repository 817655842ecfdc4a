//! The receiver: datagrams in, verified blocks and stream events out. Sans-IO.
//!
//! Drive it with [`Receiver::handle_datagram`] for every datagram from any fiber and
//! [`Receiver::handle_timeout`] when [`Receiver::poll_timeout`] says; drain [`Receiver::poll_event`] after
//! each call. Symbols are keyed by (channel, block sequence) whatever fiber they came on, so `stripe`
//! mode decodes both fibers jointly and `mirror` duplicates are dropped at the cost of a bitmap lookup.
//!
//! Memory is bounded by configuration: at most `max_blocks_in_flight` blocks of at most
//! `max_block_len` bytes (plus [`crate::fec::MAX_EXTRA_SYMBOLS`] symbols each), at most `max_channels`
//! channels with `max_open_streams` streams each.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::auth::LinkAuth;
use crate::beacon::Beacon;
use crate::error::{DropCounters, DropReason};
use crate::event::{Alarm, BreakReason, Event, LossCounts, LossReason};
use crate::fec::{Completion, SymbolCollector};
use crate::header::{Kind, Packet, Repr};
use crate::manifest::Manifest;
use crate::stream::{StreamLimits, StreamTable};

/// Fibers the receiver keeps statistics for (a fiber index beyond this counts as the last one).
pub const MAX_FIBERS: usize = 4;

/// Receiver limits and timers. The defaults suit a 10 Gbit/s link with 1 MiB blocks.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    pub auth: LinkAuth,
    /// Largest block content accepted, in bytes.
    pub max_block_len: u32,
    /// Blocks held (collecting symbols, or decoded and waiting for an earlier block) over all channels.
    pub max_blocks_in_flight: usize,
    /// Bytes those blocks may hold together: a collector reserves its K symbols and the extra ones
    /// it may keep. When a new block would not fit, the receiving channel gives up its incomplete
    /// head block (`MemoryLimit`) so the blocks behind it drain; if that frees nothing, the symbol is
    /// dropped (`in_flight_limit`). Bounds memory whatever the block size and the sender's rate.
    pub max_bytes_in_flight: usize,
    /// How far ahead of the next block to deliver a channel may run before older blocks are given up.
    pub channel_window: u64,
    pub max_channels: usize,
    /// A block not complete this long after its first symbol (or after it was known missing) is lost.
    pub block_timeout: Duration,
    /// How long an open stream may stay silent after a block loss before it is broken.
    pub stream_suspect_timeout: Duration,
    pub max_open_streams: usize,
    /// Largest stream (announced or received), in bytes.
    pub max_stream_len: u64,
    /// A channel first seen at a sequence this low is assumed to have started at 0 (its first blocks
    /// may still be in flight); first seen later, the receiver joined mid-session and starts there.
    pub join_slack: u64,
    /// A session silent this long no longer holds off a sender with a lower epoch: a sender that
    /// took over from a dead one whose epoch was higher is followed once the dead one is quiet.
    pub session_silence: Duration,
}

impl Default for ReceiverConfig {
    fn default() -> ReceiverConfig {
        ReceiverConfig {
            auth: LinkAuth::none(),
            max_block_len: 8 << 20,
            max_blocks_in_flight: 256,
            max_bytes_in_flight: 32 << 20,
            channel_window: 128,
            max_channels: 1024,
            block_timeout: Duration::from_millis(500),
            stream_suspect_timeout: Duration::from_secs(15),
            max_open_streams: 1024,
            max_stream_len: u64::MAX,
            join_slack: 64,
            session_silence: Duration::from_secs(1),
        }
    }
}

/// The body of a control datagram, parsed before the session check.
enum Control {
    Beacon(Beacon),
    Manifest(Manifest),
    None,
}

/// Per-fiber counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FiberStats {
    pub datagrams: u64,
    pub bytes: u64,
    /// Datagrams dropped for damage or attack (not mirror duplicates).
    pub harmful_drops: u64,
    pub last_seen: Option<Instant>,
}

/// Receiver counters, for metrics.
#[derive(Clone, Debug, Default)]
pub struct ReceiverStats {
    pub drops: DropCounters,
    pub fibers: [FiberStats; MAX_FIBERS],
    /// Blocks rebuilt from source symbols alone.
    pub blocks_without_decoder: u64,
    /// Blocks that needed the RaptorQ decoder.
    pub blocks_decoded: u64,
    pub blocks_lost: u64,
    /// The same blocks, by cause.
    pub blocks_lost_by: LossCounts,
    /// Source symbols of completed blocks.
    pub source_symbols: u64,
    /// Of those, how many were missing and rebuilt from repair symbols (the FEC headroom used).
    pub source_symbols_missing: u64,
    /// Completed blocks that needed more than 90 % of their repair symbols (the sign that repair is too
    /// low: a little more loss and they would have been lost). Counted once beacons told the repair.
    pub blocks_near_repair_limit: u64,
    pub sessions: u64,
}

enum Slot {
    /// `version`: the protocol version of the symbols (it decides how the block is sealed).
    Collecting {
        collector: SymbolCollector,
        first_seen: Instant,
        version: u8,
    },
    Ready(Bytes),
    Failed(LossReason),
}

impl Slot {
    /// The bytes a slot accounts for: a collector its reservation, a verified block its body.
    fn held_bytes(&self) -> usize {
        match self {
            Slot::Collecting { collector, .. } => collector.max_memory(),
            Slot::Ready(body) => body.len(),
            Slot::Failed(_) => 0,
        }
    }
}

struct Channel {
    id: u16,
    /// Next block to hand to the stream table; everything before it is delivered or lost.
    next_seq: u64,
    blocks: BTreeMap<u64, Slot>,
    /// Blocks the sender says it has sent (from beacons).
    announced: u64,
    /// When the missing head block (no symbol yet, but later blocks exist) was first noticed.
    head_missing_since: Option<Instant>,
    streams: StreamTable,
    /// The first block this receiver followed (above 0 when it joined mid-session): a manifest
    /// entry for a file that ended before it is none of this receiver's business.
    joined_at: u64,
}

/// A replaced session: never adopted again.
#[derive(Clone, Copy)]
struct Retired {
    session: u64,
    epoch: u32,
    at: Instant,
    alarmed: bool,
}

/// Datagrams of a session that may not displace the live one (a replay of a recorded older session,
/// or a sender that should have stopped), most recent first: what the stale-session alarm shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleSender {
    pub session: u64,
    pub epoch: u32,
    /// When the last of its datagrams was refused.
    pub last_refused: Instant,
}

/// How long the stale-session alarm stays raised after the last refused datagram.
pub const STALE_ALARM_HOLD: Duration = Duration::from_secs(30);

/// How long a replaced sender may still be heard before it is an alarm: a node handing over flushes its
/// last datagrams while the next one starts.
const RETIRED_GRACE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy)]
struct Current {
    session: u64,
    epoch: u32,
    stamped: bool,
    last_heard: Instant,
    /// When it was adopted (a replaced sender is not yet an alarm during the hand-over).
    since: Instant,
}

/// Whether a session that is not the live one may replace it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Succession {
    Replace,
    /// An older epoch while the live session is still heard.
    StaleEpoch,
    /// Not newer than the live session by its start stamp (a replay, or a sender that lost).
    NotNewer,
}

/// The ordering rule of sessions. A higher epoch always wins: takeovers raise it. At the same epoch a
/// stamped session replaces only an older stamp, and a sender without stamps (an older release) may
/// not displace a stamped one (it could be a recording). A lower epoch is followed only once the live
/// session is silent, and then, between stamped sessions, only a later start.
fn succession(current: &Current, candidate: &Repr, silent: bool) -> Succession {
    use std::cmp::Ordering::{Equal, Greater, Less};
    // The stamp is the id's top bits, so comparing ids compares start times (ties by the random bits).
    let newer_stamp = candidate.session > current.session;
    match candidate.epoch.cmp(&current.epoch) {
        Greater => Succession::Replace,
        Less if !silent => Succession::StaleEpoch,
        Less | Equal => match (current.stamped, candidate.stamped) {
            (true, true) if newer_stamp => Succession::Replace,
            (true, _) => Succession::NotNewer,
            (false, _) => Succession::Replace,
        },
    }
}

/// What every channel shares: limits, counters, the event queue and the in-flight count. Kept apart
/// from the channel map so a channel can be borrowed mutably beside it.
struct Shared {
    config: ReceiverConfig,
    limits: StreamLimits,
    stats: ReceiverStats,
    events: VecDeque<Event>,
    in_flight: usize,
    /// Bytes the held blocks account for (see [`Slot::held_bytes`]).
    bytes_in_flight: usize,
    /// Repair symbols per block, as the latest beacon announced.
    repair_symbols: Option<u32>,
}

/// The receiving protocol state machine.
pub struct Receiver {
    shared: Shared,
    current: Option<Current>,
    /// Sessions replaced at the current or an older epoch, and whether their return was already alarmed.
    retired: VecDeque<Retired>,
    stale: Option<StaleSender>,
    channels: BTreeMap<u16, Channel>,
}

const RETIRED_SESSIONS: usize = 16;

impl Receiver {
    pub fn new(config: ReceiverConfig) -> Receiver {
        let limits = StreamLimits {
            max_open: config.max_open_streams,
            max_stream_len: config.max_stream_len,
            suspect_timeout: config.stream_suspect_timeout,
        };
        Receiver {
            shared: Shared {
                config,
                limits,
                stats: ReceiverStats::default(),
                events: VecDeque::new(),
                in_flight: 0,
                bytes_in_flight: 0,
                repair_symbols: None,
            },
            current: None,
            retired: VecDeque::new(),
            stale: None,
            channels: BTreeMap::new(),
        }
    }

    pub fn stats(&self) -> &ReceiverStats {
        &self.shared.stats
    }

    pub fn config(&self) -> &ReceiverConfig {
        &self.shared.config
    }

    /// The live (session, epoch), if any.
    pub fn session(&self) -> Option<(u64, u32)> {
        self.current.map(|c| (c.session, c.epoch))
    }

    /// Blocks currently held.
    pub fn blocks_in_flight(&self) -> usize {
        self.shared.in_flight
    }

    /// Bytes the held blocks account for, at most [`ReceiverConfig::max_bytes_in_flight`].
    pub fn bytes_in_flight(&self) -> usize {
        self.shared.bytes_in_flight
    }

    pub fn open_streams(&self) -> usize {
        self.channels.values().map(|c| c.streams.open_count()).sum()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.shared.events.pop_front()
    }

    /// Handles one datagram received on fiber `fiber` at `now`. Returns why it was dropped, if it was
    /// (the drop is already counted).
    pub fn handle_datagram(&mut self, now: Instant, fiber: u8, bytes: &[u8]) -> Result<(), DropReason> {
        let fiber_index = usize::from(fiber).min(MAX_FIBERS - 1);
        let fiber_stats = &mut self.shared.stats.fibers[fiber_index];
        fiber_stats.datagrams += 1;
        fiber_stats.bytes += bytes.len() as u64;
        fiber_stats.last_seen = Some(now);
        let result = self.handle_inner(now, fiber, bytes);
        if let Err(reason) = result {
            let stats = &mut self.shared.stats;
            stats.drops.add(reason, 1);
            if !reason.is_benign() {
                stats.fibers[fiber_index].harmful_drops += 1;
            }
        }
        result
    }

    fn handle_inner(&mut self, now: Instant, fiber: u8, bytes: &[u8]) -> Result<(), DropReason> {
        let packet = Packet::new_checked(bytes)?;
        let repr = Repr::parse(&packet, &self.shared.config.auth)?;
        // Parse control bodies before they can change the session: a malformed datagram changes nothing.
        let control = match repr.kind {
            Kind::Beacon => Control::Beacon(Beacon::parse(packet.payload()).map_err(|_| DropReason::BadBeacon)?),
            Kind::Manifest => {
                Control::Manifest(Manifest::parse(packet.payload()).map_err(|_| DropReason::BadManifest)?)
            }
            Kind::Symbol => Control::None,
        };
        self.check_session(now, &repr)?;
        match control {
            Control::Beacon(beacon) => {
                self.handle_beacon(now, &beacon);
                self.shared.events.push_back(Event::BeaconReceived { fiber, beacon });
                Ok(())
            }
            Control::Manifest(manifest) => {
                self.handle_manifest(repr.channel, manifest);
                Ok(())
            }
            Control::None => self.handle_symbol(now, &repr, packet.version(), packet.payload()),
        }
    }

    /// Reports each file of the manifest whose every block this receiver has passed (delivered or
    /// given up) without ever hearing of its stream. A file that ended before this receiver joined,
    /// or whose end block is still to come, is left for a later repeat of the manifest.
    fn handle_manifest(&mut self, channel: u16, manifest: Manifest) {
        let Some(state) = self.channels.get_mut(&channel) else { return };
        for entry in manifest.entries {
            let passed = entry.end_seq < state.next_seq && entry.end_seq >= state.joined_at;
            if passed && state.streams.first_news_of(entry.stream) {
                self.shared.events.push_back(Event::StreamNeverArrived { channel, entry });
            }
        }
    }

    fn check_session(&mut self, now: Instant, repr: &Repr) -> Result<(), DropReason> {
        if let Some(current) = self.current.as_mut() {
            if current.session == repr.session && current.epoch == repr.epoch {
                current.last_heard = now;
                return Ok(());
            }
        }
        if let Some(current) = self.current {
            let silent = now.saturating_duration_since(current.last_heard) >= self.shared.config.session_silence;
            if let Some(entry) = self.retired.iter_mut().find(|r| r.session == repr.session && r.epoch == repr.epoch) {
                let after_grace = now.saturating_duration_since(entry.at) > RETIRED_GRACE;
                if !entry.alarmed && after_grace {
                    entry.alarmed = true;
                    let alarm = Alarm::RetiredSessionActive { session: repr.session, epoch: repr.epoch };
                    self.shared.events.push_back(Event::Alarm(alarm));
                }
                if after_grace {
                    // Its own alarm event was raised above: only the held alarm is renewed.
                    self.stale = Some(StaleSender { session: repr.session, epoch: repr.epoch, last_refused: now });
                }
                return Err(DropReason::RetiredSession);
            }
            match succession(&current, repr, silent) {
                Succession::Replace => {}
                Succession::StaleEpoch => {
                    if now.saturating_duration_since(current.since) > RETIRED_GRACE {
                        self.note_stale(now, repr);
                    }
                    return Err(DropReason::StaleEpoch);
                }
                Succession::NotNewer => {
                    self.note_stale(now, repr);
                    return Err(DropReason::StaleSession);
                }
            }
            self.retire_current(now, current);
        }
        self.current = Some(Current {
            session: repr.session,
            epoch: repr.epoch,
            stamped: repr.stamped,
            last_heard: now,
            since: now,
        });
        self.shared.stats.sessions += 1;
        let replaced = self.retired.back().map(|r| (r.session, r.epoch)).filter(|_| self.shared.stats.sessions > 1);
        self.shared.events.push_back(Event::SessionStarted { session: repr.session, epoch: repr.epoch, replaced });
        Ok(())
    }

    /// Records a refused session for the alarm, raising the alarm event once per session.
    fn note_stale(&mut self, now: Instant, repr: &Repr) {
        let new_sender = self.stale.is_none_or(|s| s.session != repr.session || s.epoch != repr.epoch);
        if new_sender {
            let alarm = Alarm::StaleSessionRefused { session: repr.session, epoch: repr.epoch };
            self.shared.events.push_back(Event::Alarm(alarm));
        }
        self.stale = Some(StaleSender { session: repr.session, epoch: repr.epoch, last_refused: now });
    }

    /// The sender whose datagrams were last refused as stale, while the alarm holds
    /// ([`STALE_ALARM_HOLD`] after the last one).
    pub fn stale_sender(&self, now: Instant) -> Option<StaleSender> {
        self.stale.filter(|s| now.saturating_duration_since(s.last_refused) < STALE_ALARM_HOLD)
    }

    /// Delivers what the old session completed, reports the rest lost and breaks its open streams.
    fn retire_current(&mut self, now: Instant, current: Current) {
        let channels = std::mem::take(&mut self.channels);
        for (_, mut channel) in channels {
            let end = channel.blocks.keys().next_back().map_or(0, |last| last + 1).max(channel.announced);
            self.shared.advance(&mut channel, end, LossReason::SessionReplaced, now);
            channel.streams.break_all(BreakReason::SessionReplaced, &mut self.shared.events);
        }
        self.shared.in_flight = 0;
        self.shared.bytes_in_flight = 0;
        self.retired.push_back(Retired { session: current.session, epoch: current.epoch, at: now, alarmed: false });
        if self.retired.len() > RETIRED_SESSIONS {
            self.retired.pop_front();
        }
    }

    fn channel_entry(&mut self, id: u16, first_seq: u64) -> Result<&mut Channel, DropReason> {
        if !self.channels.contains_key(&id) && self.channels.len() >= self.shared.config.max_channels {
            return Err(DropReason::ChannelLimit);
        }
        let slack = self.shared.config.join_slack;
        let joined_at = if first_seq <= slack { 0 } else { first_seq };
        Ok(self.channels.entry(id).or_insert_with(|| Channel {
            id,
            next_seq: joined_at,
            joined_at,
            blocks: BTreeMap::new(),
            announced: 0,
            head_missing_since: None,
            streams: StreamTable::new(id),
        }))
    }

    fn handle_beacon(&mut self, now: Instant, beacon: &Beacon) {
        self.shared.repair_symbols = Some(beacon.fec.repair_symbols());
        for progress in &beacon.channels {
            // A beacon that cannot get a channel slot is still useful for the channels that have one.
            if self.channel_entry(progress.channel, progress.blocks_sent).is_err() {
                continue;
            }
            let Some(channel) = self.channels.get_mut(&progress.channel) else { continue };
            channel.announced = channel.announced.max(progress.blocks_sent);
            let newest = channel.announced.saturating_sub(1);
            self.shared.enforce_window(channel, newest, now);
            self.shared.deliver_ready(channel, now);
        }
    }

    fn handle_symbol(&mut self, now: Instant, repr: &Repr, version: u8, payload: &[u8]) -> Result<(), DropReason> {
        if repr.block_len > self.shared.config.max_block_len {
            return Err(DropReason::BlockTooLarge);
        }
        let seq = repr.block_seq;
        self.channel_entry(repr.channel, seq)?;
        let shared = &mut self.shared;
        let channel = self.channels.get_mut(&repr.channel).ok_or(DropReason::ChannelLimit)?;
        if seq < channel.next_seq {
            return Err(DropReason::BlockDone);
        }
        shared.enforce_window(channel, seq, now);
        let slot = match channel.blocks.get_mut(&seq) {
            Some(slot) => slot,
            None => {
                if shared.in_flight >= shared.config.max_blocks_in_flight {
                    return Err(DropReason::InFlightLimit);
                }
                let reserved = SymbolCollector::max_memory_for(repr.payload_len, repr.block_len);
                if !shared.make_room(channel, seq, reserved, now) {
                    return Err(DropReason::InFlightLimit);
                }
                shared.in_flight += 1;
                shared.bytes_in_flight += reserved;
                let collector = SymbolCollector::new(repr.payload_len, repr.block_len);
                channel.blocks.entry(seq).or_insert(Slot::Collecting { collector, first_seen: now, version })
            }
        };
        let Slot::Collecting { collector, version: block_version, .. } = slot else {
            return Err(DropReason::BlockDone);
        };
        if !collector.matches(repr.payload_len, repr.block_len) || *block_version != version {
            return Err(DropReason::InconsistentBlock);
        }
        collector.insert(repr.esi, payload)?;
        if let Some((content, completion)) = collector.try_complete() {
            let verified = shared.verify(content, completion, version);
            shared.replace(slot, verified);
        }
        shared.deliver_ready(channel, now);
        Ok(())
    }

    /// Gives up blocks whose deadline passed and breaks suspect streams that stayed silent.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timeout = self.shared.config.block_timeout;
        let shared = &mut self.shared;
        for channel in self.channels.values_mut() {
            loop {
                let head = channel.next_seq;
                match channel.blocks.get_mut(&head) {
                    Some(slot @ Slot::Collecting { .. }) => {
                        let Slot::Collecting { collector, first_seen, .. } = &*slot else { break };
                        if *first_seen + timeout > now {
                            break;
                        }
                        let reason =
                            LossReason::Timeout { received: collector.received(), needed: collector.source_symbols() };
                        shared.replace(slot, Slot::Failed(reason));
                        shared.deliver_ready(channel, now);
                    }
                    Some(_) => break,
                    None => {
                        let Some(since) = channel.head_missing_since else { break };
                        if since + timeout > now {
                            break;
                        }
                        let end = channel.blocks.keys().next().copied().unwrap_or(channel.announced);
                        if end <= head {
                            channel.head_missing_since = None;
                            break;
                        }
                        shared.advance(channel, end, LossReason::NeverSeen, now);
                        shared.deliver_ready(channel, now);
                    }
                }
            }
            channel.streams.handle_timeout(now, &mut shared.events);
        }
    }

    /// When [`Receiver::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timeout = self.shared.config.block_timeout;
        self.channels
            .values()
            .flat_map(|channel| {
                let head = match channel.blocks.get(&channel.next_seq) {
                    Some(Slot::Collecting { first_seen, .. }) => Some(*first_seen + timeout),
                    Some(_) => None,
                    None => channel.head_missing_since.map(|since| since + timeout),
                };
                head.into_iter().chain(channel.streams.next_deadline())
            })
            .min()
    }
}

impl Shared {
    fn verify(&mut self, content: Vec<u8>, completion: Completion, version: u8) -> Slot {
        let stats = &mut self.stats;
        if completion.decoded {
            stats.blocks_decoded += 1;
        } else {
            stats.blocks_without_decoder += 1;
        }
        stats.source_symbols += u64::from(completion.source_symbols);
        let missing = completion.source_symbols - completion.source_received;
        stats.source_symbols_missing += u64::from(missing);
        if self.repair_symbols.is_some_and(|repair| u64::from(missing) * 10 > u64::from(repair) * 9) {
            stats.blocks_near_repair_limit += 1;
        }
        let Some(body) = crate::block::open_version(&content, version) else {
            return Slot::Failed(LossReason::HashMismatch);
        };
        let body_len = body.len();
        let mut content = Bytes::from(content);
        content.truncate(body_len);
        Slot::Ready(content)
    }

    /// Moves a channel's window so that `newest` fits, giving up blocks that fall out of it.
    fn enforce_window(&mut self, channel: &mut Channel, newest: u64, now: Instant) {
        let window = self.config.channel_window.max(1);
        if newest >= channel.next_seq + window {
            self.advance(channel, newest + 1 - window, LossReason::WindowOverrun, now);
        }
    }

    /// Puts `new` in place of `slot`, keeping the byte count true.
    fn replace(&mut self, slot: &mut Slot, new: Slot) {
        self.bytes_in_flight = self.bytes_in_flight - slot.held_bytes() + new.held_bytes();
        *slot = new;
    }

    /// Whether `bytes` more fit the byte budget, after giving up the channel's incomplete head block(s)
    /// if that is what stands in the way. Only a head that later blocks wait behind is given up, and
    /// never the block `seq` being started: an incomplete head block whose successors filled the budget
    /// is lost for all practical purposes (its symbols were interleaved with theirs), and waiting for
    /// its deadline would only hold more memory.
    fn make_room(&mut self, channel: &mut Channel, seq: u64, bytes: usize, now: Instant) -> bool {
        let budget = self.config.max_bytes_in_flight;
        while self.bytes_in_flight + bytes > budget {
            let head = channel.next_seq;
            let head_is_stuck = head < seq
                && !matches!(channel.blocks.get(&head), Some(Slot::Ready(_) | Slot::Failed(_)))
                && channel.blocks.range(head + 1..).next().is_some();
            if !head_is_stuck {
                return false;
            }
            self.advance(channel, head + 1, LossReason::MemoryLimit, now);
            self.deliver_ready(channel, now);
        }
        true
    }

    /// Hands the head block to the stream table (ready) or reports it lost (failed), and moves on.
    fn pop_head(&mut self, channel: &mut Channel, slot: Slot, lost_reason: LossReason, now: Instant) {
        let head = channel.next_seq;
        self.in_flight -= 1;
        self.bytes_in_flight -= slot.held_bytes();
        channel.next_seq += 1;
        match slot {
            // A malformed body already broke the channel's streams; the error needs nothing more.
            Slot::Ready(body) => {
                let _ = channel.streams.apply_block(head, &body, &self.limits, &mut self.events);
            }
            Slot::Failed(reason) => self.lose(channel, head, head, reason, now),
            Slot::Collecting { .. } => self.lose(channel, head, head, lost_reason, now),
        }
    }

    /// Delivers every block at the head of the channel that is ready or failed.
    fn deliver_ready(&mut self, channel: &mut Channel, now: Instant) {
        while let Some(entry) = channel.blocks.first_entry() {
            if *entry.key() != channel.next_seq || matches!(entry.get(), Slot::Collecting { .. }) {
                break;
            }
            let slot = entry.remove();
            self.pop_head(channel, slot, LossReason::NeverSeen, now);
        }
        let head_missing = !channel.blocks.contains_key(&channel.next_seq)
            && (!channel.blocks.is_empty() || channel.announced > channel.next_seq);
        if !head_missing {
            channel.head_missing_since = None;
        } else if channel.head_missing_since.is_none() {
            channel.head_missing_since = Some(now);
        }
    }

    fn lose(&mut self, channel: &mut Channel, first: u64, last: u64, reason: LossReason, now: Instant) {
        self.stats.blocks_lost += last - first + 1;
        self.stats.blocks_lost_by.add(reason, last - first + 1);
        self.events.push_back(Event::BlocksLost { channel: channel.id, first, last, reason });
        channel.streams.on_blocks_lost(first, now, &self.limits);
    }

    /// Advances a channel's head to `end`, delivering ready blocks and losing everything else before it.
    fn advance(&mut self, channel: &mut Channel, end: u64, reason: LossReason, now: Instant) {
        while channel.next_seq < end {
            let head = channel.next_seq;
            match channel.blocks.first_key_value().map(|(seq, _)| *seq) {
                Some(first) if first == head => {
                    let Some(slot) = channel.blocks.remove(&head) else { break };
                    self.pop_head(channel, slot, reason, now);
                }
                next => {
                    // A run of blocks with no symbol at all: one event for the whole run.
                    let run_end = next.map_or(end, |n| n.min(end));
                    let why = if reason == LossReason::SessionReplaced { reason } else { LossReason::NeverSeen };
                    self.lose(channel, head, run_end - 1, why, now);
                    channel.next_seq = run_end;
                }
            }
        }
        channel.head_missing_since = None;
    }
}
