//! The attacks of the security review, replayed against real processes. Each test does what the
//! attacker did and asserts what must hold now.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tests::http::request;
use tests::lab::{
    free_port, loopback_net, vault_channel, wait_for, ChannelPlan, Lab, LabExtra, LinkPlan, Proc, TcpSink, TempDir,
};
use tests::rawwire::{LoneRed, RawSender};

fn vault_section(out: &Path, download: SocketAddr) -> String {
    format!(
        "[[channel]]\nnumber = 2\nkind = \"vault\"\nname = \"vault\"\nfolder = \"{}\"\nlisten = \"{download}\"\n",
        out.display()
    )
}

fn failed(status: &serde_json::Value, label: &str) -> u64 {
    status["channels"][0]["files"]["failed"][label].as_u64().unwrap_or(0)
}

/// Item 1: a file named to land in RED's `.part/` as a delivery announcement that names a file
/// elsewhere. Sent straight to the fibers (as a BLUE that did not refuse it would), it is quarantined;
/// planted there anyway, the next start neither links, serves nor removes what it names.
#[test]
fn a_forged_announcement_sent_to_red_moves_nothing_at_the_next_start() {
    let dir = TempDir::new("security-forged-note").unwrap();
    let out = dir.path().join("vault");
    let secret = dir.path().join("secret.txt");
    std::fs::write(&secret, b"RED's own file").unwrap();
    let stem = "00000000000000aa-1-1";
    let forged = serde_json::json!({
        "entry": {"id": "0a".repeat(16), "blake3": blake3::hash(b"RED's own file").to_hex().to_string(),
                  "session": "aa", "epoch": 1, "stream": 1, "path": "", "size": 14, "delivered_at": 0, "node": ""},
        "name": "stolen.txt",
        "part": secret,
    })
    .to_string();
    let ip = Lab::ip(loopback_net(), 2);
    let download = SocketAddr::from((ip, free_port(ip).unwrap()));
    let lone = LoneRed::start(dir.path(), &vault_section(&out, download)).unwrap();
    let mut raw = RawSender::new(&lone.fibers, 0x5ec0_0000_0000_0001, 1).unwrap();
    let hostile = [format!(".part/{stem}.ready.json"), ".quarantine/x.reason.json".into(), ".ledger (2).jsonl".into()];
    for (index, name) in hostile.iter().enumerate() {
        raw.file(2, index as u64 + 1, name, forged.as_bytes(), index as u8 + 1).unwrap();
    }
    raw.flush();
    let refused = wait_for(Duration::from_secs(10), || failed(&lone.status(), "name_refused") == 3);
    let status = lone.status();
    let mut red = lone.red;
    red.stop(Duration::from_secs(10));
    assert!(refused, "{status}");
    assert!(!out.join(format!(".part/{stem}.ready.json")).exists(), "nothing reaches RED's part folder");
    assert!(!out.join(".ledger (2).jsonl").exists() && !out.join(".quarantine/x.reason.json").exists());

    // Planted by other means: the next start refuses it.
    std::fs::write(out.join(format!(".part/{stem}.ready.json")), &forged).unwrap();
    std::fs::remove_file(dir.path().join("red-status.json")).unwrap();
    let lone = LoneRed::start(dir.path(), &vault_section(&out, download)).unwrap();
    assert!(wait_for(Duration::from_secs(10), || request(download, "GET", "/files", &[], b"").is_ok()));
    let listing = request(download, "GET", "/files", &[], b"").unwrap().json();
    let log = std::fs::read_to_string(&lone.log).unwrap_or_default();
    let mut red = lone.red;
    red.stop(Duration::from_secs(10));
    assert_eq!(listing["files"].as_array().map(Vec::len), Some(0), "nothing served: {listing}");
    assert_eq!(std::fs::read(&secret).unwrap(), b"RED's own file", "the named file stays where it was");
    assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1, "and is linked nowhere");
    assert!(!out.join(format!(".part/{stem}.ready.json")).exists(), "the forged note is removed");
    assert!(log.contains("refusing a delivery announcement"), "{log}");
}

/// Items 1 and 3 on BLUE and on RED's vault: dot-leading names are refused at upload with the reason,
/// and a delivered HTML page is served as a download, never rendered on the vault's origin.
#[test]
fn vault_refuses_hidden_names_and_serves_uploads_as_attachments() {
    let net = loopback_net();
    let folders = TempDir::new("security-vault").unwrap();
    let (channel, download) =
        vault_channel(net, &folders.path().join("spool"), &folders.path().join("vault"), "").unwrap();
    let mut lab = Lab::start(net, &LinkPlan::default(), std::slice::from_ref(&channel), None).unwrap();
    let upload = channel.listen;
    for name in
        [".part%2Fx.ready.json", ".quarantine%2Fx", ".ledger%20(2).jsonl", "a%2F.shadow%2Fb", "x%E2%80%AEfdp.exe"]
    {
        let answer = request(upload, "PUT", &format!("/upload/{name}"), &[], b"x").unwrap();
        assert_eq!(answer.status, 400, "{name}");
        let error = answer.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(error.contains("name refused"), "{name}: {error}");
    }
    let page = b"<html><script>fetch('/api/v1/ha/demote',{method:'POST'})</script></html>";
    assert_eq!(request(upload, "PUT", "/upload/page.html", &[], page).unwrap().status, 201);
    let arrived = wait_for(Duration::from_secs(20), || {
        request(download, "GET", "/files/page.html", &[], b"").is_ok_and(|a| a.status == 200)
    });
    let served = request(download, "GET", "/files/page.html", &[], b"").unwrap();
    let logs = format!("{}\n{}", lab.log("blue.log"), lab.log("red.log"));
    assert!(lab.stop());
    assert!(arrived, "{logs}");
    assert!(served.body == page);
    assert_eq!(served.header("x-content-type-options"), Some("nosniff"));
    assert!(
        served.header("content-disposition").is_some_and(|d| d.starts_with("attachment;")),
        "{:?}",
        served.header("content-disposition")
    );
    assert!(served.header("content-security-policy").is_some_and(|c| c.contains("sandbox")));
}

fn hash_secret(program: &Path, secret: &str) -> String {
    tests::bins::hash_secret(program, secret).unwrap()
}

/// Writes `content` to a TCP source, retrying the connection while the source comes up, in pieces
/// with `pause` between them so the transfer lasts.
fn send_stream(to: SocketAddr, content: &[u8], pause: Duration) {
    use std::io::Write;
    let mut connection = None;
    assert!(wait_for(Duration::from_secs(20), || {
        connection = std::net::TcpStream::connect(to).ok();
        connection.is_some()
    }));
    let mut connection = connection.unwrap();
    for piece in content.chunks(64 * 1024) {
        connection.write_all(piece).unwrap();
        std::thread::sleep(pause);
    }
}

/// Records every datagram that reaches `sockets` until `stop`.
fn record(sockets: Vec<std::net::UdpSocket>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Vec<u8>>> {
    std::thread::spawn(move || {
        let mut recorded = Vec::new();
        let mut buffer = vec![0u8; 65536];
        for socket in &sockets {
            socket.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        }
        while !stop.load(Ordering::Relaxed) {
            for socket in &sockets {
                while let Ok(n) = socket.recv(&mut buffer) {
                    recorded.push(buffer[..n].to_vec());
                }
            }
        }
        recorded
    })
}

/// Item 2: datagrams recorded from an earlier blue-tx run (same epoch, same keys) replayed at RED during
/// a live transfer: the live transfer arrives intact, nothing recorded is delivered, the live session
/// is never replaced, and the alarm shows in the status file and the metrics.
fn replay_of_an_earlier_run_is_refused(keys: &str) {
    const TOKEN: &str = "scrape-token-for-replay";
    let net = loopback_net();
    let (blue_ip, red_ip) = (Lab::ip(net, 1), Lab::ip(net, 2));
    let sink = TcpSink::start(SocketAddr::from((Lab::ip(net, 4), 0))).unwrap();
    let channel = ChannelPlan {
        number: 1,
        kind: "tcp",
        name: "historian".into(),
        listen: SocketAddr::from((blue_ip, free_port(blue_ip).unwrap())),
        multicast_group: None,
        destinations: vec![sink.addr],
        red_extra: String::new(),
        blue_extra: String::new(),
    };
    let bins = tests::bins::binaries().unwrap();
    let api = SocketAddr::from((red_ip, free_port(red_ip).unwrap()));
    let management =
        format!("\n[management]\nlisten = \"{api}\"\ntoken_hash = \"{}\"\n", hash_secret(&bins.blue_tx, TOKEN));
    let extra = LabExtra { blue: keys.to_string(), red: format!("{keys}{management}") };
    let link = LinkPlan { rate_mbps: 200.0, ..LinkPlan::default() };
    let mut lab = Lab::start_with(net, &link, std::slice::from_ref(&channel), None, &extra).unwrap();
    let blue_config = lab.dir.path().join("blue.toml");
    let red_toml = std::fs::read_to_string(lab.dir.path().join("red.toml")).unwrap();
    let red_fibers: Vec<SocketAddr> = red_toml
        .lines()
        .filter_map(|l| l.strip_prefix("listen = \""))
        .take(2)
        .map(|l| l.trim_end_matches('"').parse().unwrap())
        .collect();

    // The earlier run: the same blue-tx configuration, its fibers going to a recorder.
    assert!(lab.blue.stop(Duration::from_secs(10)));
    let recorder: Vec<std::net::UdpSocket> =
        (0..2).map(|_| std::net::UdpSocket::bind((Lab::ip(net, 5), 0)).unwrap()).collect();
    let blue_toml = std::fs::read_to_string(&blue_config).unwrap();
    let mut to_recorder = recorder.iter().map(|s| s.local_addr().unwrap());
    let mut recorded_config = Vec::new();
    for line in blue_toml.lines() {
        match line.starts_with("remote = ").then(|| to_recorder.next()).flatten() {
            Some(addr) => recorded_config.push(format!("remote = \"{addr}\"")),
            None => recorded_config.push(line.to_string()),
        }
    }
    let recorded_config_path = lab.dir.path().join("earlier.toml");
    std::fs::write(&recorded_config_path, recorded_config.join("\n")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let recording = record(recorder, Arc::clone(&stop));
    let mut earlier = Proc::run_daemon(&bins.blue_tx, &recorded_config_path).unwrap();
    let old = tests::folders::file_content(7, 2_000_000);
    send_stream(channel.listen, &old, Duration::ZERO);
    std::thread::sleep(Duration::from_secs(1));
    assert!(earlier.stop(Duration::from_secs(10)));
    stop.store(true, Ordering::Relaxed);
    let recorded = recording.join().unwrap();
    assert!(recorded.len() > 1000, "the earlier run was recorded: {} datagrams", recorded.len());

    // The live run, and the recording replayed in the middle of its transfer.
    lab.blue = Proc::run_daemon(&bins.blue_tx, &blue_config).unwrap();
    let live = tests::folders::file_content(8, 6_000_000);
    let client = {
        let (listen, live) = (channel.listen, live.clone());
        std::thread::spawn(move || send_stream(listen, &live, Duration::from_millis(25)))
    };
    std::thread::sleep(Duration::from_millis(700));
    let replayer = std::net::UdpSocket::bind((Lab::ip(net, 5), 0)).unwrap();
    for (index, datagram) in recorded.iter().enumerate() {
        let _ = replayer.send_to(datagram, red_fibers[index % 2]);
        if index % 32 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    client.join().unwrap();
    let arrived = wait_for(Duration::from_secs(20), || sink.streams() >= 1);
    std::thread::sleep(Duration::from_secs(1));
    let status = lab.red_status();
    let auth = format!("Bearer {TOKEN}");
    let metrics = request(api, "GET", "/metrics", &[("Authorization", &auth)], b"").unwrap();
    let api_status = request(api, "GET", "/api/v1/status", &[("Authorization", &auth)], b"").unwrap().json();
    let logs = format!("{}\n{}", lab.log("blue.log"), lab.log("red.log"));
    assert!(lab.stop());
    assert!(arrived, "{logs}");
    let received = sink.received.lock().unwrap().iter().filter(|r| r.len > 0).cloned().collect::<Vec<_>>();
    assert_eq!(received.len(), 1, "only the live stream reaches the destination: {received:?}");
    assert_eq!(received[0].len, live.len() as u64);
    assert_eq!(received[0].hash, *blake3::hash(&live).as_bytes(), "the live stream is intact");
    assert!(received[0].clean);
    assert!(status["receiver"]["drops"]["stale_session"].as_u64().unwrap_or(0) > 0, "{}", status["receiver"]);
    assert_eq!(status["receiver"]["streams_broken"], serde_json::json!({}), "the live session was never replaced");
    for alarms in [&status["alarms"], &api_status["alarms"]] {
        let raised = alarms.as_array().is_some_and(|a| a.iter().any(|a| a["kind"] == "stale_session"));
        assert!(raised, "the alarm is raised: {alarms}");
    }
    let body = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(
        body.lines()
            .any(|l| l.starts_with("diode_alarm{") && l.contains("kind=\"stale_session\"") && l.ends_with("} 1.0")),
        "{body}"
    );
}

#[test]
fn a_replayed_recording_of_an_earlier_run_takes_nothing_over() {
    replay_of_an_earlier_run_is_refused("");
}

#[test]
fn a_replayed_recording_of_an_earlier_run_takes_nothing_over_with_link_keys() {
    replay_of_an_earlier_run_is_refused(&format!("\n[[link_key]]\nid = 1\nkey = \"{}\"\n", "5a".repeat(32)));
}

/// Item 8: zero-length datagrams cross like any other and are counted on both sides, beside datagrams
/// with content.
#[test]
fn zero_length_datagrams_are_delivered_and_counted() {
    let net = loopback_net();
    let red_ip = Lab::ip(net, 4);
    let sink = tests::lab::UdpSink::start(SocketAddr::from((red_ip, free_port(red_ip).unwrap())), None).unwrap();
    let blue_ip = Lab::ip(net, 1);
    let channel = ChannelPlan {
        number: 5,
        kind: "udp",
        name: "telemetry".into(),
        listen: SocketAddr::from((blue_ip, free_port(blue_ip).unwrap())),
        multicast_group: None,
        destinations: vec![sink.addr],
        red_extra: String::new(),
        blue_extra: String::new(),
    };
    let mut lab = Lab::start(net, &LinkPlan::default(), std::slice::from_ref(&channel), None).unwrap();
    let socket = std::net::UdpSocket::bind((blue_ip, 0)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for index in 0..100u8 {
        let payload: &[u8] = if index % 2 == 0 { b"" } else { b"reading" };
        socket.send_to(payload, channel.listen).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let arrived = wait_for(Duration::from_secs(10), || sink.count() >= 100);
    std::thread::sleep(Duration::from_millis(500));
    assert!(lab.stop());
    let (blue, red) = (lab.blue_status(), lab.red_status());
    let received = sink.received.lock().unwrap().clone();
    assert!(arrived, "{} of 100 arrived: blue {} red {}", received.len(), blue["channels"], red["channels"]);
    assert_eq!(received.iter().filter(|d| d.is_empty()).count(), 50, "the empty ones arrive as empty datagrams");
    assert_eq!(blue["channels"][0]["datagrams"].as_u64(), Some(100), "{}", blue["channels"]);
    assert_eq!(red["channels"][0]["datagrams"].as_u64(), Some(100), "{}", red["channels"]);
}
