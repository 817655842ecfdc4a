//! The state files red-rx reads back at start (delivery announcements in `.part/`, ledger lines) are
//! hostile until checked: any bytes are refused or accepted without panicking, and an accepted
//! announcement names only its own part file, with a name that sanitises.
#![no_main]

use std::path::Path;

use connectors::filesink::check_ready_note;
use connectors::ledger::LedgerEntry;
use connectors::names::sanitize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let part_dir = Path::new("/srv/out/.part");
    // The first line picks the note's file name, the rest is its content.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let note_name = String::from_utf8_lossy(&data[..split]);
    let body = data.get(split + 1..).unwrap_or_default();
    for name in [note_name.as_ref(), "0000000000000001-2-3.ready.json"] {
        if let Ok(ready) = check_ready_note(body, name, part_dir) {
            assert_eq!(ready.part.parent(), Some(part_dir));
            assert!(ready.part.file_name().is_some_and(|n| n.to_string_lossy().ends_with(".part")));
            assert!(sanitize(&ready.name).is_ok());
            assert!(ready.entry.is_well_formed());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        for line in text.lines() {
            if let Some(entry) = LedgerEntry::parse_line(line) {
                assert!(entry.is_well_formed());
                assert!(!entry.id.contains(['/', '.']));
            }
        }
    }
});
