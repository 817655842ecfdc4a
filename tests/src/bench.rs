//! `diode-lab bench`: one blue-tx and one red-rx on loopback (through fiber-sim only when loss is
//! asked), one TCP stream of N bytes from a fast source to a fast sink, every byte verified; throughput,
//! CPU and memory of both daemons, and the raw loopback UDP rate of the same machine in the same run so
//! figures can be read as ratios.

use crate::error::{IoContext, LabError, LabResult};
use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::lab::{free_port, loopback_net, ChannelPlan, Lab, LinkPlan, TcpSink};

#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub bytes: u64,
    pub mtu: usize,
    pub repair_percent: f64,
    pub loss_percent: f64,
    /// Mean burst length in datagrams, when bursts are asked.
    pub burst: Option<f64>,
    /// "mirror" or "stripe".
    pub mode: &'static str,
    /// Wire rate per fiber asked of blue-tx.
    pub rate_gbps: f64,
    /// RED's TCP spool on (the default), or off (straight to the destination) for an A/B figure.
    pub spool: bool,
}

#[derive(Clone, Debug, Default)]
pub struct BenchReport {
    pub throughput_gbps: f64,
    pub intact: bool,
    /// The stream reached the sink but was reset (reported aborted, never silently truncated).
    pub aborted: bool,
    pub cpu_s_blue: f64,
    pub cpu_s_red: f64,
    pub rss_mb_blue: f64,
    pub rss_mb_red: f64,
    pub blocks_lost: u64,
    pub kernel_drops: u64,
    /// Why red-rx aborted the stream, when it did (its sink's `streams_aborted`: a broken stream's
    /// reason, or one of the sink's own such as "destination_too_slow"), so an aborted run says what
    /// went wrong.
    pub abort_reasons: serde_json::Map<String, serde_json::Value>,
    pub elapsed: Duration,
}

impl BenchReport {
    pub fn json(&self) -> serde_json::Value {
        let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
        serde_json::json!({
            "throughput_gbps": round(self.throughput_gbps, 3),
            "intact": self.intact,
            "aborted": self.aborted,
            "cpu_s_blue": round(self.cpu_s_blue, 2),
            "cpu_s_red": round(self.cpu_s_red, 2),
            "rss_mb_blue": round(self.rss_mb_blue, 1),
            "rss_mb_red": round(self.rss_mb_red, 1),
            "blocks_lost": self.blocks_lost,
            "kernel_drops": self.kernel_drops,
            "abort_reasons": self.abort_reasons,
            "elapsed_s": round(self.elapsed.as_secs_f64(), 2),
        })
    }

    /// What overload may never break: the stream arrived whole, or the sink saw it reset (reported
    /// aborted); anything else is a silent truncation.
    pub fn whole_or_reported(&self) -> bool {
        self.intact || self.aborted
    }

    /// CPU seconds of both daemons per gigabyte moved.
    pub fn cpu_s_per_gb(&self, bytes: u64) -> f64 {
        (self.cpu_s_blue + self.cpu_s_red) / (bytes as f64 / 1e9)
    }
}

/// A pseudo-random pattern the source repeats: cheap to send at any rate, and every byte of it is
/// still checked (the sink's BLAKE3 against the one computed here before the run).
fn pattern() -> Vec<u8> {
    crate::roundtrip::Rng(0x243F_6A88_85A3_08D3).fill(4 << 20)
}

fn expected_hash(pattern: &[u8], bytes: u64) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    let mut left = bytes;
    while left > 0 {
        let take = left.min(pattern.len() as u64) as usize;
        hasher.update(&pattern[..take]);
        left -= take as u64;
    }
    *hasher.finalize().as_bytes()
}

/// red-rx's reasons for ending streams early, as its sinks counted them.
fn abort_reasons(red: &serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    red["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|channel| channel["streams_aborted"].as_object())
        .flat_map(|reasons| reasons.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect()
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a configuration value.
    #[allow(unsafe_code)]
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / per_second.max(1.0)
}

/// Runs one benchmark.
pub fn run(options: &BenchOptions) -> LabResult<BenchReport> {
    let net = loopback_net();
    let sink_ip = Lab::ip(net, 4);
    let sink = TcpSink::start(SocketAddr::from((sink_ip, 0)))?;
    let listen_ip = Lab::ip(net, 1);
    let channel = ChannelPlan {
        number: 1,
        kind: "tcp",
        name: "bench".into(),
        listen: SocketAddr::from((listen_ip, free_port(listen_ip)?)),
        multicast_group: None,
        destinations: vec![sink.addr],
        red_extra: if options.spool { String::new() } else { "[channel.spool]\nenabled = false\n".into() },
        blue_extra: String::new(),
    };
    let lossy = options.loss_percent > 0.0 || options.burst.is_some();
    let link = LinkPlan {
        loss_percent: options.loss_percent,
        // Bursts start rarely and last `burst` datagrams on average.
        burst: options.burst.map(|len| (0.05, 100.0 / len.max(1.0))),
        repair_percent: options.repair_percent,
        rate_mbps: options.rate_gbps * 1000.0,
        seed: 7,
        mtu: options.mtu,
        mode: options.mode,
        direct: !lossy,
    };
    let pattern = pattern();
    let hash = expected_hash(&pattern, options.bytes);
    let mut lab = Lab::start(net, &link, std::slice::from_ref(&channel), None)?;
    let started = Instant::now();
    let mut source = TcpStream::connect(channel.listen).at("bench source cannot connect")?;
    let mut left = options.bytes;
    while left > 0 {
        let take = left.min(pattern.len() as u64) as usize;
        source.write_all(&pattern[..take]).at("bench source")?;
        left -= take as u64;
    }
    drop(source);
    // The stream ends at the sink with a clean close (whole) or a reset (reported aborted).
    let deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_secs_f64(options.bytes as f64 * 8.0 / 0.2e9);
    let record = loop {
        let done = sink.received.lock().ok().and_then(|r| r.iter().find(|r| r.len > 0).cloned());
        if let Some(record) = done {
            break Some(record);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let (blue_pid, red_pid) = (lab.blue.pid().unwrap_or(0), lab.red.pid().unwrap_or(0));
    let report_base = BenchReport {
        cpu_s_blue: cpu_seconds(blue_pid),
        cpu_s_red: cpu_seconds(red_pid),
        rss_mb_blue: crate::rawwire::proc_kb(blue_pid, "VmHWM:") / 1024.0,
        rss_mb_red: crate::rawwire::proc_kb(red_pid, "VmHWM:") / 1024.0,
        elapsed,
        ..BenchReport::default()
    };
    std::thread::sleep(Duration::from_millis(1100));
    let red = lab.red_status();
    lab.stop();
    let record = record
        .ok_or_else(|| LabError::unexpected(format!("the stream did not arrive within {:?}", deadline - started)))?;
    let intact = record.clean && record.len == options.bytes && record.hash == hash;
    Ok(BenchReport {
        throughput_gbps: record.len as f64 * 8.0 / elapsed.as_secs_f64() / 1e9,
        intact,
        aborted: !record.clean,
        blocks_lost: red["receiver"]["blocks_lost"].as_u64().unwrap_or(0),
        kernel_drops: red["fibers"].as_array().map_or(0, |f| f.iter().filter_map(|f| f["kernel_drops"].as_u64()).sum()),
        abort_reasons: abort_reasons(&red),
        ..report_base
    })
}

/// The loopback UDP rate of this machine right now: one sender, one receiver, datagrams of the MTU's
/// payload, for `duration`. The yardstick the diode's figures are divided by.
pub fn raw_udp_gbps(mtu: usize, duration: Duration) -> LabResult<f64> {
    let receiver = UdpSocket::bind("127.0.0.1:0").at("binding the bench receiver")?;
    let _ = socket2::SockRef::from(&receiver).set_recv_buffer_size(8 << 20);
    receiver.set_read_timeout(Some(Duration::from_millis(200))).at("bench receiver timeout")?;
    let target = receiver.local_addr().at("bench receiver address")?;
    let payload = vec![0x5au8; mtu - 28];
    let sender = std::thread::spawn(move || -> LabResult<()> {
        let socket = UdpSocket::bind("127.0.0.1:0").at("binding the bench sender")?;
        let end = Instant::now() + duration;
        while Instant::now() < end {
            for _ in 0..64 {
                let _ = socket.send_to(&payload, target);
            }
        }
        Ok(())
    });
    let mut buffer = vec![0u8; 65536];
    let mut bytes = 0u64;
    let started = Instant::now();
    let mut last = started;
    // The receive timeout ends the count once the sender has stopped.
    while let Ok(n) = receiver.recv(&mut buffer) {
        bytes += n as u64;
        last = Instant::now();
    }
    sender.join().map_err(|_| LabError::Panicked("UDP bench sender"))??;
    Ok(bytes as f64 * 8.0 / last.duration_since(started).as_secs_f64().max(1e-3) / 1e9)
}

/// The rate asked in the sweep's rows with loss, which go through two fiber-sim processes.
pub const LOSSY_RATE_GBPS: f64 = 1.0;

/// One row of a sweep.
pub struct SweepRow {
    pub mtu: usize,
    pub repair: f64,
    pub loss: f64,
    pub report: BenchReport,
    pub raw_gbps: f64,
}

/// Runs the table over MTU × repair × loss and renders BENCHMARKS.md.
pub fn sweep(bytes: u64, rate_gbps: f64) -> LabResult<(Vec<SweepRow>, String)> {
    let mut rows = Vec::new();
    for mtu in [1500, 9000] {
        let raw_gbps = raw_udp_gbps(mtu, Duration::from_secs(2))?;
        for repair in [5.0, 10.0] {
            for loss in [0.0, 1.0] {
                let options = BenchOptions {
                    bytes,
                    mtu,
                    repair_percent: repair,
                    loss_percent: loss,
                    burst: None,
                    mode: "mirror",
                    // Two fiber-sim processes share the two cores with both daemons: ask what they carry.
                    rate_gbps: if loss > 0.0 { rate_gbps.min(LOSSY_RATE_GBPS) } else { rate_gbps },
                    spool: true,
                };
                let report = run(&options)?;
                rows.push(SweepRow { mtu, repair, loss, report, raw_gbps });
            }
        }
    }
    let text = render(&rows, bytes, rate_gbps);
    Ok((rows, text))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|v| v.split_once(':')).map(|(_, v)| v.trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{cpu}, {cores} cores, {memory_gib:.0} GiB, Linux {}", kernel.trim())
}

fn render(rows: &[SweepRow], bytes: u64, rate_gbps: f64) -> String {
    let mut out = String::from("# Benchmarks\n\n");
    out += &format!(
        "Written by `diode-lab bench --sweep`: one blue-tx and one red-rx on loopback, both on this machine \
         ({}), one TCP stream of {} bytes per row, every byte verified at the sink; blue-tx asked for {} Gbit/s \
         per fiber (mirror), {} Gbit/s in the rows with loss, which go through two fiber-sim processes; the \
         others go straight. `raw` is the loopback \
         UDP rate of one sender and one receiver measured in the same run, so `ratio` is the diode's share of \
         what the machine's loopback carries.\n\n",
        machine(),
        bytes,
        rate_gbps,
        rate_gbps.min(LOSSY_RATE_GBPS)
    );
    out += "| MTU | repair % | loss % | Gbit/s | raw Gbit/s | ratio | intact | CPU s/GB (both) | RSS MB blue / red | blocks lost | kernel drops |\n";
    out += "|---:|---:|---:|---:|---:|---:|:---:|---:|---:|---:|---:|\n";
    for row in rows {
        let r = &row.report;
        out += &format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.0} / {:.0} | {} | {} |\n",
            row.mtu,
            row.repair,
            row.loss,
            r.throughput_gbps,
            row.raw_gbps,
            r.throughput_gbps / row.raw_gbps.max(1e-9),
            if r.intact {
                "yes"
            } else if r.aborted {
                "aborted"
            } else {
                "NO"
            },
            r.cpu_s_per_gb(bytes),
            r.rss_mb_blue,
            r.rss_mb_red,
            r.blocks_lost,
            r.kernel_drops
        );
    }
    out
}
