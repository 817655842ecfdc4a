//! The receiver fed a sequence of datagrams: the input is split into datagrams by a length prefix,
//! each with a fiber index and a clock step. The receiver must never panic, never hold more blocks
//! than configured, and never end a stream whose bytes do not hash to what it announced.
#![no_main]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diode_proto::{Event, Receiver, ReceiverConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let config = ReceiverConfig {
        max_blocks_in_flight: 16,
        channel_window: 8,
        max_channels: 4,
        max_open_streams: 8,
        max_block_len: 1 << 20,
        // Four of the largest blocks: headers that claim large blocks reach the byte budget quickly.
        max_bytes_in_flight: 4 << 20,
        ..ReceiverConfig::default()
    };
    let mut receiver = Receiver::new(config);
    let mut now = Instant::now();
    let mut hashers: HashMap<(u16, u64), blake3::Hasher> = HashMap::new();
    let mut rest = data;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let fiber = rest[2] & 3;
        now += Duration::from_millis(u64::from(rest[3]) * 4);
        rest = &rest[4..];
        let take = len.min(rest.len());
        let (datagram, tail) = rest.split_at(take);
        rest = tail;
        receiver.handle_timeout(now);
        let _ = receiver.handle_datagram(now, fiber, datagram);
        assert!(receiver.blocks_in_flight() <= 16);
        assert!(receiver.bytes_in_flight() <= 4 << 20);
        while let Some(event) = receiver.poll_event() {
            match event {
                Event::StreamOpened { channel, stream, .. } => {
                    hashers.insert((channel, stream), blake3::Hasher::new());
                }
                Event::StreamData { channel, stream, data, .. } => {
                    hashers.get_mut(&(channel, stream)).expect("data only for open streams").update(&data);
                }
                Event::StreamEnded { channel, stream, hash, .. } => {
                    let hasher = hashers.remove(&(channel, stream)).expect("end only for open streams");
                    assert_eq!(hasher.finalize().as_bytes(), &hash);
                }
                _ => {}
            }
        }
    }
});
