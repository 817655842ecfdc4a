//! Interleaving: symbols of several blocks take turns on the wire.
//!
//! The interleaver has `depth` lanes, each holding one block. It emits one symbol from each occupied
//! lane in a fixed round-robin order. While all lanes are busy, any run of N consecutive datagrams holds
//! at most ceil(N / depth) symbols of any one block, so a burst of loss costs every block a little
//! instead of one block everything. A lane freed by a finished block takes the next block in the same
//! position, which keeps the bound across block boundaries.

/// Something made of symbols numbered `0..symbol_count()`.
pub trait Symbols {
    fn symbol_count(&self) -> u32;
}

impl Symbols for crate::fec::EncodedBlock {
    fn symbol_count(&self) -> u32 {
        crate::fec::EncodedBlock::symbol_count(self)
    }
}

impl<B: Symbols> Symbols for std::sync::Arc<B> {
    fn symbol_count(&self) -> u32 {
        B::symbol_count(self)
    }
}

struct Lane<B> {
    block: B,
    next: u32,
}

/// Round-robin over up to `depth` blocks.
pub struct Interleaver<B> {
    lanes: Vec<Option<Lane<B>>>,
    cursor: usize,
    /// The block whose last symbol was handed out by the latest `next`, kept until the following call.
    finished: Option<(B, u32)>,
}

impl<B: Symbols> Interleaver<B> {
    pub fn new(depth: u16) -> Interleaver<B> {
        let depth = usize::from(depth.max(1));
        Interleaver { lanes: (0..depth).map(|_| None).collect(), cursor: 0, finished: None }
    }

    pub fn depth(&self) -> usize {
        self.lanes.len()
    }

    /// Blocks currently being sent.
    pub fn occupied(&self) -> usize {
        self.lanes.iter().filter(|lane| lane.is_some()).count()
    }

    pub fn has_room(&self) -> bool {
        self.occupied() < self.lanes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.occupied() == 0
    }

    /// Puts a block in a free lane. Returns it back when every lane is busy.
    pub fn push(&mut self, block: B) -> Result<(), B> {
        if block.symbol_count() == 0 {
            return Ok(());
        }
        // Prefer the first free lane at or after the cursor so a new block joins the rotation where the
        // finished one left it.
        let depth = self.lanes.len();
        let free = (0..depth).map(|i| (self.cursor + i) % depth).find(|i| self.lanes[*i].is_none());
        match free {
            Some(index) => {
                self.lanes[index] = Some(Lane { block, next: 0 });
                Ok(())
            }
            None => Err(block),
        }
    }

    /// The next symbol to send as (block, encoding symbol id). With `drain` false nothing is emitted
    /// until every lane is busy, so the burst bound holds; with `drain` true the occupied lanes are
    /// emptied (the sender has nothing more to add for now).
    pub fn next(&mut self, drain: bool) -> Option<(&B, u32)> {
        self.finished = None;
        if !drain && self.has_room() {
            return None;
        }
        let depth = self.lanes.len();
        let index = (0..depth).map(|i| (self.cursor + i) % depth).find(|i| self.lanes[*i].is_some())?;
        self.cursor = (index + 1) % depth;
        let finished = {
            let lane = self.lanes[index].as_mut()?;
            lane.next += 1;
            lane.next >= lane.block.symbol_count()
        };
        if finished {
            // The lane is freed only after this symbol is handed out; return it from the taken block.
            let lane = self.lanes[index].take()?;
            self.finished = Some((lane.block, lane.next - 1));
            let (block, esi) = self.finished.as_ref()?;
            return Some((block, *esi));
        }
        let lane = self.lanes[index].as_ref()?;
        Some((&lane.block, lane.next - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Fake {
        id: u32,
        symbols: u32,
    }

    impl Symbols for Fake {
        fn symbol_count(&self) -> u32 {
            self.symbols
        }
    }

    /// Emits every symbol of `blocks` through an interleaver of `depth`, refilling lanes as they free.
    fn schedule(depth: u16, blocks: Vec<Fake>) -> Vec<(u32, u32)> {
        let mut interleaver = Interleaver::new(depth);
        let mut queue = blocks.into_iter();
        let mut out = Vec::new();
        let mut pending = queue.next();
        loop {
            while let Some(block) = pending.take() {
                match interleaver.push(block) {
                    Ok(()) => pending = queue.next(),
                    Err(back) => {
                        pending = Some(back);
                        break;
                    }
                }
            }
            let drain = pending.is_none();
            match interleaver.next(drain) {
                Some((block, esi)) => out.push((block.id, esi)),
                None if drain => return out,
                None => unreachable!("lanes full but nothing emitted"),
            }
        }
    }

    #[test]
    fn every_symbol_is_emitted_once_in_order_per_block() {
        let blocks = (0..10).map(|id| Fake { id, symbols: 5 + id % 3 }).collect();
        let out = schedule(4, blocks);
        for id in 0..10 {
            let esis: Vec<u32> = out.iter().filter(|(b, _)| *b == id).map(|(_, e)| *e).collect();
            assert_eq!(esis, (0..5 + id % 3).collect::<Vec<_>>());
        }
    }

    #[test]
    fn burst_costs_each_block_at_most_its_share() {
        let depth = 8u16;
        let blocks = (0..40).map(|id| Fake { id, symbols: 70 }).collect();
        let out = schedule(depth, blocks);
        // Only the steady state (all lanes busy) carries the guarantee: skip the drain at the end.
        let steady = &out[..out.len() - usize::from(depth) * 70];
        for burst in [1usize, 5, 8, 20, 64] {
            let bound = burst.div_ceil(usize::from(depth));
            for window in steady.windows(burst) {
                let mut per_block = std::collections::HashMap::new();
                for (id, _) in window {
                    *per_block.entry(*id).or_insert(0usize) += 1;
                }
                assert!(per_block.values().all(|n| *n <= bound), "burst {burst}: {per_block:?}");
            }
        }
    }

    #[test]
    fn nothing_leaves_until_lanes_fill_unless_draining() {
        let mut interleaver = Interleaver::new(2);
        interleaver.push(Fake { id: 0, symbols: 1 }).expect("room");
        assert!(interleaver.next(false).is_none());
        assert_eq!(interleaver.next(true).map(|(b, e)| (b.id, e)), Some((0, 0)));
        assert!(interleaver.is_empty());
    }
}
