//! Network-namespace topologies (root only): namespaces as appliances and hosts, bridges as switches,
//! veth pairs as cables and fibers. Addresses come from 198.18.0.0/15 and exist only inside the
//! namespaces. Every namespace is deleted when the [`Topology`] is dropped, whether the run
//! succeeded, failed or panicked, so nothing is left behind.

use crate::error::{IoContext, LabError, LabResult};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs `ip` with `args`; the error names the command and what `ip` said.
pub fn ip(args: &[&str]) -> LabResult<String> {
    let output = Command::new("ip").args(args).output().at("cannot run ip")?;
    if !output.status.success() {
        return Err(LabError::command(
            format!("ip {}", args.join(" ")),
            String::from_utf8_lossy(&output.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).to_string())
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// A set of namespaces with a common unique prefix.
pub struct Topology {
    prefix: String,
    namespaces: Vec<String>,
    links: u32,
}

impl Topology {
    pub fn new() -> LabResult<Topology> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        if !is_root() {
            return Err(LabError::unexpected("network namespaces need root"));
        }
        let prefix = format!("dd{}x{}", std::process::id() % 100_000, COUNTER.fetch_add(1, Ordering::SeqCst));
        Ok(Topology { prefix, namespaces: Vec::new(), links: 0 })
    }

    /// The full name of namespace `short`.
    pub fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// Creates namespace `short` with its loopback up.
    pub fn add_namespace(&mut self, short: &str) -> LabResult<String> {
        let name = self.ns(short);
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(name)
    }

    /// A switch: a bridge `br0` inside namespace `short`.
    pub fn add_switch(&mut self, short: &str) -> LabResult<String> {
        let name = self.add_namespace(short)?;
        ip(&["-n", &name, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &name, "link", "set", "br0", "up"])?;
        Ok(name)
    }

    /// Cables `host`'s interface `interface` (with `address`, e.g. "198.18.1.11/24") to `switch`.
    /// Returns the switch-side port name (to cut the cable later).
    pub fn plug(&mut self, host: &str, interface: &str, address: &str, switch: &str) -> LabResult<String> {
        self.links += 1;
        let port = format!("p{}", self.links);
        let (host_ns, switch_ns) = (self.ns(host), self.ns(switch));
        ip(&["-n", &host_ns, "link", "add", interface, "type", "veth", "peer", "name", &port, "netns", &switch_ns])?;
        ip(&["-n", &host_ns, "addr", "add", address, "dev", interface])?;
        ip(&["-n", &host_ns, "link", "set", interface, "up"])?;
        ip(&["-n", &switch_ns, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &switch_ns, "link", "set", &port, "up"])?;
        Ok(port)
    }

    /// A point-to-point cable (a fiber): `a`'s `a_if` ↔ `b`'s `b_if`, with /30 addresses.
    pub fn wire(&mut self, a: &str, a_if: &str, a_addr: &str, b: &str, b_if: &str, b_addr: &str) -> LabResult<()> {
        let (a_ns, b_ns) = (self.ns(a), self.ns(b));
        ip(&["-n", &a_ns, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b_ns])?;
        ip(&["-n", &a_ns, "addr", "add", a_addr, "dev", a_if])?;
        ip(&["-n", &b_ns, "addr", "add", b_addr, "dev", b_if])?;
        ip(&["-n", &a_ns, "link", "set", a_if, "up"])?;
        ip(&["-n", &b_ns, "link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Sets an interface of namespace `short` up or down (pulling a cable).
    pub fn set_link(&self, short: &str, interface: &str, up: bool) -> LabResult<()> {
        ip(&["-n", &self.ns(short), "link", "set", interface, if up { "up" } else { "down" }]).map(|_| ())
    }

    /// The namespaces that exist now with this topology's prefix (for the "nothing left" check).
    pub fn leftovers(prefix: &str) -> Vec<String> {
        ip(&["netns", "list"])
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in self.namespaces.iter().rev() {
            // Processes still inside would keep it alive as a mount; the lab stops them first.
            let _ = ip(&["netns", "del", name]);
        }
    }
}
