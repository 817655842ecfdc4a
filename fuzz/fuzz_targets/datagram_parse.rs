//! Any bytes as a datagram: parsing never panics, and whatever parses re-emits to the same bytes.
#![no_main]

use diode_proto::header::{write_datagram, Packet, Repr};
use diode_proto::LinkAuth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let auth = LinkAuth::none();
    let Ok(packet) = Packet::new_checked(data) else { return };
    let Ok(repr) = Repr::parse(&packet, &auth) else { return };
    let mut out = Vec::new();
    write_datagram(&repr, packet.payload(), &auth, &mut out);
    assert!(out == data, "a parsed datagram must re-emit byte for byte");
});
