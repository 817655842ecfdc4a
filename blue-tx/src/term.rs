//! When BLUE transmits: the term lifecycle as a sans-IO state machine, in the shape of `ha-carp`'s
//! `Carp` (`handle_*(now, …)` in, [`TermLifecycle::poll_action`] out, no sockets, no runtime, no clock).
//!
//! A term is the whole transmit chain under one session id and epoch. Without HA one term runs from
//! start to stop. With HA a term runs while this node is active: becoming active starts a term under
//! a new, higher epoch and a session stamped later than the last one; becoming standby ends it, so a
//! standby never transmits. A healed partition (the election reasserting this node) restarts the
//! term under a new epoch, so RED follows this node again rather than the one it heard last. A term
//! that cannot start (the previous active still holds a port for a moment) is retried with HA and
//! fatal without it. Stopping or reloading ends the term (flushing what was accepted) before the
//! daemon exits.
//!
//! `now` is wall-clock milliseconds since the Unix epoch, because the epoch and the session stamp are
//! wall-clock values RED compares across nodes; the daemon passes the real clock, tests a fake one.

use std::collections::VecDeque;

/// Epoch 0 of the clock-derived epochs: 2025-01-01T00:00:00Z, in Unix milliseconds.
const EPOCH_BASE_MS: u64 = 1_735_689_600_000;
/// How long after a failed start the next try comes.
pub const RETRY_AFTER_MS: u64 = 100;

/// How the daemon ends once the term is over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Stopped,
    Reload,
}

/// Why a running term ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndReason {
    BecameStandby,
    /// The election reasserted this node after a partition: a new term under a new epoch.
    Reasserted,
    Stopping,
}

/// What the daemon must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TermAction {
    /// Start the transmit chain under this session and epoch, then report with
    /// [`TermLifecycle::handle_started`] or [`TermLifecycle::handle_start_failed`].
    Start { session: u64, epoch: u32 },
    /// Stop the running chain, flushing what was accepted, then report with
    /// [`TermLifecycle::handle_ended`].
    End(EndReason),
    /// Nothing is transmitting any more: leave.
    Exit(Exit),
    /// Without HA a term that cannot start is fatal.
    Fail(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Not transmitting (standby, or before the first start).
    Idle,
    /// A start was asked for and not yet reported.
    Starting,
    /// A start failed; the next try is due at this time.
    RetryAt(u64),
    Running,
    /// An end was asked for and not yet reported.
    Ending,
    Done,
}

/// The term lifecycle of one blue-tx process.
#[derive(Debug)]
pub struct TermLifecycle {
    ha: bool,
    epoch_floor: u32,
    active: bool,
    state: State,
    /// Set by stop or reload: once the term has ended, exit this way.
    leaving: Option<Exit>,
    previous_session: u64,
    previous_epoch: u32,
    /// The low bits of this process's session ids (random per process, so two nodes starting a term
    /// in the same millisecond still differ), advanced per term.
    salt: u16,
    terms_started: u64,
    actions: VecDeque<TermAction>,
}

impl TermLifecycle {
    /// `ha`: whether an election decides the role (without it this node is always active).
    /// `epoch_floor`: the configured `[link] epoch`, the least epoch a term uses. `salt`: random.
    pub fn new(now: u64, ha: bool, epoch_floor: u32, salt: u16) -> TermLifecycle {
        let mut machine = TermLifecycle {
            ha,
            epoch_floor,
            active: !ha,
            state: State::Idle,
            leaving: None,
            previous_session: 0,
            previous_epoch: 0,
            salt,
            terms_started: 0,
            actions: VecDeque::new(),
        };
        machine.advance(now);
        machine
    }

    /// The election's role changed (ignored without HA).
    pub fn handle_role(&mut self, now: u64, active: bool) {
        if !self.ha || self.active == active {
            return;
        }
        self.active = active;
        self.advance(now);
    }

    /// The election reasserted this node (a healed partition): the other side may have transmitted
    /// under a higher epoch, so a running term restarts under a new one.
    pub fn handle_reassert(&mut self, now: u64) {
        if self.state == State::Running && self.active && self.leaving.is_none() {
            self.end(EndReason::Reasserted);
        }
        self.advance(now);
    }

    /// The term asked for by [`TermAction::Start`] is transmitting.
    pub fn handle_started(&mut self, now: u64) {
        if self.state == State::Starting {
            self.state = State::Running;
            self.terms_started += 1;
        }
        self.advance(now);
    }

    /// The term asked for could not start.
    pub fn handle_start_failed(&mut self, now: u64, error: &str) {
        if self.state != State::Starting {
            return;
        }
        if self.ha {
            self.state = State::RetryAt(now + RETRY_AFTER_MS);
        } else {
            self.state = State::Done;
            self.actions.push_back(TermAction::Fail(error.to_string()));
        }
        self.advance(now);
    }

    /// The term asked to end by [`TermAction::End`] has stopped.
    pub fn handle_ended(&mut self, now: u64) {
        if self.state == State::Ending {
            self.state = State::Idle;
        }
        self.advance(now);
    }

    /// A stop signal (`reload` false) or a configuration to apply (`reload` true).
    pub fn handle_stop(&mut self, now: u64, reload: bool) {
        if self.leaving.is_none() {
            self.leaving = Some(if reload { Exit::Reload } else { Exit::Stopped });
        }
        self.advance(now);
    }

    /// Time passed (a retry may be due).
    pub fn handle_timeout(&mut self, now: u64) {
        self.advance(now);
    }

    /// When [`TermLifecycle::handle_timeout`] should next be called, if at all.
    pub fn poll_timeout(&self) -> Option<u64> {
        match self.state {
            State::RetryAt(at) => Some(at),
            _ => None,
        }
    }

    pub fn poll_action(&mut self) -> Option<TermAction> {
        self.actions.pop_front()
    }

    pub fn transmitting(&self) -> bool {
        self.state == State::Running
    }

    pub fn terms_started(&self) -> u64 {
        self.terms_started
    }

    fn end(&mut self, reason: EndReason) {
        self.state = State::Ending;
        self.actions.push_back(TermAction::End(reason));
    }

    /// Moves towards what the inputs ask for: a term while active and staying, none otherwise.
    fn advance(&mut self, now: u64) {
        match self.state {
            State::Running if self.leaving.is_some() => self.end(EndReason::Stopping),
            State::Running if !self.active => self.end(EndReason::BecameStandby),
            State::RetryAt(_) if !self.active || self.leaving.is_some() => self.state = State::Idle,
            _ => {}
        }
        let want_term = self.active && self.leaving.is_none();
        let start_due = match self.state {
            State::Idle => true,
            State::RetryAt(at) => now >= at,
            _ => false,
        };
        if want_term && start_due {
            self.salt = self.salt.wrapping_add(1);
            let session = next_session(now, self.previous_session, self.salt);
            let epoch = if self.ha { next_epoch(now, self.epoch_floor, self.previous_epoch) } else { self.epoch_floor };
            self.previous_session = session;
            self.previous_epoch = epoch;
            self.state = State::Starting;
            self.actions.push_back(TermAction::Start { session, epoch });
        }
        if let (Some(exit), State::Idle) = (self.leaving, self.state) {
            self.state = State::Done;
            self.actions.push_back(TermAction::Exit(exit));
        }
    }
}

/// The session id of a new term: a start stamp (RED refuses a session that is not newer than the live
/// one at the same epoch, so a recording of an earlier run cannot displace this one), later than this
/// process's previous term even if the clock stepped back.
fn next_session(now: u64, previous: u64, salt: u16) -> u64 {
    let start = now.max(diode_proto::header::session_start_ms(previous) + 1);
    diode_proto::header::stamped_session(start, salt)
}

/// The epoch of a new term: quarter-seconds since 2025-01-01 (a u32 lasts until 2059), so a node that
/// takes over later than another started its term announces a higher epoch without talking to it
/// (RED follows the highest, and follows a lower one once the higher one is silent); never below the
/// configured floor, and always above this process's previous term.
fn next_epoch(now: u64, floor: u32, previous: u32) -> u32 {
    let clock = (now.saturating_sub(EPOCH_BASE_MS) / 250).min(u64::from(u32::MAX - 1)) as u32;
    clock.max(floor).max(previous.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diode_proto::header::session_start_ms;

    /// 2026-06-01, well past the epoch base.
    const T0: u64 = 1_780_272_000_000;

    fn actions(machine: &mut TermLifecycle) -> Vec<TermAction> {
        std::iter::from_fn(|| machine.poll_action()).collect()
    }

    fn started(machine: &mut TermLifecycle, now: u64) -> (u64, u32) {
        let Some(TermAction::Start { session, epoch }) = machine.poll_action() else {
            unreachable!("expected a start")
        };
        machine.handle_started(now);
        (session, epoch)
    }

    #[test]
    fn without_ha_one_term_starts_at_once_under_the_configured_epoch() {
        let mut machine = TermLifecycle::new(T0, false, 7, 0);
        let (session, epoch) = started(&mut machine, T0);
        assert_eq!(epoch, 7);
        assert_eq!(session_start_ms(session), T0);
        assert!(machine.transmitting());
        machine.handle_role(T0 + 5, false);
        assert_eq!(actions(&mut machine), [], "without HA the role is not followed");
    }

    #[test]
    fn a_standby_never_starts_and_an_active_starts_under_the_clock_epoch() {
        let mut machine = TermLifecycle::new(T0, true, 0, 0);
        assert_eq!(actions(&mut machine), []);
        machine.handle_role(T0 + 1000, true);
        let (session, epoch) = started(&mut machine, T0 + 1000);
        assert_eq!(epoch, ((T0 + 1000 - EPOCH_BASE_MS) / 250) as u32);
        assert_eq!(session_start_ms(session), T0 + 1000);
    }

    #[test]
    fn becoming_standby_ends_the_term_and_a_takeover_starts_a_newer_one() {
        let mut machine = TermLifecycle::new(T0, true, 0, 0);
        machine.handle_role(T0, true);
        let (first_session, first_epoch) = started(&mut machine, T0);
        machine.handle_role(T0 + 10, false);
        assert_eq!(actions(&mut machine), [TermAction::End(EndReason::BecameStandby)]);
        assert!(!machine.transmitting());
        machine.handle_ended(T0 + 20);
        assert_eq!(actions(&mut machine), []);
        // Taken back within the same quarter-second: the epoch still rises, the session stamp too.
        machine.handle_role(T0 + 30, true);
        let (session, epoch) = started(&mut machine, T0 + 30);
        assert_eq!(epoch, first_epoch + 1);
        assert!(session_start_ms(session) > session_start_ms(first_session));
        assert_eq!(machine.terms_started(), 2);
    }

    #[test]
    fn a_clock_stepped_back_still_gives_a_newer_session_and_epoch() {
        let mut machine = TermLifecycle::new(T0, true, 0, 0);
        machine.handle_role(T0, true);
        let (first_session, first_epoch) = started(&mut machine, T0);
        machine.handle_role(T0, false);
        assert_eq!(actions(&mut machine), [TermAction::End(EndReason::BecameStandby)]);
        machine.handle_ended(T0);
        machine.handle_role(T0 - 60_000, true);
        let (session, epoch) = started(&mut machine, T0 - 60_000);
        assert!(epoch > first_epoch);
        assert!(session_start_ms(session) > session_start_ms(first_session));
    }

    #[test]
    fn the_configured_epoch_is_a_floor_with_ha() {
        let floor = u32::MAX - 10;
        let mut machine = TermLifecycle::new(T0, true, floor, 0);
        machine.handle_role(T0, true);
        assert_eq!(started(&mut machine, T0).1, floor);
    }

    #[test]
    fn with_ha_a_failed_start_is_retried_after_the_delay() {
        let mut machine = TermLifecycle::new(T0, true, 0, 0);
        machine.handle_role(T0, true);
        let Some(TermAction::Start { epoch, .. }) = machine.poll_action() else { unreachable!() };
        machine.handle_start_failed(T0, "address in use");
        assert_eq!(machine.poll_timeout(), Some(T0 + RETRY_AFTER_MS));
        machine.handle_timeout(T0 + RETRY_AFTER_MS - 1);
        assert_eq!(actions(&mut machine), []);
        machine.handle_timeout(T0 + RETRY_AFTER_MS);
        let Some(TermAction::Start { epoch: retried, .. }) = machine.poll_action() else { unreachable!() };
        assert!(retried > epoch, "each try is a new term");
        machine.handle_started(T0 + RETRY_AFTER_MS);
        assert!(machine.transmitting());
    }

    #[test]
    fn a_retry_is_dropped_when_the_node_becomes_standby_meanwhile() {
        let mut machine = TermLifecycle::new(T0, true, 0, 0);
        machine.handle_role(T0, true);
        machine.poll_action();
        machine.handle_start_failed(T0, "address in use");
        machine.handle_role(T0 + 50, false);
        assert_eq!(machine.poll_timeout(), None);
        machine.handle_timeout(T0 + 500);
        assert_eq!(actions(&mut machine), []);
    }

    #[test]
    fn without_ha_a_failed_start_is_fatal() {
        let mut machine = TermLifecycle::new(T0, false, 0, 0);
        machine.poll_action();
        machine.handle_start_failed(T0, "fiber interface missing");
        assert_eq!(actions(&mut machine), [TermAction::Fail("fiber interface missing".into())]);
        machine.handle_timeout(T0 + 1000);
        assert_eq!(actions(&mut machine), []);
    }

    #[test]
    fn a_reassert_restarts_a_running_term_under_a_new_epoch() {
        let mut machine = TermLifecycle::new(T0, true, 0, 0);
        machine.handle_role(T0, true);
        let (_, epoch) = started(&mut machine, T0);
        machine.handle_reassert(T0 + 5);
        assert_eq!(actions(&mut machine), [TermAction::End(EndReason::Reasserted)]);
        machine.handle_ended(T0 + 6);
        let (_, restarted) = started(&mut machine, T0 + 6);
        assert!(restarted > epoch);
        // A standby that is told of a reassert has nothing to restart.
        machine.handle_role(T0 + 10, false);
        machine.handle_ended(T0 + 11);
        actions(&mut machine);
        machine.handle_reassert(T0 + 12);
        assert_eq!(actions(&mut machine), []);
    }

    #[test]
    fn a_stop_ends_the_term_then_exits_and_nothing_starts_after() {
        let mut machine = TermLifecycle::new(T0, true, 0, 0);
        machine.handle_role(T0, true);
        started(&mut machine, T0);
        machine.handle_stop(T0 + 1, false);
        assert_eq!(actions(&mut machine), [TermAction::End(EndReason::Stopping)]);
        machine.handle_role(T0 + 2, true);
        machine.handle_ended(T0 + 3);
        assert_eq!(actions(&mut machine), [TermAction::Exit(Exit::Stopped)]);
    }

    #[test]
    fn a_reload_on_a_standby_exits_at_once() {
        let mut machine = TermLifecycle::new(T0, true, 0, 0);
        machine.handle_stop(T0, true);
        assert_eq!(actions(&mut machine), [TermAction::Exit(Exit::Reload)]);
    }

    #[test]
    fn a_stop_during_a_start_ends_the_term_once_it_has_started() {
        let mut machine = TermLifecycle::new(T0, false, 0, 0);
        machine.poll_action();
        machine.handle_stop(T0, false);
        assert_eq!(actions(&mut machine), []);
        machine.handle_started(T0 + 1);
        assert_eq!(actions(&mut machine), [TermAction::End(EndReason::Stopping)]);
        machine.handle_ended(T0 + 2);
        assert_eq!(actions(&mut machine), [TermAction::Exit(Exit::Stopped)]);
    }
}
