//! The block codec: RaptorQ (RFC 6330) over whole blocks, one source block per block.
//!
//! A block's content (records followed by their BLAKE3, see [`crate::block`]) of F bytes is padded to
//! K = ceil(F / T) source symbols of T bytes. Source symbols are sent as they are (systematic code), then
//! the repair symbols of a full block (see [`FecParams::repair_symbols`]). The receiver needs any K
//! (rarely K + 1 or 2) of them; when all K source symbols arrive it reassembles them without running the
//! decoder at all.

use std::collections::HashMap;

use raptorq::{
    EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder, SourceBlockEncoder,
    SourceBlockEncodingPlan,
};

use crate::error::DropReason;
use crate::gf256::{self, MulTable};
use crate::header::{HEADER_LEN_TAGGED, MAX_SOURCE_SYMBOLS, SYMBOL_ALIGNMENT};
use crate::record::{DATAGRAMS_HEADER_LEN, DATAGRAM_ENTRY_HEADER_LEN};

/// IPv4 (20) and UDP (8) headers, counted when a symbol size is derived from an MTU.
pub const IP_UDP_OVERHEAD: usize = 28;
/// The smallest block content: one maximal UDP payload packed as a datagrams record, plus the block hash.
pub const MIN_BLOCK_LEN: usize =
    DATAGRAMS_HEADER_LEN + DATAGRAM_ENTRY_HEADER_LEN + u16::MAX as usize + crate::block::HASH_LEN;
/// Extra repair symbols a receiver keeps beyond K, for the rare K-symbol decoding failure.
pub const MAX_EXTRA_SYMBOLS: u32 = 16;
const MIN_SYMBOL_SIZE: u16 = 64;
const MAX_INTERLEAVE: u16 = 1024;
const MAX_REPAIR_BASIS_POINTS: u16 = 10_000;

/// FEC parameters shared by sender and receiver (the sender announces them in beacons).
///
/// Invariant after [`FecParams::validate`]: symbol size a multiple of 8 and at least 64; a full block
/// holds at least [`MIN_BLOCK_LEN`] bytes and at most RFC 6330's K'max symbols; repair at most 100 %.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FecParams {
    /// T: bytes per symbol.
    pub symbol_size: u16,
    /// Most source symbols in one block (a full block is `max_block_symbols × symbol_size` bytes).
    pub max_block_symbols: u16,
    /// Repair symbols per block in 1/10 000 of K (500 = 5 %).
    pub repair_basis_points: u16,
    /// Blocks whose symbols are interleaved on the wire.
    pub interleave_depth: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FecParamsError {
    #[error("symbol_size {0} must be a multiple of 8 and at least 64")]
    SymbolSize(u16),
    #[error(
        "max_block_symbols {symbols} x symbol_size {symbol_size} = {len} bytes: a block must hold at least {min} bytes"
    )]
    BlockTooSmall { symbols: u16, symbol_size: u16, len: usize, min: usize },
    #[error("max_block_symbols {0} exceeds the RaptorQ limit of 56403")]
    TooManySymbols(u16),
    #[error("repair_basis_points {0} exceeds 10000 (100 %)")]
    Repair(u16),
    #[error("interleave_depth {0} must be between 1 and 1024")]
    Interleave(u16),
    #[error("MTU {mtu} leaves no room for a symbol")]
    Mtu { mtu: usize },
}

impl FecParams {
    /// Defaults for a link MTU: the largest aligned symbol that fits a tagged datagram, blocks of at
    /// least 64 symbols, 5 % repair, 8 blocks interleaved.
    pub fn for_mtu(mtu: usize) -> FecParams {
        let room = mtu.saturating_sub(IP_UDP_OVERHEAD + HEADER_LEN_TAGGED).min(usize::from(u16::MAX));
        let symbol_size = (room as u16 / SYMBOL_ALIGNMENT * SYMBOL_ALIGNMENT).max(MIN_SYMBOL_SIZE);
        let min_symbols = MIN_BLOCK_LEN.div_ceil(usize::from(symbol_size)) as u16;
        FecParams { symbol_size, max_block_symbols: min_symbols.max(64), repair_basis_points: 500, interleave_depth: 8 }
    }

    /// The symbol size that fits an MTU, or an error when the MTU is too small.
    pub fn symbol_size_for_mtu(mtu: usize) -> Result<u16, FecParamsError> {
        let room = mtu.checked_sub(IP_UDP_OVERHEAD + HEADER_LEN_TAGGED).ok_or(FecParamsError::Mtu { mtu })?;
        let size = (room.min(usize::from(u16::MAX)) as u16) / SYMBOL_ALIGNMENT * SYMBOL_ALIGNMENT;
        if size < MIN_SYMBOL_SIZE {
            return Err(FecParamsError::Mtu { mtu });
        }
        Ok(size)
    }

    pub fn validate(&self) -> Result<(), FecParamsError> {
        if self.symbol_size < MIN_SYMBOL_SIZE || !self.symbol_size.is_multiple_of(SYMBOL_ALIGNMENT) {
            return Err(FecParamsError::SymbolSize(self.symbol_size));
        }
        if u32::from(self.max_block_symbols) > MAX_SOURCE_SYMBOLS {
            return Err(FecParamsError::TooManySymbols(self.max_block_symbols));
        }
        let len = self.max_block_len();
        if len < MIN_BLOCK_LEN {
            return Err(FecParamsError::BlockTooSmall {
                symbols: self.max_block_symbols,
                symbol_size: self.symbol_size,
                len,
                min: MIN_BLOCK_LEN,
            });
        }
        if self.repair_basis_points > MAX_REPAIR_BASIS_POINTS {
            return Err(FecParamsError::Repair(self.repair_basis_points));
        }
        if self.interleave_depth == 0 || self.interleave_depth > MAX_INTERLEAVE {
            return Err(FecParamsError::Interleave(self.interleave_depth));
        }
        Ok(())
    }

    /// Largest block content in bytes.
    pub fn max_block_len(&self) -> usize {
        usize::from(self.max_block_symbols) * usize::from(self.symbol_size)
    }

    /// Repair symbols sent with every block: the share of a full block, at least one when repair is on.
    ///
    /// A partial block (flushed early) gets as many repair symbols as a full one. A burst of loss
    /// costs each interleaved block an absolute number of symbols whatever its size, so a share of a
    /// small block's K would leave it defenceless; partial blocks only occur when the link has room.
    pub fn repair_symbols(&self) -> u32 {
        if self.repair_basis_points == 0 {
            return 0;
        }
        (u64::from(self.max_block_symbols) * u64::from(self.repair_basis_points)).div_ceil(10_000).max(1) as u32
    }
}

/// A block ready for the wire: padded source symbols and the repair symbols.
///
/// Invariant: `source.len() == K × symbol_size`, every repair symbol is `symbol_size` bytes, and
/// `block_len <= source.len()`.
#[derive(Clone, Debug)]
pub struct EncodedBlock {
    pub channel: u16,
    pub seq: u64,
    /// F: content length before padding.
    pub block_len: u32,
    pub symbol_size: u16,
    source: Vec<u8>,
    repair: Vec<Vec<u8>>,
}

impl EncodedBlock {
    /// K: source symbols.
    pub fn source_symbols(&self) -> u32 {
        (self.source.len() / usize::from(self.symbol_size)) as u32
    }

    /// Source plus repair symbols.
    pub fn symbol_count(&self) -> u32 {
        self.source_symbols() + self.repair.len() as u32
    }

    /// Symbol by encoding symbol id, `None` past the last one.
    pub fn symbol(&self, esi: u32) -> Option<&[u8]> {
        let k = self.source_symbols();
        let t = usize::from(self.symbol_size);
        if esi < k {
            let start = esi as usize * t;
            self.source.get(start..start + t)
        } else {
            self.repair.get((esi - k) as usize).map(Vec::as_slice)
        }
    }
}

/// Encodes blocks, reusing what one block size costs to prepare: a repair matrix or a RaptorQ plan.
///
/// RaptorQ is linear over GF(256), byte by byte, and systematic: each repair symbol of a K-symbol
/// block is a fixed combination `Σ c[j][i] · source[i]` of the source symbols. The encoder learns the
/// coefficients once per K by running RaptorQ on unit vectors, then makes every repair symbol with
/// K multiply-adds, which at a few repair symbols per block costs a fraction of solving RaptorQ's
/// intermediate symbols for every block. The symbols on the wire are RaptorQ's, bit for bit (the
/// tests compare them); with many repair symbols per block the plan is cheaper and is used instead.
pub struct BlockEncoder {
    params: FecParams,
    recipes: HashMap<u16, RepairRecipe>,
}

/// Distinct block sizes whose recipe is kept: full blocks plus a few sizes of flushed partial blocks.
const RECIPE_CACHE_LIMIT: usize = 8;
/// Up to this many repair symbols per block, multiply-adds beat RaptorQ's encoder (see the codec bench).
const MATRIX_MAX_REPAIR: u32 = gf256::MAX_ROWS as u32;
/// Above this many source symbols the matrix takes long to learn; such blocks use the plan.
const MATRIX_MAX_SOURCE: u16 = 4096;
/// Source symbols whose coefficients one learning pass finds (bounds its memory to K × this).
const MATRIX_STRIP: usize = 256;

enum RepairRecipe {
    Matrix(RepairMatrix),
    Plan(SourceBlockEncodingPlan),
}

/// The coefficients of a block size's repair symbols: `tables[i × R + j]` multiplies source symbol i
/// into repair symbol j (source-major, so one source symbol's R tables are together).
struct RepairMatrix {
    repair_count: usize,
    tables: Vec<MulTable>,
}

impl RepairMatrix {
    /// Runs RaptorQ on blocks whose symbols are unit vectors: byte `i - first` of source symbol i is 1
    /// and every other byte 0, so byte `i - first` of repair symbol j is `c[j][i]`.
    fn learn(k: u16, repair_count: u32, plan: &SourceBlockEncodingPlan) -> RepairMatrix {
        let k_len = usize::from(k);
        let repair_len = repair_count as usize;
        let mut coefficients = vec![0u8; k_len * repair_len];
        for first in (0..k_len).step_by(MATRIX_STRIP) {
            let columns = MATRIX_STRIP.min(k_len - first);
            let width = columns.next_multiple_of(usize::from(SYMBOL_ALIGNMENT));
            let mut units = vec![0u8; k_len * width];
            for column in 0..columns {
                units[(first + column) * width + column] = 1;
            }
            let encoder =
                SourceBlockEncoder::with_encoding_plan(0, &oti(units.len() as u64, width as u16), &units, plan);
            for (j, packet) in encoder.repair_packets(0, repair_count).iter().enumerate() {
                for (column, coefficient) in packet.data()[..columns].iter().enumerate() {
                    coefficients[(first + column) * repair_len + j] = *coefficient;
                }
            }
        }
        RepairMatrix { repair_count: repair_len, tables: coefficients.into_iter().map(MulTable::new).collect() }
    }

    fn repair_symbols(&self, source: &[u8], symbol_size: usize) -> Vec<Vec<u8>> {
        let mut repair = vec![vec![0u8; symbol_size]; self.repair_count];
        // Each source symbol is read once, into every repair symbol, which stay in cache.
        for (symbol, tables) in source.chunks_exact(symbol_size).zip(self.tables.chunks_exact(self.repair_count)) {
            gf256::mul_add_rows(&mut repair, symbol, tables);
        }
        repair
    }
}

impl BlockEncoder {
    /// `params` must have passed [`FecParams::validate`].
    pub fn new(params: FecParams) -> BlockEncoder {
        BlockEncoder { params, recipes: HashMap::new() }
    }

    pub fn params(&self) -> &FecParams {
        &self.params
    }

    /// Encodes one block's content (as made by [`crate::block::BlockBuilder`]). The content must be
    /// non-empty and at most [`FecParams::max_block_len`] bytes.
    pub fn encode(&mut self, channel: u16, seq: u64, mut content: Vec<u8>) -> EncodedBlock {
        let symbol_size = self.params.symbol_size;
        let t = usize::from(symbol_size);
        assert!(!content.is_empty() && content.len() <= self.params.max_block_len(), "block content out of range");
        let block_len = content.len() as u32;
        let k = content.len().div_ceil(t);
        content.resize(k * t, 0);
        let repair_count = self.params.repair_symbols();
        let repair = if repair_count == 0 {
            Vec::new()
        } else {
            match self.recipe(k as u16, repair_count) {
                RepairRecipe::Matrix(matrix) => matrix.repair_symbols(&content, t),
                RepairRecipe::Plan(plan) => {
                    let oti = oti(content.len() as u64, symbol_size);
                    let encoder = SourceBlockEncoder::with_encoding_plan(0, &oti, &content, plan);
                    encoder.repair_packets(0, repair_count).into_iter().map(|p| p.split().1).collect()
                }
            }
        };
        EncodedBlock { channel, seq, block_len, symbol_size, source: content, repair }
    }

    fn recipe(&mut self, k: u16, repair_count: u32) -> &RepairRecipe {
        if !self.recipes.contains_key(&k) && self.recipes.len() >= RECIPE_CACHE_LIMIT {
            // Keep the full-size recipe, which nearly every block uses; forget a partial one.
            let full = self.params.max_block_symbols;
            if let Some(victim) = self.recipes.keys().copied().find(|size| *size != full) {
                self.recipes.remove(&victim);
            }
        }
        self.recipes.entry(k).or_insert_with(|| {
            let plan = SourceBlockEncodingPlan::generate(k);
            if repair_count <= MATRIX_MAX_REPAIR && k <= MATRIX_MAX_SOURCE {
                RepairRecipe::Matrix(RepairMatrix::learn(k, repair_count, &plan))
            } else {
                RepairRecipe::Plan(plan)
            }
        })
    }
}

fn oti(transfer_length: u64, symbol_size: u16) -> ObjectTransmissionInformation {
    ObjectTransmissionInformation::new(transfer_length, symbol_size, 1, 1, SYMBOL_ALIGNMENT as u8)
}

/// Collects the symbols of one block until it can be rebuilt.
///
/// Invariant: `have` marks which source symbols are in `source`; at most K + [`MAX_EXTRA_SYMBOLS`]
/// symbols are kept. `source` has room for K × T bytes and holds either the first `len / T` symbols,
/// received in order (the common case, which never zeroes memory it then overwrites), or, once one
/// arrived out of order, all K × T bytes with each symbol at its place.
#[derive(Debug)]
pub struct SymbolCollector {
    symbol_size: u16,
    block_len: u32,
    k: u32,
    source: Vec<u8>,
    have: Vec<bool>,
    source_count: u32,
    repair: Vec<(u32, Vec<u8>)>,
    /// Symbols held when the decoder last failed: it is not run again until more arrive.
    failed_with: u32,
}

/// How a block was rebuilt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// K: source symbols the block has.
    pub source_symbols: u32,
    /// Source symbols that arrived.
    pub source_received: u32,
    /// Repair symbols that arrived before completion.
    pub repair_received: u32,
    /// Whether the RaptorQ decoder had to run (a source symbol was missing).
    pub decoded: bool,
}

impl SymbolCollector {
    /// A collector for a block with symbol size `symbol_size` and content length `block_len`. Both come
    /// from a header that passed [`crate::header::Repr::parse`] (so K is within RFC 6330's limit).
    pub fn new(symbol_size: u16, block_len: u32) -> SymbolCollector {
        let k = block_len.div_ceil(u32::from(symbol_size));
        SymbolCollector {
            symbol_size,
            block_len,
            k,
            source: Vec::with_capacity(k as usize * usize::from(symbol_size)),
            have: vec![false; k as usize],
            source_count: 0,
            repair: Vec::new(),
            failed_with: 0,
        }
    }

    pub fn matches(&self, symbol_size: u16, block_len: u32) -> bool {
        self.symbol_size == symbol_size && self.block_len == block_len
    }

    /// K: source symbols the block has (any K symbols usually decode it).
    pub fn source_symbols(&self) -> u32 {
        self.k
    }

    pub fn received(&self) -> u32 {
        self.source_count + self.repair.len() as u32
    }

    /// The most bytes a collector for this block can come to hold: its K source symbols and the
    /// extra ones it keeps ([`MAX_EXTRA_SYMBOLS`]). What a receiver reserves, before allocating
    /// anything, when it starts collecting a block.
    pub fn max_memory_for(symbol_size: u16, block_len: u32) -> usize {
        let k = block_len.div_ceil(u32::from(symbol_size));
        (k as usize + MAX_EXTRA_SYMBOLS as usize) * usize::from(symbol_size)
    }

    /// [`SymbolCollector::max_memory_for`] this collector's block.
    pub fn max_memory(&self) -> usize {
        SymbolCollector::max_memory_for(self.symbol_size, self.block_len)
    }

    /// Bytes held, for memory accounting.
    pub fn memory(&self) -> usize {
        self.source.capacity() + self.repair.len() * usize::from(self.symbol_size)
    }

    /// Adds a symbol. The payload length must equal the symbol size.
    pub fn insert(&mut self, esi: u32, payload: &[u8]) -> Result<(), DropReason> {
        let t = usize::from(self.symbol_size);
        if payload.len() != t {
            return Err(DropReason::InconsistentBlock);
        }
        if esi < self.k {
            let index = esi as usize;
            if self.have[index] {
                return Err(DropReason::DuplicateSymbol);
            }
            self.have[index] = true;
            self.source_count += 1;
            if self.source.len() == index * t {
                self.source.extend_from_slice(payload);
            } else {
                self.source.resize(self.k as usize * t, 0);
                self.source[index * t..(index + 1) * t].copy_from_slice(payload);
            }
            return Ok(());
        }
        if self.repair.iter().any(|(e, _)| *e == esi) {
            return Err(DropReason::DuplicateSymbol);
        }
        if self.received() >= self.k + MAX_EXTRA_SYMBOLS {
            return Err(DropReason::SurplusSymbol);
        }
        self.repair.push((esi, payload.to_vec()));
        Ok(())
    }

    /// The block content (F bytes) once enough symbols arrived; `None` while more are needed.
    pub fn try_complete(&mut self) -> Option<(Vec<u8>, Completion)> {
        let received = self.received();
        let mut completion = Completion {
            source_symbols: self.k,
            source_received: self.source_count,
            repair_received: self.repair.len() as u32,
            decoded: false,
        };
        if self.source_count == self.k {
            let mut content = std::mem::take(&mut self.source);
            content.truncate(self.block_len as usize);
            return Some((content, completion));
        }
        if received < self.k || received <= self.failed_with {
            return None;
        }
        let t = usize::from(self.symbol_size);
        let padded_len = u64::from(self.k) * t as u64;
        let mut decoder = SourceBlockDecoder::new(0, &oti(padded_len, self.symbol_size), padded_len);
        let sources =
            self.have.iter().enumerate().filter(|(_, have)| **have).map(|(i, _)| {
                EncodingPacket::new(PayloadId::new(0, i as u32), self.source[i * t..(i + 1) * t].to_vec())
            });
        let repairs = self.repair.iter().map(|(esi, data)| EncodingPacket::new(PayloadId::new(0, *esi), data.clone()));
        match decoder.decode(sources.chain(repairs)) {
            Some(mut content) => {
                content.truncate(self.block_len as usize);
                completion.decoded = true;
                self.source = Vec::new();
                self.repair = Vec::new();
                Some((content, completion))
            }
            None => {
                self.failed_with = received;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> FecParams {
        FecParams { symbol_size: 1024, max_block_symbols: 80, repair_basis_points: 1000, interleave_depth: 4 }
    }

    fn content(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn default_params_for_common_mtus_are_valid() {
        for mtu in [1280, 1500, 9000, 65535] {
            let p = FecParams::for_mtu(mtu);
            assert_eq!(p.validate(), Ok(()), "mtu {mtu}");
            assert!(usize::from(p.symbol_size) + HEADER_LEN_TAGGED + IP_UDP_OVERHEAD <= mtu);
        }
        assert_eq!(FecParams::symbol_size_for_mtu(1500), Ok(1416));
        assert!(FecParams::symbol_size_for_mtu(100).is_err());
    }

    #[test]
    fn invalid_params_name_the_problem() {
        let mut p = params();
        p.max_block_symbols = 10;
        assert!(matches!(p.validate(), Err(FecParamsError::BlockTooSmall { .. })));
        let mut p = params();
        p.symbol_size = 1020;
        assert_eq!(p.validate(), Err(FecParamsError::SymbolSize(1020)));
        let mut p = params();
        p.interleave_depth = 0;
        assert_eq!(p.validate(), Err(FecParamsError::Interleave(0)));
    }

    #[test]
    fn all_source_symbols_rebuild_without_the_decoder() {
        let mut encoder = BlockEncoder::new(params());
        let data = content(70_001);
        let block = encoder.encode(1, 0, data.clone());
        assert_eq!(block.source_symbols(), 69);
        // 10 % of a full block's 80 symbols, although this block has only 69.
        assert_eq!(block.symbol_count(), 69 + 8);
        let mut collector = SymbolCollector::new(block.symbol_size, block.block_len);
        for esi in 0..block.source_symbols() {
            collector.insert(esi, block.symbol(esi).expect("exists")).expect("new symbol");
        }
        let (rebuilt, completion) = collector.try_complete().expect("complete");
        assert!(!completion.decoded);
        assert_eq!(rebuilt, data);
    }

    #[test]
    fn repair_symbols_replace_lost_source_symbols() {
        let mut encoder = BlockEncoder::new(params());
        let data = content(80 * 1024);
        let block = encoder.encode(1, 0, data.clone());
        let mut collector = SymbolCollector::new(block.symbol_size, block.block_len);
        // Lose the first 8 source symbols; the 8 repair symbols stand in for them.
        for esi in 8..block.symbol_count() {
            collector.insert(esi, block.symbol(esi).expect("exists")).expect("new symbol");
        }
        let (rebuilt, completion) = collector.try_complete().expect("decodable");
        assert!(completion.decoded);
        assert_eq!(completion.repair_received, 8);
        assert_eq!(rebuilt, data);
    }

    #[test]
    fn symbols_rebuild_whatever_order_they_arrive_in() {
        let mut encoder = BlockEncoder::new(params());
        let data = content(80 * 1024 - 100);
        let block = encoder.encode(1, 0, data.clone());
        let k = block.source_symbols();
        let all: Vec<u32> = (0..block.symbol_count()).collect();
        // In order with the last source symbols lost (the decoder reads the in-order prefix), in
        // reverse (every symbol out of place), and interleaved odd-then-even (striped fibers).
        let in_order_tail_lost: Vec<u32> = all.iter().copied().filter(|esi| !(k - 8..k).contains(esi)).collect();
        let reversed: Vec<u32> = all.iter().rev().copied().collect();
        let odd_then_even: Vec<u32> =
            all.iter().copied().filter(|e| e % 2 == 1).chain(all.iter().copied().filter(|e| e % 2 == 0)).collect();
        for order in [in_order_tail_lost, reversed, odd_then_even] {
            let mut collector = SymbolCollector::new(block.symbol_size, block.block_len);
            let mut rebuilt = None;
            for esi in &order {
                collector.insert(*esi, block.symbol(*esi).expect("exists")).expect("new symbol");
                assert!(collector.memory() <= collector.max_memory());
                if let Some(done) = collector.try_complete() {
                    rebuilt = Some(done.0);
                    break;
                }
            }
            assert_eq!(rebuilt.as_ref(), Some(&data), "order starting {:?}", &order[..4]);
        }
    }

    #[test]
    fn too_few_symbols_wait_and_duplicates_are_refused() {
        let mut encoder = BlockEncoder::new(params());
        let block = encoder.encode(1, 0, content(5000));
        let mut collector = SymbolCollector::new(block.symbol_size, block.block_len);
        collector.insert(0, block.symbol(0).expect("exists")).expect("new");
        assert_eq!(collector.insert(0, block.symbol(0).expect("exists")), Err(DropReason::DuplicateSymbol));
        assert_eq!(collector.insert(1, &[0; 10]), Err(DropReason::InconsistentBlock));
        assert!(collector.try_complete().is_none());
    }

    /// Repair symbols straight from RaptorQ's own encoder, for comparison.
    fn raptorq_repair(content: &[u8], symbol_size: u16, repair_count: u32) -> Vec<Vec<u8>> {
        let encoder = SourceBlockEncoder::new(0, &oti(content.len() as u64, symbol_size), content);
        encoder.repair_packets(0, repair_count).into_iter().map(|p| p.split().1).collect()
    }

    /// Parameters for blocks of up to `k` symbols of `symbol_size` bytes with `repair_count` repair
    /// symbols each.
    fn params_with(k: u16, symbol_size: u16, repair_count: u32) -> FecParams {
        let max_block_symbols = k.max(MIN_BLOCK_LEN.div_ceil(usize::from(symbol_size)) as u16);
        let mut params = FecParams { symbol_size, max_block_symbols, repair_basis_points: 1, interleave_depth: 1 };
        while params.repair_symbols() < repair_count {
            params.repair_basis_points += 1;
        }
        assert_eq!(params.validate(), Ok(()));
        params
    }

    #[test]
    fn the_repair_matrix_makes_raptorqs_symbols_bit_for_bit() {
        // K = 1 and 2 (degenerate), 69 and 80, and 300, which needs two learning strips.
        for (k, symbol_size, repair_count) in
            [(1u16, 64u16, 3u32), (2, 72, 1), (69, 1416, 4), (80, 1024, 16), (300, 256, 5)]
        {
            let params = params_with(k, symbol_size, repair_count);
            let mut encoder = BlockEncoder::new(params);
            let data = content(usize::from(k) * usize::from(symbol_size) - 5);
            let block = encoder.encode(1, 0, data.clone());
            assert_eq!(block.source_symbols(), u32::from(k));
            assert_eq!(block.repair.len(), repair_count as usize);
            assert!(matches!(encoder.recipes.get(&k), Some(RepairRecipe::Matrix(_))), "k {k}");
            let mut padded = data;
            padded.resize(block.source.len(), 0);
            assert_eq!(block.repair, raptorq_repair(&padded, symbol_size, repair_count), "k {k}");
        }
    }

    #[test]
    fn many_repair_symbols_use_raptorqs_encoder() {
        let params = params_with(80, 1024, MATRIX_MAX_REPAIR + 1);
        let mut encoder = BlockEncoder::new(params);
        let data = content(params.max_block_len());
        let block = encoder.encode(1, 0, data.clone());
        assert!(matches!(encoder.recipes.get(&80), Some(RepairRecipe::Plan(_))));
        assert_eq!(block.repair, raptorq_repair(&data, params.symbol_size, MATRIX_MAX_REPAIR + 1));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn matrix_and_raptorq_agree_on_any_content(
            k in 1u16..140,
            symbol_words in 8u16..=32,
            repair_count in 1u32..=MATRIX_MAX_REPAIR,
            seed in proptest::prelude::any::<u64>(),
        ) {
            let symbol_size = symbol_words * 8;
            let params = params_with(k, symbol_size, repair_count);
            let len = usize::from(k) * usize::from(symbol_size);
            let data: Vec<u8> = (0..len as u64).map(|i| (i.wrapping_mul(seed | 1) >> 7) as u8).collect();
            let block = BlockEncoder::new(params).encode(1, 0, data.clone());
            proptest::prop_assert_eq!(block.repair, raptorq_repair(&data, symbol_size, repair_count));
        }
    }
}
