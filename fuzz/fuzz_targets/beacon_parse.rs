//! Any bytes as a beacon body: parsing never panics, and a parsed beacon re-emits identically.
#![no_main]

use diode_proto::Beacon;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(beacon) = Beacon::parse(data) {
        let mut out = Vec::new();
        beacon.emit(&mut out);
        assert!(out == data, "a parsed beacon must re-emit byte for byte");
    }
});
