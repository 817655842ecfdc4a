//! One process, sender to receiver through a seeded lossy link: streams, files and datagrams of several
//! channels, with uniform loss and one burst, verified byte for byte at the end.

use crate::error::LabResult;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use diode_proto::beacon::SenderState;
use diode_proto::{Event, FecParams, FiberMode, LinkAuth, Receiver, ReceiverConfig, Sender, SenderConfig, StreamMeta};

/// What to send and how lossy the link is.
#[derive(Clone, Debug)]
pub struct Plan {
    pub stream_bytes: usize,
    pub files: usize,
    pub datagrams: usize,
    /// Uniform loss in percent of datagrams.
    pub loss_percent: f64,
    /// Consecutive datagrams lost once, halfway through.
    pub burst: usize,
    pub fec: FecParams,
    pub seed: u64,
}

/// Per-channel outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelReport {
    pub name: &'static str,
    pub sent_bytes: u64,
    pub delivered_bytes: u64,
    pub items_sent: u64,
    pub items_intact: u64,
    pub items_broken: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub channels: Vec<ChannelReport>,
    pub datagrams_sent: u64,
    pub datagrams_lost: u64,
    pub blocks_decoded: u64,
    pub blocks_without_decoder: u64,
    pub blocks_lost: u64,
    pub elapsed: Duration,
}

impl Report {
    /// Streams and files must all be intact; datagrams are best effort.
    pub fn ok(&self) -> bool {
        self.channels.iter().filter(|c| c.name != "udp").all(|c| c.items_intact == c.items_sent && c.items_broken == 0)
    }
}

/// A small deterministic xorshift generator for sizes, content and pauses.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub(crate) fn fill(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }

    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const TCP: u16 = 1;
const FILES: u16 = 2;
const UDP: u16 = 3;

/// Runs the plan and reports what arrived.
pub fn run(plan: &Plan) -> LabResult<Report> {
    plan.fec.validate()?;
    let started = Instant::now();
    let mut rng = Rng(plan.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut sender = Sender::new(SenderConfig {
        session: rng.next(),
        stamped: false,
        epoch: 1,
        fec: plan.fec,
        auth: LinkAuth::none(),
        fiber_mode: FiberMode::Mirror,
        config_fingerprint: [0; 16],
        beacon_interval_ms: 100,
    });
    let mut expected: BTreeMap<(u16, u64), Vec<u8>> = BTreeMap::new();

    let stream = rng.fill(plan.stream_bytes);
    let tcp = sender.channel(TCP);
    tcp.open(1, StreamMeta { peer: "127.0.0.1:40000".into(), ..StreamMeta::default() })?;
    for chunk in stream.chunks(64 * 1024) {
        tcp.data(1, chunk)?;
    }
    tcp.end(1)?;
    expected.insert((TCP, 1), stream);

    for id in 0..plan.files as u64 {
        let len = (rng.next() % 300_000) as usize;
        let content = rng.fill(len);
        let meta = StreamMeta { name: format!("drop/{id:03}.bin"), size: Some(len as u64), ..StreamMeta::default() };
        let files = sender.channel(FILES);
        files.open(id, meta)?;
        files.data(id, &content)?;
        files.end(id)?;
        expected.insert((FILES, id), content);
    }
    let mut udp_sent = Vec::new();
    for _ in 0..plan.datagrams {
        let len = 1 + (rng.next() % 1400) as usize;
        let payload = rng.fill(len);
        sender.channel(UDP).datagram(&payload)?;
        udp_sent.push(payload);
    }
    sender.flush();

    let mut wire = Vec::new();
    let mut buf = Vec::new();
    while sender.poll_datagram(true, &mut buf) {
        wire.push(buf.clone());
    }
    sender.beacon(0, SenderState::Active, &mut buf);
    wire.push(buf.clone());

    let mut receiver = Receiver::new(ReceiverConfig::default());
    let mut now = Instant::now();
    let mut report = Report { datagrams_sent: wire.len() as u64, ..Report::default() };
    let burst_start = wire.len() / 2;
    let mut delivered: BTreeMap<(u16, u64), Vec<u8>> = BTreeMap::new();
    let mut ended = Vec::new();
    let mut broken = Vec::new();
    let mut udp_received = Vec::new();
    let threshold = (plan.loss_percent / 100.0 * u64::MAX as f64) as u64;
    for (index, datagram) in wire.iter().enumerate() {
        now += Duration::from_micros(2);
        let in_burst = index >= burst_start && index < burst_start + plan.burst;
        if in_burst || rng.next() < threshold {
            report.datagrams_lost += 1;
            continue;
        }
        let _ = receiver.handle_datagram(now, 0, datagram);
        drain_events(&mut receiver, &mut delivered, &mut ended, &mut broken, &mut udp_received);
    }
    // Let every deadline pass (block deadlines, then the suspect timeouts they start) so nothing is
    // left undecided.
    while let Some(deadline) = receiver.poll_timeout() {
        now = now.max(deadline);
        receiver.handle_timeout(now);
        drain_events(&mut receiver, &mut delivered, &mut ended, &mut broken, &mut udp_received);
    }

    for (channel, name) in [(TCP, "tcp"), (FILES, "files")] {
        let mut row = ChannelReport { name, ..ChannelReport::default() };
        for ((c, id), bytes) in expected.iter().filter(|((c, _), _)| *c == channel) {
            row.items_sent += 1;
            row.sent_bytes += bytes.len() as u64;
            let got = delivered.get(&(*c, *id));
            row.delivered_bytes += got.map_or(0, |g| g.len() as u64);
            if ended.contains(&(*c, *id)) && got == Some(bytes) {
                row.items_intact += 1;
            }
            if broken.contains(&(*c, *id)) {
                row.items_broken += 1;
            }
        }
        report.channels.push(row);
    }
    let udp_intact = udp_received.iter().filter(|p| udp_sent.contains(p)).count() as u64;
    report.channels.push(ChannelReport {
        name: "udp",
        sent_bytes: udp_sent.iter().map(|p| p.len() as u64).sum(),
        delivered_bytes: udp_received.iter().map(|p| p.len() as u64).sum(),
        items_sent: udp_sent.len() as u64,
        items_intact: udp_intact,
        items_broken: 0,
    });
    let stats = receiver.stats();
    report.blocks_decoded = stats.blocks_decoded;
    report.blocks_without_decoder = stats.blocks_without_decoder;
    report.blocks_lost = stats.blocks_lost;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn drain_events(
    receiver: &mut Receiver,
    delivered: &mut BTreeMap<(u16, u64), Vec<u8>>,
    ended: &mut Vec<(u16, u64)>,
    broken: &mut Vec<(u16, u64)>,
    udp: &mut Vec<Vec<u8>>,
) {
    while let Some(event) = receiver.poll_event() {
        match event {
            Event::StreamData { channel, stream, data, .. } => {
                delivered.entry((channel, stream)).or_default().extend_from_slice(&data);
            }
            Event::StreamEnded { channel, stream, .. } => ended.push((channel, stream)),
            Event::StreamBroken { channel, stream, .. } => broken.push((channel, stream)),
            Event::Datagram { payload, .. } => udp.push(payload.to_vec()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(loss_percent: f64, burst: usize) -> Plan {
        Plan {
            stream_bytes: 2_000_000,
            files: 5,
            datagrams: 200,
            loss_percent,
            burst,
            fec: FecParams { repair_basis_points: 2000, interleave_depth: 8, ..FecParams::for_mtu(1500) },
            seed: 42,
        }
    }

    #[test]
    fn roundtrip_with_loss_and_a_burst_is_intact() {
        let report = run(&plan(2.0, 40)).expect("valid plan");
        assert!(report.ok(), "{report:?}");
        assert!(report.blocks_decoded > 0, "loss must have exercised the decoder");
        assert_eq!(report.blocks_lost, 0);
    }

    #[test]
    fn roundtrip_beyond_the_fec_budget_reports_broken_streams() {
        let report = run(&plan(30.0, 0)).expect("valid plan");
        assert!(!report.ok());
        let tcp = &report.channels[0];
        assert_eq!(tcp.items_intact, 0);
        assert_eq!(tcp.items_broken, 1);
        // A file whose every block was lost is unknown to the receiver; every other one is decided.
        let files = &report.channels[1];
        assert!(files.items_intact < files.items_sent && files.items_broken > 0);
    }
}
