//! Encode and decode throughput per core, in bytes of block content per second.
//!
//! Run with `cargo bench -p diode-proto`. Cases: symbol sizes of 1,400 bytes (1,500-byte MTU) and
//! 8,896 bytes (jumbo frames), 64 source symbols per block, 8 % repair; decode with 0 %, 2 % and 5 % of
//! the source symbols lost (0 % must not run the RaptorQ decoder, and the test suite checks that).

// A bench that silently measured a failed decode would report nonsense: failing loudly is the point.
#![allow(clippy::panic)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use diode_proto::fec::{BlockEncoder, SymbolCollector};
use diode_proto::FecParams;

const SOURCE_SYMBOLS: u16 = 64;

fn params(symbol_size: u16) -> FecParams {
    FecParams { symbol_size, max_block_symbols: SOURCE_SYMBOLS, repair_basis_points: 800, interleave_depth: 1 }
}

fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8).collect()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for symbol_size in [1400u16, 8896] {
        let params = params(symbol_size);
        let data = content(params.max_block_len());
        let mut encoder = BlockEncoder::new(params);
        group.throughput(Throughput::Bytes(data.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(symbol_size), &data, |b, data| {
            b.iter(|| encoder.encode(1, 0, data.clone()));
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");
    for symbol_size in [1400u16, 8896] {
        let params = params(symbol_size);
        let data = content(params.max_block_len());
        let block = BlockEncoder::new(params).encode(1, 0, data.clone());
        let k = block.source_symbols();
        for loss_percent in [0u32, 2, 5] {
            let lost = (k * loss_percent).div_ceil(100);
            // Lose the first `lost` source symbols; everything else (with all repair) arrives.
            let symbols: Vec<(u32, Vec<u8>)> =
                (lost..block.symbol_count()).map(|esi| (esi, block.symbol(esi).unwrap_or_default().to_vec())).collect();
            group.throughput(Throughput::Bytes(data.len() as u64));
            let id = BenchmarkId::new(format!("{symbol_size}"), format!("{loss_percent}pct_loss"));
            group.bench_with_input(id, &symbols, |b, symbols| {
                b.iter(|| {
                    let mut collector = SymbolCollector::new(block.symbol_size, block.block_len);
                    for (esi, symbol) in symbols {
                        if collector.insert(*esi, symbol).is_ok() {
                            if let Some(done) = collector.try_complete() {
                                return done;
                            }
                        }
                    }
                    panic!("block did not decode");
                });
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3)).warm_up_time(std::time::Duration::from_secs(1));
    targets = encode, decode
}
criterion_main!(benches);
