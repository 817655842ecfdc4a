//! Configuration files as text: both daemons' parsers and checks never panic on any input, and a
//! configuration they accept passes the check again (the checks are deterministic).
#![no_main]

use std::path::Path;

use connectors::config::parse_toml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("fuzz.toml");
    if let Ok(config) = parse_toml::<blue_tx::config::BlueConfig>(path, text) {
        if blue_tx::config::check(path, config).is_ok() {
            let again = parse_toml::<blue_tx::config::BlueConfig>(path, text).expect("parsed once");
            assert!(blue_tx::config::check(path, again).is_ok());
        }
    }
    if let Ok(config) = parse_toml::<red_rx::config::RedConfig>(path, text) {
        let _ = red_rx::config::check(path, config);
    }
});
