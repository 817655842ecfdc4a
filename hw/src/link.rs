//! Link state: what a fiber looks like from the receiving end, as the daemons turn it into metrics.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::fiber::RxCounters;

/// Whether a network interface reports its link up (`/sys/class/net/NAME/operstate`). An interface
/// that does not exist is down.
pub fn interface_up(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/operstate"))
        .map(|state| matches!(state.trim(), "up" | "unknown"))
        .unwrap_or(false)
}

/// A fiber's state at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkState {
    /// A datagram arrived within the down-after time.
    pub up: bool,
    pub last_datagram: Option<Instant>,
    pub datagrams_per_s: f64,
    pub bytes_per_s: f64,
    pub datagrams: u64,
    pub bytes: u64,
    /// Datagrams whose check failed (CRC32 or tag), as the protocol receiver counted them.
    pub check_failures: u64,
    /// Datagrams the kernel dropped before our code saw them.
    pub kernel_drops: u64,
}

/// Turns a receiver's counters, sampled over time, into rates and an up/down state.
///
/// Invariant: samples are kept only for the rate window, so memory is bounded by the sampling rate.
#[derive(Clone, Debug)]
pub struct LinkMonitor {
    window: Duration,
    down_after: Duration,
    samples: VecDeque<(Instant, u64, u64)>,
    last: RxCounters,
    check_failures: u64,
}

impl LinkMonitor {
    /// `window`: the span rates are measured over. `down_after`: silence that makes the link down
    /// (a few beacon intervals: a live sender always sends beacons).
    pub fn new(window: Duration, down_after: Duration) -> LinkMonitor {
        LinkMonitor { window, down_after, samples: VecDeque::new(), last: RxCounters::default(), check_failures: 0 }
    }

    /// Records the receiver's counters at `now`, with the protocol's count of failed checks.
    pub fn observe(&mut self, now: Instant, counters: &RxCounters, check_failures: u64) {
        self.samples.push_back((now, counters.datagrams, counters.bytes));
        while self.samples.len() > 2
            && self.samples.front().is_some_and(|(t, _, _)| now.saturating_duration_since(*t) > self.window)
        {
            self.samples.pop_front();
        }
        self.last = counters.clone();
        self.check_failures = check_failures;
    }

    pub fn state(&self, now: Instant) -> LinkState {
        let (datagrams_per_s, bytes_per_s) = match (self.samples.front(), self.samples.back()) {
            (Some((t0, d0, b0)), Some((t1, d1, b1))) if t1 > t0 => {
                let seconds = (*t1 - *t0).as_secs_f64();
                ((d1 - d0) as f64 / seconds, (b1 - b0) as f64 / seconds)
            }
            _ => (0.0, 0.0),
        };
        LinkState {
            up: self.last.last_datagram.is_some_and(|t| now.saturating_duration_since(t) <= self.down_after),
            last_datagram: self.last.last_datagram,
            datagrams_per_s,
            bytes_per_s,
            datagrams: self.last.datagrams,
            bytes: self.last.bytes,
            check_failures: self.check_failures,
            kernel_drops: self.last.kernel_drops,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_come_from_the_window_and_silence_means_down() {
        let start = Instant::now();
        let mut monitor = LinkMonitor::new(Duration::from_secs(1), Duration::from_millis(300));
        let mut counters = RxCounters::default();
        for tenth in 0..=20u64 {
            let now = start + Duration::from_millis(100 * tenth);
            counters.datagrams = 1_000 * tenth;
            counters.bytes = 1_500_000 * tenth;
            counters.last_datagram = Some(now);
            monitor.observe(now, &counters, 3);
        }
        let now = start + Duration::from_secs(2);
        let state = monitor.state(now);
        assert!(state.up);
        assert!((state.datagrams_per_s - 10_000.0).abs() < 1.0, "{state:?}");
        assert!((state.bytes_per_s - 15_000_000.0).abs() < 1_000.0);
        assert_eq!(state.check_failures, 3);
        assert!(!monitor.state(now + Duration::from_millis(301)).up);
    }
}
