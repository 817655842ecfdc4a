//! The fiber simulator's core: what happens to each datagram on a simulated optical link.
//!
//! Pure and seeded: datagrams and times go in, datagrams come out at the times the link would deliver
//! them, so a test can check loss rates and burst lengths exactly and a run is reproducible. The
//! forwarding process around it is [`crate::forwarder`]; the binary is `fiber-sim`.
//!
//! Order of effects for each datagram: cut, uniform loss, Gilbert-Elliott burst loss, corruption,
//! duplication, reordering, the rate-capped queue (tail drop), fixed delay.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;

/// The Gilbert-Elliott two-state loss model: bursts of loss as real links have them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Probability, per datagram, of moving from the good to the bad state.
    pub p: f64,
    /// Probability, per datagram, of moving from the bad back to the good state (mean burst 1/r).
    pub r: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
    /// Loss probability in the good state.
    pub loss_good: f64,
}

/// A time window during which the fiber is cut, from the simulator's start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CutWindow {
    pub start: Duration,
    pub length: Duration,
}

/// What the simulated link does. Probabilities are between 0 and 1.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub loss: f64,
    pub burst: Option<GilbertElliott>,
    /// Probability that a datagram is held back and overtaken by up to `reorder_window` later ones.
    pub reorder: f64,
    pub reorder_window: u32,
    pub duplicate: f64,
    /// Probability that one random bit of a datagram is flipped.
    pub corrupt: f64,
    /// Link rate in bits per second (`None`: unlimited).
    pub rate_bps: Option<u64>,
    /// Bytes the link queue holds before it drops arrivals (tail drop), with a rate cap.
    pub queue_bytes: usize,
    pub delay: Duration,
    pub cuts: Vec<CutWindow>,
    pub seed: u64,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            loss: 0.0,
            burst: None,
            reorder: 0.0,
            reorder_window: 8,
            duplicate: 0.0,
            corrupt: 0.0,
            rate_bps: None,
            queue_bytes: 1 << 20,
            delay: Duration::ZERO,
            cuts: Vec::new(),
            seed: 1,
        }
    }
}

/// Why a simulator configuration is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimConfigError {
    #[error("{field} = {value} is not a probability between 0 and 1")]
    Probability { field: &'static str, value: f64 },
    #[error("reorder_window must be at least 1 when reorder is set")]
    ReorderWindow,
    #[error("rate must be above 0")]
    Rate,
}

impl SimConfig {
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let mut probabilities = vec![
            ("loss", self.loss),
            ("reorder", self.reorder),
            ("duplicate", self.duplicate),
            ("corrupt", self.corrupt),
        ];
        if let Some(ge) = self.burst {
            probabilities.extend([
                ("ge-p", ge.p),
                ("ge-r", ge.r),
                ("ge-loss-bad", ge.loss_bad),
                ("ge-loss-good", ge.loss_good),
            ]);
        }
        for (field, value) in probabilities {
            if !(0.0..=1.0).contains(&value) {
                return Err(SimConfigError::Probability { field, value });
            }
        }
        if self.reorder > 0.0 && self.reorder_window == 0 {
            return Err(SimConfigError::ReorderWindow);
        }
        if self.rate_bps == Some(0) {
            return Err(SimConfigError::Rate);
        }
        Ok(())
    }
}

/// Counts of what the link did. Every datagram received is forwarded or dropped for one reason;
/// duplicates are forwarded in addition.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SimStats {
    pub received: u64,
    pub forwarded: u64,
    pub dropped_loss: u64,
    pub dropped_burst: u64,
    pub dropped_cut: u64,
    pub dropped_queue: u64,
    pub corrupted: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

impl SimStats {
    pub fn dropped(&self) -> u64 {
        self.dropped_loss + self.dropped_burst + self.dropped_cut + self.dropped_queue
    }
}

/// SplitMix64: small, fast and the same on every platform and version, so a seed means one run.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.next_f64() < probability
    }
}

struct Held {
    overtakers_left: u32,
    since: Instant,
    datagram: Vec<u8>,
}

/// Longest a reordered datagram is held when no later datagram comes to overtake it.
const MAX_HOLD: Duration = Duration::from_millis(20);

/// A simulated one-way link.
pub struct LinkSim {
    config: SimConfig,
    rng: SplitMix64,
    start: Instant,
    bad_state: bool,
    manual_cut: bool,
    held: Vec<Held>,
    /// Datagrams on the link: (departure from the rate-capped queue, length).
    in_queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    link_free_at: Instant,
    /// Datagrams waiting for their delivery time, in delivery order.
    out: VecDeque<(Instant, Vec<u8>)>,
    stats: SimStats,
}

impl LinkSim {
    /// `config` must have passed [`SimConfig::validate`].
    pub fn new(config: SimConfig, start: Instant) -> LinkSim {
        LinkSim {
            rng: SplitMix64::new(config.seed),
            config,
            start,
            bad_state: false,
            manual_cut: false,
            held: Vec::new(),
            in_queue: VecDeque::new(),
            queued_bytes: 0,
            link_free_at: start,
            out: VecDeque::new(),
            stats: SimStats::default(),
        }
    }

    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Cuts or restores the fiber now (the operator pulling and replugging it).
    pub fn set_cut(&mut self, cut: bool) {
        self.manual_cut = cut;
    }

    pub fn is_cut(&self, now: Instant) -> bool {
        let since_start = now.saturating_duration_since(self.start);
        self.manual_cut || self.config.cuts.iter().any(|w| since_start >= w.start && since_start < w.start + w.length)
    }

    /// A datagram enters the link at `now`.
    pub fn push(&mut self, now: Instant, mut datagram: Vec<u8>) {
        self.stats.received += 1;
        if self.is_cut(now) {
            self.stats.dropped_cut += 1;
            return;
        }
        if self.rng.chance(self.config.loss) {
            self.stats.dropped_loss += 1;
            return;
        }
        if let Some(ge) = self.config.burst {
            let switch = if self.bad_state { ge.r } else { ge.p };
            if self.rng.chance(switch) {
                self.bad_state = !self.bad_state;
            }
            let loss = if self.bad_state { ge.loss_bad } else { ge.loss_good };
            if self.rng.chance(loss) {
                self.stats.dropped_burst += 1;
                return;
            }
        }
        if !datagram.is_empty() && self.rng.chance(self.config.corrupt) {
            let bit = self.rng.next_u64() % (datagram.len() as u64 * 8);
            datagram[(bit / 8) as usize] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }
        let copy = self.rng.chance(self.config.duplicate).then(|| datagram.clone());
        // Held datagrams are overtaken by this one; those that have been overtaken enough follow it.
        let hold = self.rng.chance(self.config.reorder);
        let overtakers = 1 + (self.rng.next_u64() % u64::from(self.config.reorder_window.max(1))) as u32;
        if hold {
            self.stats.reordered += 1;
            self.held.push(Held { overtakers_left: overtakers, since: now, datagram });
        } else {
            self.enqueue(now, datagram);
        }
        self.release_held(now, true);
        if let Some(copy) = copy {
            self.stats.duplicated += 1;
            self.enqueue(now, copy);
        }
    }

    fn release_held(&mut self, now: Instant, overtaken: bool) {
        let mut index = 0;
        while index < self.held.len() {
            let held = &mut self.held[index];
            if overtaken && held.since < now {
                held.overtakers_left = held.overtakers_left.saturating_sub(1);
            }
            if held.overtakers_left == 0 || now.saturating_duration_since(held.since) >= MAX_HOLD {
                let held = self.held.remove(index);
                self.enqueue(now, held.datagram);
            } else {
                index += 1;
            }
        }
    }

    /// Puts a datagram on the rate-capped link, or drops it when the queue is full.
    fn enqueue(&mut self, now: Instant, datagram: Vec<u8>) {
        while let Some((departure, len)) = self.in_queue.front() {
            if *departure > now {
                break;
            }
            self.queued_bytes -= len;
            self.in_queue.pop_front();
        }
        let departure = match self.config.rate_bps {
            Some(rate) => {
                if self.queued_bytes + datagram.len() > self.config.queue_bytes {
                    self.stats.dropped_queue += 1;
                    return;
                }
                let bits = (datagram.len() as u128 + 28) * 8;
                let serialisation = Duration::from_nanos((bits * 1_000_000_000 / u128::from(rate)) as u64);
                let departure = self.link_free_at.max(now) + serialisation;
                self.link_free_at = departure;
                self.queued_bytes += datagram.len();
                self.in_queue.push_back((departure, datagram.len()));
                departure
            }
            None => now,
        };
        self.out.push_back((departure + self.config.delay, datagram));
    }

    /// The next datagram due by `now`, if any.
    pub fn pop_ready(&mut self, now: Instant) -> Option<Vec<u8>> {
        self.release_held(now, false);
        if self.out.front().is_some_and(|(due, _)| *due <= now) {
            self.stats.forwarded += 1;
            return self.out.pop_front().map(|(_, datagram)| datagram);
        }
        None
    }

    /// When the next datagram is due (held ones included), for the caller's timer.
    pub fn next_due(&self) -> Option<Instant> {
        let held = self.held.iter().map(|h| h.since + MAX_HOLD).min();
        let out = self.out.front().map(|(due, _)| *due);
        held.into_iter().chain(out).min()
    }

    /// Datagrams still inside the link.
    pub fn in_flight(&self) -> usize {
        self.out.len() + self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: SimConfig, count: usize) -> (Vec<Vec<u8>>, SimStats) {
        let start = Instant::now();
        let mut sim = LinkSim::new(config, start);
        let mut out = Vec::new();
        let mut now = start;
        for i in 0..count as u32 {
            now += Duration::from_micros(10);
            sim.push(now, i.to_be_bytes().to_vec());
            while let Some(d) = sim.pop_ready(now) {
                out.push(d);
            }
        }
        now += Duration::from_secs(5);
        while let Some(d) = sim.pop_ready(now) {
            out.push(d);
        }
        (out, sim.stats().clone())
    }

    #[test]
    fn uniform_loss_rate_is_within_statistical_bounds() {
        let (out, stats) = run(SimConfig { loss: 0.05, seed: 7, ..SimConfig::default() }, 100_000);
        // 100 000 trials at 5 %: standard deviation 69; allow 5 sigma.
        assert!((stats.dropped_loss as i64 - 5_000).abs() < 345, "{stats:?}");
        assert_eq!(out.len() as u64, stats.forwarded);
        assert_eq!(stats.received, stats.forwarded + stats.dropped());
    }

    #[test]
    fn same_seed_same_run_other_seed_other_run() {
        let config = SimConfig { loss: 0.1, reorder: 0.05, duplicate: 0.02, seed: 3, ..SimConfig::default() };
        assert_eq!(run(config.clone(), 5_000), run(config.clone(), 5_000));
        assert_ne!(run(config.clone(), 5_000).0, run(SimConfig { seed: 4, ..config }, 5_000).0);
    }

    #[test]
    fn gilbert_elliott_produces_bursts_of_the_configured_mean_length() {
        let ge = GilbertElliott { p: 0.01, r: 0.25, loss_bad: 1.0, loss_good: 0.0 };
        let (out, stats) = run(SimConfig { burst: Some(ge), seed: 11, ..SimConfig::default() }, 200_000);
        let sequence: Vec<u32> = out.iter().map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]])).collect();
        let bursts: Vec<u32> = sequence.windows(2).map(|w| w[1] - w[0] - 1).filter(|gap| *gap > 0).collect();
        let mean = bursts.iter().map(|b| f64::from(*b)).sum::<f64>() / bursts.len() as f64;
        // Mean burst 1/r = 4; stationary loss p/(p+r) = 3.85 %.
        assert!((mean - 4.0).abs() < 0.4, "mean burst {mean}");
        let rate = stats.dropped_burst as f64 / stats.received as f64;
        assert!((rate - 0.0385).abs() < 0.006, "loss rate {rate}");
    }

    #[test]
    fn reordering_delivers_everything_but_not_in_order() {
        let (out, stats) = run(SimConfig { reorder: 0.1, reorder_window: 4, seed: 5, ..SimConfig::default() }, 10_000);
        assert_eq!(out.len(), 10_000);
        let sequence: Vec<u32> = out.iter().map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]])).collect();
        let inversions = sequence.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions > 500, "{inversions} inversions");
        let mut sorted = sequence.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10_000).collect::<Vec<_>>());
        assert!(stats.reordered > 800);
        // No datagram is overtaken by more than the window.
        for (position, value) in sequence.iter().enumerate() {
            assert!(position as i64 - i64::from(*value) <= 4, "{value} at {position}");
        }
    }

    #[test]
    fn duplication_and_corruption_are_counted_and_applied() {
        let (out, stats) = run(SimConfig { duplicate: 0.1, corrupt: 0.1, seed: 9, ..SimConfig::default() }, 10_000);
        assert_eq!(out.len() as u64, 10_000 + stats.duplicated);
        assert!(stats.duplicated > 800 && stats.corrupted > 800);
        let damaged = out.iter().filter(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) >= 10_000).count();
        assert!(damaged > 0, "some flipped bits land in the high bytes");
    }

    #[test]
    fn scheduled_cut_drops_everything_inside_the_window_only() {
        // Datagram i enters at (i + 1) × 10 µs: the window 20..40 ms holds datagrams 1 999 to 3 998.
        let cut = CutWindow { start: Duration::from_millis(20), length: Duration::from_millis(20) };
        let (out, stats) = run(SimConfig { cuts: vec![cut], ..SimConfig::default() }, 10_000);
        assert_eq!(stats.dropped_cut, 2_000);
        let sequence: Vec<u32> = out.iter().map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]])).collect();
        assert!(sequence.iter().all(|s| !(1_999..=3_998).contains(s)));
        assert!(sequence.contains(&1_998));
        assert!(sequence.contains(&5_000), "restored after the window");
    }

    #[test]
    fn manual_cut_and_restore() {
        let start = Instant::now();
        let mut sim = LinkSim::new(SimConfig::default(), start);
        sim.set_cut(true);
        sim.push(start, vec![1]);
        assert_eq!(sim.pop_ready(start), None);
        sim.set_cut(false);
        sim.push(start, vec![2]);
        assert_eq!(sim.pop_ready(start), Some(vec![2]));
        assert_eq!(sim.stats().dropped_cut, 1);
    }

    #[test]
    fn rate_cap_paces_and_tail_drops_when_the_queue_is_full() {
        let start = Instant::now();
        // 10 Mbit/s with a 15 000-byte queue, offered 1 000 datagrams of 1 000 bytes at once.
        let config = SimConfig { rate_bps: Some(10_000_000), queue_bytes: 15_000, ..SimConfig::default() };
        let mut sim = LinkSim::new(config, start);
        for _ in 0..1_000 {
            sim.push(start, vec![0; 1_000]);
        }
        assert_eq!(sim.stats().dropped_queue, 985);
        // 15 datagrams of 1 028 wire bytes take 12.3 ms at 10 Mbit/s.
        let mut last = start;
        while let Some(due) = sim.next_due() {
            while sim.pop_ready(due).is_some() {
                last = due;
            }
        }
        let elapsed = last - start;
        assert!(elapsed >= Duration::from_micros(12_300) && elapsed < Duration::from_micros(12_400), "{elapsed:?}");
    }

    #[test]
    fn fixed_delay_holds_every_datagram() {
        let start = Instant::now();
        let mut sim = LinkSim::new(SimConfig { delay: Duration::from_millis(5), ..SimConfig::default() }, start);
        sim.push(start, vec![1]);
        assert_eq!(sim.pop_ready(start + Duration::from_millis(4)), None);
        assert_eq!(sim.pop_ready(start + Duration::from_millis(5)), Some(vec![1]));
    }

    #[test]
    fn invalid_probabilities_name_the_field() {
        let config = SimConfig { duplicate: 1.5, ..SimConfig::default() };
        assert_eq!(config.validate(), Err(SimConfigError::Probability { field: "duplicate", value: 1.5 }));
    }
}
