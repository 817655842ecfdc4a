//! Files and the vault through real processes: blue-tx watching a drop folder and taking uploads,
//! fiber-sim with loss, red-rx writing its output folder and serving downloads.
//!
//! What must hold: every file arrives byte-identical exactly once (repeats and a red-rx restart are
//! recognised by the ledger); nothing partial or corrupted ever shows under a file's name; hostile
//! names, oversized files and a full disk end in quarantine (or a refusal) with a reason.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tests::folders::{self, file_content as content, files_counter, visible_files};
use tests::http::{multipart, request};
use tests::lab::{free_port, loopback_net, vault_channel, wait_for, ChannelPlan, Lab, LinkPlan, Proc, TempDir};
use tests::rawwire::{LoneRed, RawSender};

static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Sizes from 0 B to `max`: mostly small (log-uniform up to 1 MB), every hundredth up to `max`.
fn file_sizes(count: usize, max: usize) -> Vec<usize> {
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    (0..count)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let ceiling = if i % 100 == 1 { max } else { 1 << 20 };
            match i {
                0 => 0,
                1 => max,
                _ => (2f64.powf((state % 1000) as f64 / 1000.0 * (ceiling as f64).log2()) as usize).min(ceiling),
            }
        })
        .collect()
}

fn files_channel(drop: &Path, out: &Path, blue_extra: &str, red_extra: &str) -> ChannelPlan {
    ChannelPlan {
        number: 2,
        kind: "files",
        name: "drop".into(),
        listen: SocketAddr::from(([127, 0, 0, 1], 9)),
        multicast_group: None,
        destinations: Vec::new(),
        red_extra: format!("folder = \"{}\"\n{red_extra}", out.display()),
        blue_extra: format!("folder = \"{}\"\nsettle_ms = 300\nrescan_s = 1\n{blue_extra}", drop.display()),
    }
}

/// The files (or vault) channel's counters in a status file.
fn files_status(status: &serde_json::Value, key: &str) -> u64 {
    files_counter(status, "files", key).max(files_counter(status, "vault", key))
}

fn write_file(path: &Path, bytes: &[u8]) {
    folders::write_file(path, bytes).unwrap();
}

#[test]
fn a_thousand_files_of_mixed_sizes_arrive_identical_exactly_once_through_loss() {
    let _turn = heavy();
    let net = loopback_net();
    let folders = TempDir::new("files-thousand").unwrap();
    let (drop, out) = (folders.path().join("drop"), folders.path().join("out"));
    // Each file is sent twice (repeat = 2): the second copy must be recognised, never delivered again.
    let channel = files_channel(&drop, &out, "repeat = 2\n", "");
    let link = LinkPlan {
        loss_percent: 1.0,
        burst: Some((0.05, 30.0)),
        repair_percent: 5.0,
        rate_mbps: 400.0,
        seed: 21,
        ..LinkPlan::default()
    };
    let mut lab = Lab::start(net, &link, std::slice::from_ref(&channel), None).unwrap();
    let sizes = file_sizes(1000, 20_000_000);
    let mut expected = BTreeMap::new();
    for (i, size) in sizes.iter().enumerate() {
        let name = format!("site-{}/unit {}/file-{i:04}.bin", i % 7, i % 3);
        let bytes = content(i as u64, *size);
        write_file(&drop.join(&name), &bytes);
        expected.insert(name, bytes);
    }
    let total: usize = sizes.iter().sum();
    let done = wait_for(Duration::from_secs(180), || {
        let blue = lab.blue_status();
        files_status(&blue, "sent") >= 2000
            && files_status(&lab.red_status(), "delivered") + files_status(&lab.red_status(), "duplicates") >= 2000
    });
    // One more status period so the counters are final.
    std::thread::sleep(Duration::from_millis(1200));
    let (blue, red) = (lab.blue_status(), lab.red_status());
    let logs = format!("{}\n{}", lab.log("blue.log"), lab.log("red.log"));
    assert!(lab.stop(), "every process stops cleanly");
    assert!(done, "not all copies went through: blue {blue}\nred {red}\n{logs}");
    let delivered = visible_files(&out);
    assert_eq!(
        delivered.len(),
        expected.len(),
        "delivered {} of {} files ({total} bytes)",
        delivered.len(),
        expected.len()
    );
    let mismatched: Vec<_> =
        expected.iter().filter(|(name, bytes)| delivered.get(*name) != Some(bytes)).map(|(n, _)| n).collect();
    assert!(mismatched.is_empty(), "files not byte-identical or missing: {mismatched:?}");
    assert_eq!(files_status(&red, "delivered"), 1000, "{red}");
    let failed = red["channels"][0]["files"]["failed"].clone();
    // A copy broken by loss is quarantined; its twin still delivers the file once.
    println!(
        "1000 files, {total} bytes, each sent twice through 1% loss with bursts: delivered 1000, duplicates {}, copies quarantined {failed}",
        files_status(&red, "duplicates")
    );
    assert!(visible_files(&drop).is_empty(), "sent files are removed from the drop folder");
}

#[test]
fn a_killed_and_restarted_red_rx_does_not_deliver_a_file_twice() {
    let _turn = heavy();
    let net = loopback_net();
    let folders = TempDir::new("files-restart").unwrap();
    let (drop, out) = (folders.path().join("drop"), folders.path().join("out"));
    // Three copies of 2 MB files at 100 Mbit/s: 160 ms a copy, so copies are still coming when red-rx dies.
    let channel = files_channel(&drop, &out, "repeat = 3\n", "");
    let link = LinkPlan { rate_mbps: 100.0, ..LinkPlan::default() };
    let mut lab = Lab::start(net, &link, std::slice::from_ref(&channel), None).unwrap();
    let mut expected = BTreeMap::new();
    for i in 0..12u64 {
        let name = format!("batch/f{i:02}.dat");
        let bytes = content(i, 2_000_000);
        write_file(&drop.join(&name), &bytes);
        expected.insert(name, bytes);
    }
    // Kill red-rx right after its first delivery: that file's other copies arrive at the new process.
    assert!(
        wait_for(Duration::from_secs(30), || lab.read_log("red.log").contains("file delivered")),
        "{}",
        lab.log("red.log")
    );
    lab.red.kill();
    let red_config = lab.dir.path().join("red.toml");
    lab.red = Proc::run_daemon(&lab.bins.red_rx, &red_config).unwrap();
    let all_sent = wait_for(Duration::from_secs(60), || files_status(&lab.blue_status(), "sent") >= 36);
    std::thread::sleep(Duration::from_millis(1500));
    let red = lab.red_status();
    let logs = format!("{}\n{}", lab.log("blue.log"), lab.log("red.log"));
    assert!(lab.stop());
    assert!(all_sent, "{logs}");
    let delivered = visible_files(&out);
    assert_eq!(delivered, expected, "each file exactly once, byte-identical, no ' (2)' copies\n{logs}");
    assert!(files_status(&red, "duplicates") >= 1, "the restarted red-rx recognised copies from its ledger: {red}");
    assert_eq!(std::fs::read_dir(out.join(".part")).unwrap().count(), 0, "no part file left behind");
}

#[test]
fn a_four_gib_file_streams_through_with_bounded_memory() {
    let _turn = heavy();
    let net = loopback_net();
    let folders = TempDir::new("files-4g").unwrap();
    let (drop, out) = (folders.path().join("drop"), folders.path().join("out"));
    std::fs::create_dir_all(&drop).unwrap();
    let channel = files_channel(&drop, &out, "", "");
    // Two fiber-sims and both daemons share two cores: 1 Gbit/s leaves room for the disk writes.
    let link = LinkPlan { rate_mbps: 1000.0, ..LinkPlan::default() };
    // Written beside the drop folder and moved in whole, as a careful writer does.
    let staging = folders.path().join("big.img");
    let size: u64 = 4 << 30;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = std::fs::File::create(&staging).unwrap();
        file.set_len(size).unwrap();
        // Sparse-ish: holes of zeros with a megabyte of data every 256 MiB.
        for at in (0..size).step_by(256 << 20) {
            file.seek(SeekFrom::Start(at)).unwrap();
            file.write_all(&content(at, 1 << 20)).unwrap();
        }
    }
    let expected_hash = hash_file(&staging);
    let mut lab = Lab::start(net, &link, std::slice::from_ref(&channel), None).unwrap();
    let started = Instant::now();
    std::fs::rename(&staging, drop.join("big.img")).unwrap();
    let delivered = wait_for(Duration::from_secs(300), || {
        let red = lab.red_status();
        let failed = red["channels"][0]["files"]["failed"].as_object().is_some_and(|f| !f.is_empty());
        files_status(&red, "delivered") >= 1 || failed
    }) && files_status(&lab.red_status(), "delivered") >= 1;
    let elapsed = started.elapsed();
    let peak = |proc: &Proc| peak_rss_mb(proc.pid().unwrap_or(0));
    let (blue_mb, red_mb) = (peak(&lab.blue), peak(&lab.red));
    let logs = format!("{}\n{}", lab.log("blue.log"), lab.log("red.log"));
    assert!(lab.stop());
    assert!(delivered, "{logs}");
    assert_eq!(hash_file(&out.join("big.img")), expected_hash, "the 4 GiB file arrived byte-identical");
    println!(
        "4 GiB file: {:.1} s ({:.2} Gbit/s), peak RSS blue-tx {blue_mb:.1} MB, red-rx {red_mb:.1} MB",
        elapsed.as_secs_f64(),
        size as f64 * 8.0 / elapsed.as_secs_f64() / 1e9
    );
    assert!(blue_mb < 100.0 && red_mb < 100.0, "peak RSS blue {blue_mb:.1} MB, red {red_mb:.1} MB");
}

fn hash_file(path: &Path) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(std::fs::File::open(path).unwrap()).unwrap();
    *hasher.finalize().as_bytes()
}

/// The process's peak resident set (VmHWM), in MB.
fn peak_rss_mb(pid: u32) -> f64 {
    tests::rawwire::proc_kb(pid, "VmHWM:") / 1024.0
}

#[test]
fn vault_uploads_are_downloadable_on_red_with_ranges_and_refusals_say_why() {
    let _turn = heavy();
    let net = loopback_net();
    let folders = TempDir::new("vault").unwrap();
    let (channel, download) =
        vault_channel(net, &folders.path().join("spool"), &folders.path().join("vault"), "max_file_size = 5000000\n")
            .unwrap();
    let link = LinkPlan { loss_percent: 1.0, ..LinkPlan::default() };
    let mut lab = Lab::start(net, &link, std::slice::from_ref(&channel), None).unwrap();
    let upload = channel.listen;
    let report = content(1, 3_000_000);
    let answer = request(upload, "PUT", "/upload/reports/q3.pdf", &[], &report).unwrap();
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["state"], "accepted for transfer");
    assert_eq!(answer.json()["size"], 3_000_000);
    assert_eq!(answer.json()["id"].as_str().map(str::len), Some(32));
    let (form, content_type) = multipart(&[("a.txt", b"alpha"), ("b.csv", b"x,y\n1,2\n")]);
    let answer = request(upload, "POST", "/upload", &[("Content-Type", &content_type)], &form).unwrap();
    assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.json()["accepted"].as_array().map(Vec::len), Some(2));
    // Refusals: too large (nothing kept), a hostile name.
    let answer = request(upload, "PUT", "/upload/huge.bin", &[], &content(2, 6_000_000)).unwrap();
    assert_eq!(answer.status, 413);
    let answer = request(upload, "PUT", "/upload/..%2F..%2Fetc%2Fpasswd", &[], b"x").unwrap();
    assert_eq!(answer.status, 400);
    assert!(answer.json()["error"].as_str().unwrap_or("").contains("name refused"), "{:?}", answer.json());

    let arrived = wait_for(Duration::from_secs(30), || files_status(&lab.red_status(), "delivered") >= 3);
    let logs = format!("{}\n{}", lab.log("blue.log"), lab.log("red.log"));
    assert!(arrived, "{logs}");
    let listing = request(download, "GET", "/files", &[], b"").unwrap().json();
    let paths: Vec<&str> = listing["files"].as_array().unwrap().iter().filter_map(|f| f["path"].as_str()).collect();
    assert_eq!(paths, vec!["a.txt", "b.csv", "reports/q3.pdf"]);
    let whole = request(download, "GET", "/files/reports/q3.pdf", &[], b"").unwrap();
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), Some("3000000"));
    assert_eq!(whole.header("content-type"), Some("application/pdf"));
    assert!(whole.body == report, "download is byte-identical");
    let part = request(download, "GET", "/files/reports/q3.pdf", &[("Range", "bytes=1000-1999")], b"").unwrap();
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 1000-1999/3000000"));
    assert!(part.body == report[1000..2000]);
    assert_eq!(request(download, "GET", "/files/..%2F.ledger.jsonl", &[], b"").unwrap().status, 400);
    assert_eq!(request(download, "GET", "/files/.ledger.jsonl", &[], b"").unwrap().status, 404);
    assert_eq!(request(download, "DELETE", "/files/a.txt", &[], b"").unwrap().status, 204);
    assert_eq!(request(download, "GET", "/files/a.txt", &[], b"").unwrap().status, 404);
    let blue = lab.blue_status();
    assert!(lab.stop());
    assert_eq!(files_status(&blue, "accepted"), 3, "refused uploads are not counted as accepted: {blue}");
    assert_eq!(std::fs::read_dir(folders.path().join("spool")).unwrap().count(), 0, "the spool is empty once sent");
}

/// Sends whole files on channel 2 straight to RED's fibers, as a faulty or hostile BLUE could.
fn send_files(to: &[SocketAddr], files: &[(String, Vec<u8>)]) {
    let mut raw = RawSender::new(to, 0x5eed_0000_0000_0001, 1).unwrap();
    for (index, (name, bytes)) in files.iter().enumerate() {
        raw.file(2, index as u64 + 1, name, bytes, index as u8 + 1).unwrap();
    }
    raw.flush();
}

fn files_section(out: &Path) -> String {
    format!("[[channel]]\nnumber = 2\nkind = \"files\"\nname = \"drop\"\nfolder = \"{}\"\n", out.display())
}

#[test]
fn hostile_names_from_the_wire_are_quarantined_with_their_reasons() {
    let dir = TempDir::new("files-hostile").unwrap();
    let out = dir.path().join("out");
    let lone = LoneRed::start(dir.path(), &files_section(&out)).unwrap();
    let (mut red, fibers, status) = (lone.red, lone.fibers, lone.status);
    let hostile = [
        "../../etc/passwd",
        "/etc/shadow",
        "CON",
        "docs/aux.txt",
        &"n".repeat(4000),
        "nul\0byte",
        "ok/../../escape",
        "C:\\Windows\\win.ini",
    ];
    let mut files: Vec<(String, Vec<u8>)> = hostile.iter().map(|n| (n.to_string(), b"payload".to_vec())).collect();
    files.push(("fine/report.txt".into(), b"a good file among bad ones".to_vec()));
    send_files(&fibers, &files);
    let settled = wait_for(Duration::from_secs(10), || {
        let s = Lab::status(&status);
        files_status(&s, "delivered") >= 1
            && s["channels"][0]["files"]["failed"]["name_refused"].as_u64() == Some(hostile.len() as u64)
    });
    let final_status = Lab::status(&status);
    red.stop(Duration::from_secs(10));
    assert!(settled, "{final_status}\n{}", std::fs::read_to_string(dir.path().join("red.log")).unwrap_or_default());
    assert_eq!(visible_files(&out).into_keys().collect::<Vec<_>>(), vec!["fine/report.txt".to_string()]);
    assert!(!dir.path().join("etc").exists() && !Path::new("/etc/passwd.part").exists());
    let reasons: Vec<String> = std::fs::read_dir(out.join(".quarantine"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".reason.json"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert_eq!(reasons.len(), hostile.len());
    for needle in [
        "'..' and '.' components",
        "absolute paths",
        "Windows device name",
        "bytes long",
        "control character",
        "backslashes",
    ] {
        assert!(reasons.iter().any(|r| r.contains(needle)), "no reason mentions {needle:?}: {reasons:#?}");
    }
}

/// A small file system of our own for the output folder: a tmpfs mounted in a private mount namespace
/// that only red-rx lives in, so nothing is left mounted whatever happens to the test.
#[test]
fn a_full_disk_on_red_quarantines_the_file_and_delivery_recovers() {
    // SAFETY-free check for root: mounting needs it.
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let dir = TempDir::new("files-full").unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let bins = tests::bins::binaries().unwrap();
    let net = loopback_net();
    let ip = Lab::ip(net, 2);
    let fibers: Vec<SocketAddr> = (0..2).map(|_| SocketAddr::from((ip, free_port(ip).unwrap()))).collect();
    let status = dir.path().join("red-status.json");
    let mut toml = format!(
        "[node]\nname = \"red1\"\nstatus_file = \"{}\"\nstate_dir = \"{}\"\n",
        status.display(),
        status.with_file_name("red-state").display()
    );
    for fiber in &fibers {
        toml += &format!("[[fiber]]\nlisten = \"{fiber}\"\n");
    }
    toml += &files_section(&out);
    let config = dir.path().join("red.toml");
    std::fs::write(&config, toml).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=4m tmpfs '{}' && exec '{}' run --config '{}'",
        out.display(),
        bins.red_rx.display(),
        config.display()
    );
    let mut red = Proc::spawn(
        "red-rx",
        Path::new("unshare"),
        &["--mount".into(), "--propagation".into(), "private".into(), "sh".into(), "-c".into(), script],
        &dir.path().join("red.log"),
    )
    .unwrap();
    assert!(
        wait_for(Duration::from_secs(20), || status.exists()),
        "{}",
        std::fs::read_to_string(dir.path().join("red.log")).unwrap_or_default()
    );
    // The output folder as red-rx sees it, inside its mount namespace.
    let seen = PathBuf::from(format!("/proc/{}/root{}", red.pid().unwrap(), out.display()));
    let files = vec![
        ("first.bin".to_string(), content(1, 1_000_000)),
        ("too-big-for-the-disk.bin".to_string(), content(2, 6_000_000)),
        ("after.bin".to_string(), content(3, 1_000_000)),
    ];
    send_files(&fibers, &files);
    let settled = wait_for(Duration::from_secs(15), || files_status(&Lab::status(&status), "delivered") >= 2);
    let final_status = Lab::status(&status);
    let visible = visible_files(&seen);
    let reasons: Vec<String> = std::fs::read_dir(seen.join(".quarantine"))
        .map(|items| items.flatten().filter_map(|e| std::fs::read_to_string(e.path()).ok()).collect())
        .unwrap_or_default();
    red.stop(Duration::from_secs(10));
    assert!(settled, "{final_status}\n{}", std::fs::read_to_string(dir.path().join("red.log")).unwrap_or_default());
    assert_eq!(visible.keys().cloned().collect::<Vec<_>>(), vec!["after.bin".to_string(), "first.bin".to_string()]);
    assert!(visible["first.bin"] == files[0].1 && visible["after.bin"] == files[2].1);
    assert_eq!(final_status["channels"][0]["files"]["failed"]["disk_full"].as_u64(), Some(1), "{final_status}");
    assert!(reasons.iter().any(|r| r.contains("too-big-for-the-disk.bin") && r.contains("disk_full")), "{reasons:?}");
    assert!(!out.join("first.bin").exists(), "the tmpfs lived only in red-rx's namespace");
}

#[test]
fn a_small_file_whose_every_block_is_lost_is_named_on_red_by_the_manifest() {
    let _turn = heavy();
    let folders = TempDir::new("files-never").unwrap();
    let (drop, out) = (folders.path().join("drop"), folders.path().join("out"));
    let channel = files_channel(&drop, &out, "", "");
    let mut lab = Lab::start(loopback_net(), &LinkPlan::default(), std::slice::from_ref(&channel), None).unwrap();
    let sent =
        |lab: &Lab, count| wait_for(Duration::from_secs(20), || files_status(&lab.blue_status(), "sent") >= count);
    write_file(&drop.join("before.dat"), b"arrives");
    assert!(sent(&lab, 1) && wait_for(Duration::from_secs(10), || visible_files(&out).len() == 1));
    // Both fibers go dark while one small file (a single block) crosses, then come back: the file's
    // block is gone for good, its stream never opened on RED, and only the manifest names it.
    let toggle_fibers = |lab: &Lab| lab.fibers.iter().for_each(|fiber| fiber.signal(libc::SIGUSR2));
    toggle_fibers(&lab);
    write_file(&drop.join("plant/lost-in-the-dark.dat"), b"never seen on RED");
    let lost_sent = sent(&lab, 2);
    std::thread::sleep(Duration::from_millis(300));
    toggle_fibers(&lab);
    write_file(&drop.join("after.dat"), b"arrives too");
    let reported = wait_for(Duration::from_secs(10), || {
        files_failed(&lab.red_status(), "never_arrived") == 1 && visible_files(&out).len() == 2
    });
    let red = lab.red_status();
    let logs = format!("{}\n{}", lab.log("blue.log"), lab.log("red.log"));
    assert!(lab.stop());
    assert!(lost_sent && reported, "{red}\n{logs}");
    let delivered = visible_files(&out);
    assert_eq!(delivered.keys().collect::<Vec<_>>(), ["after.dat", "before.dat"]);
    let recent = red.to_string();
    assert!(
        recent.contains("plant/lost-in-the-dark.dat") && recent.contains("every block of the file was lost"),
        "{red}"
    );
    assert!(logs.contains("file not delivered") && logs.contains("lost-in-the-dark.dat"), "{logs}");
    let manifests = lab.blue_status()["transmit"]["manifests"].as_u64().unwrap_or(0);
    assert!(manifests > 0, "blue-tx counts its manifests");
}

/// A files channel's failures under one label, from a status file.
fn files_failed(status: &serde_json::Value, label: &str) -> u64 {
    status["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|channel| channel["files"]["failed"][label].as_u64())
        .sum()
}

/// A TCP destination that accepts and never reads until `for_how_long` has passed, then drops what it
/// held (its peer sees a reset) and closes: a server hung for that long.
fn stalled_destination(addr: SocketAddr, for_how_long: Duration) -> std::thread::JoinHandle<usize> {
    let listener = std::net::TcpListener::bind(addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let until = Instant::now() + for_how_long;
        let mut held = Vec::new();
        while Instant::now() < until {
            match listener.accept() {
                Ok((connection, _)) => held.push(connection),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        held.len()
    })
}

#[test]
fn a_tcp_destination_stalled_for_30_s_does_not_slow_a_files_channel() {
    let _turn = heavy();
    let net = loopback_net();
    let folders = TempDir::new("files-stalled-tcp").unwrap();
    let (drop, out) = (folders.path().join("drop"), folders.path().join("out"));
    let tcp_ip = Lab::ip(net, 1);
    let tcp_addr = SocketAddr::from((Lab::ip(net, 4), free_port(Lab::ip(net, 4)).unwrap()));
    let tcp = ChannelPlan {
        number: 1,
        kind: "tcp",
        name: "historian".into(),
        listen: SocketAddr::from((tcp_ip, free_port(tcp_ip).unwrap())),
        multicast_group: None,
        destinations: vec![tcp_addr],
        red_extra: "[channel.health]\ninterval_ms = 200\ntimeout_ms = 200\n[channel.spool]\nstall = 8\n".into(),
        blue_extra: String::new(),
    };
    let files = files_channel(&drop, &out, "", "");
    let mut lab = Lab::start(net, &LinkPlan::default(), &[tcp.clone(), files], None).unwrap();
    let deliver = |first: usize, count: usize| {
        let started = Instant::now();
        for i in first..first + count {
            write_file(&drop.join(format!("batch/file-{i:03}.bin")), &content(i as u64, 200_000));
        }
        let arrived = wait_for(Duration::from_secs(60), || {
            files_status(&lab.red_status(), "delivered") >= (first + count) as u64
        });
        assert!(arrived, "files {first}.. did not arrive: {}", lab.red_status());
        count as f64 / started.elapsed().as_secs_f64()
    };
    let baseline = deliver(0, 30);

    let stalled = stalled_destination(tcp_addr, Duration::from_secs(30));
    let stall_started = Instant::now();
    let (len, hash) = tests::lab::send_stream(tcp.listen, 77, 60_000_000).unwrap();
    let decoded = wait_for(Duration::from_secs(20), || lab.red_status()["channels"][0]["spool"]["bytes"] == len);
    assert!(decoded, "{}", lab.red_status());
    let during = deliver(30, 30);
    assert!(stall_started.elapsed() < Duration::from_secs(30), "the files were measured while the destination hung");
    // The same files, the same link: the hung destination may cost the files channel nothing it can
    // see; a third is room for a busy machine, not for a channel waiting on another.
    assert!(
        during > baseline / 3.0,
        "files per second: {baseline:.1} before, {during:.1} while TCP's destination hung"
    );

    let held = stalled.join().unwrap();
    let sink = tests::lab::TcpSink::start(tcp_addr).unwrap();
    let whole =
        || sink.received.lock().unwrap().iter().any(|r| r.id == 77 && r.len == len && r.hash == hash && r.clean);
    assert!(wait_for(Duration::from_secs(30), whole), "{:?}\n{}", sink.received.lock().unwrap(), lab.red_status());
    let repeats =
        wait_for(Duration::from_secs(5), || lab.red_status()["channels"][0]["spool"]["repeats"].as_u64() >= Some(1));
    let red = lab.red_status();
    assert!(lab.stop());
    assert!(held >= 2, "the spool gave the hung destination up after `stall` and tried again ({held} connections)");
    assert!(repeats, "the stream was delivered again whole after the hung connection took part of it: {red}");
    assert_eq!(red["channels"][0]["streams_aborted"], serde_json::json!({}), "{red}");
}
