//! A BLUE pair on loopback (no root): two blue-tx processes electing over UDP adverts, a VIP that only
//! the active one listens on, and one red-rx. Kill -9 of the active, operator demote, and the
//! standby never transmitting.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use std::cell::Cell;
use tests::bins::binaries;

use tests::lab::{free_port, loopback_net, send_stream, stream_content, Lab, Proc, TcpSink, TempDir};

const STREAM_LEN: usize = 50_000;

struct Pair {
    dir: TempDir,
    red: Proc,
    blues: Vec<Proc>,
    vip_listen: SocketAddr,
    sink: TcpSink,
    configs: Vec<PathBuf>,
    /// Streams a node accepted and then aborted (the client sent them again).
    aborted_attempts: Cell<u64>,
}

fn status(path: &Path) -> serde_json::Value {
    Lab::status(path)
}

fn start(net: [u8; 3]) -> Pair {
    let bins = binaries().unwrap();
    let dir = TempDir::new("ha-loopback").unwrap();
    let red_ip = Lab::ip(net, 2);
    let vip = Lab::ip(net, 100);
    let sink_ip = Lab::ip(net, 4);
    let sink = TcpSink::start(SocketAddr::from((sink_ip, 0))).unwrap();
    let fibers = [free_port(red_ip).unwrap(), free_port(red_ip).unwrap()];
    let vip_listen = SocketAddr::from((vip, free_port(vip).unwrap()));
    let red_toml = format!(
        "[node]\nname = \"red1\"\nstatus_file = \"{}\"\nstate_dir = \"{}\"\n[[fiber]]\nlisten = \"{red_ip}:{}\"\n[[fiber]]\nlisten = \"{red_ip}:{}\"\n\
         [[channel]]\nnumber = 1\nkind = \"tcp\"\nname = \"historian\"\n[[channel.destination]]\naddress = \"{}\"\n",
        dir.path().join("red.json").display(),
        dir.path().join("red-state").display(),
        fibers[0],
        fibers[1],
        sink.addr
    );
    std::fs::write(dir.path().join("red.toml"), red_toml).unwrap();
    let red = Proc::run_daemon(&bins.red_rx, &dir.path().join("red.toml")).unwrap();
    let advert_ports = [free_port(Lab::ip(net, 11)).unwrap(), free_port(Lab::ip(net, 12)).unwrap()];
    let mut configs = Vec::new();
    let mut blues = Vec::new();
    for index in 0..2 {
        let me = Lab::ip(net, 11 + index as u8);
        let peer = Lab::ip(net, 12 - index as u8);
        let toml = format!(
            "[node]\nname = \"blue{n}\"\nstatus_file = \"{status}\"\ncontrol_socket = \"{control}\"\n\
             [ha]\nvhid = 9\nvip = \"{vip}\"\nsecurity_text = \"lab-secret\"\ninterval_ms = 200\nskew = {skew}\n\
             transport = \"udp\"\nbind = \"{me}:{my_port}\"\npeers = [\"{peer}:{peer_port}\"]\n\
             [link]\nrate_mbps = 300\n[[fiber]]\nremote = \"{red_ip}:{f1}\"\n[[fiber]]\nremote = \"{red_ip}:{f2}\"\n\
             [[channel]]\nnumber = 1\nkind = \"tcp\"\nname = \"historian\"\nlisten = \"{vip_listen}\"\n",
            n = index + 1,
            status = dir.path().join(format!("blue{}.json", index + 1)).display(),
            control = dir.path().join(format!("blue{}.sock", index + 1)).display(),
            skew = index * 20,
            my_port = advert_ports[index],
            peer_port = advert_ports[1 - index],
            f1 = fibers[0],
            f2 = fibers[1],
        );
        let path = dir.path().join(format!("blue{}.toml", index + 1));
        std::fs::write(&path, toml).unwrap();
        let check = Command::new(&bins.blue_tx).arg("check-config").arg(&path).output().unwrap();
        assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
        blues.push(Proc::run_daemon(&bins.blue_tx, &path).unwrap());
        configs.push(path);
    }
    Pair { dir, red, blues, vip_listen, sink, configs, aborted_attempts: Cell::new(0) }
}

impl Pair {
    fn role(&self, index: usize) -> String {
        status(&self.dir.path().join(format!("blue{}.json", index + 1)))["role"].as_str().unwrap_or("").to_string()
    }

    fn transmitting(&self, index: usize) -> bool {
        status(&self.dir.path().join(format!("blue{}.json", index + 1)))["transmitting"] == true
    }

    fn wait_role(&self, index: usize, role: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.role(index) == role {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends a stream through the VIP and waits until it arrives intact; returns how long that took.
    /// A stream accepted in the instant a new active node restarts its transmission is aborted (the
    /// client sees a reset, the destination never a partial stream), so like a real client this one
    /// sends again, under a new id, up to three times.
    fn deliver(&self, id: u64, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        for attempt in 0..3 {
            if self.deliver_once(id * 100 + attempt, limit.saturating_sub(start.elapsed())).is_some() {
                return Some(start.elapsed());
            }
            self.aborted_attempts.set(self.aborted_attempts.get() + 1);
        }
        None
    }

    fn deliver_once(&self, id: u64, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let sent = loop {
            match send_stream(self.vip_listen, id, STREAM_LEN) {
                Ok(sent) => break sent,
                Err(_) if start.elapsed() < limit => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => return None,
            }
        };
        // Delivery takes milliseconds; a stream still missing after 3 s was aborted.
        while start.elapsed() < limit.min(Duration::from_secs(3)) {
            let received = self.sink.received.lock().unwrap().clone();
            if received.iter().any(|r| r.id == id && r.clean && r.len == sent.0 && r.hash == sent.1) {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn logs(&self) -> String {
        ["blue1.log", "blue2.log", "red.log"]
            .iter()
            .map(|name| {
                format!("--- {name}\n{}", std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default())
            })
            .collect()
    }
}

#[test]
fn blue_pair_elects_one_active_and_fails_over_on_kill_and_demote() {
    let mut pair = start(loopback_net());
    assert!(pair.wait_role(0, "active", Duration::from_secs(10)), "blue1 (skew 0) becomes active\n{}", pair.logs());
    assert!(pair.wait_role(1, "standby", Duration::from_secs(2)));
    assert!(pair.deliver(1, Duration::from_secs(10)).is_some(), "delivered through the active node\n{}", pair.logs());
    let standby = status(&pair.dir.path().join("blue2.json"));
    assert_eq!(standby["transmitting"], false, "a standby never transmits");
    assert_eq!(standby["transmit"]["datagrams"], 0);

    // Operator demote: the standby takes over at once, and the VIP's service moves with it.
    let bins = binaries().unwrap();
    let demote = Command::new(&bins.blue_tx).args(["ha", "demote", "--config"]).arg(&pair.configs[0]).output().unwrap();
    assert!(demote.status.success(), "{}", String::from_utf8_lossy(&demote.stderr));
    assert!(pair.wait_role(1, "active", Duration::from_secs(2)), "{}", pair.logs());
    assert!(pair.wait_role(0, "standby", Duration::from_secs(2)));
    let after_demote = pair.deliver(2, Duration::from_secs(10));
    assert!(after_demote.is_some(), "delivered by blue2 after the demote\n{}", pair.logs());

    // Promote blue1 back (it is preferred once its demotion is cleared), then kill it: blue2 must
    // take over within a second of the kill at the 200 ms interval.
    let promote =
        Command::new(&bins.blue_tx).args(["ha", "promote", "--config"]).arg(&pair.configs[0]).output().unwrap();
    assert!(promote.status.success(), "{}", String::from_utf8_lossy(&promote.stderr));
    assert!(pair.wait_role(0, "active", Duration::from_secs(2)), "{}", pair.logs());
    // blue1 reports active before blue2 has stepped down and released the VIP's port; a stream
    // accepted by blue2 in that instant would be aborted. Wait until the service has moved.
    let deadline = Instant::now() + Duration::from_secs(3);
    let service_on_blue1 = || pair.transmitting(0) && !pair.transmitting(1);
    while !service_on_blue1() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(pair.deliver(3, Duration::from_secs(10)).is_some());
    let killed_at = Instant::now();
    pair.blues[0].kill();
    let takeover = pair.deliver(4, Duration::from_secs(10));
    let elapsed = killed_at.elapsed();
    eprintln!("service through the VIP back {} ms after kill -9 of the active node", elapsed.as_millis());
    assert!(takeover.is_some(), "blue2 delivers after blue1 died\n{}", pair.logs());
    assert!(elapsed < Duration::from_millis(2500), "service back {elapsed:?} after the kill (takeover and delivery)");
    // What a destination sees: every stream that closed cleanly is whole (empty ones are red-rx's
    // destination checks), and RED broke off no more streams than the clients saw aborted (each one a
    // source abort, never a lost block).
    for received in pair.sink.received.lock().unwrap().iter().filter(|r| r.clean && r.len > 0) {
        let expected = stream_content(received.id, STREAM_LEN);
        assert_eq!(received.len, expected.len() as u64, "stream {} closed cleanly but partial", received.id);
        assert_eq!(&received.hash, blake3::hash(&expected).as_bytes(), "stream {} altered", received.id);
    }
    let red = status(&pair.dir.path().join("red.json"));
    let broken = red["receiver"]["streams_broken"].as_object().cloned().unwrap_or_default();
    let broken_total: u64 = broken.values().filter_map(|count| count.as_u64()).sum();
    assert!(broken.keys().all(|reason| reason.starts_with("source_")), "{red}");
    assert!(
        broken_total <= pair.aborted_attempts.get(),
        "{broken_total} broken, {} aborted: {red}",
        pair.aborted_attempts.get()
    );
    for blue in &mut pair.blues {
        blue.stop(Duration::from_secs(5));
    }
    pair.red.stop(Duration::from_secs(5));
}
