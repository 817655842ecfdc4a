//! `diode-lab demo`: the whole product on one machine, as real processes, without root.
//!
//! Starts the full HA topology of DESIGN §2 on loopback ([`crate::pairs`]: two blue-tx, two red-rx,
//! four fiber-sims cross-connected with a little loss and bursts, VIPs on 127.x, pair channels) and
//! runs every channel kind through it at once: concurrent TCP streams, a UDP flow, files dropped in
//! nested folders (some large) and HTTP vault uploads. A third of the way in it kills -9 the active
//! BLUE, two thirds in the active RED; each comes back as standby and the load carries on. Then it
//! checks what arrived: every TCP stream byte-identical (a stream cut by a failover reaches its
//! destination as a reset, never a clean close, and the client sends it again), every file exactly once
//! and byte-identical across both REDs' folders, every upload byte for byte (downloaded through RED's
//! VIP where the active RED delivered it), every UDP loss counted.

use crate::error::{IoContext, LabError, LabResult};
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::folders::{file_content, visible_files, visible_paths, write_file};
use crate::http::{multipart, request};
use crate::lab::{loopback_net, send_stream, LinkPlan, TcpSink};
use crate::pairs::{elapsed_ms, PairsLab, PairsOptions};

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub streams: usize,
    pub max_stream_bytes: usize,
    pub datagrams: usize,
    /// Files dropped in BLUE's drop folder (nested folders, 0 B up to `max_file_bytes`).
    pub files: usize,
    pub max_file_bytes: usize,
    /// Files uploaded to BLUE's vault (one by one with PUT, every fourth in a multipart form).
    pub uploads: usize,
    pub link: LinkPlan,
    /// How long the load runs; the failovers happen at a third and two thirds of it.
    pub load_time: Duration,
    /// Longest the demo waits for everything to arrive after the load.
    pub timeout: Duration,
    /// Kill the active BLUE and then the active RED mid-transfer.
    pub failovers: bool,
    /// Leave everything running after the checks (until Ctrl-C) with the dashboards' addresses printed.
    pub keep_running: bool,
}

/// The demo's Gilbert-Elliott bursts (enter %, leave %): one every thousand datagrams, four long on
/// average. Each RED hears the active BLUE on one fiber only (the cross-connect), so a burst that
/// swallows every symbol of a lone small block (sent when the link is quiet, with nothing to interleave
/// it with) loses that block outright, and RED reports the file `never_arrived`. With bursts of eight
/// on average (one every two thousand datagrams) that happened in two runs of seven; a burst of 25 or
/// more, enough for a small file's block, is 0.1 % of bursts at four against 4 % at eight, so with twice
/// the bursts it is about twenty times rarer.
pub const DEMO_BURST: (f64, f64) = (0.1, 25.0);

impl Default for DemoOptions {
    fn default() -> DemoOptions {
        DemoOptions {
            streams: 24,
            max_stream_bytes: 8 << 20,
            datagrams: 6_000,
            files: 60,
            max_file_bytes: 16 << 20,
            uploads: 12,
            link: LinkPlan {
                loss_percent: 0.2,
                burst: Some(DEMO_BURST),
                repair_percent: 15.0,
                rate_mbps: 1000.0,
                seed: 1,
                ..LinkPlan::default()
            },
            load_time: Duration::from_secs(30),
            timeout: Duration::from_secs(60),
            failovers: true,
            keep_running: false,
        }
    }
}

/// Sent and arrived, per channel kind.
#[derive(Clone, Debug, Default)]
pub struct FilesCheck {
    pub sent: usize,
    /// Present intact in exactly one RED folder.
    pub delivered: usize,
    pub lost: usize,
    /// Present in both REDs' folders, twice in one, or not sent at all.
    pub duplicated: usize,
}

/// One kill of an active node.
#[derive(Clone, Debug)]
pub struct Failover {
    pub side: &'static str,
    pub killed: String,
    pub took_over: String,
    pub takeover_ms: u64,
    /// Files dropped or uploaded between this kill and the next one (or the end) that never arrived.
    pub files_lost: usize,
    at: Instant,
}

#[derive(Clone, Debug, Default)]
pub struct DemoReport {
    pub tcp_streams: usize,
    pub tcp_sent_bytes: u64,
    pub tcp_delivered_bytes: u64,
    pub tcp_intact_streams: usize,
    /// Attempts cut by a failover (the destination saw a reset) and sent again.
    pub tcp_resent: usize,
    /// Streams a destination saw closed cleanly with wrong content: must always be zero.
    pub tcp_false_complete: usize,
    pub udp_sent: u64,
    pub udp_delivered: u64,
    pub files: FilesCheck,
    pub vault: FilesCheck,
    /// Uploads downloaded byte for byte through RED's VIP (those the active RED delivered).
    pub vault_downloaded: usize,
    pub vault_download_mismatch: usize,
    /// Label values of the nodes' `/metrics` that are neither from the daemons' fixed tables nor from
    /// the node's configuration (or why a scrape failed): must be empty.
    pub metrics_unbounded: Vec<String>,
    pub failovers: Vec<Failover>,
    pub failovers_asked: bool,
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
        self.files.delivered == self.files.sent && self.files.lost == 0 && self.files.duplicated == 0
    }

    pub fn vault_intact(&self) -> bool {
        self.vault.delivered == self.vault.sent
            && self.vault.lost == 0
            && self.vault.duplicated == 0
            && self.vault_download_mismatch == 0
    }

    pub fn ok(&self) -> bool {
        self.tcp_intact()
            && self.files_intact()
            && self.vault_intact()
            && self.udp_delivered <= self.udp_sent
            && (!self.failovers_asked || self.failovers.len() == 2)
            && self.metrics_unbounded.is_empty()
    }

    pub fn json(&self) -> serde_json::Value {
        let files = |check: &FilesCheck, intact: bool| {
            serde_json::json!({
                "sent": check.sent,
                "delivered": check.delivered,
                "lost": check.lost,
                "duplicated": check.duplicated,
                "intact": intact,
            })
        };
        let mut vault = files(&self.vault, self.vault_intact());
        vault["uploaded"] = self.vault.sent.into();
        vault["downloaded"] = self.vault_downloaded.into();
        serde_json::json!({
            "channels": {
                "tcp": {
                    "sent_bytes": self.tcp_sent_bytes,
                    "delivered_bytes": self.tcp_delivered_bytes,
                    "streams": self.tcp_streams,
                    "intact_streams": self.tcp_intact_streams,
                    "resent": self.tcp_resent,
                    "false_complete": self.tcp_false_complete,
                    "intact": self.tcp_intact(),
                },
                "udp": {
                    "sent": self.udp_sent,
                    "delivered": self.udp_delivered,
                    "lost": self.udp_sent.saturating_sub(self.udp_delivered),
                },
            },
            "files": files(&self.files, self.files_intact()),
            "vault": vault,
            "failovers": self.failovers.iter().map(|f| serde_json::json!({
                "side": f.side,
                "killed": f.killed,
                "took_over": f.took_over,
                "takeover_ms": f.takeover_ms,
                "files_lost": f.files_lost,
            })).collect::<Vec<_>>(),
            "metrics_unbounded_labels": self.metrics_unbounded,
            "fiber_dropped": self.fiber_dropped,
            "clean_shutdown": self.clean_shutdown,
            "elapsed_ms": self.elapsed.as_millis() as u64,
            "ok": self.ok(),
        })
    }
}

/// What the load threads did, shared with the progress line and the checks.
#[derive(Default)]
struct Load {
    /// Dropped files and uploads: name → (content, when it was handed over).
    files: Mutex<BTreeMap<String, (Vec<u8>, Instant)>>,
    uploads: Mutex<BTreeMap<String, (Vec<u8>, Instant)>>,
    upload_errors: Mutex<Vec<LabError>>,
    udp_sent: AtomicU64,
    /// Logical streams finished (delivered intact, or given up after three attempts), attempts resent.
    streams_done: AtomicUsize,
    streams_resent: AtomicUsize,
    /// Every attempt: id → (length, BLAKE3).
    attempts: Mutex<HashMap<u64, (u64, [u8; 32])>>,
    /// Logical streams that arrived intact (under one of their attempts).
    streams_intact: AtomicUsize,
}

/// Runs the demo.
pub fn run(options: &DemoOptions) -> LabResult<DemoReport> {
    // Building the daemons (when cargo finds them out of date) is not part of the demo's time.
    crate::bins::binaries()?;
    let started = Instant::now();
    let pairs_options = PairsOptions { link: options.link.clone(), management: true, ..PairsOptions::default() };
    let mut lab = PairsLab::start(loopback_net(), &pairs_options)?;
    let dashboards: Vec<(String, String)> = lab
        .blues
        .iter()
        .chain(&lab.reds)
        .filter_map(|node| node.management.map(|api| (node.name.clone(), format!("http://{api}/"))))
        .collect();
    let credentials = lab.credentials.clone().unwrap_or_default();
    let load = Arc::new(Load::default());
    let threads = start_load(&lab, options, &load);

    let load_start = Instant::now();
    let progress = Progress::new();
    let mut failovers = Vec::new();
    let plan: Vec<(&'static str, Duration)> = if options.failovers {
        vec![("blue", options.load_time / 3), ("red", options.load_time * 2 / 3)]
    } else {
        Vec::new()
    };
    for (side, at) in &plan {
        while load_start.elapsed() < *at {
            progress.show(&lab, &load, options);
            std::thread::sleep(Duration::from_millis(250));
        }
        failovers.push(fail_over(&mut lab, side, &progress, &load, options)?);
    }
    while threads.iter().any(|t| !t.is_finished()) {
        progress.show(&lab, &load, options);
        std::thread::sleep(Duration::from_millis(250));
    }
    for thread in threads {
        thread.join().map_err(|_| LabError::Panicked("demo load"))?;
    }
    if let Some(error) = load.upload_errors.lock().ok().and_then(|mut e| e.drain(..).next()) {
        return Err(error);
    }

    // Everything in flight may arrive.
    let deadline = Instant::now() + options.timeout;
    let files = load.files.lock().map(|f| f.clone()).unwrap_or_default();
    let uploads = load.uploads.lock().map(|f| f.clone()).unwrap_or_default();
    let check_both = |lab: &PairsLab| (check(&files, &lab.red_files), check(&uploads, &lab.red_vaults));
    let (mut files_check, mut vault_check) = check_both(&lab);
    while (files_check.lost > 0 || vault_check.lost > 0) && Instant::now() < deadline {
        progress.show(&lab, &load, options);
        std::thread::sleep(Duration::from_millis(250));
        (files_check, vault_check) = check_both(&lab);
    }
    // UDP trails by the flush time; wait until it stops growing.
    let mut last = usize::MAX;
    while lab.udp_sink.count() != last && Instant::now() < deadline {
        last = lab.udp_sink.count();
        std::thread::sleep(Duration::from_millis(300));
    }
    progress.finish();
    attribute_losses(&mut failovers, &files, &uploads, &lab);
    let (vault_downloaded, vault_download_mismatch) = download_active(&lab, &uploads);
    let metrics_unbounded = unbounded_metric_labels(&lab);
    let (_, false_complete, delivered) =
        compare(&load.attempts.lock().map(|a| a.clone()).unwrap_or_default(), &lab.tcp_sink);

    if options.keep_running {
        println!(
            "checks: TCP {}/{} streams intact, files {}/{} ({} lost, {} duplicated), vault {}/{} ({} downloaded), UDP {}/{} datagrams",
            load.streams_intact.load(Ordering::Relaxed),
            options.streams,
            files_check.delivered,
            files_check.sent,
            files_check.lost,
            files_check.duplicated,
            vault_check.delivered,
            vault_check.sent,
            vault_downloaded,
            lab.udp_sink.count(),
            load.udp_sent.load(Ordering::Relaxed)
        );
        println!("\nThe demo keeps running; press Ctrl-C to stop it and remove everything.");
        for (name, url) in &dashboards {
            println!("  {name:<6} dashboard {url}");
        }
        println!("  user {}, password {}", credentials.0, credentials.1);
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let clean_shutdown = lab.stop();
    let logs = lab.logs();
    // fiber-sim writes its counts when it stops.
    let fiber_dropped = std::fs::read_dir(lab.dir.path())
        .into_iter()
        .flatten()
        .flatten()
        .filter(|item| {
            item.file_name().to_string_lossy().starts_with("fiber-")
                && item.path().extension().is_some_and(|e| e == "json")
        })
        .map(|item| {
            let stats = crate::lab::Lab::status(&item.path());
            ["dropped_loss", "dropped_burst"]
                .iter()
                .filter_map(|k| stats.get(*k).and_then(serde_json::Value::as_u64))
                .sum::<u64>()
        })
        .sum();
    let attempts = load.attempts.lock().map(|a| a.clone()).unwrap_or_default();
    Ok(DemoReport {
        tcp_streams: options.streams,
        tcp_sent_bytes: attempts.values().map(|(len, _)| *len).sum(),
        tcp_delivered_bytes: delivered,
        tcp_intact_streams: load.streams_intact.load(Ordering::Relaxed),
        tcp_resent: load.streams_resent.load(Ordering::Relaxed),
        tcp_false_complete: false_complete,
        udp_sent: load.udp_sent.load(Ordering::Relaxed),
        udp_delivered: lab.udp_sink.count() as u64,
        files: files_check,
        vault: vault_check,
        vault_downloaded,
        vault_download_mismatch,
        metrics_unbounded,
        failovers,
        failovers_asked: options.failovers,
        fiber_dropped,
        clean_shutdown,
        dashboards,
        credentials,
        elapsed: started.elapsed(),
        logs,
    })
}

/// Scrapes every node's `/metrics` as a monitoring system would and lists the label values that are
/// not bounded (see [`crate::metrics`]); a node whose scrape fails is listed with the reason.
fn unbounded_metric_labels(lab: &PairsLab) -> Vec<String> {
    let Some((user, password)) = &lab.credentials else { return vec!["the lab has no management credentials".into()] };
    let auth = crate::http::basic_auth(user, password);
    let (blue, red) = (blue_tx::manage::fixed_label_values(), red_rx::manage::fixed_label_values());
    let mut found = Vec::new();
    for node in lab.blues.iter().chain(&lab.reds) {
        let Some(api) = node.management else { continue };
        let fixed = if node.side == "blue" { &blue } else { &red };
        let scraped = crate::http::request(api, "GET", "/metrics", &[("Authorization", &auth)], b"")
            .and_then(|answer| match answer.status {
                200 => crate::metrics::parse(&String::from_utf8_lossy(&answer.body)),
                status => Err(LabError::unexpected(format!("status {status}"))),
            })
            .and_then(|samples| {
                let config =
                    std::fs::read_to_string(&node.config).doing(|| format!("reading {}", node.config.display()))?;
                Ok(crate::metrics::unbounded(&samples, fixed, &crate::metrics::configured_values(&config)?))
            });
        match scraped {
            Ok(unbounded) => found.extend(unbounded.into_iter().map(|label| format!("{}: {label}", node.name))),
            Err(error) => found.push(format!("{}: /metrics: {error}", node.name)),
        }
    }
    found
}

/// Kills the side's active node, waits for its peer to take over, and starts it again as standby.
fn fail_over(
    lab: &mut PairsLab,
    side: &'static str,
    progress: &Progress,
    load: &Load,
    options: &DemoOptions,
) -> LabResult<Failover> {
    let victim = lab
        .active(side)
        .ok_or_else(|| LabError::unexpected(format!("no single active {side} node before the failover")))?;
    let survivor = 1 - victim;
    let killed = lab.nodes(side)[victim].name.clone();
    progress.say(&format!("kill -9 {killed} (the active {side} node)"));
    let at = Instant::now();
    lab.nodes_mut(side)[victim].kill();
    if !lab.wait_active(side, survivor, Duration::from_secs(10)) {
        return Err(LabError::unexpected(format!("{side}: the standby did not take over:\n{}", lab.logs())));
    }
    let takeover_ms = elapsed_ms(at);
    let took_over = lab.nodes(side)[survivor].name.clone();
    progress.say(&format!("{took_over} took over in {takeover_ms} ms; {killed} restarts as standby"));
    lab.nodes_mut(side)[victim].start()?;
    progress.show(lab, load, options);
    Ok(Failover { side, killed, took_over, takeover_ms, files_lost: 0, at })
}

/// Splits the lost files and uploads between the failovers by when they were handed over.
fn attribute_losses(
    failovers: &mut [Failover],
    files: &BTreeMap<String, (Vec<u8>, Instant)>,
    uploads: &BTreeMap<String, (Vec<u8>, Instant)>,
    lab: &PairsLab,
) {
    let lost = |sent: &BTreeMap<String, (Vec<u8>, Instant)>, folders: &[std::path::PathBuf]| -> Vec<Instant> {
        let found: Vec<BTreeMap<String, Vec<u8>>> = folders.iter().map(|f| visible_files(f)).collect();
        sent.iter()
            .filter(|(name, (bytes, _))| !found.iter().any(|folder| folder.get(*name) == Some(bytes)))
            .map(|(_, (_, at))| *at)
            .collect()
    };
    let mut missing = lost(files, &lab.red_files);
    missing.extend(lost(uploads, &lab.red_vaults));
    for at in missing {
        // The last failover before it, else the first.
        let index = failovers.iter().rposition(|f| f.at <= at).unwrap_or(0);
        if let Some(failover) = failovers.get_mut(index) {
            failover.files_lost += 1;
        }
    }
}

/// Starts the load threads: TCP streams, UDP datagrams, dropped files and vault uploads, each spread
/// over the load time so that the failovers happen mid-transfer.
fn start_load(lab: &PairsLab, options: &DemoOptions, load: &Arc<Load>) -> Vec<std::thread::JoinHandle<()>> {
    let mut threads = Vec::new();
    let spread = |count: usize| options.load_time / (count.max(1) as u32);
    // TCP: four clients, each sending its share of the streams in turn; a stream that does not
    // arrive intact (cut by a failover) is sent again under a new id, up to three times.
    let sizes = Arc::new(Mutex::new(mixed_sizes(options.streams, options.max_stream_bytes, options.link.seed)));
    for worker in 0..4u64 {
        let (load, sizes, sink) = (Arc::clone(load), Arc::clone(&sizes), Arc::clone(&lab.tcp_sink.received));
        let (target, pause) = (lab.tcp_listen, spread(options.streams) * 4);
        threads.push(std::thread::spawn(move || {
            let mut logical = worker;
            loop {
                let Some(size) = sizes.lock().ok().and_then(|mut s| s.pop()) else { return };
                logical += 4;
                let mut intact = false;
                for attempt in 0..3u64 {
                    let id = logical * 10 + attempt;
                    if attempt > 0 {
                        load.streams_resent.fetch_add(1, Ordering::Relaxed);
                    }
                    let Some(sent) = send_retrying(target, id, size) else { continue };
                    if let Ok(mut attempts) = load.attempts.lock() {
                        attempts.insert(id, sent);
                    }
                    let arrived = crate::lab::wait_for(Duration::from_secs(8), || {
                        sink.lock().is_ok_and(|r| r.iter().any(|x| x.id == id && x.len == sent.0))
                    });
                    let clean = sink
                        .lock()
                        .is_ok_and(|r| r.iter().any(|x| x.id == id && x.clean && x.len == sent.0 && x.hash == sent.1));
                    if arrived && clean {
                        intact = true;
                        break;
                    }
                }
                if intact {
                    load.streams_intact.fetch_add(1, Ordering::Relaxed);
                }
                load.streams_done.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(pause);
            }
        }));
    }
    {
        let (load, target, count) = (Arc::clone(load), lab.udp_listen, options.datagrams);
        let pause = spread(count);
        threads.push(std::thread::spawn(move || {
            let Ok(socket) = UdpSocket::bind((target.ip(), 0)) else { return };
            for id in 0..count as u64 {
                let mut payload = id.to_be_bytes().to_vec();
                payload.resize(64 + (id as usize * 37) % 900, (id % 251) as u8);
                // While the VIP moves the datagram goes nowhere: a counted loss like any other.
                let _ = socket.send_to(&payload, target);
                load.udp_sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(pause);
            }
        }));
    }
    {
        let (load, folder, count, max) =
            (Arc::clone(load), lab.drop_folder.clone(), options.files, options.max_file_bytes);
        let pause = spread(count);
        threads.push(std::thread::spawn(move || {
            for (index, size) in mixed_sizes(count, max, 7).into_iter().enumerate() {
                let size = if index == 0 { 0 } else { size };
                let name = format!("plant-{}/line {}/report-{index:03}.dat", index % 3, index % 4);
                let bytes = file_content(1000 + index as u64, size);
                // Written under a dot name and renamed in whole, as careful writers do.
                let staging = folder.join(format!(".incoming-{index}"));
                let target = folder.join(&name);
                let placed = write_file(&staging, &bytes).is_ok()
                    && target.parent().is_some_and(|p| std::fs::create_dir_all(p).is_ok())
                    && std::fs::rename(&staging, &target).is_ok();
                if placed {
                    if let Ok(mut files) = load.files.lock() {
                        files.insert(name, (bytes, Instant::now()));
                    }
                }
                std::thread::sleep(pause);
            }
        }));
    }
    {
        let (load, target, count) = (Arc::clone(load), lab.vault_upload, options.uploads);
        let pause = spread(count);
        threads.push(std::thread::spawn(move || {
            for index in 0..count {
                let name = format!("upload-{index:02}.bin");
                let bytes = file_content(5000 + index as u64, 1000 + index * 150_000);
                match upload(target, &name, &bytes, index % 4 == 3) {
                    Ok(()) => {
                        if let Ok(mut uploads) = load.uploads.lock() {
                            uploads.insert(name, (bytes, Instant::now()));
                        }
                    }
                    Err(error) => {
                        if let Ok(mut errors) = load.upload_errors.lock() {
                            errors.push(error);
                        }
                    }
                }
                std::thread::sleep(pause);
            }
        }));
    }
    threads
}

/// Sends one stream, retrying the connection while no node holds the VIP.
fn send_retrying(target: SocketAddr, id: u64, size: usize) -> Option<(u64, [u8; 32])> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match send_stream(target, id, size) {
            Ok(sent) => return Some(sent),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    None
}

/// Uploads one file (PUT, or a one-part multipart form), retrying while the VIP moves; an upload is
/// done once BLUE answered 201 (it is then in the spools of both BLUE nodes).
fn upload(target: SocketAddr, name: &str, bytes: &[u8], multipart_form: bool) -> LabResult<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < deadline {
        let answer = if multipart_form {
            let (body, content_type) = multipart(&[(name, bytes)]);
            request(target, "POST", "/upload", &[("Content-Type", &content_type)], &body)
        } else {
            request(target, "PUT", &format!("/upload/{name}"), &[], bytes)
        };
        match answer {
            Ok(answer) if answer.status == 201 => return Ok(()),
            Ok(answer) => last = format!("answered {}: {}", answer.status, String::from_utf8_lossy(&answer.body)),
            Err(error) => last = error.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(LabError::unexpected(format!("vault upload of {name} failed: {last}")))
}

/// Compares the REDs' folders with what was handed over.
fn check(sent: &BTreeMap<String, (Vec<u8>, Instant)>, folders: &[std::path::PathBuf]) -> FilesCheck {
    let found: Vec<BTreeMap<String, Vec<u8>>> = folders.iter().map(|f| visible_files(f)).collect();
    let mut result = FilesCheck { sent: sent.len(), ..FilesCheck::default() };
    for (name, (bytes, _)) in sent {
        match found.iter().filter(|folder| folder.get(name) == Some(bytes)).count() {
            0 => result.lost += 1,
            1 => result.delivered += 1,
            _ => {
                result.delivered += 1;
                result.duplicated += 1;
            }
        }
    }
    result.duplicated += found.iter().flat_map(|folder| folder.keys()).filter(|name| !sent.contains_key(*name)).count();
    result
}

/// Downloads, through RED's VIP, every upload the active RED holds; returns (downloaded intact, wrong).
fn download_active(lab: &PairsLab, uploads: &BTreeMap<String, (Vec<u8>, Instant)>) -> (usize, usize) {
    // A client that meets the VIP moving retries, as a user would (within one budget for all the
    // downloads): the check is what it finally gets.
    let deadline = Instant::now() + Duration::from_secs(10);
    let get = |name: &str| loop {
        match request(lab.vault_download, "GET", &format!("/files/{name}"), &[], b"") {
            Ok(answer) if answer.status == 200 => return Some(answer.body),
            Ok(answer) if answer.status != 503 && answer.status != 404 => return None,
            _ if Instant::now() >= deadline => return None,
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let Some(active) = lab.active("red") else { return (0, 0) };
    let held = visible_files(&lab.red_vaults[active]);
    let (mut downloaded, mut wrong) = (0, 0);
    for (name, (bytes, _)) in uploads.iter().filter(|(name, _)| held.contains_key(*name)) {
        match get(name) {
            Some(body) if body == *bytes => downloaded += 1,
            _ => wrong += 1,
        }
    }
    (downloaded, wrong)
}

/// The progress line: per channel what went and arrived, and the current actives. Rewritten in place
/// on a terminal, printed every few seconds otherwise.
struct Progress {
    terminal: bool,
    start: Instant,
    last: Mutex<Instant>,
}

impl Progress {
    fn new() -> Progress {
        Progress { terminal: std::io::stderr().is_terminal(), start: Instant::now(), last: Mutex::new(Instant::now()) }
    }

    fn show(&self, lab: &PairsLab, load: &Load, options: &DemoOptions) {
        if !self.terminal {
            let mut last = match self.last.lock() {
                Ok(last) => last,
                Err(_) => return,
            };
            if last.elapsed() < Duration::from_secs(5) {
                return;
            }
            *last = Instant::now();
        }
        let active = |side: &str| lab.active(side).map_or("-".to_string(), |i| lab.nodes(side)[i].name.clone());
        let arrived = |folders: &[std::path::PathBuf]| folders.iter().map(|f| visible_paths(f).len()).sum::<usize>();
        let received = lab.tcp_sink.received.lock().map(|r| r.iter().map(|x| x.len).sum::<u64>()).unwrap_or(0);
        let line = format!(
            "[{:>3}s] active: {} {} | tcp {}/{} streams {:.1} MB | udp {}/{} | files {}/{} | vault {}/{}",
            self.start.elapsed().as_secs(),
            active("blue"),
            active("red"),
            load.streams_intact.load(Ordering::Relaxed),
            options.streams,
            received as f64 / 1e6,
            lab.udp_sink.count(),
            load.udp_sent.load(Ordering::Relaxed),
            arrived(&lab.red_files),
            load.files.lock().map_or(0, |f| f.len()),
            arrived(&lab.red_vaults),
            load.uploads.lock().map_or(0, |f| f.len()),
        );
        if self.terminal {
            eprint!("\r{line:<120}");
        } else {
            eprintln!("{line}");
        }
    }

    fn say(&self, text: &str) {
        if self.terminal {
            eprintln!();
        }
        eprintln!("[{:>3}s] {text}", self.start.elapsed().as_secs());
    }

    fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
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
pub fn send_streams(addr: SocketAddr, sizes: &[usize], parallel: usize) -> LabResult<HashMap<u64, (u64, [u8; 32])>> {
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
    if let Some(error) = errors.lock().ok().and_then(|mut e| e.drain(..).next()) {
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
