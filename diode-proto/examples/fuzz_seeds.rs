//! Writes the seed corpus of the fuzz targets (fuzz/corpus/<target>/seed-*) from real protocol output.
//!
//! `cargo run -p diode-proto --example fuzz_seeds -- fuzz/corpus`

use std::path::{Path, PathBuf};

use diode_proto::beacon::SenderState;
use diode_proto::header::Packet;
use diode_proto::{AbortReason, FecParams, FiberMode, LinkAuth, Sender, SenderConfig, StreamMeta};

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let folder = dir.join(target);
    std::fs::create_dir_all(&folder)?;
    std::fs::write(folder.join(format!("seed-{name}")), bytes)
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into()));
    let fec = FecParams { symbol_size: 256, max_block_symbols: 300, repair_basis_points: 1000, interleave_depth: 2 };
    let mut sender = Sender::new(SenderConfig {
        session: 77,
        stamped: false,
        epoch: 1,
        fec,
        auth: LinkAuth::none(),
        fiber_mode: FiberMode::Mirror,
        config_fingerprint: [3; 16],
        beacon_interval_ms: 100,
    });
    let channel = sender.channel(1);
    let meta = StreamMeta {
        peer: "127.0.0.1:1".into(),
        name: "dir/file.bin".into(),
        size: Some(3000),
        mtime: Some((1, 2)),
        file_id: Some([7; 16]),
    };
    let ok =
        channel.open(1, meta).and_then(|()| channel.data(1, &[0x5A; 3000])).and_then(|()| channel.end(1).map(|_| ()));
    let aborted = channel
        .open(2, StreamMeta::default())
        .and_then(|()| channel.data(2, b"partial"))
        .and_then(|()| channel.abort(2, AbortReason::SourceTimeout));
    let datagrams = channel.datagram(b"udp payload");
    if let Err(error) = ok.and(aborted).and(datagrams) {
        eprintln!("building the seed streams failed: {error}");
        std::process::exit(1);
    }
    sender.channel(1).flush();
    for block in std::iter::from_fn(|| sender.channel(1).pop_sealed()).collect::<Vec<_>>() {
        let body = &block.content[..block.content.len() - diode_proto::block::HASH_LEN];
        write(&dir, "record_decode", &format!("block{}", block.seq), body)?;
    }

    // Rebuild the same wire (the blocks above were consumed) for the datagram-level targets.
    let mut sender = Sender::new(sender.config().clone());
    let channel = sender.channel(1);
    let _ = channel.open(1, StreamMeta { name: "f".into(), ..StreamMeta::default() });
    let _ = channel.data(1, &[7; 1500]);
    let _ = channel.end(1);
    sender.flush();
    let mut framed = Vec::new();
    let mut buf = Vec::new();
    sender.beacon(1_700_000_000_000_000, SenderState::Active, &mut buf);
    write(&dir, "datagram_parse", "beacon", &buf)?;
    if let Ok(packet) = Packet::new_checked(&buf[..]) {
        write(&dir, "beacon_parse", "body", packet.payload())?;
    }
    let mut frame = |datagram: &[u8], fiber: u8| {
        framed.extend_from_slice(&(datagram.len() as u16).to_be_bytes());
        framed.push(fiber);
        framed.push(1);
        framed.extend_from_slice(datagram);
    };
    frame(&buf, 0);
    let mut index = 0;
    while sender.poll_datagram(true, &mut buf) {
        if index < 2 {
            write(&dir, "datagram_parse", &format!("symbol{index}"), &buf)?;
        }
        // Lose one symbol in the seed so the decoder path is explored too.
        if index != 1 {
            frame(&buf, (index % 2) as u8);
        }
        index += 1;
    }
    write(&dir, "receiver", "transfer", &framed)
}
