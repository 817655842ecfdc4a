//! Pacing on wire bits: a token bucket that counts everything a datagram costs on the link.
//!
//! A fiber has no flow control, so the sender must never exceed the rate the receiver (and the link)
//! can take. The pacer counts the bits a datagram occupies on the wire: our datagram (header and
//! payload, repair symbols included), the IPv4 and UDP headers, and optionally the Ethernet framing
//! (header, FCS, preamble, inter-frame gap). It is pure arithmetic on times passed in, so its accuracy
//! is tested with a fake clock; [`sleep_until`] turns its answers into waits.

use std::time::{Duration, Instant};

/// IPv4 and UDP headers.
pub const IP_UDP_OVERHEAD: u64 = 28;
/// Ethernet header (14), FCS (4), preamble and start delimiter (8), inter-frame gap (12).
pub const ETHERNET_OVERHEAD: u64 = 38;

/// The burst a sender on a fiber is allowed ([`Pacer::new`]): what the receiver's socket buffer and
/// any switch between must absorb at line rate (75 KB at 1 Gbit/s, 750 KB at 10).
pub const SENDER_BURST: Duration = Duration::from_micros(600);
/// Longest a paced sender waits to send a batch rather than single datagrams
/// ([`Pacer::ready_for_batch`]). 200 us inside [`SENDER_BURST`], so a thread that wakes late (see
/// [`sleep_until`]) still finds every bit it was owed and the rate stays exact. Long enough that one
/// wake-up sends dozens of datagrams: each batch wakes the receiver too, and 300 us cost red-rx 12 %
/// more CPU at 1 Gbit/s than 400.
pub const SENDER_BATCH_WAIT: Duration = Duration::from_micros(400);

/// A token bucket in bits.
///
/// Invariant: `tokens <= burst_bits`; the rate is at least 1 bit/s.
#[derive(Clone, Debug)]
pub struct Pacer {
    rate_bps: u64,
    overhead_bytes: u64,
    burst_bits: u64,
    /// Available bits, in units of 1/1e9 bit so integer arithmetic keeps nanosecond precision.
    tokens_nano: u128,
    last: Instant,
}

impl Pacer {
    /// `rate_bps`: wire bits per second. `overhead_bytes`: per-datagram bytes below our header
    /// ([`IP_UDP_OVERHEAD`], plus [`ETHERNET_OVERHEAD`] to pace on Ethernet line rate). `burst`: how
    /// long the sender may go at full speed after an idle time (bounds the queue it creates downstream).
    pub fn new(rate_bps: u64, overhead_bytes: u64, burst: Duration, now: Instant) -> Pacer {
        let rate_bps = rate_bps.max(1);
        // At least two jumbo datagrams: a burst window shorter than one datagram would stall, and one
        // of exactly one would throw away what accrues while a sender waiting for it wakes late (at
        // 50 Mbit/s that cost 5 % of the rate).
        let burst_bits = ((u128::from(rate_bps) * burst.as_nanos() / 1_000_000_000) as u64).max(2 * 9_100 * 8);
        Pacer { rate_bps, overhead_bytes, burst_bits, tokens_nano: 0, last: now }
    }

    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// Bits a datagram of `len` bytes occupies on the wire.
    pub fn wire_bits(&self, len: usize) -> u64 {
        (len as u64 + self.overhead_bytes) * 8
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = self.last.max(now);
        let added = u128::from(self.rate_bps) * elapsed.as_nanos();
        self.tokens_nano = (self.tokens_nano + added).min(u128::from(self.burst_bits) * 1_000_000_000);
    }

    /// When a datagram of `len` bytes may leave: `now` if the bucket holds its bits, else the
    /// earliest time it will. Does not consume.
    pub fn ready_at(&mut self, now: Instant, len: usize) -> Instant {
        let bits = self.wire_bits(len);
        self.ready_for_bits(now, bits)
    }

    /// When the bucket will hold `bits` (at most its burst, or the wait never ends).
    fn ready_for_bits(&mut self, now: Instant, bits: u64) -> Instant {
        self.refill(now);
        let need = u128::from(bits) * 1_000_000_000;
        if self.tokens_nano >= need {
            return now;
        }
        let missing = need - self.tokens_nano;
        let wait_ns = missing.div_ceil(u128::from(self.rate_bps));
        now + Duration::from_nanos(wait_ns.min(u128::from(u64::MAX)) as u64)
    }

    /// When `count` datagrams of `len` bytes may leave together, for a sender that found the bucket
    /// empty: waiting for one datagram at a time would send one per system call (no batching, no
    /// GSO) and spin between them. `count` is cut to what `max_wait` of the rate earns and to what
    /// the bucket can hold, so the wait stays short and always ends; at low rates that is one.
    pub fn ready_for_batch(&mut self, now: Instant, len: usize, count: usize, max_wait: Duration) -> Instant {
        let per_datagram = self.wire_bits(len);
        let earned_in_wait = u128::from(self.rate_bps) * max_wait.as_nanos() / 1_000_000_000;
        let fits = earned_in_wait.min(u128::from(self.burst_bits)) / u128::from(per_datagram.max(1));
        let count = (count as u64).min(fits as u64).max(1);
        self.ready_for_bits(now, per_datagram * count)
    }

    /// Takes the bits of a datagram of `len` bytes if they are there; returns false otherwise.
    pub fn try_send(&mut self, now: Instant, len: usize) -> bool {
        self.refill(now);
        let need = u128::from(self.wire_bits(len)) * 1_000_000_000;
        if self.tokens_nano < need {
            return false;
        }
        self.tokens_nano -= need;
        true
    }
}

/// Waits until `deadline`, never returning early. It only sleeps: a thread that called
/// [`crate::tighten_timer_slack`] wakes some tens of microseconds late, and that lateness costs no
/// rate, because the [`Pacer`] keeps the bits that accrued meanwhile (up to its burst) and the next
/// batch is that much larger. Spinning through the last 60 us instead, to wake on time, burned 15 %
/// of blue-tx's CPU at every paced rate (1 Gbit/s asked: half of the transmit thread's time went to
/// `sched_yield` and the clock).
pub fn sleep_until(deadline: Instant) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `len`-byte datagrams as fast as the pacer allows for `seconds` of fake time and returns
    /// the wire bits in each whole second.
    fn paced_bits_per_second(rate_bps: u64, len: usize, seconds: u64) -> Vec<u64> {
        let start = Instant::now();
        let mut pacer = Pacer::new(rate_bps, IP_UDP_OVERHEAD, Duration::from_millis(1), start);
        let mut now = start;
        let mut windows = vec![0u64; seconds as usize];
        loop {
            now = pacer.ready_at(now, len);
            let second = (now - start).as_secs();
            if second >= seconds {
                return windows;
            }
            assert!(pacer.try_send(now, len));
            windows[second as usize] += pacer.wire_bits(len);
        }
    }

    #[test]
    fn paced_rate_is_within_2_percent_over_every_second_from_50_mbps_to_10_gbps() {
        for rate in [50_000_000u64, 1_000_000_000, 10_000_000_000] {
            for len in [1_472usize, 8_972] {
                for (second, bits) in paced_bits_per_second(rate, len, 3).into_iter().enumerate() {
                    let error = (bits as f64 - rate as f64).abs() / rate as f64;
                    assert!(error < 0.02, "rate {rate} len {len} second {second}: {bits} bits ({error:.4})");
                }
            }
        }
    }

    /// The transmitter's loop in fake time: wait for a batch, wake `late` after the asked time, send
    /// what the bucket allows up to a batch of 64. Returns the wire bits per second.
    fn late_waker_bits_per_second(rate_bps: u64, len: usize, late: Duration, seconds: u64) -> Vec<u64> {
        let start = Instant::now();
        let mut pacer = Pacer::new(rate_bps, IP_UDP_OVERHEAD, SENDER_BURST, start);
        let mut now = start;
        let mut windows = vec![0u64; seconds as usize];
        loop {
            let ready = pacer.ready_for_batch(now, len, 64, SENDER_BATCH_WAIT);
            // Only a wait can end late; a bucket that already holds a batch is sent from at once.
            now = if ready > now { ready + late } else { now };
            let second = (now - start).as_secs();
            if second >= seconds {
                return windows;
            }
            let mut sent = 0;
            while sent < 64 && pacer.try_send(now, len) {
                sent += 1;
                windows[second as usize] += pacer.wire_bits(len);
            }
            assert!(sent > 0, "woken with nothing to send");
        }
    }

    #[test]
    fn waking_up_to_200_us_late_costs_no_rate() {
        for rate in [50_000_000u64, 1_000_000_000, 10_000_000_000] {
            for len in [1_472usize, 8_972] {
                for late in [0, 30, 90, 190].map(Duration::from_micros) {
                    for (second, bits) in late_waker_bits_per_second(rate, len, late, 3).into_iter().enumerate() {
                        let error = (bits as f64 - rate as f64).abs() / rate as f64;
                        assert!(error < 0.02, "rate {rate} len {len} late {late:?} second {second}: {error:.4}");
                    }
                }
            }
        }
    }

    #[test]
    fn idle_time_earns_at_most_the_burst() {
        let start = Instant::now();
        let mut pacer = Pacer::new(1_000_000_000, IP_UDP_OVERHEAD, Duration::from_millis(1), start);
        // One millisecond at 1 Gbit/s is 1 Mbit: 83 datagrams of 1500 wire bytes, whatever the idle time.
        let later = start + Duration::from_secs(10);
        let mut sent = 0;
        while pacer.try_send(later, 1_472) {
            sent += 1;
        }
        assert_eq!(sent, 1_000_000 / (1_500 * 8));
    }

    #[test]
    fn a_batch_waits_for_the_whole_batch_within_the_wait_allowed() {
        let start = Instant::now();
        let len = 1_444;
        // 5 Gbit/s: 200 us earn 1 Mbit, 86 datagrams; a batch of 64 is ready 64 datagrams' time later.
        let mut fast = Pacer::new(5_000_000_000, IP_UDP_OVERHEAD, Duration::from_micros(500), start);
        let ready = fast.ready_for_batch(start, len, 64, Duration::from_micros(200));
        let bits = 64 * fast.wire_bits(len);
        assert_eq!(ready - start, Duration::from_nanos((bits * 1_000_000_000).div_ceil(5_000_000_000)));
        for _ in 0..64 {
            assert!(fast.try_send(ready, len));
        }
        assert!(!fast.try_send(ready, len));
        // 50 Mbit/s: 200 us earn 10 kbit, less than one datagram: the wait is for one.
        let mut slow = Pacer::new(50_000_000, IP_UDP_OVERHEAD, Duration::from_micros(500), start);
        let ready = slow.ready_for_batch(start, len, 64, Duration::from_micros(200));
        assert_eq!(ready, slow.ready_at(start, len));
        assert!(slow.try_send(ready, len));
    }

    #[test]
    fn wire_bits_count_headers_below_ours() {
        let pacer = Pacer::new(1, IP_UDP_OVERHEAD + ETHERNET_OVERHEAD, Duration::ZERO, Instant::now());
        assert_eq!(pacer.wire_bits(1_472), (1_472 + 28 + 38) * 8);
    }

    #[test]
    fn sleep_until_never_returns_early() {
        // Not a timing assertion on the machine's load: only that it never returns early.
        let deadline = Instant::now() + Duration::from_micros(300);
        sleep_until(deadline);
        assert!(Instant::now() >= deadline);
    }
}
