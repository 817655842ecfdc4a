//! Hostile input at a real red-rx's fiber ports. Each test says what must hold: no crash, memory
//! bounded, nothing delivered wrongly, everything counted (and logged) by reason.
//!
//! Elsewhere: hostile file names and a full disk (`files.rs`), oversized vault uploads (`files.rs`),
//! the management API without or with wrong credentials (`management.rs`), wrong link keys
//! (`daemons.rs`), adverts with a wrong key, a wrong TTL or a replayed counter (`ha_netns.rs`).

#![allow(clippy::unwrap_used)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tests::folders::{file_content, visible_files};
use tests::lab::{loopback_net, wait_for, Lab, TcpSink, TempDir};
use tests::rawwire::{LoneRed, RawSender};

fn files_section(out: &Path, extra: &str) -> String {
    format!("[[channel]]\nnumber = 2\nkind = \"files\"\nname = \"drop\"\nfolder = \"{}\"\n{extra}", out.display())
}

fn delivered(status: &serde_json::Value) -> u64 {
    status["channels"][0]["files"]["delivered"].as_u64().unwrap_or(0)
}

fn drops(status: &serde_json::Value) -> u64 {
    status["receiver"]["drops"].as_object().map_or(0, |m| m.values().filter_map(serde_json::Value::as_u64).sum())
}

/// Random bytes of random lengths, and some that start like the protocol (right magic and version) to
/// get past the first checks, sent as fast as the socket takes them until `stop`.
fn flood(to: Vec<SocketAddr>, stop: Arc<AtomicBool>) -> u64 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut datagram = vec![0u8; 1500];
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for byte in datagram.iter_mut() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            *byte = state as u8;
        }
        let len = (state % 1500) as usize;
        if sent.is_multiple_of(2) {
            datagram[..4].copy_from_slice(&diode_proto::header::MAGIC);
            datagram[4] = diode_proto::header::VERSION;
        }
        for target in &to {
            let _ = socket.send_to(&datagram[..len], target);
        }
        sent += 1;
        if sent.is_multiple_of(256) {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    sent
}

#[test]
fn a_flood_of_random_datagrams_neither_stops_a_transfer_nor_grows_memory() {
    let dir = TempDir::new("hostile-flood").unwrap();
    let out = dir.path().join("out");
    let lone = LoneRed::start(dir.path(), &files_section(&out, "")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (to, stop) = (lone.fibers.clone(), Arc::clone(&stop));
        std::thread::spawn(move || flood(to, stop))
    };
    std::thread::sleep(Duration::from_millis(500));
    let mut raw = RawSender::new(&lone.fibers, 0xf100d, 1).unwrap();
    let files: Vec<(String, Vec<u8>)> =
        (0..20u64).map(|i| (format!("under-fire/{i:02}.bin"), file_content(i, 1_000_000))).collect();
    for (index, (name, bytes)) in files.iter().enumerate() {
        raw.file(2, index as u64 + 1, name, bytes, index as u8 + 1).unwrap();
    }
    raw.flush();
    let arrived = wait_for(Duration::from_secs(20), || delivered(&lone.status()) >= 20);
    let rss_during = lone.rss_mb();
    stop.store(true, Ordering::Relaxed);
    let flooded = flooder.join().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let status = lone.status();
    let mut red = lone.red;
    assert!(red.running(), "red-rx survived the flood");
    red.stop(Duration::from_secs(10));
    assert!(arrived, "the transfer went through the flood: {status}");
    let found = visible_files(&out);
    for (name, bytes) in &files {
        assert!(found.get(name) == Some(bytes), "{name} intact");
    }
    assert!(
        drops(&status) >= flooded,
        "every flood datagram dropped and counted ({flooded} sent, twice each): {}",
        status["receiver"]["drops"]
    );
    println!(
        "flood: {flooded} random datagrams per fiber, red-rx RSS {rss_during:.1} MB, drops {}",
        status["receiver"]["drops"]
    );
    assert!(rss_during < 150.0, "red-rx RSS stayed bounded: {rss_during:.1} MB");
}

#[test]
fn a_stream_claiming_a_terabyte_is_quarantined_at_once_and_the_next_file_still_arrives() {
    let dir = TempDir::new("hostile-terabyte").unwrap();
    let out = dir.path().join("out");
    let lone = LoneRed::start(dir.path(), &files_section(&out, "max_file_size = 10000000\n")).unwrap();
    let mut raw = RawSender::new(&lone.fibers, 0x7e4a, 1).unwrap();
    let builder = raw.sender.channel(2);
    let meta = diode_proto::StreamMeta {
        name: "huge.img".into(),
        size: Some(1 << 40),
        file_id: Some([9; 16]),
        ..diode_proto::StreamMeta::default()
    };
    builder.open(1, meta).unwrap();
    builder.data(1, &file_content(1, 3_000_000)).unwrap();
    builder.end(1).unwrap();
    raw.file(2, 2, "after.bin", &file_content(2, 500_000), 2).unwrap();
    raw.flush();
    let settled = wait_for(Duration::from_secs(10), || {
        let status = lone.status();
        delivered(&status) >= 1 && status["channels"][0]["files"]["failed"]["too_large"].as_u64() == Some(1)
    });
    let status = lone.status();
    let mut red = lone.red;
    red.stop(Duration::from_secs(10));
    assert!(settled, "{status}");
    assert_eq!(visible_files(&out).into_keys().collect::<Vec<_>>(), vec!["after.bin".to_string()]);
    let kept: Vec<_> = std::fs::read_dir(out.join(".quarantine")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(kept.len(), 1, "only the reason file, no content: {kept:?}");
}

#[test]
fn a_flood_of_stream_opens_is_bounded_by_max_open_streams_and_counted() {
    let dir = TempDir::new("hostile-opens").unwrap();
    let out = dir.path().join("out");
    let sections = format!("[receiver]\nmax_open_streams = 64\n{}", files_section(&out, ""));
    let lone = LoneRed::start(dir.path(), &sections).unwrap();
    let mut raw = RawSender::new(&lone.fibers, 0x0be5, 1).unwrap();
    for stream in 1..=5000u64 {
        let meta = diode_proto::StreamMeta { name: format!("open-{stream}"), ..diode_proto::StreamMeta::default() };
        raw.sender.channel(2).open(stream, meta).unwrap();
    }
    raw.flush();
    let counted = wait_for(Duration::from_secs(15), || {
        lone.status()["receiver"]["streams_broken"]["too_many_streams"].as_u64().unwrap_or(0) >= 5000 - 64
    });
    let status = lone.status();
    let rss = lone.rss_mb();
    let open_parts = std::fs::read_dir(out.join(".part")).map(|d| d.count()).unwrap_or(0);
    let mut red = lone.red;
    assert!(red.running());
    red.stop(Duration::from_secs(10));
    assert!(counted, "opens beyond the limit broken as TooManyStreams: {}", status["receiver"]);
    assert!(open_parts <= 64, "{open_parts} part files open");
    assert!(rss < 150.0, "red-rx RSS {rss:.1} MB");
    assert!(visible_files(&out).is_empty(), "nothing incomplete is visible");
}

#[test]
fn replayed_datagrams_of_an_older_session_deliver_nothing_twice() {
    let dir = TempDir::new("hostile-replay").unwrap();
    let net = loopback_net();
    let sink_ip = Lab::ip(net, 4);
    let sink = TcpSink::start(SocketAddr::from((sink_ip, 0))).unwrap();
    let section = format!(
        "[[channel]]\nnumber = 1\nkind = \"tcp\"\nname = \"historian\"\n[[channel.destination]]\naddress = \"{}\"\n",
        sink.addr
    );
    let lone = LoneRed::start(dir.path(), &section).unwrap();
    // Session A (epoch 1) sends two streams and is recorded; session B (epoch 2) takes over.
    let mut first = RawSender::new(&lone.fibers, 0xaaaa, 1).unwrap();
    first.recorded = Some(Vec::new());
    first.stream(1, 1, &file_content(1, 300_000)).unwrap();
    first.stream(1, 2, &file_content(2, 300_000)).unwrap();
    first.flush();
    assert!(wait_for(Duration::from_secs(10), || sink.streams() >= 2));
    let mut second = RawSender::new(&lone.fibers, 0xbbbb, 2).unwrap();
    second.stream(1, 1, &file_content(3, 300_000)).unwrap();
    second.flush();
    assert!(wait_for(Duration::from_secs(10), || sink.streams() >= 3));
    // A's datagrams again, all of them, twice.
    let recorded = first.recorded.take().unwrap();
    for _ in 0..2 {
        for datagram in &recorded {
            first.send_raw(datagram);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let status = lone.status();
    let mut red = lone.red;
    red.stop(Duration::from_secs(10));
    assert_eq!(sink.streams(), 3, "the replay delivered nothing: {}", status["receiver"]);
    let refused =
        ["stale_epoch", "retired_session"].iter().filter_map(|k| status["receiver"]["drops"][k].as_u64()).sum::<u64>();
    assert!(
        refused >= recorded.len() as u64,
        "replayed datagrams counted as stale or retired: {}",
        status["receiver"]["drops"]
    );
}
