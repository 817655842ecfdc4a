//! The test vectors of docs/PROTOCOL.md, checked byte for byte against what this code emits.
//!
//! Each vector in the document follows a line `<!-- vector: NAME -->` as a fenced block of hex. The
//! inputs of each vector are spelled out both here and in the document's prose.

#![allow(clippy::unwrap_used, clippy::panic)]

use diode_proto::beacon::{Beacon, ChannelProgress, FiberMode, SenderState};
use diode_proto::header::{write_datagram, Kind, Packet, Repr};
use diode_proto::record::{Record, StreamMeta};
use diode_proto::{FecParams, LinkAuth, LinkKey};

const SESSION: u64 = 0x0102_0304_0506_0708;

fn symbol_datagram(auth: &LinkAuth) -> Vec<u8> {
    let repr = Repr {
        kind: Kind::Symbol,
        session: SESSION,
        epoch: 9,
        channel: 3,
        block_seq: 42,
        esi: 5,
        block_len: 1000,
        payload_len: 16,
        key_id: auth.send_key_id(),
        stamped: false,
    };
    let payload: Vec<u8> = (0..16).collect();
    let mut out = Vec::new();
    write_datagram(&repr, &payload, auth, &mut out);
    out
}

fn beacon_datagram() -> Vec<u8> {
    let beacon = Beacon {
        timestamp_us: 1_700_000_000_000_000,
        state: SenderState::Active,
        fiber_mode: FiberMode::Mirror,
        fec: FecParams { symbol_size: 1416, max_block_symbols: 64, repair_basis_points: 500, interleave_depth: 8 },
        interval_ms: 100,
        config_fingerprint: [0x11; 16],
        channels: vec![ChannelProgress { channel: 1, blocks_sent: 10 }, ChannelProgress { channel: 2, blocks_sent: 0 }],
    };
    let mut body = Vec::new();
    beacon.emit(&mut body);
    let repr = Repr {
        kind: Kind::Beacon,
        session: SESSION,
        epoch: 9,
        channel: 0,
        block_seq: 0,
        esi: 0,
        block_len: 0,
        payload_len: body.len() as u16,
        key_id: None,
        stamped: false,
    };
    let mut out = Vec::new();
    write_datagram(&repr, &body, &LinkAuth::none(), &mut out);
    out
}

fn block_content() -> Vec<u8> {
    let meta = StreamMeta {
        peer: "127.0.0.1:5000".into(),
        name: "a.txt".into(),
        size: Some(5),
        mtime: Some((1_700_000_000, 0)),
        file_id: None,
    };
    let hash = *blake3::hash(b"hello").as_bytes();
    let mut body = Vec::new();
    for record in [
        Record::Open { stream: 1, meta },
        Record::Data { stream: 1, prev: 0, offset: 0, bytes: b"hello" },
        Record::End { stream: 1, prev: 0, total_len: 5, hash },
    ] {
        record.emit(&mut body);
    }
    diode_proto::block::seal(body)
}

fn tagged_auth() -> LinkAuth {
    LinkAuth::keyed(vec![LinkKey { id: 1, key: [0x42; 32] }], 1).unwrap()
}

fn documented(name: &str) -> Option<Vec<u8>> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md")).unwrap();
    let marker = format!("<!-- vector: {name} -->");
    let start = doc.find(&marker)?;
    let block = &doc[start + marker.len()..];
    let open = block.find("```hex")? + "```hex".len();
    let close = block[open..].find("```")?;
    let hex: String = block[open..open + close].chars().filter(char::is_ascii_hexdigit).collect();
    hex::decode(hex).ok()
}

fn check(name: &str, emitted: &[u8]) {
    let expected = documented(name);
    assert!(
        expected.as_deref() == Some(emitted),
        "vector {name} differs from the code; the code emits:\n{}",
        hex::encode(emitted)
    );
}

#[test]
fn symbol_datagram_matches_the_spec() {
    let bytes = symbol_datagram(&LinkAuth::none());
    check("symbol-datagram", &bytes);
    let repr = Repr::parse(&Packet::new_checked(&bytes[..]).unwrap(), &LinkAuth::none()).unwrap();
    assert_eq!((repr.block_seq, repr.esi, repr.source_symbols()), (42, 5, 63));
}

#[test]
fn beacon_datagram_matches_the_spec() {
    check("beacon-datagram", &beacon_datagram());
}

#[test]
fn block_content_matches_the_spec() {
    check("block-content", &block_content());
}

#[test]
fn tagged_symbol_datagram_matches_the_spec() {
    let bytes = symbol_datagram(&tagged_auth());
    check("tagged-symbol-datagram", &bytes);
    assert!(Repr::parse(&Packet::new_checked(&bytes[..]).unwrap(), &tagged_auth()).is_ok());
}
