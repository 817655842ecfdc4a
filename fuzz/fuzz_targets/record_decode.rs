//! Any bytes as a block body: record parsing never panics, and parsed records re-emit identically.
#![no_main]

use diode_proto::record::RecordReader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = Vec::new();
    let mut consumed_all = true;
    for record in RecordReader::new(data) {
        match record {
            Ok(record) => record.emit(&mut out),
            Err(_) => {
                consumed_all = false;
                break;
            }
        }
    }
    if consumed_all {
        assert!(out == data, "valid records must re-emit byte for byte");
    } else {
        assert!(data.starts_with(&out));
    }
});
