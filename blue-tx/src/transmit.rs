//! Encoding and transmission: RaptorQ on a pool of threads, then the interleaver, the pacer and the
//! fibers on one thread that owns the wire.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use diode_proto::beacon::SenderState;
use diode_proto::block::SealedBlock;
use diode_proto::fec::{BlockEncoder, EncodedBlock, FecParams};
use diode_proto::header::{write_header, HEADER_LEN_TAGGED};
use diode_proto::interleave::Interleaver;
use diode_proto::sender::Framer;
use diode_proto::FiberMode;
use hw::fiber::FiberTx;
use hw::pacer::{sleep_until, Pacer, IP_UDP_OVERHEAD, SENDER_BATCH_WAIT, SENDER_BURST};
use hw::Gather;
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::manifest::ManifestBook;

/// Starts `threads` encoders that take sealed blocks from `input` and hand encoded ones to `output`.
pub fn spawn_encoders(
    threads: usize,
    fec: FecParams,
    input: mpsc::Receiver<SealedBlock>,
    output: SyncSender<EncodedBlock>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let input = Arc::new(Mutex::new(input));
    (0..threads.max(1))
        .map(|index| {
            let input = Arc::clone(&input);
            let output = output.clone();
            std::thread::Builder::new().name(format!("encode-{index}")).spawn(move || {
                let mut encoder = BlockEncoder::new(fec);
                loop {
                    // One thread waits on the queue at a time; the others wait for the lock.
                    let block = match input.lock() {
                        Ok(mut queue) => queue.blocking_recv(),
                        Err(_) => None,
                    };
                    let Some(block) = block else { return };
                    let encoded = encoder.encode(block.channel, block.seq, block.content);
                    if output.send(encoded).is_err() {
                        return;
                    }
                }
            })
        })
        .collect()
}

/// Counters of the transmitter.
#[derive(Debug, Default)]
pub struct TxStats {
    pub datagrams: AtomicU64,
    pub wire_bytes: AtomicU64,
    pub blocks: AtomicU64,
    pub beacons: AtomicU64,
    /// Manifest datagrams sent (files named after their last block went out).
    pub manifests: AtomicU64,
    /// Files never named in a manifest because too many waited (see `manifest::CAPACITY`).
    pub manifest_overflowed: AtomicU64,
    pub send_errors: AtomicU64,
}

pub struct Transmitter {
    /// The session's framing (symbol headers, beacons, manifests): the same object the protocol
    /// tests drive through `diode_proto::Sender`.
    pub framer: Framer,
    pub rate_bps: u64,
    pub beacon_interval: Duration,
    pub fibers: Vec<FiberTx>,
    pub encoded: Receiver<EncodedBlock>,
    pub stats: Arc<TxStats>,
    /// Set when the daemon is stopping, so the last beacons say so.
    pub stopping: Arc<AtomicBool>,
    /// Files sent, named in manifests after each beacon.
    pub manifest: Arc<ManifestBook>,
}

/// Datagrams sent with one batch call per fiber.
const BATCH: usize = 64;

/// Datagrams waiting for the next batch call. Each is a header built here and a symbol left in its
/// block, which the kernel gathers ([`hw::Gather`]): copying every symbol next to its header was 5 %
/// of blue-tx at MTU 1500. Holding the block keeps the symbol alive until the batch is sent.
struct Outgoing {
    headers: Vec<Vec<u8>>,
    symbols: Vec<Option<(Arc<EncodedBlock>, u32)>>,
    len: usize,
    /// In stripe mode, which fiber each buffered datagram goes to.
    fiber_of: Vec<usize>,
}

impl Transmitter {
    /// Runs until the encoders are gone and everything they produced is on the wire.
    pub fn run(mut self) {
        if !hw::tighten_timer_slack() {
            warn!("the kernel refused a tight timer slack: pacing spins more between batches");
        }
        let auth = self.framer.config().auth.clone();
        let (fec, mode) = (self.framer.config().fec, self.framer.config().fiber_mode);
        let start = Instant::now();
        let mut pacer = Pacer::new(self.rate_bps, IP_UDP_OVERHEAD, SENDER_BURST, start);
        let mut interleaver: Interleaver<Arc<EncodedBlock>> = Interleaver::new(fec.interleave_depth);
        let mut out = Outgoing {
            headers: (0..BATCH).map(|_| Vec::with_capacity(HEADER_LEN_TAGGED)).collect(),
            symbols: vec![None; BATCH],
            len: 0,
            fiber_of: vec![0; BATCH],
        };
        let mut next_beacon = start;
        let mut next_fiber = 0usize;
        let mut closed = false;
        loop {
            let mut queue_empty = false;
            while interleaver.has_room() {
                match self.encoded.try_recv() {
                    Ok(block) => {
                        if let Err(block) = interleaver.push(Arc::new(block)) {
                            warn!(channel = block.channel, seq = block.seq, "interleaver refused a block");
                        }
                    }
                    Err(TryRecvError::Empty) => {
                        queue_empty = true;
                        break;
                    }
                    Err(TryRecvError::Disconnected) => {
                        closed = true;
                        queue_empty = true;
                        break;
                    }
                }
            }
            let now = Instant::now();
            if now >= next_beacon {
                self.flush(&mut out);
                let state =
                    if self.stopping.load(Ordering::SeqCst) { SenderState::Draining } else { SenderState::Active };
                self.beacon(&mut pacer, state);
                next_beacon = now + self.beacon_interval;
            }
            // Drain the lanes only when no encoded block is waiting: a full interleaver spreads bursts.
            let Some((block, esi)) = interleaver.next(queue_empty) else {
                self.flush(&mut out);
                if closed && interleaver.is_empty() {
                    break;
                }
                let wait = next_beacon.saturating_duration_since(Instant::now()).min(Duration::from_millis(5));
                match self.encoded.recv_timeout(wait) {
                    Ok(block) => {
                        let _ = interleaver.push(Arc::new(block));
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => closed = true,
                }
                continue;
            };
            let repr = self.framer.symbol_repr(block, esi);
            let Some(payload) = block.symbol(esi) else { continue };
            let len = repr.buffer_len();
            // The loop's clock reading is a few hundred nanoseconds old here; reading the clock again
            // for every datagram cost 3 % of blue-tx at MTU 1500.
            if !pacer.try_send(now, len) {
                self.flush(&mut out);
                sleep_until(pacer.ready_for_batch(Instant::now(), len, BATCH, SENDER_BATCH_WAIT));
                while !pacer.try_send(Instant::now(), len) {
                    std::thread::yield_now();
                }
            }
            write_header(&repr, payload, &auth, &mut out.headers[out.len]);
            out.symbols[out.len] = Some((Arc::clone(block), esi));
            out.fiber_of[out.len] = next_fiber;
            if mode == FiberMode::Stripe {
                next_fiber = (next_fiber + 1) % self.fibers.len();
            }
            out.len += 1;
            if out.len == BATCH {
                self.flush(&mut out);
            }
            if self.framer.symbol_sent(block, esi) {
                self.stats.blocks.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.flush(&mut out);
        // Repeated so a receiver that loses one still learns the final block counts.
        for _ in 0..3 {
            self.beacon(&mut pacer, SenderState::Stopping);
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn flush(&mut self, out: &mut Outgoing) {
        if out.len == 0 {
            return;
        }
        let mut wire = 0u64;
        // Every queued symbol exists: the loop queues a datagram only after `block.symbol(esi)` gave it.
        let all: Vec<[&[u8]; 2]> = out.headers[..out.len]
            .iter()
            .zip(&out.symbols)
            .map(|(header, symbol)| {
                let payload = symbol.as_ref().and_then(|(block, esi)| block.symbol(*esi)).unwrap_or_default();
                [header.as_slice(), payload]
            })
            .collect();
        for (index, fiber) in self.fibers.iter_mut().enumerate() {
            let striped: Vec<[&[u8]; 2]>;
            let datagrams = if self.framer.config().fiber_mode == FiberMode::Mirror {
                &all[..]
            } else {
                striped = all.iter().zip(&out.fiber_of).filter(|(_, f)| **f == index).map(|(d, _)| *d).collect();
                &striped[..]
            };
            wire += datagrams.iter().map(|d| d.byte_len() as u64 + IP_UDP_OVERHEAD).sum::<u64>();
            if let Err(error) = fiber.send_batch(datagrams) {
                let count = self.stats.send_errors.fetch_add(1, Ordering::Relaxed) + 1;
                if count.is_power_of_two() {
                    error!(fiber = index + 1, %error, count, "fiber send failed");
                }
            }
        }
        self.stats.datagrams.fetch_add(out.len as u64, Ordering::Relaxed);
        self.stats.wire_bytes.fetch_add(wire, Ordering::Relaxed);
        out.symbols[..out.len].fill(None);
        out.len = 0;
    }

    fn beacon(&mut self, pacer: &mut Pacer, state: SenderState) {
        let timestamp_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
        let mut datagram = Vec::new();
        self.framer.beacon(timestamp_us, state, &mut datagram);
        self.send_control(pacer, &datagram);
        self.stats.beacons.fetch_add(1, Ordering::Relaxed);
        let symbol_size = usize::from(self.framer.config().fec.symbol_size);
        for (channel, manifest) in self.manifest.due(self.framer.blocks_sent(), symbol_size) {
            datagram.clear();
            self.framer.manifest(channel, &manifest, &mut datagram);
            self.send_control(pacer, &datagram);
            self.stats.manifests.fetch_add(1, Ordering::Relaxed);
        }
        let overflowed = self.manifest.overflowed.swap(0, Ordering::Relaxed);
        self.stats.manifest_overflowed.fetch_add(overflowed, Ordering::Relaxed);
    }

    /// Control datagrams are paced like everything else, but never wait: they are small and must be
    /// regular.
    fn send_control(&mut self, pacer: &mut Pacer, datagram: &[u8]) {
        let _ = pacer.try_send(Instant::now(), datagram.len());
        for fiber in &mut self.fibers {
            if fiber.send_batch(&[datagram]).is_err() {
                self.stats.send_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
