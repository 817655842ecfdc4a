//! Property tests: random loss within the repair budget always delivers intact; any loss never
//! delivers wrong bytes; every datagram format round-trips.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use diode_proto::header::{write_datagram, Kind, Packet, Repr};
use diode_proto::record::{Record, RecordReader};
use diode_proto::{LinkAuth, StreamMeta};
use proptest::prelude::*;

/// Builds the wire for `streams` (lengths) on one channel, interleaved as the sender does.
fn wire_for(lengths: &[usize], repair_bp: u16, depth: u16) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut tx = sender(7, 1, fec(repair_bp, depth));
    let data: Vec<Vec<u8>> = lengths.iter().enumerate().map(|(i, len)| payload(i as u64 + 1, *len)).collect();
    for (i, bytes) in data.iter().enumerate() {
        tx.channel(1).open(i as u64, StreamMeta { name: format!("s{i}"), ..Default::default() }).unwrap();
        tx.channel(1).data(i as u64, bytes).unwrap();
    }
    for i in 0..data.len() {
        tx.channel(1).end(i as u64).unwrap();
    }
    (drain(&mut tx), data)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn loss_within_the_repair_budget_delivers_every_stream_intact(
        lengths in prop::collection::vec(0usize..150_000, 1..4),
        seed in any::<u64>(),
    ) {
        // Each block loses at most its repair count minus two: K + 2 symbols remain, which RaptorQ
        // decodes except with a probability near 1e-6.
        let params = fec(2000, 4);
        let (wire, data) = wire_for(&lengths, params.repair_basis_points, params.interleave_depth);
        let mut lost_per_block = std::collections::HashMap::new();
        let mut lost_source = 0u32;
        let mut rng = seed | 1;
        let kept: Vec<&Vec<u8>> = wire.iter().filter(|d| {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            let h = header(d);
            let budget = params.repair_symbols().saturating_sub(2);
            let lost = lost_per_block.entry(h.block_seq).or_insert(0u32);
            let drop_it = rng % 8 == 0 && *lost < budget;
            *lost += u32::from(drop_it);
            lost_source += u32::from(drop_it && h.esi < h.source_symbols());
            !drop_it
        }).collect();
        let mut rig = Rig::new(Rig::config());
        rig.feed(0, kept);
        // The decoder runs exactly when a source symbol was missing.
        prop_assert_eq!(lost_source > 0, rig.receiver.stats().blocks_decoded > 0);
        for (i, bytes) in data.iter().enumerate() {
            prop_assert!(rig.delivered.ended_intact(1, i as u64, bytes), "stream {} not intact", i);
        }
        prop_assert_eq!(rig.delivered.lost_blocks(), 0);
    }

    #[test]
    fn any_loss_delivers_only_correct_prefixes_and_never_a_false_end(
        lengths in prop::collection::vec(1usize..120_000, 1..4),
        loss_percent in 5u64..60,
        seed in any::<u64>(),
    ) {
        let (wire, data) = wire_for(&lengths, 300, 2);
        let mut rng = seed | 1;
        let kept: Vec<&Vec<u8>> = wire.iter().filter(|_| {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            rng % 100 >= loss_percent
        }).collect();
        let mut rig = Rig::new(Rig::config());
        rig.feed(0, kept);
        rig.advance(Duration::from_secs(10));
        for (i, bytes) in data.iter().enumerate() {
            let key = (1u16, i as u64);
            if let Some(got) = rig.delivered.bytes.get(&key) {
                prop_assert!(bytes.starts_with(got), "stream {} got bytes that were never sent", i);
            }
            if rig.delivered.ended.contains_key(&key) {
                prop_assert_eq!(rig.delivered.bytes.get(&key), Some(bytes));
            }
            // Every stream ends one way or the other: complete, or broken with a reason.
            let opened = rig.delivered.names.contains_key(&key);
            prop_assert!(!opened || rig.delivered.ended.contains_key(&key) || rig.delivered.broken.contains_key(&key));
        }
        prop_assert_eq!(rig.receiver.blocks_in_flight(), 0);
    }

    #[test]
    fn header_round_trips(
        beacon in any::<bool>(),
        session in any::<u64>(),
        epoch in any::<u32>(),
        channel in any::<u16>(),
        seq in any::<u64>(),
        esi in 0u32..(1 << 24),
        symbols in 1u32..1000,
        keyed in any::<bool>(),
    ) {
        let symbol_size = 64u16;
        let repr = if beacon {
            Repr { kind: Kind::Beacon, session, epoch, channel: 0, block_seq: 0, esi: 0, block_len: 0, payload_len: 40, key_id: None, stamped: epoch % 2 == 0 }
        } else {
            Repr { kind: Kind::Symbol, session, epoch, channel, block_seq: seq, esi, block_len: symbols * 64 - 3, payload_len: symbol_size, key_id: None, stamped: epoch % 2 == 1 }
        };
        let (repr, auth) = if keyed {
            let auth = LinkAuth::keyed(vec![diode_proto::LinkKey { id: 4, key: [9; 32] }], 4).unwrap();
            (Repr { key_id: Some(4), ..repr }, auth)
        } else {
            (repr, LinkAuth::none())
        };
        let body = payload(session, usize::from(repr.payload_len));
        let mut buf = Vec::new();
        write_datagram(&repr, &body, &auth, &mut buf);
        prop_assert_eq!(buf.len(), repr.buffer_len());
        let packet = Packet::new_checked(&buf[..]).unwrap();
        prop_assert_eq!(Repr::parse(&packet, &auth), Ok(repr));
        prop_assert_eq!(packet.payload(), &body[..]);
    }

    #[test]
    fn data_records_round_trip(stream in any::<u64>(), prev in any::<u64>(), offset in 0u64..(1 << 60), bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let record = Record::Data { stream, prev, offset, bytes: &bytes };
        let mut out = Vec::new();
        record.emit(&mut out);
        let parsed: Vec<_> = RecordReader::new(&out).collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(parsed, vec![record]);
    }
}
