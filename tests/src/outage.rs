//! `diode-lab outage`: one BLUE and one RED on loopback with traffic on a TCP and a UDP channel; mid-run
//! every RED destination goes away for a while, then comes back. What each destination received is
//! compared with what its client sent: streams lost, delivered, repeated, and how long the spool took to
//! empty once the destination was back.
//!
//! The TCP client decides what it sent from its own connection (written whole and closed cleanly); the
//! destination decides what arrived from its own (every byte, then a clean close). RED's status gives
//! only the spool's own figures (peak bytes, delivered from the spool, repeats).

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::error::{LabError, LabResult};
use crate::lab::{
    free_port, loopback_net, send_stream, wait_for, ChannelPlan, Lab, LinkPlan, Received, TcpSink, UdpSink,
};
use crate::rawwire::proc_kb;

/// What the destinations lose, and for how long.
#[derive(Clone, Debug)]
pub struct OutagePlan {
    pub seconds: u64,
    pub tcp: bool,
    pub udp: bool,
    /// What red-rx's resident memory may reach while it spools.
    pub rss_budget: u64,
}

/// Traffic before the outage and after the return, so both sides of it carry data.
const LEAD: Duration = Duration::from_secs(3);
const TAIL: Duration = Duration::from_secs(3);
const STREAM_BYTES: usize = 400_000;
const STREAM_PAUSE: Duration = Duration::from_millis(100);
const DATAGRAMS_PER_SECOND: u64 = 200;

#[derive(Debug, Default)]
pub struct TcpOutcome {
    pub sent: u64,
    pub sent_bytes: u64,
    /// Streams that arrived whole and closed cleanly at least once.
    pub delivered: u64,
    pub lost: u64,
    pub lost_bytes: u64,
    /// Streams that arrived whole more than once.
    pub duplicated: u64,
    /// Connections that carried part of a stream and were reset (a repeat follows them).
    pub partial_connections: u64,
    pub delivered_from_spool: u64,
    pub repeats: u64,
    pub peak_spool_bytes: u64,
    /// From the destination's return to the spool holding nothing.
    pub drain_s: Option<f64>,
}

#[derive(Debug, Default)]
pub struct UdpOutcome {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Datagrams RED counted as not handed to a destination, by reason.
    pub dropped_by_red: serde_json::Value,
}

#[derive(Debug)]
pub struct OutageReport {
    pub plan: OutagePlan,
    pub tcp: Option<TcpOutcome>,
    pub udp: Option<UdpOutcome>,
    pub red_rss_peak: u64,
}

impl OutageReport {
    /// Nothing lost or duplicated on a spooled channel, and red-rx within its memory budget. UDP is
    /// not spooled in this version: its losses are reported, not judged.
    pub fn ok(&self) -> bool {
        let tcp_ok = self.tcp.as_ref().is_none_or(|t| t.lost == 0 && t.duplicated == 0 && t.sent > 0);
        tcp_ok && self.red_rss_peak <= self.plan.rss_budget
    }

    pub fn json(&self) -> serde_json::Value {
        json!({
            "seconds": self.plan.seconds,
            "ok": self.ok(),
            "red_rss_peak_bytes": self.red_rss_peak,
            "red_rss_budget_bytes": self.plan.rss_budget,
            "tcp": self.tcp.as_ref().map(|t| json!({
                "sent": t.sent,
                "sent_bytes": t.sent_bytes,
                "delivered": t.delivered,
                "delivered_from_spool": t.delivered_from_spool,
                "lost": t.lost,
                "lost_bytes": t.lost_bytes,
                "duplicated": t.duplicated,
                "repeats": t.repeats,
                "partial_connections": t.partial_connections,
                "peak_spool_bytes": t.peak_spool_bytes,
                "drain_s": t.drain_s,
            })),
            "udp": self.udp.as_ref().map(|u| json!({
                "spooled": false,
                "sent": u.sent,
                "delivered": u.delivered,
                "lost": u.lost,
                "duplicated": u.duplicated,
                "dropped_by_red": u.dropped_by_red,
            })),
            "files": {"measured": false, "why": "files and vault are not spooled in this version"},
        })
    }
}

pub fn run(plan: OutagePlan) -> LabResult<OutageReport> {
    let net = loopback_net();
    let (blue_ip, sink_ip) = (Lab::ip(net, 1), Lab::ip(net, 4));
    let tcp_addr = SocketAddr::from((sink_ip, free_port(sink_ip)?));
    let udp_addr = SocketAddr::from((sink_ip, free_port(sink_ip)?));
    let tcp_channel = ChannelPlan {
        number: 1,
        kind: "tcp",
        name: "historian".into(),
        listen: SocketAddr::from((blue_ip, free_port(blue_ip)?)),
        multicast_group: None,
        destinations: vec![tcp_addr],
        red_extra: "[channel.health]\ninterval_ms = 200\ntimeout_ms = 200\n".into(),
        blue_extra: String::new(),
    };
    let udp_channel = ChannelPlan {
        number: 2,
        kind: "udp",
        name: "telemetry".into(),
        listen: SocketAddr::from((blue_ip, free_port(blue_ip)?)),
        multicast_group: None,
        destinations: vec![udp_addr],
        red_extra: String::new(),
        blue_extra: String::new(),
    };
    let channels = [tcp_channel.clone(), udp_channel.clone()];
    let mut lab = Lab::start(net, &LinkPlan::default(), &channels, None)?;
    let received: Arc<Mutex<Vec<Received>>> = Arc::default();
    let mut tcp_sink = Some(TcpSink::start(tcp_addr)?);
    let mut udp_sink = Some(UdpSink::start(udp_addr, None)?);
    let mut udp_seen: Vec<Vec<u8>> = Vec::new();
    let stop = Arc::new(AtomicBool::new(false));

    let tcp_sender = plan.tcp.then(|| {
        let (stop, listen) = (Arc::clone(&stop), tcp_channel.listen);
        std::thread::spawn(move || {
            let mut sent = HashMap::new();
            let mut id = 1u64;
            while !stop.load(Ordering::SeqCst) {
                if let Ok(done) = send_stream(listen, id, STREAM_BYTES + (id as usize % 7) * 10_000) {
                    sent.insert(id, done);
                }
                id += 1;
                std::thread::sleep(STREAM_PAUSE);
            }
            sent
        })
    });
    let udp_sender = plan.udp.then(|| {
        let (stop, listen) = (Arc::clone(&stop), udp_channel.listen);
        std::thread::spawn(move || -> u64 {
            let Ok(socket) = UdpSocket::bind((blue_ip, 0)) else { return 0 };
            let mut seq = 0u64;
            let started = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                let mut payload = seq.to_be_bytes().to_vec();
                payload.resize(512, 0x5a);
                if socket.send_to(&payload, listen).is_ok() {
                    seq += 1;
                }
                let due = started + Duration::from_micros(seq * 1_000_000 / DATAGRAMS_PER_SECOND);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            seq
        })
    });

    std::thread::sleep(LEAD);
    // The destinations go away: the TCP server stops listening, the UDP socket closes.
    if let Some(mut sink) = tcp_sink.take() {
        sink.shutdown();
        let before = sink.received.lock().map(|r| r.clone()).unwrap_or_default();
        received.lock().map_err(|_| LabError::unexpected("the TCP destination's record is poisoned"))?.extend(before);
    }
    if let Some(sink) = udp_sink.take() {
        udp_seen.extend(sink.received.lock().map(|r| r.clone()).unwrap_or_default());
    }
    std::thread::sleep(Duration::from_secs(plan.seconds));
    let tcp_sink = TcpSink::start(tcp_addr)?;
    let udp_sink = UdpSink::start(udp_addr, None)?;
    let returned = Instant::now();
    let mut drain_s = None;
    while returned.elapsed() < TAIL {
        if drain_s.is_none() && lab.red_status()["channels"][0]["spool"]["items"] == 0 {
            drain_s = Some(returned.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let sent: HashMap<u64, (u64, [u8; 32])> = tcp_sender.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
    let udp_sent = udp_sender.map_or(0, |t| t.join().unwrap_or(0));

    let drained = wait_for(Duration::from_secs(60 + plan.seconds), || {
        let empty = lab.red_status()["channels"][0]["spool"]["items"] == 0;
        if empty && drain_s.is_none() {
            drain_s = Some(returned.elapsed().as_secs_f64());
        }
        let arrived = |id: &u64, (len, hash): &(u64, [u8; 32])| {
            let whole = |r: &Received| r.id == *id && r.len == *len && r.hash == *hash && r.clean;
            let seen = |records: &Mutex<Vec<Received>>| records.lock().is_ok_and(|r| r.iter().any(whole));
            seen(&received) || seen(&tcp_sink.received)
        };
        empty && sent.iter().all(|(id, done)| arrived(id, done))
    });
    // Datagrams still in flight when the sender stopped.
    std::thread::sleep(Duration::from_secs(1));
    let red = lab.red_status();
    let logs = lab.log("red.log");
    // The kernel's high-water mark covers the whole run, between any two samples too.
    let rss_peak_kb = proc_kb(lab.red.pid().unwrap_or(0), "VmHWM:");
    lab.stop();
    if !rss_peak_kb.is_finite() {
        return Err(LabError::unexpected("cannot read red-rx's peak memory (VmHWM) from /proc"));
    }
    let rss_peak = (rss_peak_kb * 1024.0) as u64;
    if !drained {
        eprintln!("diode-lab outage: the spool did not empty or not every stream arrived within the deadline\n{logs}");
    }
    let mut all = received.lock().map(|r| r.clone()).unwrap_or_default();
    all.extend(tcp_sink.received.lock().map(|r| r.clone()).unwrap_or_default());
    udp_seen.extend(udp_sink.received.lock().map(|r| r.clone()).unwrap_or_default());

    let tcp = plan.tcp.then(|| {
        let mut whole: BTreeMap<u64, u64> = BTreeMap::new();
        let mut partial = 0;
        for record in all.iter().filter(|r| r.len > 0) {
            let matches = sent.get(&record.id).is_some_and(|(len, hash)| *len == record.len && *hash == record.hash);
            if matches && record.clean {
                *whole.entry(record.id).or_default() += 1;
            } else if !record.clean {
                partial += 1;
            }
        }
        let lost: Vec<u64> = sent.keys().filter(|id| !whole.contains_key(id)).copied().collect();
        let spool = &red["channels"][0]["spool"];
        TcpOutcome {
            sent: sent.len() as u64,
            sent_bytes: sent.values().map(|(len, _)| len).sum(),
            delivered: whole.len() as u64,
            lost: lost.len() as u64,
            lost_bytes: lost.iter().filter_map(|id| sent.get(id)).map(|(len, _)| len).sum(),
            duplicated: whole.values().filter(|n| **n > 1).count() as u64,
            partial_connections: partial,
            delivered_from_spool: spool["delivered_from_spool"].as_u64().unwrap_or(0),
            repeats: spool["repeats"].as_u64().unwrap_or(0),
            peak_spool_bytes: spool["peak_bytes"].as_u64().unwrap_or(0),
            drain_s,
        }
    });
    let udp = plan.udp.then(|| {
        let mut seqs: BTreeMap<u64, u64> = BTreeMap::new();
        for datagram in &udp_seen {
            if let Some(head) = datagram.get(..8) {
                let mut seq = [0u8; 8];
                seq.copy_from_slice(head);
                *seqs.entry(u64::from_be_bytes(seq)).or_default() += 1;
            }
        }
        UdpOutcome {
            sent: udp_sent,
            delivered: seqs.len() as u64,
            lost: udp_sent.saturating_sub(seqs.len() as u64),
            duplicated: seqs.values().filter(|n| **n > 1).count() as u64,
            dropped_by_red: red["channels"][1]["datagrams_dropped"].clone(),
        }
    });
    Ok(OutageReport { plan, tcp, udp, red_rss_peak: rss_peak })
}
