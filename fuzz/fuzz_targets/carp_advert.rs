//! Bytes off the data network as CARP adverts, fed to the election: parsing never panics, only adverts
//! under the right key are accepted, and the state machine survives any sequence of them (from two
//! sources, with time moving on) with its invariants: it acts only through its actions, and a node in
//! any state still answers its timers.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ha_carp::advert::{Advert, AdvertKey};
use ha_carp::machine::{Carp, CarpConfig, Command};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = AdvertKey::new(b"fuzz-secret", 7, [198, 18, 0, 100]).expect("valid key");
    let config = CarpConfig {
        vhid: 7,
        interval: Duration::from_millis(200),
        skew: 10,
        preempt: data.first().is_some_and(|b| b & 1 == 1),
        address: Ipv4Addr::new(198, 18, 0, 11),
    };
    let mut carp = Carp::new(config, 1).expect("valid config");
    let start = Instant::now();
    carp.start(start);
    // Each record: 1 byte of control (source, TTL, time step, command), then 36 bytes of advert.
    for (step, record) in data.chunks(37).enumerate() {
        let (control, bytes) = (record[0], &record[1..]);
        let now = start + Duration::from_millis(step as u64 * u64::from(control >> 4) * 20);
        let ttl = if control & 0x02 != 0 { Some(255) } else { Some(control) };
        let source = if control & 0x04 != 0 { Ipv4Addr::new(198, 18, 0, 12) } else { Ipv4Addr::new(198, 18, 0, 11) };
        match Advert::parse(bytes, ttl, &key) {
            Ok(advert) => {
                // Accepted adverts re-emit identically: the parse and the HMAC agree.
                assert_eq!(&advert.emit(&key)[..], bytes);
                let _ = carp.handle_advert(now, source, &advert);
            }
            Err(reason) => carp.record_ignored(reason),
        }
        match control & 0x18 {
            0x08 => {
                let _ = carp.handle_command(now, Command::Demote);
            }
            0x10 => {
                let _ = carp.handle_command(now, Command::Promote);
            }
            0x18 => {
                let _ = carp.handle_command(now, Command::HoldPreemption(control & 0x20 != 0));
            }
            _ => {}
        }
        carp.handle_timeout(now);
        while carp.poll_action().is_some() {}
        assert!(carp.poll_timeout().is_some(), "an elected node always has a timer running");
    }
});
