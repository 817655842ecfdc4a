//! Sender to receiver through a link the test controls: loss, bursts, reordering, duplication,
//! corruption, sender restarts and takeovers.

#![allow(clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use diode_proto::{
    AbortReason, Alarm, BreakReason, DropReason, Event, LossReason, Manifest, ManifestEntry, ReceiverConfig, Sender,
    StreamMeta,
};

fn meta(name: &str) -> StreamMeta {
    StreamMeta { peer: "127.0.0.1:9".into(), name: name.into(), ..StreamMeta::default() }
}

#[test]
fn streams_and_datagrams_arrive_intact_without_running_the_decoder() {
    let mut tx = sender(1, 0, fec(1000, 4));
    let a = payload(1, 300_000);
    let b = payload(2, 5);
    tx.channel(1).open(10, meta("a")).unwrap();
    tx.channel(2).open(20, meta("b")).unwrap();
    tx.channel(1).data(10, &a[..100_000]).unwrap();
    tx.channel(2).data(20, &b).unwrap();
    tx.channel(1).data(10, &a[100_000..]).unwrap();
    tx.channel(3).datagram(b"ping").unwrap();
    tx.channel(3).datagram(b"").unwrap();
    tx.channel(1).end(10).unwrap();
    tx.channel(2).end(20).unwrap();
    let wire = drain(&mut tx);

    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &wire);
    assert!(rig.delivered.ended_intact(1, 10, &a));
    assert!(rig.delivered.ended_intact(2, 20, &b));
    assert_eq!(rig.delivered.datagrams[&3], vec![b"ping".to_vec(), Vec::new()]);
    assert_eq!(rig.delivered.names[&(1, 10)], "a");
    let stats = rig.receiver.stats();
    assert_eq!(stats.blocks_decoded, 0, "no loss must not run the RaptorQ decoder");
    assert!(stats.blocks_without_decoder >= 5);
    assert_eq!(rig.receiver.blocks_in_flight(), 0);
}

#[test]
fn mirrored_fibers_cost_only_duplicate_drops() {
    let mut tx = sender(1, 0, fec(500, 4));
    let data = payload(3, 200_000);
    tx.channel(1).open(1, meta("m")).unwrap();
    tx.channel(1).data(1, &data).unwrap();
    tx.channel(1).end(1).unwrap();
    let wire = drain(&mut tx);
    let mut rig = Rig::new(Rig::config());
    for datagram in &wire {
        rig.feed(0, [datagram]);
        rig.feed(1, [datagram]);
    }
    assert!(rig.delivered.ended_intact(1, 1, &data));
    let drops = &rig.receiver.stats().drops;
    assert_eq!(drops.harmful(), 0);
    assert!(drops.get(DropReason::DuplicateSymbol) + drops.get(DropReason::BlockDone) >= wire.len() as u64 - 1);
}

#[test]
fn striped_fibers_are_decoded_jointly() {
    // Each fiber carries half the symbols and loses some: neither alone could rebuild a block.
    let mut tx = sender(1, 0, fec(2000, 1));
    let data = payload(4, 150_000);
    tx.channel(1).open(1, meta("s")).unwrap();
    tx.channel(1).data(1, &data).unwrap();
    tx.channel(1).end(1).unwrap();
    let wire = drain(&mut tx);
    let mut rig = Rig::new(Rig::config());
    for (i, datagram) in wire.iter().enumerate() {
        if i % 13 == 5 {
            continue;
        }
        rig.feed((i % 2) as u8, [datagram]);
    }
    assert!(rig.delivered.ended_intact(1, 1, &data));
    assert!(rig.receiver.stats().blocks_decoded > 0);
}

#[test]
fn loss_beyond_repair_breaks_streams_and_never_delivers_wrong_bytes() {
    let mut tx = sender(1, 0, fec(500, 1));
    let data = payload(5, 400_000);
    tx.channel(1).open(1, meta("big")).unwrap();
    tx.channel(1).data(1, &data).unwrap();
    tx.channel(1).end(1).unwrap();
    let wire = drain(&mut tx);
    let mut rig = Rig::new(Rig::config());
    // Block 2 loses a third of its symbols: far beyond 5 % repair.
    let kept: Vec<_> = wire.iter().filter(|d| !(header(d).block_seq == 2 && header(d).esi.is_multiple_of(3))).collect();
    rig.feed(0, kept);
    rig.advance(Duration::from_secs(1));
    assert_eq!(rig.delivered.ended.len(), 0);
    assert!(matches!(rig.delivered.broken[&(1, 1)], BreakReason::Gap { expected_prev: 1, found_prev: 2 }));
    let got = &rig.delivered.bytes[&(1, 1)];
    assert!(got.len() < data.len() && data.starts_with(got), "only a correct prefix was delivered");
    assert!(rig
        .delivered
        .events
        .iter()
        .any(|e| matches!(e, Event::BlocksLost { channel: 1, first: 2, last: 2, reason: LossReason::Timeout { .. } })));
}

#[test]
fn lost_block_breaks_only_the_streams_it_carried() {
    let mut tx = sender(1, 0, fec(0, 1));
    let x = payload(6, 1000);
    let y = payload(7, 100_000);
    tx.channel(1).open(1, meta("x")).unwrap();
    tx.channel(1).open(2, meta("y")).unwrap();
    tx.channel(1).data(1, &x[..500]).unwrap();
    tx.channel(1).flush(); // block 0: both opens and x's first half
    tx.channel(1).data(2, &y).unwrap();
    tx.channel(1).end(2).unwrap();
    tx.channel(1).flush(); // blocks 1 and 2: all of y
    tx.channel(1).data(1, &x[500..]).unwrap();
    tx.channel(1).end(1).unwrap(); // block 3: x's second half, linked back to block 0
    let wire = drain(&mut tx);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, wire.iter().filter(|d| header(d).block_seq != 1));
    rig.advance(Duration::from_secs(5));
    assert!(rig.delivered.ended_intact(1, 1, &x), "x had nothing in the lost block");
    assert!(matches!(rig.delivered.broken[&(1, 2)], BreakReason::Gap { .. }));
}

#[test]
fn silent_stream_after_a_loss_is_broken_after_the_suspect_timeout() {
    let mut tx = sender(1, 0, fec(0, 1));
    tx.channel(1).open(1, meta("quiet")).unwrap();
    tx.channel(1).flush(); // block 0
    tx.channel(1).data(1, b"lost end").unwrap();
    tx.channel(1).end(1).unwrap(); // block 1, lost: the receiver never hears of stream 1 again
    let wire = drain(&mut tx);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, wire.iter().filter(|d| header(d).block_seq == 0));
    rig.beacon(&mut tx); // tail loss: the beacon says two blocks were sent
    rig.advance(Duration::from_millis(500));
    assert_eq!(rig.delivered.lost_blocks(), 1);
    assert!(rig.delivered.broken.is_empty(), "not broken before the suspect timeout");
    rig.advance(Duration::from_secs(3));
    assert_eq!(rig.delivered.broken[&(1, 1)], BreakReason::BlockLost { seq: 1 });
}

#[test]
fn keepalive_clears_suspicion_of_an_idle_stream() {
    let mut tx = sender(1, 0, fec(0, 1));
    tx.channel(1).open(1, meta("idle")).unwrap();
    tx.channel(1).open(2, meta("other")).unwrap();
    tx.channel(1).flush(); // block 0
    tx.channel(1).data(2, b"only stream 2").unwrap();
    tx.channel(1).flush(); // block 1, lost
    tx.channel(1).keepalive(1).unwrap(); // block 2
    let wire = drain(&mut tx);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, wire.iter().filter(|d| header(d).block_seq != 1));
    rig.advance(Duration::from_secs(10));
    assert!(!rig.delivered.broken.contains_key(&(1, 1)));
    assert_eq!(rig.delivered.broken[&(1, 2)], BreakReason::BlockLost { seq: 1 });
    assert_eq!(rig.receiver.open_streams(), 1);
}

#[test]
fn reordered_duplicated_and_corrupted_datagrams_still_deliver() {
    let mut tx = sender(1, 0, fec(1500, 4));
    let data = payload(8, 500_000);
    tx.channel(7).open(1, meta("r")).unwrap();
    tx.channel(7).data(1, &data).unwrap();
    tx.channel(7).end(1).unwrap();
    let mut wire = drain(&mut tx);
    // Reverse every window of 16, duplicate every 5th, corrupt every 23rd.
    for chunk in wire.chunks_mut(16) {
        chunk.reverse();
    }
    let mut rig = Rig::new(Rig::config());
    for (i, datagram) in wire.iter().enumerate() {
        let mut d = datagram.clone();
        if i % 23 == 0 {
            let at = d.len() / 2;
            d[at] ^= 0x10;
        }
        rig.feed(0, [&d]);
        if i % 5 == 0 {
            rig.feed(1, [datagram]);
        }
    }
    assert!(rig.delivered.ended_intact(7, 1, &data));
    let drops = &rig.receiver.stats().drops;
    assert_eq!(drops.get(DropReason::BadChecksum), wire.len().div_ceil(23) as u64);
}

#[test]
fn burst_is_spread_over_interleaved_blocks() {
    let depth = 8;
    let mut tx = sender(1, 0, fec(600, depth)); // 72 symbols per block, 5 repair each
    let data = payload(9, 72 * 1024 * 16);
    tx.channel(1).open(1, meta("burst")).unwrap();
    tx.channel(1).data(1, &data).unwrap();
    tx.channel(1).end(1).unwrap();
    let wire = drain(&mut tx);
    // A burst of 24 consecutive datagrams in the steady state costs each of 8 blocks 3 symbols.
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, wire[..200].iter().chain(&wire[224..]));
    assert!(rig.delivered.ended_intact(1, 1, &data));

    // Without interleaving the same burst lands in one block and exceeds its repair.
    let mut tx = sender(1, 0, fec(600, 1));
    tx.channel(1).open(1, meta("burst")).unwrap();
    tx.channel(1).data(1, &data).unwrap();
    tx.channel(1).end(1).unwrap();
    let wire = drain(&mut tx);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, wire[..10].iter().chain(&wire[34..]));
    rig.advance(Duration::from_secs(5));
    assert!(rig.delivered.broken.contains_key(&(1, 1)));
}

#[test]
fn sender_restart_replaces_the_session_and_old_session_is_not_readopted() {
    let mut old = sender(100, 3, fec(500, 2));
    old.channel(1).open(1, meta("interrupted")).unwrap();
    old.channel(1).data(1, &payload(10, 50_000)).unwrap();
    let old_wire = drain(&mut old);
    let mut new = sender(200, 3, fec(500, 2));
    let fresh = payload(11, 80_000);
    new.channel(1).open(1, meta("fresh")).unwrap();
    new.channel(1).data(1, &fresh).unwrap();
    new.channel(1).end(1).unwrap();
    let new_wire = drain(&mut new);

    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &old_wire);
    assert_eq!(rig.delivered.bytes[&(1, 1)].len(), 50_000);
    rig.feed(0, &new_wire[..1]);
    assert_eq!(rig.delivered.broken[&(1, 1)], BreakReason::SessionReplaced);
    assert!(rig
        .delivered
        .events
        .iter()
        .any(|e| matches!(e, Event::SessionStarted { session: 200, epoch: 3, replaced: Some((100, 3)) })));
    // A straggler of the old session: dropped, and it does not flip the session back. Within the
    // hand-over grace it is no alarm; still sending seconds later, it is, once.
    rig.feed(0, &old_wire[..1]);
    assert!(!rig.delivered.events.iter().any(|e| matches!(e, Event::Alarm(_))));
    rig.now += Duration::from_secs(3);
    rig.feed(0, &old_wire[1..2]);
    let alarms = rig
        .delivered
        .events
        .iter()
        .filter(|e| matches!(e, Event::Alarm(Alarm::RetiredSessionActive { session: 100, .. })))
        .count();
    assert_eq!(alarms, 1);
    assert_eq!(rig.receiver.stats().drops.get(DropReason::RetiredSession), 2);

    rig.delivered.bytes.remove(&(1, 1));
    rig.delivered.broken.clear();
    rig.feed(0, &new_wire[1..]);
    assert!(rig.delivered.ended_intact(1, 1, &fresh));
    assert_eq!(rig.receiver.session(), Some((200, 3)));
}

#[test]
fn higher_epoch_takes_over_and_lower_epoch_is_stale() {
    let mut a = sender(1, 5, fec(500, 1));
    a.channel(1).datagram(b"from epoch 5").unwrap();
    let a_wire = drain(&mut a);
    let mut b = sender(2, 6, fec(500, 1));
    b.channel(1).datagram(b"from epoch 6").unwrap();
    let b_wire = drain(&mut b);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &b_wire);
    rig.feed(0, &a_wire);
    assert_eq!(rig.receiver.session(), Some((2, 6)));
    assert_eq!(rig.delivered.datagrams[&1], vec![b"from epoch 6".to_vec()]);
    assert_eq!(rig.receiver.stats().drops.get(DropReason::StaleEpoch), a_wire.len() as u64);
}

#[test]
fn source_abort_is_reported_with_its_reason() {
    let mut tx = sender(1, 0, fec(500, 1));
    tx.channel(1).open(4, meta("reset")).unwrap();
    tx.channel(1).data(4, b"partial").unwrap();
    tx.channel(1).abort(4, AbortReason::SourceReset).unwrap();
    let wire = drain(&mut tx);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &wire);
    assert_eq!(rig.delivered.broken[&(1, 4)], BreakReason::SourceAborted(AbortReason::SourceReset));
}

#[test]
fn stream_over_the_size_limit_is_refused() {
    let mut tx = sender(1, 0, fec(500, 1));
    tx.channel(1).open(1, StreamMeta { size: Some(1 << 40), ..meta("huge") }).unwrap();
    tx.channel(1).open(2, meta("grows")).unwrap();
    tx.channel(1).data(2, &payload(12, 20_000)).unwrap();
    let wire = drain(&mut tx);
    let mut rig = Rig::new(ReceiverConfig { max_stream_len: 10_000, ..Rig::config() });
    rig.feed(0, &wire);
    assert_eq!(rig.delivered.broken[&(1, 1)], BreakReason::TooLarge { limit: 10_000 });
    assert_eq!(rig.delivered.broken[&(1, 2)], BreakReason::TooLarge { limit: 10_000 });
}

#[test]
fn too_many_open_streams_are_refused_not_stored() {
    let mut tx = sender(1, 0, fec(500, 1));
    for id in 0..50 {
        tx.channel(1).open(id, meta("flood")).unwrap();
    }
    let wire = drain(&mut tx);
    let mut rig = Rig::new(ReceiverConfig { max_open_streams: 8, ..Rig::config() });
    rig.feed(0, &wire);
    assert_eq!(rig.receiver.open_streams(), 8);
    let refused = rig.delivered.broken.values().filter(|r| **r == BreakReason::TooManyStreams).count();
    assert_eq!(refused, 42);
}

#[test]
fn memory_stays_bounded_under_a_flood_of_partial_blocks() {
    let mut rig =
        Rig::new(ReceiverConfig { max_blocks_in_flight: 32, max_channels: 4, channel_window: 16, ..Rig::config() });
    let fec = fec(500, 1);
    // One symbol of many different blocks and channels: nothing ever completes.
    for channel in 0..10u16 {
        let mut tx = sender(9, 0, fec);
        for _ in 0..40 {
            tx.channel(channel).datagram(&payload(u64::from(channel), 65_000)).unwrap();
        }
        let wire = drain(&mut tx);
        let first_symbols: Vec<_> = wire.iter().filter(|d| is_symbol(d) && header(d).esi == 0).collect();
        rig.feed(0, first_symbols);
        assert!(rig.receiver.blocks_in_flight() <= 32);
    }
    let drops = &rig.receiver.stats().drops;
    assert!(drops.get(DropReason::ChannelLimit) > 0);
    rig.advance(Duration::from_secs(2));
    assert_eq!(rig.receiver.blocks_in_flight(), 0, "every partial block is given up after its deadline");
}

#[test]
fn a_stuck_head_block_is_given_up_when_the_blocks_behind_it_fill_the_byte_budget() {
    let mut tx = sender(1, 0, fec(500, 1));
    for n in 0..40 {
        tx.channel(7).datagram(&payload(n, 65_000)).unwrap();
    }
    let wire = drain(&mut tx);
    // Block 0 loses half its source symbols: it can never complete, and every later block would wait
    // behind it until its deadline.
    let kept: Vec<_> = wire
        .iter()
        .filter(|d| !(is_symbol(d) && header(d).block_seq == 0 && header(d).esi.is_multiple_of(2)))
        .collect();
    let budget = 10 * 80 * 1024;
    let mut rig = Rig::new(ReceiverConfig { max_bytes_in_flight: budget, ..Rig::config() });
    let mut most = 0;
    for datagram in kept {
        rig.feed(0, [datagram]);
        most = most.max(rig.receiver.bytes_in_flight());
    }
    assert!(most <= budget, "held {most} bytes over a budget of {budget}");
    assert!(most > budget / 2, "the later blocks did wait behind the stuck one ({most} bytes)");
    assert!(rig
        .delivered
        .events
        .iter()
        .any(|e| matches!(e, Event::BlocksLost { channel: 7, first: 0, last: 0, reason: LossReason::MemoryLimit })));
    // Given up before its deadline (no time passed), and nothing behind it was lost.
    let delivered = &rig.delivered.datagrams[&7];
    assert_eq!(delivered.len(), 39);
    assert!(delivered.iter().zip(1..).all(|(got, n)| *got == payload(n, 65_000)));
    assert_eq!(rig.receiver.stats().blocks_lost, 1);
    let by_cause: Vec<_> = rig.receiver.stats().blocks_lost_by.iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(by_cause, [("memory_limit", 1)], "counted under its cause");
    assert_eq!(rig.receiver.bytes_in_flight(), 0);
    assert_eq!(rig.receiver.blocks_in_flight(), 0);
}

#[test]
fn beacon_reports_progress_and_fec_parameters() {
    let mut tx = sender(1, 0, fec(500, 2));
    tx.channel(5).datagram(b"x").unwrap();
    let wire = drain(&mut tx);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &wire);
    rig.beacon(&mut tx);
    let beacon = rig.delivered.events.iter().find_map(|e| match e {
        Event::BeaconReceived { beacon, .. } => Some(beacon.clone()),
        _ => None,
    });
    let beacon = beacon.unwrap();
    assert_eq!(beacon.fec, fec(500, 2));
    assert_eq!(beacon.config_fingerprint, [0xAA; 16]);
    let progress: HashMap<u16, u64> = beacon.channels.iter().map(|c| (c.channel, c.blocks_sent)).collect();
    assert_eq!(progress[&5], 1);
}

#[test]
fn a_lower_epoch_takes_over_once_the_higher_epoch_sender_is_silent() {
    let mut dead = sender(1, 9, fec(500, 1));
    dead.channel(1).datagram(b"from the dead node, epoch 9").unwrap();
    let dead_wire = drain(&mut dead);
    let mut survivor = sender(2, 8, fec(500, 1));
    survivor.channel(1).datagram(b"from the survivor, epoch 8").unwrap();
    let survivor_wire = drain(&mut survivor);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &dead_wire);
    // While the epoch-9 session may still be talking, epoch 8 is stale.
    rig.feed(0, &survivor_wire);
    assert_eq!(rig.receiver.session(), Some((1, 9)));
    assert_eq!(rig.receiver.stats().drops.get(DropReason::StaleEpoch), survivor_wire.len() as u64);
    // A second of silence from it: the survivor is followed.
    rig.now += Duration::from_millis(1_100);
    rig.feed(0, &survivor_wire);
    assert_eq!(rig.receiver.session(), Some((2, 8)));
    assert_eq!(
        rig.delivered.datagrams[&1],
        vec![b"from the dead node, epoch 9".to_vec(), b"from the survivor, epoch 8".to_vec()]
    );
}

/// Datagrams as a version-1 sender made them: the same records, sealed with BLAKE3, version byte 1.
fn version_1_wire(data: &[u8]) -> Vec<Vec<u8>> {
    use diode_proto::block::{BlockBuilder, HASH_LEN};
    use diode_proto::fec::BlockEncoder;
    use diode_proto::header::{field, write_datagram, Kind, Packet, Repr, LEGACY_VERSION};
    use diode_proto::LinkAuth;

    let params = fec(500, 1);
    let mut builder = BlockBuilder::new(1, params.max_block_len() - (diode_proto::block::LEGACY_HASH_LEN - HASH_LEN));
    builder.open(7, meta("old")).unwrap();
    builder.data(7, data).unwrap();
    builder.end(7).unwrap();
    builder.flush();
    let mut encoder = BlockEncoder::new(params);
    let mut wire = Vec::new();
    while let Some(block) = builder.pop_sealed() {
        let mut content = block.content[..block.content.len() - HASH_LEN].to_vec();
        let hash = blake3::hash(&content);
        content.extend_from_slice(hash.as_bytes());
        let encoded = encoder.encode(1, block.seq, content);
        for esi in 0..encoded.symbol_count() {
            let repr = Repr {
                kind: Kind::Symbol,
                session: 99,
                epoch: 1,
                channel: 1,
                block_seq: block.seq,
                esi,
                block_len: encoded.block_len,
                payload_len: encoded.symbol_size,
                key_id: None,
                stamped: false,
            };
            let mut datagram = Vec::new();
            write_datagram(&repr, encoded.symbol(esi).unwrap(), &LinkAuth::none(), &mut datagram);
            datagram[field::VERSION] = LEGACY_VERSION;
            Repr::seal(&mut Packet::new_unchecked(&mut datagram[..]), &LinkAuth::none());
            wire.push(datagram);
        }
    }
    wire
}

#[test]
fn a_version_1_sender_is_still_understood() {
    // A RED pair is upgraded before its BLUE pair: for a while the new receiver hears the old sender.
    let data = payload(9, 150_000);
    let wire = version_1_wire(&data);
    let mut rig = Rig::new(Rig::config());
    // Lose a source symbol of every block, so the decoder runs as well as the plain reassembly.
    let kept: Vec<_> = wire.iter().filter(|d| header(d).esi != 1).collect();
    rig.feed(0, kept);
    assert!(rig.delivered.ended_intact(1, 7, &data));
    assert_eq!(rig.receiver.stats().drops.harmful(), 0);
    assert!(rig.receiver.stats().blocks_decoded >= 1);

    // A version-1 datagram whose block was sealed the version-2 way is lost, never misread.
    let mut forged = version_1_wire(b"x");
    let mut rig = Rig::new(Rig::config());
    for datagram in &mut forged {
        datagram[diode_proto::header::field::VERSION] = diode_proto::header::VERSION;
        diode_proto::header::Repr::seal(
            &mut diode_proto::header::Packet::new_unchecked(&mut datagram[..]),
            &diode_proto::LinkAuth::none(),
        );
    }
    rig.feed(0, &forged);
    assert!(!rig.delivered.ended_intact(1, 7, b"x"));
    let hash_mismatches = rig
        .delivered
        .events
        .iter()
        .filter(|e| matches!(e, Event::BlocksLost { reason: LossReason::HashMismatch, .. }))
        .count();
    assert_eq!(hash_mismatches, 1);
}

/// A stream of `len` bytes on channel 1, stream 1, named `name`, as a sender's whole wire.
fn stamped_stream(start_unix_ms: u64, epoch: u32, name: &str, content: &[u8]) -> Vec<Vec<u8>> {
    let mut tx = stamped_sender(start_unix_ms, epoch, fec(500, 2));
    tx.channel(1).open(1, meta(name)).unwrap();
    tx.channel(1).data(1, content).unwrap();
    tx.channel(1).end(1).unwrap();
    tx.channel(2).datagram(name.as_bytes()).unwrap();
    drain(&mut tx)
}

#[test]
fn a_replayed_older_session_during_a_live_transfer_delivers_nothing_and_retires_nothing() {
    let recorded = stamped_stream(1_000_000, 4, "recorded earlier", &payload(1, 200_000));
    let fresh = payload(2, 300_000);
    let live = stamped_stream(2_000_000, 4, "live", &fresh);
    let mut rig = Rig::new(Rig::config());
    let half = live.len() / 2;
    rig.feed(0, &live[..half]);
    // The whole recording, in order, in the middle of the live transfer.
    rig.feed(1, &recorded);
    rig.feed(0, &live[half..]);
    assert!(rig.delivered.ended_intact(1, 1, &fresh), "the live stream arrives intact");
    assert_eq!(rig.delivered.names.values().collect::<Vec<_>>(), vec!["live"], "nothing old is opened");
    assert_eq!(rig.delivered.datagrams[&2], vec![b"live".to_vec()], "no old datagram is delivered");
    assert_eq!(rig.receiver.stats().drops.get(DropReason::StaleSession), recorded.len() as u64);
    assert_eq!(rig.receiver.stats().sessions, 1, "the live session was never replaced");
    let stale = rig.receiver.stale_sender(rig.now).expect("the alarm is raised");
    assert_eq!((stale.session, stale.epoch), (diode_proto::header::stamped_session(1_000_000, 7), 4));
    let alarms = rig.delivered.events.iter().filter(|e| matches!(e, Event::Alarm(Alarm::StaleSessionRefused { .. })));
    assert_eq!(alarms.count(), 1, "one alarm event per refused sender");
    // The alarm holds while the replay goes on, and clears once it stops.
    rig.now += Duration::from_secs(20);
    rig.feed(1, &recorded[..1]);
    rig.now += Duration::from_secs(20);
    assert!(rig.receiver.stale_sender(rig.now).is_some());
    rig.now += diode_proto::receiver::STALE_ALARM_HOLD;
    assert!(rig.receiver.stale_sender(rig.now).is_none());
}

#[test]
fn a_replay_of_the_live_session_delivers_nothing_twice() {
    let fresh = payload(3, 150_000);
    let live = stamped_stream(5_000_000, 4, "once", &fresh);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &live);
    assert!(rig.delivered.ended_intact(1, 1, &fresh));
    let opened = rig.delivered.events.iter().filter(|e| matches!(e, Event::StreamOpened { .. })).count();
    rig.feed(1, &live);
    rig.advance(Duration::from_secs(3));
    let reopened = rig.delivered.events.iter().filter(|e| matches!(e, Event::StreamOpened { .. })).count();
    assert_eq!((opened, reopened), (1, 1));
    assert_eq!(rig.delivered.datagrams[&2].len(), 1);
    assert_eq!(rig.receiver.stats().sessions, 1);
}

#[test]
fn sessions_are_ordered_by_epoch_then_start_stamp() {
    let at = |start: u64, epoch: u32| {
        let mut tx = stamped_sender(start, epoch, fec(500, 2));
        tx.channel(2).datagram(b"x").unwrap();
        drain(&mut tx)
    };
    let id = |start: u64| diode_proto::header::stamped_session(start, 7);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &at(2_000, 4)[..1]);
    // A restart at the same epoch starts later: it replaces.
    rig.feed(0, &at(3_000, 4)[..1]);
    assert_eq!(rig.receiver.session(), Some((id(3_000), 4)));
    // An older release's random id at the same epoch may be a recording: refused.
    let mut legacy = sender(u64::MAX, 4, fec(500, 2));
    legacy.channel(2).datagram(b"legacy").unwrap();
    rig.feed(0, &drain(&mut legacy));
    assert_eq!(rig.receiver.session(), Some((id(3_000), 4)));
    // A takeover raises the epoch: it replaces whatever its clock says.
    rig.feed(0, &at(1_000, 5)[..1]);
    assert_eq!(rig.receiver.session(), Some((id(1_000), 5)));
    // A lower epoch, once the live session is silent, only with a later start.
    rig.now += Duration::from_secs(2);
    rig.feed(0, &at(500, 4)[..1]);
    assert_eq!(rig.receiver.session(), Some((id(1_000), 5)));
    rig.feed(0, &at(9_000, 4)[..1]);
    assert_eq!(rig.receiver.session(), Some((id(9_000), 4)));
    assert!(rig.receiver.stats().drops.get(DropReason::StaleSession) >= 2);
}

#[test]
fn a_zero_length_datagram_is_delivered_as_one() {
    let mut tx = sender(9, 1, fec(500, 1));
    tx.channel(2).datagram(b"").unwrap();
    tx.channel(2).datagram(b"after").unwrap();
    let wire = drain(&mut tx);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &wire);
    assert_eq!(rig.delivered.datagrams[&2], vec![Vec::new(), b"after".to_vec()]);
}

/// Three small files on channel 1, one block each (blocks 0, 1 and 2), their manifest entries, and
/// the wire without the block (if any) the link swallows whole.
fn three_files_and_their_manifest(lost_block: Option<u64>) -> (Sender, Vec<Vec<u8>>, Vec<u8>) {
    let mut tx = sender(1, 0, fec(1000, 1));
    let mut entries = Vec::new();
    for stream in 1..=3u64 {
        let name = format!("plant/report-{stream}.dat");
        let file_meta = StreamMeta { size: Some(300), file_id: Some([stream as u8; 16]), ..meta(&name) };
        tx.channel(1).open(stream, file_meta).unwrap();
        tx.channel(1).data(stream, &payload(stream, 300)).unwrap();
        let summary = tx.channel(1).end(stream).unwrap();
        entries.push(ManifestEntry::new(stream, summary.end_seq, 300, [stream as u8; 16], &name));
        tx.channel(1).flush();
    }
    let wire: Vec<Vec<u8>> =
        drain(&mut tx).into_iter().filter(|d| Some(header(d).block_seq) != lost_block || !is_symbol(d)).collect();
    let mut manifest = Vec::new();
    tx.manifest(1, &Manifest { entries }, &mut manifest);
    (tx, wire, manifest)
}

#[test]
fn a_file_whose_only_block_was_lost_is_named_by_the_manifest_once() {
    let (mut tx, wire, manifest) = three_files_and_their_manifest(Some(1));
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &wire);
    rig.beacon(&mut tx);
    rig.advance(Duration::from_secs(1));
    for _ in 0..3 {
        rig.feed(0, [&manifest]);
    }
    let never: Vec<_> = rig
        .delivered
        .events
        .iter()
        .filter_map(|e| match e {
            Event::StreamNeverArrived { channel, entry } => Some((*channel, entry.stream, entry.name.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(never, vec![(1, 2, "plant/report-2.dat".to_string())], "named once, by its own name");
    assert!(rig.delivered.ended_intact(1, 1, &payload(1, 300)));
    assert!(rig.delivered.ended_intact(1, 3, &payload(3, 300)));
}

#[test]
fn a_manifest_names_nothing_that_arrived_is_still_coming_or_ended_before_the_receiver_joined() {
    // Everything arrived: nothing to name.
    let (mut tx, wire, manifest) = three_files_and_their_manifest(None);
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &wire);
    rig.feed(0, [&manifest]);
    assert!(!rig.delivered.events.iter().any(|e| matches!(e, Event::StreamNeverArrived { .. })));

    // The manifest comes before the blocks it names: they may still arrive, so it waits.
    let mut early = Rig::new(Rig::config());
    early.feed(0, [&manifest]);
    early.feed(0, &wire);
    assert!(!early.delivered.events.iter().any(|e| matches!(e, Event::StreamNeverArrived { .. })));
    assert_eq!(early.delivered.ended.len(), 3);

    // A receiver that joined after these files (a restart mid-session) says nothing of them.
    let mut late = Rig::new(ReceiverConfig { join_slack: 0, ..Rig::config() });
    tx.channel(1).datagram(b"after the files").unwrap();
    late.feed(0, &drain(&mut tx));
    late.feed(0, [&manifest]);
    assert!(!late.delivered.events.iter().any(|e| matches!(e, Event::StreamNeverArrived { .. })));
    assert_eq!(late.delivered.datagrams[&1], vec![b"after the files".to_vec()]);
}

#[test]
fn a_malformed_manifest_is_dropped_and_changes_nothing() {
    use diode_proto::header::{write_datagram, Kind, Repr};
    let (_, wire, _) = three_files_and_their_manifest(Some(1));
    let mut rig = Rig::new(Rig::config());
    rig.feed(0, &wire);
    rig.advance(Duration::from_secs(1));
    // An authentic header around a body that claims one entry and holds half of one.
    let auth = diode_proto::LinkAuth::none();
    let body = [0u8, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0];
    let repr = Repr::control(Kind::Manifest, 1, 1, 0, false, &auth, &body);
    let mut damaged = Vec::new();
    write_datagram(&repr, &body, &auth, &mut damaged);
    assert_eq!(rig.receiver.handle_datagram(rig.now, 0, &damaged), Err(DropReason::BadManifest));
    rig.delivered.absorb(&mut rig.receiver);
    assert!(!rig.delivered.events.iter().any(|e| matches!(e, Event::StreamNeverArrived { .. })));
    assert_eq!(rig.receiver.stats().drops.get(DropReason::BadManifest), 1);
}
