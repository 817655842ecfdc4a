//! The election as a pure state machine: adverts, commands and time in; actions out.
//!
//! States INIT → BACKUP ⇄ MASTER. A backup becomes master when it hears nothing better for the
//! master-down time (3 advertisement intervals), or at once when it hears a worse master and either
//! preempts, or that master is demoted more than itself (a demoted or faulted master is asking to be
//! replaced). A master steps down as soon as it hears a better advert. "Better" compares (demotion,
//! advbase, advskew, address), lower first, demotion first as OpenBSD does; the address makes equal
//! adverts resolve the same way on both nodes.
//!
//! On takeover the actions come in the order the machine must apply them: add the VIP, announce it
//! (gratuitous ARP), then tell the daemon, then advertise. On release the VIP is removed first.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use crate::advert::{Advert, AdvertError};

/// Configuration of one node of a pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarpConfig {
    pub vhid: u8,
    /// Advertisement interval: whole seconds (1-255), or under one second.
    pub interval: Duration,
    /// Priority: the node with the lower skew wins (0-255 with whole-second intervals).
    pub skew: u8,
    /// Take over from a worse master instead of waiting for it to fail.
    pub preempt: bool,
    /// This node's address on the data network (breaks ties; lower wins).
    pub address: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CarpConfigError {
    #[error("interval {0:?} must be whole seconds from 1 to 255, or between 10 ms and 1 s")]
    Interval(Duration),
    #[error(
        "interval {interval:?} with skew {skew} does not fit CARP's sub-second encoding (advskew {advskew} > 255)"
    )]
    SubSecondSkew { interval: Duration, skew: u8, advskew: u32 },
}

impl CarpConfig {
    /// The (advbase, advskew) this node advertises. Whole seconds are sent as CARP always did, so they
    /// interoperate with ucarp; a sub-second interval is sent as advbase 0 and advskew in 1/256 s
    /// with the skew added, which keeps the ordering of priorities.
    pub fn encoding(&self) -> Result<(u8, u8), CarpConfigError> {
        let millis = self.interval.as_millis();
        if millis.is_multiple_of(1000) && (1..=255).contains(&(millis / 1000)) {
            return Ok(((millis / 1000) as u8, self.skew));
        }
        if !(10..1000).contains(&millis) {
            return Err(CarpConfigError::Interval(self.interval));
        }
        let advskew = (millis * 256 / 1000) as u32 + u32::from(self.skew);
        if advskew > 255 {
            return Err(CarpConfigError::SubSecondSkew { interval: self.interval, skew: self.skew, advskew });
        }
        Ok((0, advskew as u8))
    }
}

/// The time an (advbase, advskew) pair stands for.
pub fn advert_interval(advbase: u8, advskew: u8) -> Duration {
    Duration::from_secs(u64::from(advbase)) + Duration::from_micros(u64::from(advskew) * 1_000_000 / 256)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    Init,
    Backup,
    Master,
}

/// Conditions that make a node unfit to be master. They clear when the condition does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// BLUE: its fiber links report down.
    FibersDown,
    /// RED: no beacon on any fiber while the peer hears them.
    NoBeacon,
    /// RED: the output disk is full.
    DiskFull,
}

/// Operator and fault inputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Give mastership to the peer (the Demote button).
    Demote,
    /// Clear this node's operator demotion and take mastership now, unless the current master is
    /// preferred (then the operator demotes that one instead: CARP has no way to outrank a better node).
    Promote,
    Fault(Fault),
    Clear(Fault),
    /// `true`: do not preempt, whatever the configuration says (a node that has not yet received its
    /// peer's replicated state would take over without it); `false`: preempt as configured. Unlike a
    /// fault this leaves the node's priority alone, so it still replaces a failed or faulted master.
    HoldPreemption(bool),
}

/// Why an operator command was not carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandRefused {
    #[error("the active node is preferred to this one (lower demotion, skew or address): demote it instead")]
    MasterPreferred,
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    SendAdvert(Advert),
    AddVip,
    /// Gratuitous ARP for the VIP (repeated by the driver).
    AnnounceVip,
    RemoveVip,
    BecomeMaster,
    BecomeBackup,
    /// This master heard another master that must yield (a healed partition): what the other side
    /// sent while it believed itself active may carry a higher epoch, so the daemon starts afresh.
    Reassert,
}

/// Counters for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CarpStats {
    pub adverts_sent: u64,
    pub adverts_accepted: u64,
    /// Adverts ignored, by reason (see [`AdvertError::ALL`] for the order).
    pub ignored: [u64; AdvertError::ALL.len()],
    pub became_master: u64,
    pub became_backup: u64,
}

impl CarpStats {
    pub fn ignore(&mut self, reason: AdvertError) {
        if let Some(index) = AdvertError::ALL.iter().position(|r| *r == reason) {
            self.ignored[index] += 1;
        }
    }

    pub fn ignored(&self, reason: AdvertError) -> u64 {
        AdvertError::ALL.iter().position(|r| *r == reason).map_or(0, |i| self.ignored[i])
    }
}

/// Demotion an operator's Demote adds: above any number of faults, so an operator's choice wins.
const OPERATOR_DEMOTION: u8 = 128;
/// Demotion each active fault adds.
const FAULT_DEMOTION: u8 = 16;
/// Senders remembered for replay detection.
const MAX_SENDERS: usize = 8;
/// Counters remembered per sender, and for how long: a replay is an advert whose counter was
/// already accepted within this window.
const REPLAY_MEMORY: usize = 1024;
const REPLAY_WINDOW: Duration = Duration::from_secs(120);

#[derive(Clone, Debug)]
struct Sender {
    address: Ipv4Addr,
    /// Counters accepted from this sender, newest last, with when they were seen.
    recent: std::collections::VecDeque<(u64, Instant)>,
}

/// The election state machine of one node.
#[derive(Debug)]
pub struct Carp {
    config: CarpConfig,
    advbase: u8,
    advskew: u8,
    state: State,
    counter: u64,
    operator_demoted: bool,
    faults: BTreeSet<Fault>,
    preemption_held: bool,
    /// Backup: when the master is declared down. Master: when the next advert is due.
    timer: Option<Instant>,
    senders: Vec<Sender>,
    /// The ordering key of the master last heard (backup state), to answer Promote.
    last_master: Option<(u8, Duration, Ipv4Addr)>,
    actions: std::collections::VecDeque<Action>,
    stats: CarpStats,
}

impl Carp {
    /// A node in INIT. `initial_counter` should be random, so a restarted node's adverts are not
    /// mistaken for replays for longer than a master-down time.
    pub fn new(config: CarpConfig, initial_counter: u64) -> Result<Carp, CarpConfigError> {
        let (advbase, advskew) = config.encoding()?;
        Ok(Carp {
            config,
            advbase,
            advskew,
            state: State::Init,
            counter: initial_counter,
            operator_demoted: false,
            last_master: None,
            faults: BTreeSet::new(),
            preemption_held: false,
            timer: None,
            senders: Vec::new(),
            actions: std::collections::VecDeque::new(),
            stats: CarpStats::default(),
        })
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn stats(&self) -> &CarpStats {
        &self.stats
    }

    pub fn faults(&self) -> impl Iterator<Item = Fault> + '_ {
        self.faults.iter().copied()
    }

    /// Whether this node would preempt a worse master now.
    pub fn preempts(&self) -> bool {
        self.config.preempt && !self.preemption_held
    }

    pub fn is_demoted(&self) -> bool {
        self.demotion() > 0
    }

    /// The demotion this node advertises.
    pub fn demotion(&self) -> u8 {
        let faults = (self.faults.len().min(7) as u8) * FAULT_DEMOTION;
        faults.saturating_add(if self.operator_demoted { OPERATOR_DEMOTION } else { 0 })
    }

    pub fn config(&self) -> &CarpConfig {
        &self.config
    }

    fn interval(&self) -> Duration {
        advert_interval(self.advbase, self.advskew)
    }

    fn master_down(&self) -> Duration {
        self.interval() * 3
    }

    /// Ordering key: lower is better.
    fn own_key(&self) -> (u8, Duration, Ipv4Addr) {
        (self.demotion(), self.interval(), self.config.address)
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }

    /// INIT → BACKUP: listen for a master-down time before claiming the VIP.
    pub fn start(&mut self, now: Instant) {
        if self.state == State::Init {
            self.state = State::Backup;
            self.timer = Some(now + self.master_down());
        }
    }

    fn advertise(&mut self) {
        self.counter = self.counter.wrapping_add(1);
        let advert = Advert {
            vhid: self.config.vhid,
            advbase: self.advbase,
            advskew: self.advskew,
            demote: self.demotion(),
            counter: self.counter,
        };
        self.stats.adverts_sent += 1;
        self.actions.push_back(Action::SendAdvert(advert));
    }

    fn become_master(&mut self, now: Instant) {
        if self.state == State::Master {
            return;
        }
        self.state = State::Master;
        self.stats.became_master += 1;
        self.actions.push_back(Action::AddVip);
        self.actions.push_back(Action::AnnounceVip);
        self.actions.push_back(Action::BecomeMaster);
        self.advertise();
        self.timer = Some(now + self.interval());
    }

    fn become_backup(&mut self, now: Instant) {
        self.last_master = None;
        if self.state == State::Master {
            self.actions.push_back(Action::RemoveVip);
        }
        if self.state != State::Backup {
            self.state = State::Backup;
            self.stats.became_backup += 1;
            self.actions.push_back(Action::BecomeBackup);
        }
        self.timer = Some(now + self.master_down());
    }

    /// Counts an advert the wire layer refused (bad HMAC, TTL, checksum...).
    pub fn record_ignored(&mut self, reason: AdvertError) {
        self.stats.ignore(reason);
    }

    /// An authenticated advert (see [`Advert::parse`]) from `source`. Returns why it was ignored.
    pub fn handle_advert(&mut self, now: Instant, source: Ipv4Addr, advert: &Advert) -> Result<(), AdvertError> {
        let result = self.accept(now, source, advert);
        if let Err(reason) = result {
            self.stats.ignore(reason);
            return result;
        }
        self.stats.adverts_accepted += 1;
        let theirs = (advert.demote, advert_interval(advert.advbase, advert.advskew), source);
        let better = theirs < self.own_key();
        match self.state {
            State::Init => {}
            State::Master => {
                if better {
                    self.become_backup(now);
                    self.last_master = Some(theirs);
                    // One last advert with our own values, as ucarp does: after a healed partition the
                    // winner may not have heard this node yet, and must learn that it was not alone.
                    self.advertise();
                } else {
                    // A worse master is also claiming the VIP: reassert it, and advertise so it yields.
                    self.actions.push_back(Action::AnnounceVip);
                    self.actions.push_back(Action::Reassert);
                    self.advertise();
                }
            }
            State::Backup => {
                self.last_master = Some(theirs);
                let master_asks_to_be_replaced = advert.demote > self.demotion();
                let will_time_out = advert_interval(advert.advbase, advert.advskew) > self.master_down();
                if !better && (self.preempts() || master_asks_to_be_replaced || will_time_out) {
                    self.become_master(now);
                } else {
                    self.timer = Some(now + self.master_down());
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self, now: Instant, source: Ipv4Addr, advert: &Advert) -> Result<(), AdvertError> {
        if advert.vhid != self.config.vhid {
            return Err(AdvertError::OtherVhid);
        }
        if source == self.config.address {
            return Err(AdvertError::Own);
        }
        // A replay is an advert whose counter this sender already used. Counters are not required to
        // grow: ucarp draws a fresh random counter for every advert until it hears a peer, and a
        // restarted node starts from a new one. Remembering every counter of the window catches a
        // replayed capture without refusing either of them.
        let sender = match self.senders.iter().position(|s| s.address == source) {
            Some(index) => &mut self.senders[index],
            None => {
                if self.senders.len() >= MAX_SENDERS {
                    let oldest = self
                        .senders
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| s.recent.back().map(|(_, t)| *t))
                        .map_or(0, |(i, _)| i);
                    self.senders.remove(oldest);
                }
                self.senders.push(Sender { address: source, recent: std::collections::VecDeque::new() });
                let last = self.senders.len() - 1;
                &mut self.senders[last]
            }
        };
        while sender.recent.front().is_some_and(|(_, t)| now.saturating_duration_since(*t) > REPLAY_WINDOW)
            || sender.recent.len() >= REPLAY_MEMORY
        {
            sender.recent.pop_front();
        }
        if sender.recent.iter().any(|(counter, _)| *counter == advert.counter) {
            return Err(AdvertError::Replay);
        }
        sender.recent.push_back((advert.counter, now));
        Ok(())
    }

    /// Timers: a backup that heard no master takes over; a master advertises.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.timer else { return };
        if now < deadline {
            return;
        }
        match self.state {
            State::Init => self.timer = None,
            State::Backup => self.become_master(now),
            State::Master => {
                self.advertise();
                self.timer = Some(now + self.interval());
            }
        }
    }

    /// Applies an operator command or a fault change. Promote is refused (with the reason) when the
    /// current master is preferred to this node even without its demotion.
    pub fn handle_command(&mut self, now: Instant, command: Command) -> Result<(), CommandRefused> {
        let before = self.demotion();
        match command {
            Command::Demote => self.operator_demoted = true,
            Command::Promote => {
                self.operator_demoted = false;
                if self.state == State::Backup {
                    let master_alive = self.timer.is_some_and(|deadline| now < deadline);
                    if let Some(master) = self.last_master.filter(|_| master_alive) {
                        if master < self.own_key() {
                            return Err(CommandRefused::MasterPreferred);
                        }
                    }
                    self.become_master(now);
                    return Ok(());
                }
            }
            Command::Fault(fault) => {
                self.faults.insert(fault);
            }
            Command::Clear(fault) => {
                self.faults.remove(&fault);
            }
            Command::HoldPreemption(held) => self.preemption_held = held,
        }
        // A master whose demotion changed says so at once, so a healthy backup takes over (or, when it
        // recovered, so nobody does) without waiting for the next interval.
        if self.state == State::Master && self.demotion() != before {
            self.advertise();
            self.timer = Some(now + self.interval());
        }
        Ok(())
    }
}
