//! `diode-lab demo`: the product end to end on loopback, as real processes.
//!
//! Starts blue-tx, red-rx and two fiber-sim processes (a little loss and bursts), then pushes
//! concurrent TCP streams of mixed sizes, a run of UDP datagrams, files dropped in nested folders and
//! HTTP vault uploads through, and checks what arrived: every TCP stream byte-identical and closed
//! cleanly, every file in RED's output folder exactly once and byte-identical, every upload
//! downloadable from RED's vault byte for byte, and every UDP loss counted. HA joins in a later issue.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::collections::BTreeMap;
use std::path::Path;

use crate::folders::{check_folder, file_content, files_counter, write_file, FolderCheck};
use crate::http::{multipart, request};
use crate::lab::{
    free_port, loopback_net, send_stream, ChannelPlan, Lab, LabExtra, LinkPlan, TcpSink, TempDir, UdpSink,
};

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub streams: usize,
    pub max_stream_bytes: usize,
    pub datagrams: usize,
    /// Files dropped in BLUE's drop folder (nested folders, 0 B up to `max_file_bytes`).
    pub files: usize,
    pub max_file_bytes: usize,
    /// Files uploaded to BLUE's vault (half with PUT, half in one multipart form).
    pub uploads: usize,
    pub link: LinkPlan,
    /// Longest the demo waits for everything to arrive.
    pub timeout: Duration,
    /// Leave everything running after the checks (until Ctrl-C) with the dashboards' addresses printed.
    pub keep_running: bool,
}

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions {
            streams: 24,
            max_stream_bytes: 8 << 20,
            datagrams: 2_000,
            files: 60,
            max_file_bytes: 16 << 20,
            uploads: 10,
            link: LinkPlan {
                loss_percent: 0.5,
                burst: Some((0.2, 25.0)),
                repair_percent: 10.0,
                rate_mbps: 1000.0,
                seed: 1,
                ..LinkPlan::default()
            },
            timeout: Duration::from_secs(90),
            keep_running: false,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct DemoReport {
    pub tcp_streams: usize,
    pub tcp_sent_bytes: u64,
    pub tcp_delivered_bytes: u64,
    pub tcp_intact_streams: usize,
    /// Streams a destination saw closed cleanly with wrong content: must always be zero.
    pub tcp_false_complete: usize,
    pub udp_sent: u64,
    pub udp_delivered: u64,
    pub files_sent: usize,
    pub files: FolderCheck,
    pub vault_uploaded: usize,
    pub vault_downloaded: usize,
    pub vault_intact: usize,
    pub fiber_dropped: u64,
    pub clean_shutdown: bool,
    /// Each node's dashboard (name, URL) and the credentials that open them.
    pub dashboards: Vec<(String, String)>,
    pub credentials: (String, String),
    pub elapsed: Duration,
    pub logs: String,
}

impl DemoReport {
    pub fn tcp_intact(&self) -> bool {
        self.tcp_intact_streams == self.tcp_streams && self.tcp_false_complete == 0
    }

    pub fn files_intact(&self) -> bool {
        self.files.intact == self.files_sent && self.files.lost == 0 && self.files.extra == 0
    }

    pub fn vault_intact(&self) -> bool {
        self.vault_intact == self.vault_uploaded && self.vault_downloaded == self.vault_uploaded
    }

    pub fn ok(&self) -> bool {
        self.tcp_intact() && self.files_intact() && self.vault_intact() && self.udp_delivered <= self.udp_sent
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "channels": {
                "tcp": {
                    "sent_bytes": self.tcp_sent_bytes,
                    "delivered_bytes": self.tcp_delivered_bytes,
                    "streams": self.tcp_streams,
                    "intact_streams": self.tcp_intact_streams,
                    "intact": self.tcp_intact(),
                },
                "udp": {
                    "sent": self.udp_sent,
                    "delivered": self.udp_delivered,
                    "lost": self.udp_sent.saturating_sub(self.udp_delivered),
                },
            },
            "files": {
                "sent": self.files_sent,
                "delivered": self.files.intact,
                "lost": self.files.lost,
                "duplicated": self.files.extra,
                "intact": self.files_intact(),
            },
            "vault": {
                "uploaded": self.vault_uploaded,
                "downloaded": self.vault_downloaded,
                "intact": self.vault_intact(),
            },
            "fiber_dropped": self.fiber_dropped,
            "clean_shutdown": self.clean_shutdown,
            "elapsed_ms": self.elapsed.as_millis() as u64,
            "ok": self.ok(),
        })
    }
}

/// Stream sizes from 1 byte to `max`, spread over orders of magnitude.
pub fn mixed_sizes(count: usize, max: usize, seed: u64) -> Vec<usize> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match i {
                0 => 1,
                1 => max,
                _ => {
                    let exponent = (state % 1000) as f64 / 1000.0 * (max.max(2) as f64).log2();
                    (2f64.powf(exponent) as usize).clamp(1, max)
                }
            }
        })
        .collect()
}

/// Sends `sizes` as concurrent streams (at most `parallel` at once). Returns id → (length, hash).
pub fn send_streams(
    addr: SocketAddr,
    sizes: &[usize],
    parallel: usize,
) -> Result<HashMap<u64, (u64, [u8; 32])>, String> {
    let queue = Arc::new(Mutex::new(sizes.iter().copied().enumerate().collect::<Vec<_>>()));
    let results = Arc::new(Mutex::new(HashMap::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..parallel.max(1))
        .map(|_| {
            let (queue, results, errors) = (Arc::clone(&queue), Arc::clone(&results), Arc::clone(&errors));
            std::thread::spawn(move || loop {
                let Some((index, size)) = queue.lock().ok().and_then(|mut q| q.pop()) else { return };
                let id = index as u64 + 1;
                match send_stream(addr, id, size) {
                    Ok(sent) => {
                        if let Ok(mut r) = results.lock() {
                            r.insert(id, sent);
                        }
                    }
                    Err(error) => {
                        if let Ok(mut e) = errors.lock() {
                            e.push(error);
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.join();
    }
    if let Some(error) = errors.lock().ok().and_then(|e| e.first().cloned()) {
        return Err(error);
    }
    let sent = results.lock().map(|r| r.clone()).unwrap_or_default();
    Ok(sent)
}

/// Compares what was sent with what a sink received.
pub fn compare(sent: &HashMap<u64, (u64, [u8; 32])>, sink: &TcpSink) -> (usize, usize, u64) {
    let received = sink.received.lock().map(|r| r.clone()).unwrap_or_default();
    let mut intact = 0;
    let mut false_complete = 0;
    let mut delivered = 0;
    for record in &received {
        // Health checks connect and close without sending: they are not streams.
        if record.len == 0 {
            continue;
        }
        delivered += record.len;
        let matches = sent.get(&record.id).is_some_and(|(len, hash)| *len == record.len && *hash == record.hash);
        if record.clean && matches {
            intact += 1;
        } else if record.clean {
            false_complete += 1;
        }
    }
    (intact, false_complete, delivered)
}

/// Runs the demo.
pub fn run(options: &DemoOptions) -> Result<DemoReport, String> {
    let started = Instant::now();
    let net = loopback_net();
    let source_ip = Lab::ip(net, 1);
    let sink_ip = Lab::ip(net, 4);
    let tcp_sink = TcpSink::start(SocketAddr::from((sink_ip, free_port(sink_ip)?)))?;
    // RED delivers the UDP channel to a multicast group of this lab's own, through loopback.
    let group = Ipv4Addr::new(239, net[1], net[2], 1);
    let udp_sink = UdpSink::start(SocketAddr::from((group, free_port(Ipv4Addr::LOCALHOST)?)), Some(group))?;
    let tcp_listen = SocketAddr::from((source_ip, free_port(source_ip)?));
    let udp_listen = SocketAddr::from((source_ip, free_port(source_ip)?));
    let upload_listen = SocketAddr::from((source_ip, free_port(source_ip)?));
    let red_ip = Lab::ip(net, 2);
    let download_listen = SocketAddr::from((red_ip, free_port(red_ip)?));
    let data = TempDir::new("diode-demo-data")?;
    let (drop_folder, files_out) = (data.path().join("blue-drop"), data.path().join("red-files"));
    let (spool, vault_out) = (data.path().join("blue-vault-spool"), data.path().join("red-vault"));
    let channels = vec![
        ChannelPlan {
            number: 1,
            kind: "tcp",
            name: "historian".into(),
            listen: tcp_listen,
            multicast_group: None,
            destinations: vec![tcp_sink.addr],
            red_extra: String::new(),
            blue_extra: String::new(),
        },
        ChannelPlan {
            number: 2,
            kind: "udp",
            name: "telemetry".into(),
            listen: udp_listen,
            multicast_group: None,
            destinations: vec![udp_sink.addr],
            red_extra: "multicast_interface = \"127.0.0.1\"\n".into(),
            blue_extra: String::new(),
        },
        ChannelPlan {
            number: 3,
            kind: "files",
            name: "reports".into(),
            listen: tcp_listen,
            multicast_group: None,
            destinations: Vec::new(),
            red_extra: format!("folder = \"{}\"\n", files_out.display()),
            blue_extra: format!("folder = \"{}\"\nsettle_ms = 500\nrescan_s = 2\n", drop_folder.display()),
        },
        ChannelPlan {
            number: 4,
            kind: "vault",
            name: "vault".into(),
            listen: upload_listen,
            multicast_group: None,
            destinations: Vec::new(),
            red_extra: format!("folder = \"{}\"\nlisten = \"{download_listen}\"\n", vault_out.display()),
            blue_extra: format!("spool = \"{}\"\n", spool.display()),
        },
    ];
    // Every node gets its management API and dashboard, with a password made for this run.
    let password = connectors::spool::new_file_id()[..16].to_string();
    let password_hash = connectors::management::hash_secret(&password)?;
    let management = |host: u8| -> Result<(String, SocketAddr), String> {
        let ip = Lab::ip(net, host);
        let listen = SocketAddr::from((ip, free_port(ip)?));
        let section = format!(
            "\n[management]\nlisten = \"{listen}\"\nusername = \"operator\"\npassword_hash = \"{password_hash}\"\n"
        );
        Ok((section, listen))
    };
    let (blue_management, blue_dashboard) = management(201)?;
    let (red_management, red_dashboard) = management(202)?;
    let extra = LabExtra { blue: blue_management, red: red_management };
    let dashboards = vec![
        ("blue1".to_string(), format!("http://{blue_dashboard}/")),
        ("red1".to_string(), format!("http://{red_dashboard}/")),
    ];
    let lab = Lab::start_with(net, &options.link, &channels, None, &extra)?;

    let sizes = mixed_sizes(options.streams, options.max_stream_bytes, options.link.seed);
    let udp_sender = {
        let count = options.datagrams;
        std::thread::spawn(move || -> Result<u64, String> {
            let socket = UdpSocket::bind((source_ip, 0)).map_err(|e| e.to_string())?;
            for id in 0..count as u64 {
                let mut payload = id.to_be_bytes().to_vec();
                payload.resize(64 + (id as usize * 37) % 900, (id % 251) as u8);
                socket.send_to(&payload, udp_listen).map_err(|e| e.to_string())?;
                // A steady telemetry-like flow rather than one burst into BLUE's receive buffer.
                std::thread::sleep(Duration::from_micros(300));
            }
            Ok(count as u64)
        })
    };
    let dropped = drop_files(&drop_folder, options.files, options.max_file_bytes)?;
    let uploads = upload_files(upload_listen, options.uploads)?;
    let sent = send_streams(tcp_listen, &sizes, 8)?;
    let udp_sent = udp_sender.join().map_err(|_| "UDP sender panicked".to_string())??;

    let deadline = Instant::now() + options.timeout;
    while tcp_sink.streams() < sizes.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    while Instant::now() < deadline {
        let red = lab.red_status();
        let done = |kind: &str, count: usize| {
            files_counter(&red, kind, "delivered") + files_counter(&red, kind, "failed_total") >= count as u64
        };
        if done("files", dropped.len()) && done("vault", uploads.len()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let files = check_folder(&dropped, &files_out);
    let (vault_downloaded, vault_intact) = download_all(download_listen, &uploads);
    // UDP trails by the flush time; wait until it stops growing.
    let mut last = usize::MAX;
    while udp_sink.count() != last && Instant::now() < deadline {
        last = udp_sink.count();
        std::thread::sleep(Duration::from_millis(300));
    }
    let (intact, false_complete, delivered) = compare(&sent, &tcp_sink);
    if options.keep_running {
        println!(
            "checks: TCP {intact}/{} streams intact, files {}/{} intact ({} extra), vault {vault_intact}/{} downloads intact, UDP {}/{udp_sent} datagrams",
            sizes.len(),
            files.intact,
            dropped.len(),
            files.extra,
            uploads.len(),
            udp_sink.count()
        );
        println!("\nThe demo keeps running; press Ctrl-C to stop it and remove everything.");
        for (name, url) in &dashboards {
            println!("  {name:<6} dashboard {url}");
        }
        println!("  user operator, password {password}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let mut lab = lab;
    let clean_shutdown = lab.stop();
    let logs = format!("--- blue-tx\n{}\n--- red-rx\n{}", lab.log("blue.log"), lab.log("red.log"));
    // fiber-sim writes its counts when it stops.
    let fiber_dropped = (1..=2)
        .map(|i| Lab::status(&lab.dir.path().join(format!("fiber{i}.json"))))
        .map(|stats| {
            ["dropped_loss", "dropped_burst"]
                .iter()
                .filter_map(|k| stats.get(*k).and_then(serde_json::Value::as_u64))
                .sum::<u64>()
        })
        .sum();
    Ok(DemoReport {
        tcp_streams: sizes.len(),
        tcp_sent_bytes: sent.values().map(|(len, _)| *len).sum(),
        tcp_delivered_bytes: delivered,
        tcp_intact_streams: intact,
        tcp_false_complete: false_complete,
        udp_sent,
        udp_delivered: udp_sink.count() as u64,
        files_sent: dropped.len(),
        files,
        vault_uploaded: uploads.len(),
        vault_downloaded,
        vault_intact,
        fiber_dropped,
        clean_shutdown,
        dashboards,
        credentials: ("operator".to_string(), password),
        elapsed: started.elapsed(),
        logs,
    })
}

/// Drops `count` files in nested folders of BLUE's drop folder (from empty up to `max` bytes), each
/// written under a temporary dot name and renamed in whole, as careful writers do.
fn drop_files(folder: &Path, count: usize, max: usize) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut dropped = BTreeMap::new();
    for (index, size) in mixed_sizes(count, max, 7).into_iter().enumerate() {
        let size = if index == 0 { 0 } else { size };
        let name = format!("plant-{}/line {}/report-{index:03}.dat", index % 3, index % 4);
        let bytes = file_content(1000 + index as u64, size);
        let staging = folder.join(format!(".incoming-{index}"));
        write_file(&staging, &bytes)?;
        let target = folder.join(&name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::rename(&staging, &target).map_err(|e| e.to_string())?;
        dropped.insert(name, bytes);
    }
    Ok(dropped)
}

/// Uploads `count` files to BLUE's vault: half one by one with PUT, the rest in one multipart form.
fn upload_files(addr: SocketAddr, count: usize) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let files: Vec<(String, Vec<u8>)> =
        (0..count).map(|i| (format!("upload-{i:02}.bin"), file_content(5000 + i as u64, 1000 + i * 150_000))).collect();
    let (single, form) = files.split_at(count / 2);
    for (name, bytes) in single {
        let answer = request(addr, "PUT", &format!("/upload/{name}"), &[], bytes)?;
        if answer.status != 201 {
            return Err(format!(
                "vault upload of {name} answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
    }
    if !form.is_empty() {
        let parts: Vec<(&str, &[u8])> = form.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
        let (body, content_type) = multipart(&parts);
        let answer = request(addr, "POST", "/upload", &[("Content-Type", &content_type)], &body)?;
        if answer.status != 201 {
            return Err(format!(
                "vault multipart upload answered {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body)
            ));
        }
    }
    Ok(files.into_iter().collect())
}

/// Downloads every uploaded file from RED's vault; returns how many downloaded and how many matched.
fn download_all(addr: SocketAddr, uploads: &BTreeMap<String, Vec<u8>>) -> (usize, usize) {
    let mut downloaded = 0;
    let mut intact = 0;
    for (name, bytes) in uploads {
        if let Ok(answer) = request(addr, "GET", &format!("/files/{name}"), &[], b"") {
            if answer.status == 200 {
                downloaded += 1;
                intact += usize::from(answer.body == *bytes);
            }
        }
    }
    (downloaded, intact)
}
