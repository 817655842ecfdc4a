//! VIP add, announce and remove on a real interface, inside a network namespace this test creates
//! (root only; CI runs as root). The namespace is removed afterwards, even when the test fails.
//!
//! The parent creates the namespace and a veth pair, then runs this same test binary inside it
//! (`ip netns exec`) with `DIODE_VIP_CHILD` set; the child does the work with the real functions.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

use hw::vip::{add, announce, arp_listener, remove, Vip};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().unwrap();
    assert!(output.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).to_string()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

#[test]
fn vip_is_added_announced_and_removed_in_a_namespace() {
    if std::env::var_os("DIODE_VIP_CHILD").is_some() {
        return child();
    }
    if !is_root() {
        eprintln!("skipped: creating network namespaces needs root");
        return;
    }
    let name = format!("dd-vip-{}", std::process::id());
    let _ = Command::new("ip").args(["netns", "del", &name]).status();
    ip(&["netns", "add", &name]);
    let namespace = Netns(name.clone());
    // A veth pair inside the namespace: d0 is the data interface, d1 its neighbour on the wire.
    ip(&["-n", &name, "link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ip(&["-n", &name, "link", "set", "d0", "up"]);
    ip(&["-n", &name, "link", "set", "d1", "up"]);
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("ip")
        .args(["netns", "exec", &name])
        .arg(&exe)
        .args(["--exact", "vip_is_added_announced_and_removed_in_a_namespace", "--nocapture"])
        .env("DIODE_VIP_CHILD", "1")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "the child ran the test:\n{text}");
    // Nothing of ours stays in the namespace after the child released the VIP.
    assert!(!ip(&["-n", &name, "-o", "addr", "show", "dev", "d0"]).contains("198.18.200.1"));
    drop(namespace);
    assert!(!ip(&["netns", "list"]).contains(&name), "namespace removed");
}

fn child() {
    let vip = Vip { interface: "d0".into(), address: Ipv4Addr::new(198, 18, 200, 1), prefix: 32 };
    // Listen where a neighbour would: on the other end of the wire.
    let listener = arp_listener("d1").unwrap();
    listener.set_read_timeout(Some(Duration::from_secs(2))).unwrap();

    add(&vip).unwrap();
    add(&vip).expect("adding twice is not an error");
    assert!(ip(&["-o", "addr", "show", "dev", "d0"]).contains("198.18.200.1/32"));

    announce(&vip, 3, Duration::from_millis(10)).unwrap();
    let mut announcements = 0;
    let mut frame = [0u8; 64];
    while let Ok(len) = std::io::Read::read(&mut &listener, &mut frame) {
        let arp = &frame[..len];
        if len >= 28 && arp[6..8] == [0, 1] && arp[14..18] == [198, 18, 200, 1] && arp[24..28] == [198, 18, 200, 1] {
            announcements += 1;
            if announcements == 3 {
                break;
            }
        }
    }
    assert_eq!(announcements, 3, "the neighbour received three ARP announcements for the VIP");

    remove(&vip).unwrap();
    remove(&vip).expect("removing twice is not an error");
    assert!(!ip(&["-o", "addr", "show", "dev", "d0"]).contains("198.18.200.1"));
}
