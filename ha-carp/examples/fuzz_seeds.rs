//! Writes the seed corpus of the `carp_advert` fuzz target: records of one control byte and a real
//! advert under the target's key (an active node, a backup, a demoted one, and one with a wrong key).
//!
//! `cargo run -p ha-carp --example fuzz_seeds -- fuzz/corpus`

use std::path::PathBuf;

use ha_carp::advert::{Advert, AdvertKey};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "fuzz/corpus".into())).join("carp_advert");
    std::fs::create_dir_all(&dir)?;
    let key = AdvertKey::new(b"fuzz-secret", 7, [198, 18, 0, 100])?;
    let wrong = AdvertKey::new(b"not-the-secret", 7, [198, 18, 0, 100])?;
    let advert = |advskew: u8, demote: u8, counter: u64| Advert { vhid: 7, advbase: 0, advskew, demote, counter };
    // Control bytes: bit 1 TTL 255, bit 2 from the peer, bits 3-4 a command, high nibble the time step.
    // (control byte, advert, key it is signed with), in the order the target reads them.
    type Record<'a> = (u8, Advert, &'a AdvertKey);
    let records: [(&str, Vec<Record>); 3] = [
        (
            "peer-better",
            vec![(0x16, advert(0, 0, 1), &key), (0x16, advert(0, 0, 2), &key), (0x16, advert(0, 0, 3), &key)],
        ),
        ("peer-demoted", vec![(0x26, advert(20, 128, 10), &key), (0x2e, advert(20, 128, 11), &key)]),
        (
            "wrong-key-and-replay",
            vec![(0x16, advert(0, 0, 5), &wrong), (0x16, advert(0, 0, 5), &key), (0x16, advert(0, 0, 5), &key)],
        ),
    ];
    for (name, sequence) in records {
        let mut bytes = Vec::new();
        for (control, advert, key) in sequence {
            bytes.push(control);
            bytes.extend_from_slice(&advert.emit(key));
        }
        std::fs::write(dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
