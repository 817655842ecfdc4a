//! blue-tx, red-rx and fiber-sim as real processes on loopback: TCP streams under loss, the FEC budget,
//! UDP multicast, destination pools, configuration mismatch and check-config.
//!
//! The tests that push hundreds of megabytes take turns (one lock), so on a small machine one test's
//! load never becomes another's packet loss.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use tests::bins::binaries;
use tests::demo::{compare, mixed_sizes, send_streams};
use tests::lab::{free_port, loopback_net, send_stream, wait_for, ChannelPlan, Lab, LinkPlan, TcpSink, UdpSink};

static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn tcp_channel(net: [u8; 3], destinations: Vec<SocketAddr>, red_extra: &str) -> ChannelPlan {
    let ip = Lab::ip(net, 1);
    ChannelPlan {
        number: 1,
        kind: "tcp",
        name: "historian".into(),
        listen: SocketAddr::from((ip, free_port(ip).unwrap())),
        multicast_group: None,
        destinations,
        red_extra: red_extra.to_string(),
        blue_extra: String::new(),
    }
}

/// 100 concurrent streams of 1 B to 50 MB through a link with `loss` and optional bursts, default repair.
fn hundred_streams_intact(loss_percent: f64, burst: Option<(f64, f64)>, seed: u64) {
    let _turn = heavy();
    let net = loopback_net();
    let sink_ip = Lab::ip(net, 4);
    let sink = TcpSink::start(SocketAddr::from((sink_ip, 0))).unwrap();
    let channel = tcp_channel(net, vec![sink.addr], "");
    // 400 Mbit/s leaves this small machine the CPU for four processes and the test itself.
    let link = LinkPlan { loss_percent, burst, repair_percent: 5.0, rate_mbps: 400.0, seed, ..LinkPlan::default() };
    let mut lab = Lab::start(net, &link, std::slice::from_ref(&channel), None).unwrap();
    let sizes = mixed_sizes(100, 50_000_000, seed);
    let sent = send_streams(channel.listen, &sizes, 100).unwrap();
    let arrived = wait_for(Duration::from_secs(120), || sink.streams() >= sizes.len());
    let (intact, false_complete, _) = compare(&sent, &sink);
    let logs = format!("{}\n{}", lab.log("blue.log"), lab.log("red.log"));
    assert!(lab.stop(), "every process stops cleanly");
    assert!(arrived, "only {} of {} streams arrived\n{logs}", sink.streams(), sizes.len());
    assert_eq!(false_complete, 0, "a destination saw a clean close of a wrong stream");
    let received = sink.received.lock().unwrap().clone();
    let summary: Vec<_> = received
        .iter()
        .filter(|r| r.len > 0)
        .filter(|r| sent.get(&r.id).is_none_or(|(len, hash)| *len != r.len || *hash != r.hash || !r.clean))
        .collect();
    assert_eq!(intact, sizes.len(), "not intact: {summary:?}\n{logs}");
}

#[test]
fn hundred_streams_intact_without_loss() {
    hundred_streams_intact(0.0, None, 11);
}

#[test]
fn hundred_streams_intact_at_1_percent_loss() {
    hundred_streams_intact(1.0, None, 12);
}

#[test]
fn hundred_streams_intact_at_5_percent_loss_with_bursts() {
    hundred_streams_intact(5.0, Some((0.2, 25.0)), 13);
}

#[test]
fn beyond_the_fec_budget_no_destination_sees_a_clean_close_of_a_damaged_stream() {
    let _turn = heavy();
    let net = loopback_net();
    let sink_ip = Lab::ip(net, 4);
    let sink = TcpSink::start(SocketAddr::from((sink_ip, 0))).unwrap();
    let channel = tcp_channel(net, vec![sink.addr], "");
    // 25 % on each mirrored fiber is about 6 % joint loss against 5 % repair: most blocks fail, but
    // many streams still open before they break.
    let link = LinkPlan {
        loss_percent: 25.0,
        burst: None,
        repair_percent: 5.0,
        rate_mbps: 400.0,
        seed: 21,
        ..LinkPlan::default()
    };
    let mut lab = Lab::start(net, &link, std::slice::from_ref(&channel), None).unwrap();
    let sizes = mixed_sizes(40, 5_000_000, 21);
    let sent = send_streams(channel.listen, &sizes, 40).unwrap();
    // Streams whose Open was lost never reach the sink; the others end one way or the other.
    std::thread::sleep(Duration::from_secs(3));
    wait_for(Duration::from_secs(30), || {
        lab.red_status()["receiver"]["streams_broken"].as_object().is_some_and(|m| !m.is_empty())
    });
    std::thread::sleep(Duration::from_secs(2));
    let received = sink.received.lock().unwrap().clone();
    assert!(lab.stop());
    let red = lab.red_status();
    let (intact, false_complete, _) = compare(&sent, &sink);
    assert_eq!(false_complete, 0, "never a clean close after missing data");
    let reset = received.iter().filter(|r| !r.clean).count();
    assert!(reset > 0, "damaged streams were reset: {received:?}");
    assert!(intact < sizes.len());
    let broken: u64 =
        red["receiver"]["streams_broken"].as_object().unwrap().values().filter_map(serde_json::Value::as_u64).sum();
    assert!(broken > 0, "red-rx counts broken streams by reason: {red}");
}

#[test]
fn udp_multicast_channel_delivers_and_counts_its_losses() {
    let _turn = heavy();
    let net = loopback_net();
    let source_group = Ipv4Addr::new(239, net[1], net[2], 10);
    let sink_group = Ipv4Addr::new(239, net[1], net[2], 11);
    let sink =
        UdpSink::start(SocketAddr::from((sink_group, free_port(Ipv4Addr::LOCALHOST).unwrap())), Some(sink_group))
            .unwrap();
    let listen = SocketAddr::from((source_group, free_port(Ipv4Addr::LOCALHOST).unwrap()));
    let channel = ChannelPlan {
        number: 5,
        kind: "udp",
        name: "telemetry".into(),
        listen,
        multicast_group: Some(source_group),
        destinations: vec![sink.addr],
        red_extra: "multicast_interface = \"127.0.0.1\"\n".into(),
        blue_extra: String::new(),
    };
    let link = LinkPlan {
        loss_percent: 20.0,
        burst: None,
        repair_percent: 0.0,
        rate_mbps: 200.0,
        seed: 31,
        ..LinkPlan::default()
    };
    let mut lab = Lab::start(net, &link, &[channel], None).unwrap();
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    socket2::SockRef::from(&socket).set_multicast_if_v4(&Ipv4Addr::LOCALHOST).unwrap();
    let sent = 3_000u64;
    for id in 0..sent {
        let mut payload = id.to_be_bytes().to_vec();
        payload.resize(200, 7);
        socket.send_to(&payload, listen).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    // Settle: the last datagrams wait for the flush timer.
    let mut last = usize::MAX;
    while sink.count() != last {
        last = sink.count();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(lab.stop());
    // The daemons write their final counts as they stop.
    let blue = lab.blue_status();
    let red = lab.red_status();
    let delivered = sink.count() as u64;
    let received = sink.received.lock().unwrap().clone();
    assert!(
        received.iter().all(|p| p.len() == 200 && p[8..].iter().all(|b| *b == 7)),
        "datagrams keep their boundaries and bytes"
    );
    assert_eq!(
        blue["channels"][0]["datagrams"].as_u64(),
        Some(sent),
        "BLUE received every datagram from the group: {blue}"
    );
    // No repair and 20 % loss on each fiber: some blocks of datagrams are lost, and RED says how many.
    assert!(delivered < sent && delivered > sent / 2, "delivered {delivered} of {sent}");
    assert_eq!(red["receiver"]["datagrams_delivered"].as_u64(), Some(delivered), "{red}");
    assert!(red["receiver"]["blocks_lost"].as_u64().unwrap_or(0) > 0, "{red}");
}

#[test]
fn destination_pool_fails_over_and_comes_back() {
    let _turn = heavy();
    let net = loopback_net();
    let sink_ip = Lab::ip(net, 4);
    let first_addr = SocketAddr::from((sink_ip, free_port(sink_ip).unwrap()));
    let second_addr = SocketAddr::from((Lab::ip(net, 5), free_port(Lab::ip(net, 5)).unwrap()));
    let mut first = TcpSink::start(first_addr).unwrap();
    let second = TcpSink::start(second_addr).unwrap();
    let health =
        "mode = \"failover\"\n[channel.health]\nkind = \"tcp\"\ninterval_ms = 200\ntimeout_ms = 200\nfailures = 2\n";
    let channel = tcp_channel(net, vec![first_addr, second_addr], health);
    let mut lab = Lab::start(net, &LinkPlan::default(), std::slice::from_ref(&channel), None).unwrap();
    let streams = |ids: std::ops::Range<u64>| -> HashMap<u64, (u64, [u8; 32])> {
        ids.map(|id| (id, send_stream(channel.listen, id, 10_000).unwrap())).collect()
    };

    let sent = streams(1..4);
    assert!(wait_for(Duration::from_secs(10), || first.streams() >= 3), "streams go to the first destination");
    assert_eq!(compare(&sent, &first).0, 3);

    first.shutdown();
    assert!(wait_for(Duration::from_secs(5), || lab.red_status()["channels"][0]["destinations"][0]["up"] == false));
    let sent = streams(10..13);
    assert!(wait_for(Duration::from_secs(10), || second.streams() >= 3), "the second takes over");
    assert_eq!(compare(&sent, &second).0, 3);

    let first = TcpSink::start(first_addr).unwrap();
    assert!(wait_for(Duration::from_secs(5), || lab.red_status()["channels"][0]["destinations"][0]["up"] == true));
    let sent = streams(20..23);
    assert!(wait_for(Duration::from_secs(10), || first.streams() >= 3), "back to the first once it is healthy");
    assert_eq!(compare(&sent, &first).0, 3);
    assert!(lab.stop());
}

#[test]
fn without_its_spool_a_stream_with_no_destination_up_is_aborted_with_that_reason() {
    let _turn = heavy();
    let net = loopback_net();
    let dead = SocketAddr::from((Lab::ip(net, 4), free_port(Lab::ip(net, 4)).unwrap()));
    let red_extra = "[channel.health]\ninterval_ms = 200\ntimeout_ms = 200\n[channel.spool]\nenabled = false\n";
    let channel = tcp_channel(net, vec![dead], red_extra);
    let mut lab = Lab::start(net, &LinkPlan::default(), std::slice::from_ref(&channel), None).unwrap();
    send_stream(channel.listen, 1, 1000).unwrap();
    let aborted =
        wait_for(Duration::from_secs(10), || lab.red_status()["channels"][0]["streams_aborted"]["no_destination"] == 1);
    let red = lab.red_status();
    assert!(lab.stop());
    assert!(aborted, "{red}");
}

/// Every stream `sent` arrived whole, closed cleanly, at `sink` (repeats of a stream allowed).
fn all_whole(sent: &Sent, sink: &TcpSink) -> bool {
    let received = sink.received.lock().unwrap().clone();
    sent.iter()
        .all(|(id, (len, hash))| received.iter().any(|r| r.id == *id && r.len == *len && r.hash == *hash && r.clean))
}

/// Streams as their client sent them: id → (length, BLAKE3).
type Sent = HashMap<u64, (u64, [u8; 32])>;

/// A lab whose TCP destination is down, and the streams of `sizes` (by id) sent into it.
fn spooling_lab(sizes: &[(u64, usize)]) -> (Lab, SocketAddr, Sent) {
    let net = loopback_net();
    let sink_addr = SocketAddr::from((Lab::ip(net, 4), free_port(Lab::ip(net, 4)).unwrap()));
    let channel = tcp_channel(net, vec![sink_addr], "[channel.health]\ninterval_ms = 200\ntimeout_ms = 200\n");
    let lab = Lab::start(net, &LinkPlan::default(), std::slice::from_ref(&channel), None).unwrap();
    let sent = sizes.iter().map(|(id, len)| (*id, send_stream(channel.listen, *id, *len).unwrap())).collect();
    (lab, sink_addr, sent)
}

/// Waits for every stream of `sent` to arrive whole at `sink` and the spool to be empty; RED's status then.
fn delivered_and_emptied(lab: &Lab, sent: &Sent, sink: &TcpSink) -> serde_json::Value {
    assert!(wait_for(Duration::from_secs(15), || all_whole(sent, sink)), "{:?}", sink.received.lock().unwrap());
    let emptied = || lab.red_status()["channels"][0]["spool"]["items"] == 0;
    assert!(wait_for(Duration::from_secs(5), emptied), "{}", lab.red_status());
    lab.red_status()
}

#[test]
fn streams_sent_while_the_destination_is_down_wait_in_the_spool_and_arrive_whole_when_it_returns() {
    let _turn = heavy();
    let (mut lab, sink_addr, sent) = spooling_lab(&[(1, 300_000), (2, 600_000), (3, 900_000)]);
    let spooled = |lab: &Lab| lab.red_status()["channels"][0]["spool"]["items"].as_u64() == Some(3);
    assert!(wait_for(Duration::from_secs(10), || spooled(&lab)), "{}", lab.red_status());
    std::thread::sleep(Duration::from_secs(2));
    let sink = TcpSink::start(sink_addr).unwrap();
    let red = delivered_and_emptied(&lab, &sent, &sink);
    assert!(lab.stop());
    let spool = &red["channels"][0]["spool"];
    assert_eq!(spool["delivered_from_spool"], 3, "{red}");
    assert_eq!(spool["items"], 0, "{red}");
    assert_eq!(red["channels"][0]["streams_aborted"], serde_json::json!({}), "{red}");
}

#[test]
fn a_red_rx_killed_while_spooling_delivers_what_it_held_after_its_restart() {
    let _turn = heavy();
    let (mut lab, sink_addr, sent) = spooling_lab(&[(1, 1_000_000), (2, 1_000_000), (3, 1_000_000), (4, 1_000_000)]);
    let spooled = |lab: &Lab| {
        let red = lab.red_status();
        red["channels"][0]["spool"]["items"] == 4 && red["receiver"]["streams_ended"] == 4
    };
    assert!(wait_for(Duration::from_secs(10), || spooled(&lab)), "{}", lab.red_status());
    // Complete on disk (each has its .done) before the kill: nothing of them may be lost.
    std::thread::sleep(Duration::from_millis(500));
    lab.red.kill();
    let sink = TcpSink::start(sink_addr).unwrap();
    lab.restart_red().unwrap();
    let red = delivered_and_emptied(&lab, &sent, &sink);
    assert!(lab.stop());
    let spool = &red["channels"][0]["spool"];
    assert_eq!(spool["delivered_from_spool"], 4, "{red}");
    assert_eq!(spool["dropped"], serde_json::json!({}), "{red}");
    // Found at start, each is marked a possible repeat: the killed process may have sent part of it.
    assert_eq!(spool["repeats"], 4, "{red}");
    assert_eq!(sink.received.lock().unwrap().iter().filter(|r| r.len > 0).count(), 4, "no duplicate arrived");
}

#[test]
fn a_channel_table_mismatch_raises_the_alarm() {
    let _turn = heavy();
    let net = loopback_net();
    let sink_ip = Lab::ip(net, 4);
    let sink = TcpSink::start(SocketAddr::from((sink_ip, 0))).unwrap();
    let channel = tcp_channel(net, vec![sink.addr], "");
    let mut red_channel = channel.clone();
    red_channel.name = "renamed-on-red".into();
    let mut lab = Lab::start(net, &LinkPlan::default(), &[channel], Some(&[red_channel])).unwrap();
    let alarmed = wait_for(Duration::from_secs(10), || {
        lab.red_status()["alarms"].as_array().is_some_and(|a| a.iter().any(|x| x["kind"] == "config_mismatch"))
    });
    let log = lab.read_log("red.log");
    assert!(lab.stop());
    assert!(alarmed, "the status file shows the alarm");
    assert_eq!(log.matches("ALARM configuration mismatch").count(), 1, "logged once, not per beacon:\n{log}");
}

fn check_config(program: &std::path::Path, text: &str) -> (bool, String) {
    let dir = tests::lab::TempDir::new("check-config").unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    let output = Command::new(program).arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).replace(&path.display().to_string(), "FILE");
    (output.status.success(), stderr)
}

#[test]
fn check_config_names_the_wrong_field() {
    let bins = binaries().unwrap();
    let blue = "[node]\nname = \"b\"\n[[fiber]]\nremote = \"127.0.0.1:7000\"\n[[channel]]\nnumber = 7\nkind = \"tcp\"\nname = \"h\"\nlisten = \"127.0.0.1:5000\"\n";
    assert_eq!(check_config(&bins.blue_tx, blue), (true, String::new()));
    assert_eq!(
        check_config(&bins.blue_tx, &blue.replace(":5000", ":70000")),
        (false, "FILE: channel 7: listen: port 70000 out of range (0-65535)\n".to_string())
    );
    let (ok, stderr) = check_config(&bins.blue_tx, "this is not toml");
    assert!(!ok && stderr.starts_with("FILE: line 1:"), "{stderr}");

    let red = "[node]\nname = \"r\"\n[[fiber]]\nlisten = \"127.0.0.1:7001\"\n[[channel]]\nnumber = 3\nkind = \"tcp\"\nname = \"h\"\n";
    assert_eq!(check_config(&bins.red_rx, red), (false, "FILE: channel 3: has no destination\n".to_string()));
    let (ok, stderr) = check_config(&bins.red_rx, &format!("{red}colour = \"blue\"\n"));
    assert!(!ok && stderr.contains("unknown field `colour`"), "{stderr}");
}

#[test]
fn a_source_reset_reaches_the_destination_as_a_reset_never_a_clean_close() {
    let _turn = heavy();
    let net = loopback_net();
    let sink_ip = Lab::ip(net, 4);
    let sink = TcpSink::start(SocketAddr::from((sink_ip, 0))).unwrap();
    let channel = tcp_channel(net, vec![sink.addr], "");
    let mut lab = Lab::start(net, &LinkPlan::default(), std::slice::from_ref(&channel), None).unwrap();
    let mut client = tests::lab::connect_retry(channel.listen, Duration::from_secs(10)).unwrap();
    std::io::Write::write_all(&mut client, &tests::lab::stream_content(77, 300_000)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // Close with SO_LINGER 0: the client resets instead of finishing the stream.
    socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
    drop(client);
    assert!(wait_for(Duration::from_secs(10), || sink.streams() == 1));
    assert!(lab.stop());
    let received = sink.received.lock().unwrap().clone();
    let stream = received.iter().find(|r| r.id == 77).unwrap();
    assert!(!stream.clean, "the destination must see a reset: {stream:?}");
    assert_eq!(lab.red_status()["channels"][0]["streams_aborted"]["source_reset"], 1);
}

#[test]
fn connections_beyond_max_sessions_are_refused_and_counted() {
    let _turn = heavy();
    let net = loopback_net();
    let sink_ip = Lab::ip(net, 4);
    let sink = TcpSink::start(SocketAddr::from((sink_ip, 0))).unwrap();
    let mut channel = tcp_channel(net, vec![sink.addr], "");
    channel.blue_extra = "max_sessions = 2\n".into();
    let mut lab = Lab::start(net, &LinkPlan::default(), std::slice::from_ref(&channel), None).unwrap();
    let open: Vec<_> =
        (0..2).map(|_| tests::lab::connect_retry(channel.listen, Duration::from_secs(10)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = tests::lab::connect_retry(channel.listen, Duration::from_secs(10)).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut byte = [0u8; 1];
    let refused = std::io::Read::read(&mut third, &mut byte);
    assert!(refused.is_err(), "the third connection is reset, not left hanging: {refused:?}");
    drop(open);
    assert!(wait_for(Duration::from_secs(5), || lab.blue_status()["channels"][0]["refused"] == 1));
    assert!(lab.stop());
}

#[test]
fn a_red_rx_killed_mid_stream_leaves_its_destination_a_reset_not_a_clean_close() {
    let _turn = heavy();
    let net = loopback_net();
    let sink_ip = Lab::ip(net, 4);
    let sink = TcpSink::start(SocketAddr::from((sink_ip, 0))).unwrap();
    let channel = tcp_channel(net, vec![sink.addr], "");
    // 50 MB at 100 Mbit/s takes four seconds: red-rx dies in the middle.
    let link = LinkPlan { rate_mbps: 100.0, ..LinkPlan::default() };
    let mut lab = Lab::start(net, &link, std::slice::from_ref(&channel), None).unwrap();
    let sender = std::thread::spawn(move || send_stream(channel.listen, 7, 50_000_000));
    assert!(wait_for(Duration::from_secs(20), || lab.red_status()["channels"][0]["bytes"].as_u64().unwrap_or(0)
        > 5_000_000));
    lab.red.kill();
    let _ = sender.join();
    assert!(wait_for(Duration::from_secs(10), || sink.received.lock().unwrap().iter().any(|r| r.len > 0)));
    let received = sink.received.lock().unwrap().clone();
    lab.stop();
    let record = received.iter().find(|r| r.len > 0).unwrap();
    assert!(record.len < 50_000_000, "the stream was cut");
    assert!(!record.clean, "a stream cut by a dying red-rx must reach the destination as a reset");
}

#[test]
fn link_keys_authenticate_every_datagram_and_a_wrong_key_delivers_nothing() {
    let _turn = heavy();
    let key1 = "11".repeat(32);
    let key2 = "22".repeat(32);
    let forged = "33".repeat(32);
    let run = |blue_keys: &str, red_keys: &str, streams: usize, expect_delivery: bool| {
        let net = loopback_net();
        let sink_ip = Lab::ip(net, 4);
        let sink = TcpSink::start(SocketAddr::from((sink_ip, 0))).unwrap();
        let channel = tcp_channel(net, vec![sink.addr], "");
        let extra = tests::lab::LabExtra { blue: blue_keys.to_string(), red: red_keys.to_string() };
        let link = LinkPlan { rate_mbps: 200.0, ..LinkPlan::default() };
        let mut lab = Lab::start_with(net, &link, std::slice::from_ref(&channel), None, &extra).unwrap();
        let sizes = vec![100_000; streams];
        let sent = send_streams(channel.listen, &sizes, streams).unwrap();
        // A refused link never delivers: a few seconds show it as well as ten.
        let limit = Duration::from_secs(if expect_delivery { 10 } else { 4 });
        let arrived = wait_for(limit, || sink.streams() >= streams);
        std::thread::sleep(Duration::from_millis(1200));
        let red = lab.red_status();
        assert!(lab.stop());
        let (intact, _, _) = compare(&sent, &sink);
        (arrived, intact, red)
    };
    let key = |id: u8, hex: &str| format!("\n[[link_key]]\nid = {id}\nkey = \"{hex}\"\n");
    // A rotation's overlap: BLUE already tags with key 2, RED accepts 1 and 2.
    let (arrived, intact, _) = run(&key(2, &key2), &format!("{}{}", key(1, &key1), key(2, &key2)), 3, true);
    assert!(arrived && intact == 3, "keyed link delivers");
    // A forger with the right key id but the wrong key, and a RED that does not know the id.
    let (_, intact, red) = run(&key(1, &forged), &key(1, &key1), 2, false);
    assert_eq!(intact, 0, "nothing under a wrong key is delivered");
    assert!(red["receiver"]["drops"]["bad_tag"].as_u64().unwrap_or(0) > 100, "bad tags counted: {red}");
    let (_, intact, red) = run(&key(2, &key2), &key(1, &key1), 2, false);
    assert_eq!(intact, 0);
    assert!(red["receiver"]["drops"]["unknown_key"].as_u64().unwrap_or(0) > 100, "unknown key ids counted: {red}");
    // Untagged datagrams at a RED that requires tags.
    let (_, intact, red) = run("", &key(1, &key1), 2, false);
    assert_eq!(intact, 0);
    assert!(red["receiver"]["drops"]["missing_tag"].as_u64().unwrap_or(0) > 100, "untagged datagrams counted: {red}");
}
