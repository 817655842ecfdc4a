//! Which decoded events reach a sink: the delivery gate as a sans-IO state machine, in the shape of
//! `ha-carp`'s `Carp` (`handle_*(…)` in, [`DeliveryGate::poll_action`] out; no channels, no
//! threads). The daemon feeds it the receiver's events and the election's role, and sends what it
//! is told to. No decision here depends on time, so unlike `Carp` it takes no clock.
//!
//! The rules:
//! - A node delivers only while active. A standby counts what it skipped.
//! - A TCP or UDP stream is delivered only if its `Open` reached the sink: a stream that began
//!   before this node became active is not delivered from the middle (its destination would see a
//!   stream without its start), and is named once in the log.
//! - A node that becomes standby resets every stream it was delivering: it will not see them
//!   complete, and the new active delivers from now on.
//! - With a pair, files and vault sinks get every event whatever the role, and are told the role:
//!   a standby decodes in shadow and keeps verified files until the active reports them delivered
//!   (the sink decides that, with its ledger and the pair channel). Without a pair, a standby's
//!   files sinks get nothing.
//! - Events for a channel this RED does not have raise an alarm once per channel.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use connectors::config::ChannelKind;
use connectors::sink::{SinkEvent, StreamAbort};

/// What the daemon must do.
#[derive(Debug)]
pub enum GateAction {
    /// Hand this event to the channel's sink.
    Deliver { channel: u16, event: SinkEvent },
    /// Data arrived for a channel this RED does not have (raised once per channel).
    UnknownChannel(u16),
    /// Data of a stream whose start this node did not deliver (said once per stream).
    BeganBeforeActive { channel: u16, stream: u64 },
}

/// What the gate counted, for the status page.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GateCounts {
    /// Events not delivered because this node was standby.
    pub standby_skipped: u64,
    /// Files opened while standby and decoded in shadow.
    pub shadowed: u64,
    /// Channels events arrived for that this RED does not have.
    pub unknown_channels: BTreeSet<u16>,
}

/// The delivery gate of one red-rx.
#[derive(Debug)]
pub struct DeliveryGate {
    kinds: HashMap<u16, ChannelKind>,
    /// With a pair: files and vault sinks get every event and are told the role.
    shadow: bool,
    active: bool,
    /// Streams whose `Open` reached a sink: only these get their data, end or reset.
    delivering: HashSet<(u16, u64)>,
    /// Streams already named as begun before this node was active (until they end).
    began_before_active: HashSet<(u16, u64)>,
    counts: GateCounts,
    actions: VecDeque<GateAction>,
}

impl DeliveryGate {
    /// `kinds`: the configured channels. `shadow`: whether there is a pair. A node starts as
    /// `active` when it has no election, as standby otherwise.
    pub fn new(kinds: HashMap<u16, ChannelKind>, shadow: bool, active: bool) -> DeliveryGate {
        DeliveryGate {
            kinds,
            shadow,
            active,
            delivering: HashSet::new(),
            began_before_active: HashSet::new(),
            counts: GateCounts::default(),
            actions: VecDeque::new(),
        }
    }

    /// The node's role is now `active` (or standby).
    pub fn handle_role(&mut self, active: bool) {
        if active == self.active {
            return;
        }
        self.active = active;
        if self.shadow {
            let mut files: Vec<u16> = self.kinds.iter().filter(|(_, kind)| is_files(**kind)).map(|(n, _)| *n).collect();
            files.sort_unstable();
            for channel in files {
                self.actions.push_back(GateAction::Deliver { channel, event: SinkEvent::Role { active } });
            }
        }
        if !active {
            let mut delivering: Vec<(u16, u64)> = self.delivering.drain().collect();
            delivering.sort_unstable();
            for (channel, stream) in delivering {
                let event = SinkEvent::Broken { stream, reason: StreamAbort::BecameStandby };
                self.actions.push_back(GateAction::Deliver { channel, event });
            }
        }
    }

    /// A decoded event for `channel`.
    pub fn handle_event(&mut self, channel: u16, event: SinkEvent) {
        let Some(kind) = self.kinds.get(&channel).copied() else {
            if self.counts.unknown_channels.insert(channel) {
                self.actions.push_back(GateAction::UnknownChannel(channel));
            }
            return;
        };
        if self.admit(channel, kind, &event) {
            self.actions.push_back(GateAction::Deliver { channel, event });
        }
    }

    pub fn poll_action(&mut self) -> Option<GateAction> {
        self.actions.pop_front()
    }

    pub fn active(&self) -> bool {
        self.active
    }

    pub fn counts(&self) -> &GateCounts {
        &self.counts
    }

    fn admit(&mut self, channel: u16, kind: ChannelKind, event: &SinkEvent) -> bool {
        let key = |stream: u64| (channel, stream);
        if self.shadow && is_files(kind) {
            if !self.active && matches!(event, SinkEvent::Open { .. }) {
                self.counts.shadowed += 1;
            }
            return true;
        }
        match event {
            SinkEvent::Open { stream, .. } => {
                if self.active {
                    self.delivering.insert(key(*stream));
                } else {
                    self.counts.standby_skipped += 1;
                }
                self.active
            }
            SinkEvent::Data { stream, .. } => {
                let delivering = self.delivering.contains(&key(*stream));
                if !delivering && self.active && self.began_before_active.insert(key(*stream)) {
                    self.actions.push_back(GateAction::BeganBeforeActive { channel, stream: *stream });
                }
                delivering
            }
            SinkEvent::End { stream, .. } | SinkEvent::Broken { stream, .. } => {
                self.began_before_active.remove(&key(*stream));
                self.delivering.remove(&key(*stream))
            }
            SinkEvent::Datagram(_) => {
                if !self.active {
                    self.counts.standby_skipped += 1;
                }
                self.active
            }
            SinkEvent::NeverArrived { .. } => self.active,
            SinkEvent::Role { .. } | SinkEvent::PeerDelivered { .. } | SinkEvent::PeerLedger { .. } => true,
        }
    }
}

fn is_files(kind: ChannelKind) -> bool {
    matches!(kind, ChannelKind::Files | ChannelKind::Vault)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use diode_proto::{BreakReason, StreamMeta};

    const TCP: u16 = 1;
    const UDP: u16 = 2;
    const FILES: u16 = 3;

    fn gate(shadow: bool, active: bool) -> DeliveryGate {
        let kinds = HashMap::from([(TCP, ChannelKind::Tcp), (UDP, ChannelKind::Udp), (FILES, ChannelKind::Files)]);
        DeliveryGate::new(kinds, shadow, active)
    }

    fn open(stream: u64) -> SinkEvent {
        SinkEvent::Open { stream, meta: StreamMeta::default(), session: 1, epoch: 1 }
    }

    fn data(stream: u64) -> SinkEvent {
        SinkEvent::Data { stream, data: Bytes::from_static(b"x") }
    }

    fn end(stream: u64) -> SinkEvent {
        SinkEvent::End { stream, total_len: 1, hash: [0; 32] }
    }

    /// What the gate asked for, in a form tests compare: ("deliver", channel, event kind) and so on.
    fn drained(gate: &mut DeliveryGate) -> Vec<String> {
        std::iter::from_fn(|| gate.poll_action())
            .map(|action| match action {
                GateAction::Deliver { channel, event } => format!("{channel} {}", describe(&event)),
                GateAction::UnknownChannel(channel) => format!("unknown {channel}"),
                GateAction::BeganBeforeActive { channel, stream } => format!("began before active {channel}/{stream}"),
            })
            .collect()
    }

    fn describe(event: &SinkEvent) -> String {
        match event {
            SinkEvent::Open { stream, .. } => format!("open {stream}"),
            SinkEvent::Data { stream, .. } => format!("data {stream}"),
            SinkEvent::End { stream, .. } => format!("end {stream}"),
            SinkEvent::Broken { stream, reason } => format!("broken {stream} {}", reason.label()),
            SinkEvent::Datagram(_) => "datagram".into(),
            SinkEvent::NeverArrived { stream, .. } => format!("never arrived {stream}"),
            SinkEvent::Role { active } => format!("role active={active}"),
            SinkEvent::PeerDelivered { .. } => "peer delivered".into(),
            SinkEvent::PeerLedger { .. } => "peer ledger".into(),
        }
    }

    #[test]
    fn an_active_node_delivers_a_whole_stream() {
        let mut gate = gate(false, true);
        for event in [open(7), data(7), end(7)] {
            gate.handle_event(TCP, event);
        }
        assert_eq!(drained(&mut gate), ["1 open 7", "1 data 7", "1 end 7"]);
    }

    #[test]
    fn a_standby_delivers_nothing_and_counts_what_it_skipped() {
        let mut gate = gate(false, false);
        gate.handle_event(TCP, open(7));
        gate.handle_event(TCP, data(7));
        gate.handle_event(UDP, SinkEvent::Datagram(Bytes::from_static(b"d")));
        gate.handle_event(FILES, open(8));
        gate.handle_event(TCP, end(7));
        assert_eq!(drained(&mut gate), Vec::<String>::new());
        assert_eq!(gate.counts().standby_skipped, 3, "two opens and a datagram");
    }

    #[test]
    fn a_takeover_mid_stream_does_not_deliver_the_stream_from_its_middle() {
        let mut gate = gate(false, false);
        gate.handle_event(TCP, open(7));
        gate.handle_role(true);
        gate.handle_event(TCP, data(7));
        gate.handle_event(TCP, data(7));
        gate.handle_event(TCP, end(7));
        // Named once; a later stream is delivered whole.
        gate.handle_event(TCP, open(9));
        assert_eq!(drained(&mut gate), ["began before active 1/7", "1 open 9"]);
    }

    #[test]
    fn becoming_standby_resets_every_stream_being_delivered() {
        let mut gate = gate(false, true);
        gate.handle_event(TCP, open(7));
        gate.handle_event(TCP, open(8));
        gate.handle_event(TCP, end(8));
        drained(&mut gate);
        gate.handle_role(false);
        assert_eq!(drained(&mut gate), ["1 broken 7 became_standby"]);
        // The stream's own end, decoded later, is not handed over a second time.
        gate.handle_event(TCP, end(7));
        assert_eq!(drained(&mut gate), Vec::<String>::new());
    }

    #[test]
    fn with_a_pair_a_standby_decodes_files_in_shadow_and_hears_its_role() {
        let mut gate = gate(true, false);
        gate.handle_event(FILES, open(4));
        gate.handle_event(FILES, data(4));
        gate.handle_event(TCP, open(5));
        assert_eq!(drained(&mut gate), ["3 open 4", "3 data 4"]);
        assert_eq!(gate.counts().shadowed, 1);
        // The takeover mid-file: the sink is told, and the rest of the file flows as before.
        gate.handle_role(true);
        gate.handle_event(FILES, end(4));
        assert_eq!(drained(&mut gate), ["3 role active=true", "3 end 4"]);
    }

    #[test]
    fn with_a_pair_the_active_tells_files_sinks_when_it_becomes_standby() {
        let mut gate = gate(true, true);
        gate.handle_event(FILES, open(4));
        gate.handle_event(TCP, open(5));
        drained(&mut gate);
        gate.handle_role(false);
        assert_eq!(drained(&mut gate), ["3 role active=false", "1 broken 5 became_standby"]);
    }

    #[test]
    fn without_a_pair_a_standby_files_sink_gets_nothing() {
        let mut gate = gate(false, false);
        gate.handle_event(FILES, open(4));
        gate.handle_event(FILES, end(4));
        gate.handle_role(true);
        assert_eq!(drained(&mut gate), Vec::<String>::new(), "no role events without a pair");
    }

    #[test]
    fn a_file_named_by_the_manifest_is_reported_only_by_the_active() {
        let never = |stream| SinkEvent::NeverArrived { stream, name: "a.dat".into(), size: 3, file_id: [1; 16] };
        let mut gate = gate(false, false);
        gate.handle_event(FILES, never(2));
        gate.handle_role(true);
        gate.handle_event(FILES, never(3));
        assert_eq!(drained(&mut gate), ["3 never arrived 3"]);
    }

    #[test]
    fn datagrams_flow_only_while_active() {
        let mut gate = gate(false, true);
        gate.handle_event(UDP, SinkEvent::Datagram(Bytes::from_static(b"1")));
        gate.handle_role(false);
        gate.handle_event(UDP, SinkEvent::Datagram(Bytes::from_static(b"2")));
        assert_eq!(drained(&mut gate), ["2 datagram"]);
        assert_eq!(gate.counts().standby_skipped, 1);
    }

    #[test]
    fn an_unknown_channel_raises_its_alarm_once() {
        let mut gate = gate(false, true);
        gate.handle_event(9, open(1));
        gate.handle_event(9, data(1));
        gate.handle_event(10, open(1));
        assert_eq!(drained(&mut gate), ["unknown 9", "unknown 10"]);
        assert_eq!(gate.counts().unknown_channels, BTreeSet::from([9, 10]));
    }

    #[test]
    fn a_broken_stream_reaches_its_sink_once_with_its_reason() {
        let mut gate = gate(false, true);
        gate.handle_event(TCP, open(7));
        let broken = || SinkEvent::Broken { stream: 7, reason: StreamAbort::Broken(BreakReason::MissedOpen) };
        gate.handle_event(TCP, broken());
        gate.handle_event(TCP, broken());
        assert_eq!(drained(&mut gate), ["1 open 7", "1 broken 7 missed_open"]);
    }
}
