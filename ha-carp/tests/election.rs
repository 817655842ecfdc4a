//! The election with a fake clock: pairs of nodes exchanging adverts through a simulated network that
//! can lose, partition and replay them.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ha_carp::advert::{Advert, AdvertError, AdvertKey};
use ha_carp::machine::{Action, Carp, CarpConfig, Command, CommandRefused, Fault, State};

fn config(last_octet: u8, skew: u8, preempt: bool) -> CarpConfig {
    CarpConfig {
        vhid: 7,
        interval: Duration::from_secs(1),
        skew,
        preempt,
        address: Ipv4Addr::new(198, 18, 0, last_octet),
    }
}

/// Nodes and the adverts in flight between them, on one fake clock.
struct Pair {
    nodes: Vec<Carp>,
    vip_holders: Vec<bool>,
    now: Instant,
    connected: bool,
    key: AdvertKey,
    /// Every advert that went on the wire, as bytes (for replay tests).
    wire: Vec<(usize, [u8; 36])>,
}

impl Pair {
    fn new(configs: Vec<CarpConfig>) -> Pair {
        let now = Instant::now();
        let nodes: Vec<Carp> =
            configs.into_iter().enumerate().map(|(i, c)| Carp::new(c, 1000 * i as u64).unwrap()).collect();
        let key = AdvertKey::new(b"pair-secret", 7, [198, 18, 0, 100]).unwrap();
        let count = nodes.len();
        let mut pair = Pair { nodes, vip_holders: vec![false; count], now, connected: true, key, wire: Vec::new() };
        for node in &mut pair.nodes {
            node.start(now);
        }
        pair
    }

    fn address(&self, index: usize) -> Ipv4Addr {
        self.nodes[index].config().address
    }

    /// Applies every pending action: VIP changes and adverts (delivered at once if connected).
    fn settle(&mut self) {
        loop {
            let mut progressed = false;
            for index in 0..self.nodes.len() {
                while let Some(action) = self.nodes[index].poll_action() {
                    progressed = true;
                    match action {
                        Action::AddVip => self.vip_holders[index] = true,
                        Action::RemoveVip => self.vip_holders[index] = false,
                        Action::SendAdvert(advert) => {
                            let bytes = advert.emit(&self.key);
                            self.wire.push((index, bytes));
                            if self.connected {
                                self.deliver(index, &bytes);
                            }
                        }
                        Action::AnnounceVip | Action::BecomeMaster | Action::BecomeBackup | Action::Reassert => {}
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn deliver(&mut self, from: usize, bytes: &[u8; 36]) {
        let source = self.address(from);
        let now = self.now;
        for (index, node) in self.nodes.iter_mut().enumerate() {
            if index != from {
                if let Ok(advert) = Advert::parse(bytes, Some(255), &self.key) {
                    let _ = node.handle_advert(now, source, &advert);
                }
            }
        }
    }

    /// Runs the clock forward by `span` in 10 ms steps, firing timers.
    fn run(&mut self, span: Duration) {
        let end = self.now + span;
        while self.now < end {
            self.now += Duration::from_millis(10);
            let now = self.now;
            for node in &mut self.nodes {
                node.handle_timeout(now);
            }
            self.settle();
        }
    }

    fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].state() == State::Master).collect()
    }

    fn command(&mut self, index: usize, command: Command) -> Result<(), CommandRefused> {
        let now = self.now;
        let result = self.nodes[index].handle_command(now, command);
        self.settle();
        result
    }

    /// How long until `index` is the only master, in 10 ms steps, up to `limit`.
    fn time_until_master(&mut self, index: usize, limit: Duration) -> Option<Duration> {
        let start = self.now;
        while self.now - start <= limit {
            if self.masters() == vec![index] {
                return Some(self.now - start);
            }
            self.run(Duration::from_millis(10));
        }
        None
    }
}

#[test]
fn lower_skew_wins_the_election_at_start() {
    let mut pair = Pair::new(vec![config(1, 100, true), config(2, 0, true)]);
    pair.run(Duration::from_secs(10));
    assert_eq!(pair.masters(), vec![1]);
    assert_eq!(pair.vip_holders, vec![false, true]);
}

#[test]
fn equal_adverts_resolve_to_the_lower_address_on_both_nodes() {
    let mut pair = Pair::new(vec![config(2, 0, true), config(1, 0, true)]);
    pair.run(Duration::from_secs(10));
    assert_eq!(pair.masters(), vec![1], "198.18.0.1 wins the tie");
}

#[test]
fn nobody_claims_the_vip_before_a_master_down_time() {
    let mut pair = Pair::new(vec![config(1, 0, true)]);
    pair.run(Duration::from_millis(2_900));
    assert!(pair.masters().is_empty());
    pair.run(Duration::from_millis(200));
    assert_eq!(pair.masters(), vec![0]);
}

#[test]
fn backup_takes_over_within_three_intervals_when_the_master_dies() {
    let mut pair = Pair::new(vec![config(1, 0, true), config(2, 100, true)]);
    pair.run(Duration::from_secs(5));
    assert_eq!(pair.masters(), vec![0]);
    // The master dies: it neither advertises nor answers. Its VIP goes with it.
    pair.connected = false;
    pair.vip_holders[0] = false;
    let dead = std::mem::replace(&mut pair.nodes[0], Carp::new(config(1, 0, true), 0).unwrap());
    drop(dead);
    pair.connected = true;
    let takeover = pair.time_until_master(1, Duration::from_secs(5)).unwrap();
    // 3 × (1 s + 100/256 s) at most after the last advert.
    assert!(takeover <= Duration::from_millis(4_200), "{takeover:?}");
    assert!(pair.vip_holders[1]);
}

/// A pair whose preferred node 0 was master, went away (node 1 took over) and is about to start again.
fn primary_away(preempt: bool) -> Pair {
    let mut pair = Pair::new(vec![config(1, 0, preempt), config(2, 100, preempt)]);
    pair.run(Duration::from_secs(5));
    assert_eq!(pair.masters(), vec![0]);
    pair.nodes[0] = Carp::new(config(1, 0, preempt), 50_000).unwrap();
    pair.vip_holders[0] = false;
    pair.run(Duration::from_secs(5));
    assert_eq!(pair.masters(), vec![1], "node 1 took over while node 0 was away");
    pair
}

#[test]
fn without_preemption_a_recovered_primary_stays_backup() {
    let mut pair = primary_away(false);
    pair.nodes[0].start(pair.now);
    pair.run(Duration::from_secs(10));
    assert_eq!(pair.masters(), vec![1], "no preemption: the better node waits");
}

#[test]
fn with_preemption_a_recovered_primary_takes_back_the_vip() {
    let mut pair = primary_away(true);
    pair.nodes[0].start(pair.now);
    pair.run(Duration::from_secs(3));
    assert_eq!(pair.masters(), vec![0]);
    assert_eq!(pair.vip_holders, vec![true, false], "exactly one node holds the VIP");
}

#[test]
fn a_held_preemption_waits_for_the_release_but_never_blocks_a_takeover() {
    let mut pair = primary_away(true);
    // Node 0 returns without its peer's replicated state: it must not take the VIP back yet.
    pair.nodes[0].start(pair.now);
    pair.command(0, Command::HoldPreemption(true)).unwrap();
    assert!(!pair.nodes[0].preempts());
    pair.run(Duration::from_secs(10));
    assert_eq!(pair.masters(), vec![1], "a held preemption waits");
    assert_eq!(pair.nodes[0].demotion(), 0, "holding preemption is not a demotion");
    pair.command(0, Command::HoldPreemption(false)).unwrap();
    pair.run(Duration::from_secs(3));
    assert_eq!(pair.masters(), vec![0], "released, the preferred node preempts");

    // Held or not, a backup replaces a master that died.
    pair.command(1, Command::HoldPreemption(true)).unwrap();
    pair.connected = false;
    pair.run(Duration::from_secs(5));
    assert!(pair.masters().contains(&1), "node 1 took over from a silent master while holding preemption");
}

#[test]
fn demote_hands_over_at_once_even_without_preemption() {
    let mut pair = Pair::new(vec![config(1, 0, false), config(2, 100, false)]);
    pair.run(Duration::from_secs(5));
    pair.command(0, Command::Demote).unwrap();
    assert_eq!(pair.masters(), vec![1], "the demotion advert makes the backup take over immediately");
    assert_eq!(pair.vip_holders, vec![false, true]);
    assert!(pair.nodes[0].is_demoted());
    pair.run(Duration::from_secs(10));
    assert_eq!(pair.masters(), vec![1]);
}

#[test]
fn a_demoted_lone_master_keeps_serving() {
    let mut pair = Pair::new(vec![config(1, 0, true)]);
    pair.run(Duration::from_secs(5));
    pair.command(0, Command::Demote).unwrap();
    pair.run(Duration::from_secs(5));
    assert_eq!(pair.masters(), vec![0], "nobody better exists: demotion does not stop the service");
}

#[test]
fn promote_brings_a_demoted_primary_back_at_once_without_preemption() {
    let mut pair = Pair::new(vec![config(1, 0, false), config(2, 100, false)]);
    pair.run(Duration::from_secs(5));
    pair.command(0, Command::Demote).unwrap();
    assert_eq!(pair.masters(), vec![1]);
    pair.run(Duration::from_secs(5));
    assert_eq!(pair.masters(), vec![1], "no preemption: the demoted primary waits as backup");
    pair.command(0, Command::Promote).unwrap();
    pair.run(Duration::from_millis(100));
    assert_eq!(pair.masters(), vec![0]);
    pair.run(Duration::from_secs(10));
    assert_eq!(pair.masters(), vec![0], "and it stays");
}

#[test]
fn promoting_a_standby_while_a_preferred_master_is_healthy_is_refused_with_the_reason() {
    let mut pair = Pair::new(vec![config(1, 0, true), config(2, 100, true)]);
    pair.run(Duration::from_secs(5));
    assert_eq!(pair.command(1, Command::Promote), Err(CommandRefused::MasterPreferred));
    assert_eq!(pair.masters(), vec![0]);
    // Demoting the master is how the operator moves the VIP; then promoting it back works.
    pair.command(0, Command::Demote).unwrap();
    assert_eq!(pair.masters(), vec![1]);
    // Right after being demoted, the old master knows who replaced it: promoting the worse node it
    // is now is refused at once, not after the next advert.
    pair.command(0, Command::Promote).unwrap();
    pair.run(Duration::from_millis(100));
    assert_eq!(pair.masters(), vec![0], "node 0 is preferred: its promotion wins");
    assert_eq!(
        pair.command(1, Command::Promote),
        Err(CommandRefused::MasterPreferred),
        "node 1 just yielded to node 0"
    );
}

#[test]
fn a_fault_demotes_and_clearing_it_restores() {
    let mut pair = Pair::new(vec![config(1, 0, true), config(2, 100, true)]);
    pair.run(Duration::from_secs(5));
    pair.command(0, Command::Fault(Fault::FibersDown)).unwrap();
    assert_eq!(pair.masters(), vec![1]);
    pair.command(0, Command::Clear(Fault::FibersDown)).unwrap();
    pair.run(Duration::from_secs(3));
    assert_eq!(pair.masters(), vec![0], "preemption brings the healthy primary back");
    assert_eq!(pair.nodes[0].faults().count(), 0);
}

#[test]
fn both_faulted_nodes_still_elect_one_master() {
    let mut pair = Pair::new(vec![config(1, 0, true), config(2, 100, true)]);
    pair.run(Duration::from_secs(5));
    pair.command(0, Command::Fault(Fault::DiskFull)).unwrap();
    pair.command(1, Command::Fault(Fault::DiskFull)).unwrap();
    pair.run(Duration::from_secs(10));
    assert_eq!(pair.masters().len(), 1);
}

#[test]
fn partition_makes_two_masters_and_healing_leaves_one_within_an_interval() {
    let mut pair = Pair::new(vec![config(1, 0, true), config(2, 100, true)]);
    pair.run(Duration::from_secs(5));
    pair.connected = false;
    pair.run(Duration::from_secs(5));
    assert_eq!(pair.masters(), vec![0, 1], "split brain while partitioned");
    pair.connected = true;
    pair.run(Duration::from_millis(1_500));
    assert_eq!(pair.masters(), vec![0]);
    assert_eq!(pair.vip_holders, vec![true, false]);
}

#[test]
fn master_advertises_every_interval() {
    let mut pair = Pair::new(vec![config(1, 0, true)]);
    pair.run(Duration::from_secs(4));
    let before = pair.nodes[0].stats().adverts_sent;
    pair.run(Duration::from_secs(10));
    let sent = pair.nodes[0].stats().adverts_sent - before;
    assert!((10..=11).contains(&sent), "{sent} adverts in 10 s at a 1 s interval");
}

#[test]
fn replayed_adverts_are_ignored_and_counted() {
    let mut pair = Pair::new(vec![config(1, 0, true), config(2, 100, true)]);
    pair.run(Duration::from_secs(5));
    let (from, old) = pair.wire.iter().find(|(from, _)| *from == 0).copied().unwrap();
    let advert = Advert::parse(&old, Some(255), &pair.key).unwrap();
    let now = pair.now;
    let source = pair.address(from);
    assert_eq!(pair.nodes[1].handle_advert(now, source, &advert), Err(AdvertError::Replay));
    assert_eq!(pair.nodes[1].stats().ignored(AdvertError::Replay), 1);
}

#[test]
fn replaying_a_dead_masters_adverts_does_not_hold_off_the_takeover() {
    let mut pair = Pair::new(vec![config(1, 0, true), config(2, 100, true)]);
    pair.run(Duration::from_secs(5));
    let captured: Vec<[u8; 36]> = pair.wire.iter().filter(|(from, _)| *from == 0).map(|(_, b)| *b).collect();
    pair.nodes[0] = Carp::new(config(1, 0, true), 0).unwrap();
    pair.vip_holders[0] = false;
    // An attacker replays the old master's adverts every 500 ms.
    let start = pair.now;
    while pair.now - start < Duration::from_secs(5) {
        let bytes = captured[(pair.now - start).as_millis() as usize / 500 % captured.len()];
        let advert = Advert::parse(&bytes, Some(255), &pair.key).unwrap();
        let (now, source) = (pair.now, pair.address(0));
        let _ = pair.nodes[1].handle_advert(now, source, &advert);
        pair.run(Duration::from_millis(500));
    }
    assert_eq!(pair.masters(), vec![1]);
}

#[test]
fn own_adverts_and_other_vhids_are_ignored() {
    let mut node = Carp::new(config(1, 0, true), 0).unwrap();
    let now = Instant::now();
    node.start(now);
    let own = Advert { vhid: 7, advbase: 1, advskew: 0, demote: 0, counter: 5 };
    assert_eq!(node.handle_advert(now, Ipv4Addr::new(198, 18, 0, 1), &own), Err(AdvertError::Own));
    let other = Advert { vhid: 8, ..own };
    assert_eq!(node.handle_advert(now, Ipv4Addr::new(198, 18, 0, 2), &other), Err(AdvertError::OtherVhid));
}

#[test]
fn takeover_applies_vip_before_announcing_and_release_removes_it_first() {
    let mut node = Carp::new(config(1, 0, true), 0).unwrap();
    let now = Instant::now();
    node.start(now);
    node.handle_timeout(now + Duration::from_secs(4));
    let actions: Vec<Action> = std::iter::from_fn(|| node.poll_action()).collect();
    assert_eq!(&actions[..3], &[Action::AddVip, Action::AnnounceVip, Action::BecomeMaster]);
    assert!(matches!(actions[3], Action::SendAdvert(_)));
    let better = Advert { vhid: 7, advbase: 1, advskew: 0, demote: 0, counter: 1 };
    node.handle_advert(now + Duration::from_secs(5), Ipv4Addr::new(198, 18, 0, 0), &better).unwrap();
    let actions: Vec<Action> = std::iter::from_fn(|| node.poll_action()).collect();
    assert_eq!(&actions[..2], &[Action::RemoveVip, Action::BecomeBackup]);
    assert!(matches!(actions[2], Action::SendAdvert(_)), "a last advert tells the winner it was not alone");
}

#[test]
fn sub_second_intervals_use_carps_encoding_and_keep_the_priority_order() {
    let fast = CarpConfig { interval: Duration::from_millis(200), ..config(1, 0, true) };
    assert_eq!(fast.encoding(), Ok((0, 51)));
    let slower = CarpConfig { interval: Duration::from_millis(200), ..config(2, 20, true) };
    assert_eq!(slower.encoding(), Ok((0, 71)));
    assert!(CarpConfig { interval: Duration::from_millis(1500), ..config(1, 0, true) }.encoding().is_err());
    assert!(CarpConfig { interval: Duration::from_millis(900), ..config(1, 100, true) }.encoding().is_err());
    let mut pair = Pair::new(vec![slower, fast]);
    pair.run(Duration::from_secs(2));
    assert_eq!(pair.masters(), vec![1]);
    // Kill the master: takeover within 3 × 71/256 s.
    pair.nodes[1] = Carp::new(CarpConfig { interval: Duration::from_millis(200), ..config(1, 0, true) }, 0).unwrap();
    pair.vip_holders[1] = false;
    let takeover = pair.time_until_master(0, Duration::from_secs(2)).unwrap();
    assert!(takeover <= Duration::from_millis(900), "{takeover:?}");
}

#[test]
fn random_counters_as_ucarp_sends_them_are_not_replays_but_repeats_are() {
    let mut node = Carp::new(config(1, 100, true), 0).unwrap();
    let mut now = Instant::now();
    node.start(now);
    let peer = Ipv4Addr::new(198, 18, 0, 2);
    // ucarp draws a new random counter for every advert until it hears a peer.
    for counter in [900u64, 17, 5_000_000, 3, 42] {
        now += Duration::from_secs(1);
        let advert = Advert { vhid: 7, advbase: 1, advskew: 0, demote: 0, counter };
        assert_eq!(node.handle_advert(now, peer, &advert), Ok(()), "counter {counter}");
    }
    assert_eq!(node.state(), State::Backup, "every advert reset the master-down timer");
    let repeat = Advert { vhid: 7, advbase: 1, advskew: 0, demote: 0, counter: 17 };
    assert_eq!(node.handle_advert(now, peer, &repeat), Err(AdvertError::Replay));
}
