//! What an active peer can push over the pair channel: any frame body is parsed as a message without
//! panicking, and any configuration it carries, merged into this node's, leaves this node's local
//! settings exactly as they were.
#![no_main]

use ha_carp::pair::PairMessage;
use ha_carp::pair::{merge, LOCAL_SECTIONS};
use libfuzzer_sys::fuzz_target;

const OWN: &str = r#"
[node]
name = "blue2"
[ha]
vhid = 9
skew = 20
[management]
listen = "198.18.1.22:9443"
[pair]
listen = "198.18.1.12:7400"
peer = "198.18.1.11:7400"
[[fiber]]
remote = "198.18.3.2:7000"
[[channel]]
number = 3
kind = "files"
name = "reports"
spool = "/var/lib/diode/spool"
"#;

fuzz_target!(|data: &[u8]| {
    let toml = match serde_json::from_slice::<PairMessage>(data) {
        Ok(PairMessage::Config { toml }) => toml,
        Ok(_) => return,
        // Raw text too: most inputs are not JSON, and the merge is the part worth exploring.
        Err(_) => match std::str::from_utf8(data) {
            Ok(text) => text.to_string(),
            Err(_) => return,
        },
    };
    let Ok(merged) = merge(&toml, OWN) else { return };
    let merged: toml::Table = merged.parse().expect("a merge always writes valid TOML");
    let own: toml::Table = OWN.parse().expect("the fixture parses");
    for section in LOCAL_SECTIONS {
        assert_eq!(merged.get(*section), own.get(*section), "[{section}] changed by a replicated configuration");
    }
});
