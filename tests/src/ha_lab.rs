//! `diode-lab ha --netns`: the HA pairs of DESIGN.md §2 in network namespaces (root), with real CARP
//! adverts (IP protocol 112 to 224.0.0.18), real VIPs moved with netlink and announced with
//! gratuitous ARP, and the scenarios an operator cares about, each measured by a real client.
//!
//! ```text
//!  cl ──┐                 BLUE switch (bsw)                        RED switch (rsw)        ┌── dst
//!       └── b1 (198.18.1.11) ── f1 ──► r1 (198.18.2.21) ──────────────────────────────────┤
//!           b1 ─────────────── f2 ──► r2                                                   │
//!           b2 (198.18.1.12) ── f1 ──► r2 (198.18.2.22) ──────────────────────────────────┘
//!           b2 ─────────────── f2 ──► r1           VIP-blue 198.18.1.100, VIP-red 198.18.2.100
//! ```

use crate::error::{IoContext, LabError, LabResult};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::bins::{binaries, Binaries};
use crate::lab::{stream_content, Lab, Proc, TempDir};
use crate::netns::{ip, Topology};

const BLUE_VIP: &str = "198.18.1.100";
const RED_VIP: &str = "198.18.2.100";
const SECRET: &str = "lab-secret";
const CLIENT: &str = "198.18.1.50";
const DESTINATION: &str = "198.18.2.60:6001";

/// One scenario's outcome.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub ok: bool,
    /// Not run because a tool it needs is missing (ucarp); reported, and not counted as a pass.
    pub skipped: bool,
    pub takeover_ms: Option<u64>,
    pub detail: String,
}

impl Scenario {
    pub fn json(&self) -> serde_json::Value {
        json!({"name": self.name, "ok": self.ok, "skipped": self.skipped, "takeover_ms": self.takeover_ms, "detail": self.detail})
    }
}

struct Node {
    short: &'static str,
    side: &'static str,
    config: PathBuf,
    status: PathBuf,
    process: Option<Proc>,
}

struct Ha {
    topology: Topology,
    dir: TempDir,
    bins: Binaries,
    lab_exe: PathBuf,
    nodes: Vec<Node>,
    sink: Option<Proc>,
    sink_file: PathBuf,
    next_id: u64,
}

fn fiber_addr(n: u8, end: u8) -> String {
    format!("198.19.{n}.{end}")
}

impl Ha {
    fn build() -> LabResult<Ha> {
        let bins = binaries()?;
        let lab_exe = bins.diode_lab.clone();
        let mut topology = Topology::new()?;
        let dir = TempDir::new("ha-lab")?;
        for switch in ["bsw", "rsw"] {
            topology.add_switch(switch)?;
        }
        for host in ["b1", "b2", "cl", "r1", "r2", "dst"] {
            topology.add_namespace(host)?;
        }
        topology.plug("b1", "data", "198.18.1.11/24", "bsw")?;
        topology.plug("b2", "data", "198.18.1.12/24", "bsw")?;
        topology.plug("cl", "data", &format!("{CLIENT}/24"), "bsw")?;
        topology.plug("r1", "data", "198.18.2.21/24", "rsw")?;
        topology.plug("r2", "data", "198.18.2.22/24", "rsw")?;
        topology.plug("dst", "data", "198.18.2.60/24", "rsw")?;
        // The cross-connect: every BLUE reaches both REDs. Fiber n uses 198.19.n.0/30.
        for (n, blue, blue_if, red, red_if) in [
            (1, "b1", "f1", "r1", "f1"),
            (2, "b1", "f2", "r2", "f2"),
            (3, "b2", "f1", "r2", "f1"),
            (4, "b2", "f2", "r1", "f2"),
        ] {
            let (blue_addr, red_addr) = (format!("{}/30", fiber_addr(n, 1)), format!("{}/30", fiber_addr(n, 2)));
            topology.wire(blue, blue_if, &blue_addr, red, red_if, &red_addr)?;
        }

        let mut nodes = Vec::new();
        let blue_fibers = [[(1, 7001), (2, 7002)], [(3, 7001), (4, 7002)]];
        for (index, short) in ["b1", "b2"].into_iter().enumerate() {
            let fibers: String = blue_fibers[index]
                .iter()
                .zip(["f1", "f2"])
                .map(|((n, port), interface)| {
                    format!("[[fiber]]\nremote = \"{}:{port}\"\ninterface = \"{interface}\"\n", fiber_addr(*n, 2))
                })
                .collect();
            let status = dir.path().join(format!("{short}.json"));
            let config = format!(
                "[node]\nname = \"{short}\"\nstatus_file = \"{}\"\ncontrol_socket = \"{}\"\n\
                 [ha]\nvhid = 9\nvip = \"{BLUE_VIP}\"\nsecurity_text = \"{SECRET}\"\ninterval_ms = 200\nskew = {}\npreempt = false\n\
                 transport = \"carp\"\nsource = \"198.18.1.1{}\"\ninterface = \"data\"\nprefix = 24\n\
                 [link]\nrate_mbps = 200\n{fibers}\
                 [[channel]]\nnumber = 1\nkind = \"tcp\"\nname = \"historian\"\nlisten = \"{BLUE_VIP}:5001\"\n",
                status.display(),
                dir.path().join(format!("{short}.sock")).display(),
                index * 20,
                index + 1
            );
            let path = dir.path().join(format!("{short}.toml"));
            std::fs::write(&path, config).doing(|| format!("writing {}", path.display()))?;
            nodes.push(Node { short, side: "blue", config: path, status, process: None });
        }
        let red_fibers = [[(1, 7001), (4, 7002)], [(3, 7001), (2, 7002)]];
        for (index, short) in ["r1", "r2"].into_iter().enumerate() {
            let fibers: String = red_fibers[index]
                .iter()
                .map(|(n, port)| {
                    format!("[[fiber]]\nlisten = \"{}:{port}\"\nrecv_buffer = 4194304\n", fiber_addr(*n, 2))
                })
                .collect();
            let status = dir.path().join(format!("{short}.json"));
            let config = format!(
                "[node]\nname = \"{short}\"\nstatus_file = \"{}\"\ncontrol_socket = \"{}\"\nstate_dir = \"{}\"\n\
                 [ha]\nvhid = 19\nvip = \"{RED_VIP}\"\nsecurity_text = \"{SECRET}\"\ninterval_ms = 200\nskew = {}\npreempt = true\n\
                 transport = \"carp\"\nsource = \"198.18.2.2{}\"\ninterface = \"data\"\nprefix = 24\n\
                 {fibers}[[channel]]\nnumber = 1\nkind = \"tcp\"\nname = \"historian\"\n\
                 [channel.health]\ninterval_ms = 300\ntimeout_ms = 300\n[[channel.destination]]\naddress = \"{DESTINATION}\"\n",
                status.display(),
                dir.path().join(format!("{short}.sock")).display(),
                dir.path().join(format!("{short}-state")).display(),
                index * 20,
                index + 1
            );
            let path = dir.path().join(format!("{short}.toml"));
            std::fs::write(&path, config).doing(|| format!("writing {}", path.display()))?;
            nodes.push(Node { short, side: "red", config: path, status, process: None });
        }
        let sink_file = dir.path().join("dst.json");
        let mut ha = Ha { topology, dir, bins, lab_exe, nodes, sink: None, sink_file, next_id: 1 };
        let sink_args = vec![
            "ns-sink".to_string(),
            "--listen".into(),
            DESTINATION.into(),
            "--out".into(),
            ha.sink_file.display().to_string(),
        ];
        ha.sink = Some(ha.spawn_in("dst", "ns-sink", &ha.lab_exe.clone(), &sink_args)?);
        for index in 0..ha.nodes.len() {
            ha.start_node(index)?;
        }
        Ok(ha)
    }

    fn spawn_in(&self, short: &str, name: &str, program: &Path, args: &[String]) -> LabResult<Proc> {
        let mut full = vec!["netns".to_string(), "exec".into(), self.topology.ns(short), program.display().to_string()];
        full.extend_from_slice(args);
        Proc::spawn(name, Path::new("ip"), &full, &self.dir.path().join(format!("{name}.log")))
    }

    fn start_node(&mut self, index: usize) -> LabResult<()> {
        let node = &self.nodes[index];
        // A status file left by a dead process must not be read as the new one's.
        let _ = std::fs::remove_file(&node.status);
        let program = if node.side == "blue" { self.bins.blue_tx.clone() } else { self.bins.red_rx.clone() };
        let args = vec!["run".to_string(), "--config".into(), node.config.display().to_string()];
        let process = self.spawn_in(node.short, node.short, &program, &args)?;
        self.nodes[index].process = Some(process);
        Ok(())
    }

    fn role(&self, index: usize) -> String {
        Lab::status(&self.nodes[index].status)["role"].as_str().unwrap_or("").to_string()
    }

    fn status(&self, index: usize) -> serde_json::Value {
        Lab::status(&self.nodes[index].status)
    }

    fn actives(&self, side: &str) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].side == side && self.role(*i) == "active").collect()
    }

    fn wait(&self, limit: Duration, mut done: impl FnMut(&Ha) -> bool) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() <= limit {
            if done(self) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// An appliance dies: its daemon is killed and its data link and fibers go dark, as in a power cut.
    fn power_off(&mut self, index: usize) -> LabResult<()> {
        if let Some(mut process) = self.nodes[index].process.take() {
            process.kill();
        }
        let _ = std::fs::remove_file(&self.nodes[index].status);
        let short = self.nodes[index].short;
        for interface in ["data", "f1", "f2"] {
            self.topology.set_link(short, interface, false)?;
        }
        Ok(())
    }

    /// The appliance comes back: links up, the stale VIP gone (a rebooted box has none), daemon started.
    fn power_on(&mut self, index: usize) -> LabResult<()> {
        let short = self.nodes[index].short;
        let vip = if self.nodes[index].side == "blue" { BLUE_VIP } else { RED_VIP };
        let _ = ip(&["-n", &self.topology.ns(short), "addr", "del", &format!("{vip}/24"), "dev", "data"]);
        for interface in ["data", "f1", "f2"] {
            self.topology.set_link(short, interface, true)?;
        }
        self.start_node(index)
    }

    /// Sends one stream from the client through the BLUE VIP and waits until the destination has it
    /// intact. Returns the time from the call to delivery. A stream accepted in the instant a node
    /// restarts its transmission (after a healed split brain) is aborted — the client sees a reset,
    /// the destination never a partial stream — so, like a real client, this one sends again.
    fn deliver(&mut self, limit: Duration) -> LabResult<Duration> {
        let start = Instant::now();
        let mut last_error = String::new();
        for _ in 0..3 {
            match self.deliver_once(limit.saturating_sub(start.elapsed())) {
                Ok(_) => return Ok(start.elapsed()),
                Err(error) => last_error = error.to_string(),
            }
        }
        Err(LabError::unexpected(last_error))
    }

    fn deliver_once(&mut self, limit: Duration) -> LabResult<Duration> {
        let id = self.next_id;
        self.next_id += 1;
        let start = Instant::now();
        let output = Command::new("ip")
            .args(["netns", "exec", &self.topology.ns("cl")])
            .arg(&self.lab_exe)
            .args(["ns-send", "--to", &format!("{BLUE_VIP}:5001"), "--id", &id.to_string(), "--bytes", "30000"])
            .args(["--timeout-ms", &limit.as_millis().to_string()])
            .output()
            .at("running ns-send in the client namespace")?;
        if !output.status.success() {
            return Err(LabError::unexpected(format!(
                "client could not send stream {id}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let expected = hex::encode(blake3::hash(&stream_content(id, 30_000)).as_bytes());
        // Delivery takes milliseconds once the stream is accepted; still missing after 3 s, it was aborted.
        let accepted = Instant::now();
        while start.elapsed() <= limit && accepted.elapsed() <= Duration::from_secs(3) {
            let records = Lab::status(&self.sink_file);
            if records.as_array().is_some_and(|all| {
                all.iter().any(|r| r["id"] == id && r["clean"] == true && r["hash"] == expected.as_str())
            }) {
                return Ok(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(LabError::unexpected(format!("stream {id} did not reach the destination within {limit:?}")))
    }

    fn control(&self, index: usize, action: &str) -> LabResult<String> {
        let node = &self.nodes[index];
        let program = if node.side == "blue" { &self.bins.blue_tx } else { &self.bins.red_rx };
        let output = Command::new(program)
            .args(["ha", action, "--config"])
            .arg(&node.config)
            .output()
            .doing(|| format!("running ha {action}"))?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
        } else {
            Err(LabError::command(format!("ha {action}"), String::from_utf8_lossy(&output.stderr).trim()))
        }
    }

    fn logs(&self) -> String {
        ["b1", "b2", "r1", "r2", "ns-sink"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!("--- {name}\n{}\n", lines[lines.len().saturating_sub(15)..].join("\n"))
            })
            .collect()
    }

    fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                process.stop(Duration::from_secs(5));
            }
        }
        if let Some(mut sink) = self.sink.take() {
            sink.stop(Duration::from_secs(2));
        }
    }
}

fn scenario(name: &str, result: LabResult<(Option<u64>, String)>) -> Scenario {
    match result {
        Ok((takeover_ms, detail)) => Scenario { name: name.into(), ok: true, skipped: false, takeover_ms, detail },
        Err(error) => Scenario {
            name: name.into(),
            ok: false,
            skipped: matches!(error, LabError::Missing { .. }),
            takeover_ms: None,
            detail: error.to_string(),
        },
    }
}

fn election(ha: &mut Ha) -> LabResult<(Option<u64>, String)> {
    ha.wait(Duration::from_secs(10), |h| h.actives("blue") == vec![0] && h.actives("red") == vec![2]).ok_or_else(
        || {
            LabError::unexpected(format!(
                "expected b1 and r1 active (lower skew), got blue {:?} red {:?}",
                ha.actives("blue"),
                ha.actives("red")
            ))
        },
    )?;
    let delivered = ha.deliver(Duration::from_secs(10))?;
    Ok((None, format!("b1 and r1 elected; first stream delivered in {} ms", delivered.as_millis())))
}

fn kill_trials(ha: &mut Ha, trials: u32) -> LabResult<(Option<u64>, String)> {
    let mut worst = 0u64;
    let mut all = Vec::new();
    for _ in 0..trials {
        let active =
            *ha.actives("blue").first().ok_or_else(|| LabError::unexpected("no active BLUE before the kill"))?;
        let standby = 1 - active;
        let killed_at = Instant::now();
        ha.power_off(active)?;
        let taken = ha.wait(Duration::from_secs(5), |h| h.role(standby) == "active");
        let takeover =
            taken.ok_or_else(|| LabError::unexpected(format!("node {} did not take over", ha.nodes[standby].short)))?;
        ha.deliver(Duration::from_secs(10))?;
        let gap = killed_at.elapsed();
        worst = worst.max(takeover.as_millis() as u64);
        all.push(format!("{}/{}", takeover.as_millis(), gap.as_millis()));
        ha.power_on(active)?;
        ha.wait(Duration::from_secs(5), |h| h.role(active) == "standby")
            .ok_or_else(|| LabError::unexpected("the restarted node did not come back as standby"))?;
    }
    if worst > 1000 {
        return Err(LabError::unexpected(format!("takeover took {worst} ms (> 1000): {}", all.join(", "))));
    }
    Ok((Some(worst), format!("takeover/service-gap ms per trial: {}", all.join(", "))))
}

fn demote_promote_preempt(ha: &mut Ha) -> LabResult<(Option<u64>, String)> {
    // Start from settled nodes: no fault or demotion left from the previous scenario's restarts.
    let settled = |h: &Ha| (0..2).all(|i| h.status(i)["ha"]["demotion"] == 0);
    ha.wait(Duration::from_secs(5), settled)
        .ok_or_else(|| LabError::unexpected("the BLUE nodes did not settle without demotion"))?;
    let active = *ha.actives("blue").first().ok_or_else(|| LabError::unexpected("no active BLUE"))?;
    let other = 1 - active;
    let start = Instant::now();
    ha.control(active, "demote")?;
    ha.wait(Duration::from_secs(3), |h| h.actives("blue") == vec![other])
        .ok_or_else(|| LabError::unexpected("demote did not move the VIP"))?;
    let handover = start.elapsed().as_millis() as u64;
    ha.deliver(Duration::from_secs(10))?;
    // Promote the demoted node. Whatever the command answers (refused when the active one is
    // preferred), the preferred node — b1, skew 0 — must be the only active one afterwards.
    let promoted = ha.control(active, "promote");
    ha.wait(Duration::from_secs(3), |h| h.actives("blue") == vec![0]).ok_or_else(|| {
        LabError::unexpected(format!(
            "after promote ({promoted:?}) the active BLUE is {:?}, not b1",
            ha.actives("blue")
        ))
    })?;
    std::thread::sleep(Duration::from_millis(1200));
    if ha.actives("blue") != vec![0] {
        return Err(LabError::unexpected(format!(
            "after promote ({promoted:?}) the roles did not settle: {:?}",
            ha.actives("blue")
        )));
    }
    // Preemption (the RED pair preempts): kill r1, r2 takes over; r1 returns and takes back the VIP.
    ha.wait(Duration::from_secs(5), |h| h.actives("red") == vec![2])
        .ok_or_else(|| LabError::unexpected("r1 is not the active RED"))?;
    ha.power_off(2)?;
    ha.wait(Duration::from_secs(5), |h| h.actives("red") == vec![3])
        .ok_or_else(|| LabError::unexpected("r2 did not take over"))?;
    ha.power_on(2)?;
    ha.wait(Duration::from_secs(10), |h| h.actives("red") == vec![2])
        .ok_or_else(|| LabError::unexpected("r1 did not preempt back"))?;
    ha.deliver(Duration::from_secs(10))?;
    Ok((Some(handover), format!("demote handed over in {handover} ms; promote {promoted:?}; r1 preempted back")))
}

fn authentication(ha: &mut Ha) -> LabResult<(Option<u64>, String)> {
    let before = ha.actives("blue");
    let ignored = |h: &Ha, reason: &str| {
        (0..2).map(|i| h.status(i)["ha"]["adverts_ignored"][reason].as_u64().unwrap_or(0)).sum::<u64>()
    };
    let (hmac_before, replay_before, ttl_before) = (ignored(ha, "hmac"), ignored(ha, "replay"), ignored(ha, "ttl"));
    let run = |args: &[&str]| -> LabResult<()> {
        let output = Command::new("ip")
            .args(["netns", "exec", &ha.topology.ns("cl")])
            .arg(&ha.lab_exe)
            .arg("ns-advert")
            .args(["--source", CLIENT, "--vhid", "9", "--vip", BLUE_VIP])
            .args(args)
            .output()
            .at("running ns-advert in the client namespace")?;
        if output.status.success() {
            Ok(())
        } else {
            Err(LabError::command("diode-lab ns-advert", String::from_utf8_lossy(&output.stderr).trim()))
        }
    };
    run(&["--key", "not-the-secret", "--count", "10"])?;
    run(&["--replay", "--count", "10"])?;
    // The right key but a TTL below 255: sent from off the link, so refused before the HMAC.
    run(&["--key", SECRET, "--ttl", "64", "--count", "10"])?;
    // Status files are rewritten every second.
    std::thread::sleep(Duration::from_millis(1500));
    let (hmac, replay) = (ignored(ha, "hmac") - hmac_before, ignored(ha, "replay") - replay_before);
    let ttl = ignored(ha, "ttl") - ttl_before;
    if ha.actives("blue") != before {
        return Err(LabError::unexpected(format!("roles changed from {before:?} to {:?}", ha.actives("blue"))));
    }
    if hmac < 10 || replay < 10 || ttl < 10 {
        return Err(LabError::unexpected(format!(
            "ignored {hmac} wrong-key, {replay} replayed and {ttl} wrong-TTL adverts, expected at least 10 each"
        )));
    }
    Ok((
        None,
        format!("{hmac} wrong-key, {replay} replayed and {ttl} wrong-TTL adverts ignored and counted; roles unchanged"),
    ))
}

fn partition(ha: &mut Ha) -> LabResult<(Option<u64>, String)> {
    // Cut b2's cable to the BLUE switch (its data interface): both sides believe they are alone.
    let active = *ha.actives("blue").first().ok_or_else(|| LabError::unexpected("no active BLUE"))?;
    let standby = 1 - active;
    ha.topology.set_link(ha.nodes[standby].short, "data", false)?;
    ha.wait(Duration::from_secs(5), |h| h.role(standby) == "active")
        .ok_or_else(|| LabError::unexpected("the partitioned standby did not claim the VIP"))?;
    let healed = Instant::now();
    ha.topology.set_link(ha.nodes[standby].short, "data", true)?;
    let resolved = ha
        .wait(Duration::from_secs(5), |h| h.actives("blue").len() == 1)
        .ok_or_else(|| LabError::unexpected("split brain not resolved after healing"))?;
    ha.deliver(Duration::from_secs(10))?;
    let ms = healed.elapsed().min(resolved).as_millis() as u64;
    if ms > 400 {
        return Err(LabError::unexpected(format!(
            "split brain resolved in {ms} ms, more than one 200 ms interval plus margin"
        )));
    }
    Ok((Some(ms), format!("split brain while partitioned; one master {ms} ms after healing")))
}

/// Cuts `interfaces` of the active node of `side` and waits until the peer has taken over; the
/// links come back afterwards. Returns the time from the cut to the takeover.
fn cut_active_fibers(ha: &mut Ha, side: &str, interfaces: &[&str], limit: Duration) -> LabResult<(String, Duration)> {
    let active = *ha.actives(side).first().ok_or_else(|| LabError::unexpected(format!("no active {side} node")))?;
    let other = if active % 2 == 0 { active + 1 } else { active - 1 };
    let short = ha.nodes[active].short;
    for interface in interfaces {
        ha.topology.set_link(short, interface, false)?;
    }
    let moved = ha.wait(limit, |h| h.actives(side) == vec![other]);
    for interface in interfaces {
        ha.topology.set_link(short, interface, true)?;
    }
    let moved =
        moved.ok_or_else(|| LabError::unexpected(format!("{short} did not hand over after its fibers went dark")))?;
    ha.deliver(Duration::from_secs(10))?;
    Ok((short.to_string(), moved))
}

fn red_blind(ha: &mut Ha) -> LabResult<(Option<u64>, String)> {
    let (short, moved) = cut_active_fibers(ha, "red", &["f1", "f2"], Duration::from_secs(8))?;
    Ok((
        Some(moved.as_millis() as u64),
        format!("{short} heard no beacon and demoted; takeover {} ms after the cut", moved.as_millis()),
    ))
}

fn blue_fiber_down(ha: &mut Ha) -> LabResult<(Option<u64>, String)> {
    let (short, moved) = cut_active_fibers(ha, "blue", &["f1"], Duration::from_secs(5))?;
    Ok((
        Some(moved.as_millis() as u64),
        format!("{short} saw fiber f1 down and demoted; takeover {} ms after the cut", moved.as_millis()),
    ))
}

fn ucarp_interop(ha: &mut Ha) -> LabResult<(Option<u64>, String)> {
    let ucarp = which("ucarp").ok_or(LabError::Missing { program: "ucarp", install: "apt-get install ucarp" })?;
    // ucarp speaks whole seconds: b1 runs at a 1 s interval for this scenario, b2 is ucarp (same
    // vhid, security text and VIP, skew 20).
    for index in [0, 1] {
        if let Some(mut process) = ha.nodes[index].process.take() {
            process.stop(Duration::from_secs(5));
        }
    }
    let config = std::fs::read_to_string(&ha.nodes[0].config).at("reading the first BLUE's configuration")?;
    std::fs::write(&ha.nodes[0].config, config.replace("interval_ms = 200", "interval_ms = 1000"))
        .at("writing the first BLUE's configuration")?;
    let up = ha.dir.path().join("vip-up.sh");
    let down = ha.dir.path().join("vip-down.sh");
    std::fs::write(&up, format!("#!/bin/sh\nip addr add {BLUE_VIP}/24 dev \"$1\"\n")).at("writing vip-up.sh")?;
    std::fs::write(&down, format!("#!/bin/sh\nip addr del {BLUE_VIP}/24 dev \"$1\"\n")).at("writing vip-down.sh")?;
    for script in [&up, &down] {
        Command::new("chmod").arg("+x").arg(script).status().at("chmod +x on the ucarp scripts")?;
    }
    let args: Vec<String> =
        ["-i", "data", "-s", "198.18.1.12", "-v", "9", "-p", SECRET, "-a", BLUE_VIP, "-b", "1", "-k", "20"]
            .iter()
            .map(|s| s.to_string())
            .chain([format!("--upscript={}", up.display()), format!("--downscript={}", down.display())])
            .collect();
    let has_vip = |short: &str, ha: &Ha| {
        ip(&["-n", &ha.topology.ns(short), "-o", "addr", "show", "dev", "data"]).unwrap_or_default().contains(BLUE_VIP)
    };
    let _ = ip(&["-n", &ha.topology.ns("b1"), "addr", "del", &format!("{BLUE_VIP}/24"), "dev", "data"]);
    // 1. ucarp alone becomes master; our node joins and stays backup (no preemption on either side).
    let mut ucarp_proc = ha.spawn_in("b2", "ucarp", &ucarp, &args)?;
    ha.wait(Duration::from_secs(8), |h| has_vip("b2", h))
        .ok_or_else(|| LabError::unexpected("ucarp did not become master"))?;
    ha.start_node(0)?;
    // Longer than our master-down time (3 s), so a node deaf to ucarp would have claimed the VIP.
    std::thread::sleep(Duration::from_secs(5));
    let heard = ha.status(0)["ha"].clone();
    if ha.role(0) != "standby"
        || !has_vip("b2", ha)
        || has_vip("b1", ha)
        || heard["adverts_accepted"].as_u64().unwrap_or(0) < 3
    {
        return Err(LabError::unexpected(format!(
            "expected ucarp master and our node backup hearing it, got our role '{}', election {heard}",
            ha.role(0)
        )));
    }
    // 2. ucarp's appliance dies: our node takes over.
    ucarp_proc.kill();
    let _ = ip(&["-n", &ha.topology.ns("b2"), "addr", "del", &format!("{BLUE_VIP}/24"), "dev", "data"]);
    let ours = ha
        .wait(Duration::from_secs(8), |h| h.role(0) == "active")
        .ok_or_else(|| LabError::unexpected("our node did not take over from ucarp"))?;
    ha.deliver(Duration::from_secs(10))?;
    // 3. ucarp returns as backup; our node's appliance dies: ucarp takes over.
    let mut ucarp_proc = ha.spawn_in("b2", "ucarp", &ucarp, &args)?;
    std::thread::sleep(Duration::from_secs(5));
    if has_vip("b2", ha) || ha.role(0) != "active" {
        return Err(LabError::unexpected("ucarp did not come back as backup under our master"));
    }
    ha.power_off(0)?;
    let theirs = ha
        .wait(Duration::from_secs(8), |h| has_vip("b2", h))
        .ok_or_else(|| LabError::unexpected("ucarp did not take over from our node"))?;
    ucarp_proc.stop(Duration::from_secs(3));
    ha.power_on(0)?;
    std::fs::write(&ha.nodes[0].config, config).at("restoring the first BLUE's configuration")?;
    Ok((
        Some(ours.as_millis().max(theirs.as_millis()) as u64),
        format!(
            "one master throughout; ours took over from ucarp in {} ms, ucarp from ours in {} ms (1 s advbase)",
            ours.as_millis(),
            theirs.as_millis()
        ),
    ))
}

fn which(program: &str) -> Option<PathBuf> {
    // Debian installs ucarp in /usr/sbin, which a non-login PATH may lack.
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path.split(':').chain(["/usr/sbin", "/sbin"]).map(|d| Path::new(d).join(program)).find(|p| p.exists());
    found
}

/// Builds the topology, runs every scenario, tears everything down. The report's `ok` is true only
/// when every scenario passed and no namespace was left behind.
pub fn run(kill_trials_count: u32) -> LabResult<serde_json::Value> {
    let (scenarios, prefix, logs) = {
        let mut ha = Ha::build()?;
        let mut scenarios = vec![scenario("election at start with priorities", election(&mut ha))];
        if scenarios[0].ok {
            scenarios.push(scenario("kill -9 of the active BLUE", kill_trials(&mut ha, kill_trials_count)));
            scenarios.push(scenario("demote, promote and preemption", demote_promote_preempt(&mut ha)));
            scenarios.push(scenario("wrong security text, wrong TTL and replayed adverts", authentication(&mut ha)));
            scenarios.push(scenario("partition and heal", partition(&mut ha)));
            scenarios.push(scenario("RED with silent fibers demotes", red_blind(&mut ha)));
            scenarios.push(scenario("BLUE with a dead fiber demotes", blue_fiber_down(&mut ha)));
            scenarios.push(scenario("ucarp interop", ucarp_interop(&mut ha)));
        }
        let logs = if scenarios.iter().all(|s| s.ok || s.skipped) { String::new() } else { ha.logs() };
        ha.stop();
        (scenarios, ha.topology.prefix().to_string(), logs)
    };
    let leftovers = Topology::leftovers(&prefix);
    // A skipped scenario is reported as such; `ok` means every scenario that could run passed.
    let ok = scenarios.iter().all(|s| s.ok || s.skipped) && leftovers.is_empty();
    Ok(json!({
        "scenarios": scenarios.iter().map(Scenario::json).collect::<Vec<_>>(),
        "namespaces_left": leftovers,
        "ok": ok,
        "logs": if logs.is_empty() { serde_json::Value::Null } else { serde_json::Value::String(logs) },
    }))
}
