//! The full HA topology of DESIGN §2 on loopback, without root: two blue-tx and two red-rx (each pair
//! electing over UDP adverts, with its VIP a 127.x address and its pair channel), and four fiber-sim
//! processes wired as the cross-connect (BLUE1.f1→RED1, BLUE1.f2→RED2, BLUE2.f1→RED2, BLUE2.f2→RED1).
//!
//! Channels: 1 TCP (to a TCP sink), 2 UDP (RED sends it to a multicast group on loopback), 3 files (a drop folder both BLUE nodes
//! watch, as a share would be; each node spools on its own) and 4 vault (uploads on BLUE's VIP,
//! downloads from RED's). Each RED delivers into its own folders: a file delivered by both would
//! show in both, which is what the checks look for.

use crate::error::{IoContext, LabError, LabResult};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bins::{binaries, Binaries};
use crate::lab::{free_port, LinkPlan, Proc, TcpSink, TempDir, UdpSink};

pub const SECURITY_TEXT: &str = "pair-lab-secret";
const BLUE_VHID: u8 = 9;
const RED_VHID: u8 = 19;

/// One daemon of the lab, which can be killed and started again with the same configuration.
pub struct Node {
    pub name: String,
    pub side: &'static str,
    pub config: PathBuf,
    pub status: PathBuf,
    pub control: PathBuf,
    /// The management API's address, when the lab has one.
    pub management: Option<SocketAddr>,
    program: PathBuf,
    pub proc: Option<Proc>,
}

impl Node {
    pub fn start(&mut self) -> LabResult<()> {
        self.proc = Some(Proc::run_daemon(&self.program, &self.config)?);
        Ok(())
    }

    /// SIGKILL: no flush, no handover, as a power cut.
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    pub fn stop(&mut self) -> bool {
        self.proc.take().is_some_and(|mut p| p.stop(Duration::from_secs(10)))
    }

    /// The role the node's election reports ("active", "standby", "init"), or "" when unreachable.
    pub fn role(&self) -> String {
        if self.proc.is_none() {
            return String::new();
        }
        chassis::runtime::control_request(&self.control, "ha status")
            .ok()
            .and_then(|answer| serde_json::from_str::<serde_json::Value>(&answer).ok())
            .and_then(|status| status["role"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    pub fn status(&self) -> serde_json::Value {
        std::fs::read(&self.status).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.config.with_extension("log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

#[derive(Clone, Debug)]
pub struct PairsOptions {
    pub link: LinkPlan,
    /// Advert interval of both pairs: the takeover time is about three of them.
    pub interval_ms: u64,
    /// Extra TOML for every BLUE (sections after the channels) and RED.
    pub blue_extra: String,
    pub red_extra: String,
    /// Give every node its management API and dashboard, with a password made for the run.
    pub management: bool,
    /// BLUE node 1 takes the VIP back when it returns (RED pairs never preempt: red-rx refuses it).
    pub blue_preempt: bool,
}

impl Default for PairsOptions {
    fn default() -> PairsOptions {
        PairsOptions {
            link: LinkPlan { loss_percent: 0.2, burst: Some((0.1, 25.0)), repair_percent: 10.0, ..LinkPlan::default() },
            interval_ms: 100,
            blue_extra: String::new(),
            red_extra: String::new(),
            management: false,
            blue_preempt: false,
        }
    }
}

pub struct PairsLab {
    pub dir: TempDir,
    pub blues: Vec<Node>,
    pub reds: Vec<Node>,
    pub fibers: Vec<Proc>,
    pub blue_vip: Ipv4Addr,
    pub red_vip: Ipv4Addr,
    pub tcp_listen: SocketAddr,
    pub udp_listen: SocketAddr,
    pub vault_upload: SocketAddr,
    pub vault_download: SocketAddr,
    pub drop_folder: PathBuf,
    /// Each RED's files folder and vault folder.
    pub red_files: Vec<PathBuf>,
    pub red_vaults: Vec<PathBuf>,
    pub tcp_sink: TcpSink,
    pub udp_sink: UdpSink,
    pub bins: Binaries,
    /// With management: the user and password that open every node's API and dashboard.
    pub credentials: Option<(String, String)>,
}

fn ip(net: [u8; 3], host: u8) -> Ipv4Addr {
    Ipv4Addr::new(net[0], net[1], net[2], host)
}

impl PairsLab {
    /// Writes the six configurations, starts the fiber-sims and the four daemons (node 1 of each pair
    /// first, so it becomes the active one), and returns once both pairs have an active node.
    pub fn start(net: [u8; 3], options: &PairsOptions) -> LabResult<PairsLab> {
        let bins = binaries()?;
        let dir = TempDir::new("pairs-lab")?;
        let blue_ips = [ip(net, 1), ip(net, 2)];
        let red_ips = [ip(net, 11), ip(net, 12)];
        let sim_ip = ip(net, 3);
        let (blue_vip, red_vip) = (ip(net, 100), ip(net, 101));
        let sink_ip = ip(net, 4);
        let tcp_sink = TcpSink::start(SocketAddr::from((sink_ip, 0)))?;
        // RED delivers the UDP channel to a multicast group of this lab's own, through loopback.
        let group = Ipv4Addr::new(239, net[1], net[2], 1);
        let udp_sink = UdpSink::start(SocketAddr::from((group, free_port(Ipv4Addr::LOCALHOST)?)), Some(group))?;
        let tcp_listen = SocketAddr::from((blue_vip, free_port(blue_vip)?));
        let udp_listen = SocketAddr::from((blue_vip, free_port(blue_vip)?));
        let vault_upload = SocketAddr::from((blue_vip, free_port(blue_vip)?));
        let vault_download = SocketAddr::from((red_vip, free_port(red_vip)?));
        let drop_folder = dir.path().join("drop");
        std::fs::create_dir_all(&drop_folder).doing(|| format!("cannot create {}", drop_folder.display()))?;

        // Fiber ports: RED n listens on one port per BLUE (its fiber from BLUE1 and from BLUE2).
        let red_ports =
            [[free_port(red_ips[0])?, free_port(red_ips[0])?], [free_port(red_ips[1])?, free_port(red_ips[1])?]];
        let link = &options.link;
        let mut fibers = Vec::new();
        let mut blue_fibers = [String::new(), String::new()];
        // (blue, its fiber, red): BLUE1.f1→RED1, BLUE1.f2→RED2, BLUE2.f1→RED2, BLUE2.f2→RED1.
        for (blue, red) in [(0usize, 0usize), (0, 1), (1, 1), (1, 0)] {
            let sim_port = free_port(sim_ip)?;
            let target = SocketAddr::from((red_ips[red], red_ports[red][blue]));
            blue_fibers[blue] += &format!("[[fiber]]\nremote = \"{sim_ip}:{sim_port}\"\n");
            let name = format!("fiber-b{}-r{}", blue + 1, red + 1);
            let mut args = vec![
                "--listen".to_string(),
                format!("{sim_ip}:{sim_port}"),
                "--forward".to_string(),
                target.to_string(),
                "--loss".to_string(),
                link.loss_percent.to_string(),
                "--seed".to_string(),
                (link.seed + fibers.len() as u64).to_string(),
                "--stats-json".to_string(),
                dir.path().join(format!("{name}.json")).display().to_string(),
            ];
            if let Some((enter, leave)) = link.burst {
                args.extend(["--ge-p".to_string(), enter.to_string(), "--ge-r".to_string(), leave.to_string()]);
            }
            fibers.push(Proc::spawn(&name, &bins.fiber_sim, &args, &dir.path().join(format!("{name}.log")))?);
        }

        let advert_ports = |ips: [Ipv4Addr; 2]| -> LabResult<[SocketAddr; 2]> {
            Ok([SocketAddr::from((ips[0], free_port(ips[0])?)), SocketAddr::from((ips[1], free_port(ips[1])?))])
        };
        let (blue_adverts, red_adverts) = (advert_ports(blue_ips)?, advert_ports(red_ips)?);
        let (blue_pair, red_pair) = (advert_ports(blue_ips)?, advert_ports(red_ips)?);
        let ha = |vhid: u8, vip: Ipv4Addr, index: usize, adverts: &[SocketAddr; 2], pair: &[SocketAddr; 2]| {
            let preempt = vhid == BLUE_VHID && options.blue_preempt;
            format!(
                "[ha]\nvhid = {vhid}\nvip = \"{vip}\"\nsecurity_text = \"{SECURITY_TEXT}\"\ninterval_ms = {}\nskew = {}\npreempt = {preempt}\n\
                 transport = \"udp\"\nbind = \"{}\"\npeers = [\"{}\"]\n\n[pair]\nlisten = \"{}\"\npeer = \"{}\"\n",
                options.interval_ms,
                index * 20,
                adverts[index],
                adverts[1 - index],
                pair[index],
                pair[1 - index],
            )
        };

        let mut credentials = None;
        let mut management = |host: u8| -> LabResult<(String, Option<SocketAddr>)> {
            if !options.management {
                return Ok((String::new(), None));
            }
            let (user, password) = credentials
                .get_or_insert_with(|| ("operator".to_string(), connectors::spool::new_file_id()[..16].to_string()));
            let hash = chassis::management::hash_secret(password)
                .map_err(|e| LabError::unexpected(format!("hashing the lab password: {e}")))?;
            let listen = SocketAddr::from((ip(net, host), free_port(ip(net, host))?));
            Ok((
                format!("\n[management]\nlisten = \"{listen}\"\nusername = \"{user}\"\npassword_hash = \"{hash}\"\n"),
                Some(listen),
            ))
        };
        let mut blues = Vec::new();
        let mut reds = Vec::new();
        let mut red_files = Vec::new();
        let mut red_vaults = Vec::new();
        for index in 0..2 {
            let name = format!("blue{}", index + 1);
            let node_dir = dir.path().join(&name);
            let (blue_management, blue_api) = management(21 + index as u8)?;
            let toml = format!(
                "[node]\nname = \"{name}\"\nstatus_file = \"{status}\"\ncontrol_socket = \"{control}\"\n\n{ha}\n\
                 [fec]\nrepair_percent = {repair}\nmtu = {mtu}\n\n[link]\nrate_mbps = {rate}\n\n{fibers}\n\
                 [[channel]]\nnumber = 1\nkind = \"tcp\"\nname = \"historian\"\nlisten = \"{tcp_listen}\"\n\n\
                 [[channel]]\nnumber = 2\nkind = \"udp\"\nname = \"telemetry\"\nlisten = \"{udp_listen}\"\n\n\
                 [[channel]]\nnumber = 3\nkind = \"files\"\nname = \"reports\"\nfolder = \"{drop}\"\nsettle_ms = 150\nrescan_s = 1\nspool = \"{spool}\"\n\n\
                 [[channel]]\nnumber = 4\nkind = \"vault\"\nname = \"uploads\"\nlisten = \"{vault_upload}\"\nspool = \"{vault_spool}\"\n\n{extra}",
                status = node_dir.join("status.json").display(),
                control = node_dir.join("control.sock").display(),
                ha = ha(BLUE_VHID, blue_vip, index, &blue_adverts, &blue_pair),
                repair = link.repair_percent,
                mtu = link.mtu,
                rate = link.rate_mbps,
                fibers = blue_fibers[index],
                drop = drop_folder.display(),
                spool = node_dir.join("spool-files").display(),
                vault_spool = node_dir.join("spool-vault").display(),
                extra = options.blue_extra.clone() + &blue_management,
            );
            blues.push(write_node(&name, "blue", &node_dir, &toml, &bins.blue_tx, blue_api)?);

            let name = format!("red{}", index + 1);
            let node_dir = dir.path().join(&name);
            let (files, vault) = (node_dir.join("files"), node_dir.join("vault"));
            let (red_management, red_api) = management(31 + index as u8)?;
            let toml = format!(
                "[node]\nname = \"{name}\"\nstatus_file = \"{status}\"\ncontrol_socket = \"{control}\"\nstate_dir = \"{state}\"\n\n{ha}\n\
                 [[fiber]]\nlisten = \"{ip}:{p1}\"\n[[fiber]]\nlisten = \"{ip}:{p2}\"\n\n\
                 [[channel]]\nnumber = 1\nkind = \"tcp\"\nname = \"historian\"\n[[channel.destination]]\naddress = \"{tcp}\"\n\n\
                 [[channel]]\nnumber = 2\nkind = \"udp\"\nname = \"telemetry\"\nmulticast_interface = \"127.0.0.1\"\n[[channel.destination]]\naddress = \"{udp}\"\n\n\
                 [[channel]]\nnumber = 3\nkind = \"files\"\nname = \"reports\"\nfolder = \"{files}\"\n\n\
                 [[channel]]\nnumber = 4\nkind = \"vault\"\nname = \"uploads\"\nfolder = \"{vault}\"\nlisten = \"{vault_download}\"\n\n{extra}",
                status = node_dir.join("status.json").display(),
                control = node_dir.join("control.sock").display(),
                state = node_dir.join("state").display(),
                ha = ha(RED_VHID, red_vip, index, &red_adverts, &red_pair),
                ip = red_ips[index],
                p1 = red_ports[index][0],
                p2 = red_ports[index][1],
                tcp = tcp_sink.addr,
                udp = udp_sink.addr,
                files = files.display(),
                vault = vault.display(),
                extra = options.red_extra.clone() + &red_management,
            );
            reds.push(write_node(&name, "red", &node_dir, &toml, &bins.red_rx, red_api)?);
            red_files.push(files);
            red_vaults.push(vault);
        }
        let mut lab = PairsLab {
            dir,
            blues,
            reds,
            fibers,
            blue_vip,
            red_vip,
            tcp_listen,
            udp_listen,
            vault_upload,
            vault_download,
            drop_folder,
            red_files,
            red_vaults,
            tcp_sink,
            udp_sink,
            bins,
            credentials,
        };
        // Node 1 first, so it wins the first election; then node 2 joins as standby.
        for side in ["red", "blue"] {
            lab.nodes_mut(side)[0].start()?;
        }
        for side in ["red", "blue"] {
            if !lab.wait_active(side, 0, Duration::from_secs(20)) {
                return Err(LabError::unexpected(format!(
                    "{side}1 did not become active:\n{}",
                    lab.nodes(side)[0].log_tail(20)
                )));
            }
            lab.nodes_mut(side)[1].start()?;
        }
        for side in ["red", "blue"] {
            if !lab.wait_redundant(side, Duration::from_secs(30)) {
                return Err(LabError::unexpected(format!("the {side} pair did not become redundant:\n{}", lab.logs())));
            }
        }
        Ok(lab)
    }

    pub fn nodes(&self, side: &str) -> &[Node] {
        if side == "blue" {
            &self.blues
        } else {
            &self.reds
        }
    }

    pub fn nodes_mut(&mut self, side: &str) -> &mut [Node] {
        if side == "blue" {
            &mut self.blues
        } else {
            &mut self.reds
        }
    }

    /// The index of the side's active node, if exactly one is.
    pub fn active(&self, side: &str) -> Option<usize> {
        let active: Vec<usize> = (0..2).filter(|i| self.nodes(side)[*i].role() == "active").collect();
        (active.len() == 1).then(|| active[0])
    }

    pub fn wait_active(&self, side: &str, index: usize, limit: Duration) -> bool {
        crate::lab::wait_for(limit, || self.nodes(side)[index].role() == "active")
    }

    /// Waits until the side's active node reports the pair redundant (its standby connected and in
    /// sync) in a status written after this call: an older one may predate a takeover or a restart.
    pub fn wait_redundant(&self, side: &str, limit: Duration) -> bool {
        let asked = std::time::SystemTime::now();
        crate::lab::wait_for(limit, || {
            self.active(side).is_some_and(|i| {
                let node = &self.nodes(side)[i];
                let fresh = std::fs::metadata(&node.status).and_then(|m| m.modified()).is_ok_and(|t| t > asked);
                let status = node.status();
                fresh && status["role"] == "active" && status["redundancy"]["state"] == "redundant"
            })
        })
    }

    pub fn logs(&self) -> String {
        self.blues.iter().chain(&self.reds).map(|node| format!("--- {}\n{}\n", node.name, node.log_tail(15))).collect()
    }

    /// Stops the daemons (BLUE first, so RED sees every stream end) and the fiber-sims.
    pub fn stop(&mut self) -> bool {
        let mut clean = true;
        for node in self.blues.iter_mut().chain(self.reds.iter_mut()) {
            if node.proc.is_some() {
                clean &= node.stop();
            }
        }
        for fiber in &mut self.fibers {
            fiber.stop(Duration::from_secs(5));
        }
        clean
    }
}

fn write_node(
    name: &str,
    side: &'static str,
    dir: &Path,
    toml: &str,
    program: &Path,
    management: Option<SocketAddr>,
) -> LabResult<Node> {
    std::fs::create_dir_all(dir).doing(|| dir.display().to_string())?;
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(&config, toml).doing(|| config.display().to_string())?;
    Ok(Node {
        name: name.to_string(),
        side,
        config,
        status: dir.join("status.json"),
        control: dir.join("control.sock"),
        management,
        program: program.to_path_buf(),
        proc: None,
    })
}

/// Milliseconds since `start`.
pub fn elapsed_ms(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}
