//! The files a term has sent, waiting to be named in manifests (see `diode_proto::manifest`).
//!
//! The files and vault pipelines add an entry when a file's end record is in a block; the
//! transmitter, at each beacon, names the entries whose end block has gone out, each for
//! [`REPEATS`] beacons, so that a RED that lost every block of a small file can still say which file
//! it missed. Bounded: past [`CAPACITY`] waiting entries the oldest are dropped and counted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use diode_proto::{Manifest, ManifestEntry};

/// Beacons that name each file: two seconds at the default interval, past RED's block timeout, so
/// a RED has given up the file's last block before the last repeat reaches it.
pub const REPEATS: u32 = 20;
/// Entries waiting at most (files sent in the last [`REPEATS`] beacons).
pub const CAPACITY: usize = 4096;
/// Manifest datagrams per beacon at most, so a flood of small files cannot crowd out the symbols.
pub const DATAGRAMS_PER_BEACON: usize = 8;

struct Waiting {
    channel: u16,
    entry: ManifestEntry,
    repeats_left: u32,
}

#[derive(Default)]
pub struct ManifestBook {
    waiting: Mutex<VecDeque<Waiting>>,
    /// Entries dropped unnamed because the book was full.
    pub overflowed: AtomicU64,
}

impl ManifestBook {
    pub fn add(&self, channel: u16, entry: ManifestEntry) {
        let Ok(mut waiting) = self.waiting.lock() else { return };
        if waiting.len() >= CAPACITY {
            waiting.pop_front();
            self.overflowed.fetch_add(1, Ordering::Relaxed);
        }
        waiting.push_back(Waiting { channel, entry, repeats_left: REPEATS });
    }

    /// The manifests of this beacon: entries whose end block is among those sent, oldest first, each
    /// manifest within `max_body` bytes. Each named entry uses one of its repeats.
    pub fn due(&self, blocks_sent: &BTreeMap<u16, u64>, max_body: usize) -> Vec<(u16, Manifest)> {
        let Ok(mut waiting) = self.waiting.lock() else { return Vec::new() };
        let mut open: BTreeMap<u16, Manifest> = BTreeMap::new();
        let mut done: Vec<(u16, Manifest)> = Vec::new();
        for item in waiting.iter_mut() {
            let sent = blocks_sent.get(&item.channel).is_some_and(|sent| item.entry.end_seq < *sent);
            if !sent {
                continue;
            }
            let current_len = open.get(&item.channel).map(Manifest::encoded_len);
            let full = current_len.is_some_and(|len| len + item.entry.encoded_len() > max_body);
            let new_datagram = current_len.is_none() || full;
            if new_datagram && done.len() + open.len() >= DATAGRAMS_PER_BEACON {
                break;
            }
            if full {
                if let Some(manifest) = open.remove(&item.channel) {
                    done.push((item.channel, manifest));
                }
            }
            open.entry(item.channel).or_default().entries.push(item.entry.clone());
            item.repeats_left -= 1;
        }
        waiting.retain(|item| item.repeats_left > 0);
        done.extend(open.into_iter().filter(|(_, manifest)| !manifest.entries.is_empty()));
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: u64, end_seq: u64) -> ManifestEntry {
        ManifestEntry::new(stream, end_seq, 10, [stream as u8; 16], &format!("file-{stream}"))
    }

    #[test]
    fn an_entry_is_named_only_once_its_end_block_is_sent_and_then_for_its_repeats() {
        let book = ManifestBook::default();
        book.add(3, entry(1, 5));
        assert!(book.due(&BTreeMap::from([(3, 5)]), 1400).is_empty(), "block 5 not sent yet");
        for _ in 0..REPEATS {
            let due = book.due(&BTreeMap::from([(3, 6)]), 1400);
            assert_eq!(due.len(), 1);
            assert_eq!(due[0].0, 3);
            assert_eq!(due[0].1.entries, vec![entry(1, 5)]);
        }
        assert!(book.due(&BTreeMap::from([(3, 6)]), 1400).is_empty(), "repeats used up");
    }

    #[test]
    fn manifests_stay_within_the_body_and_the_datagram_budget() {
        let book = ManifestBook::default();
        for stream in 0..500 {
            book.add(1 + (stream % 2) as u16, entry(stream, 0));
        }
        let due = book.due(&BTreeMap::from([(1, 1), (2, 1)]), 200);
        assert!(due.len() <= DATAGRAMS_PER_BEACON, "{} manifests", due.len());
        for (_, manifest) in &due {
            assert!(manifest.encoded_len() <= 200);
            assert!(!manifest.entries.is_empty());
        }
        let named: usize = due.iter().map(|(_, m)| m.entries.len()).sum();
        assert!(named >= DATAGRAMS_PER_BEACON, "named {named}");
    }

    #[test]
    fn a_full_book_drops_its_oldest_entries_and_counts_them() {
        let book = ManifestBook::default();
        for stream in 0..CAPACITY as u64 + 3 {
            book.add(1, entry(stream, 0));
        }
        assert_eq!(book.overflowed.load(Ordering::Relaxed), 3);
        let first = &book.due(&BTreeMap::from([(1, 1)]), 1400)[0].1.entries[0];
        assert_eq!(first.stream, 3, "the three oldest were dropped");
    }
}
