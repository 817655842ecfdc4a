//! Delivery announcements (`.part/<stem>.ready.json`): what a verified file will be placed as, and
//! the checks an announcement read back at start must pass before anything is linked or served.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ledger::LedgerEntry;
use crate::names::sanitize;

use super::same_content;

/// A verified file ready to be placed (or held in shadow), and the ledger line it will get. On disk
/// (`.part/<stem>.ready.json`) it is the announcement a restart finishes; read back, it is trusted only
/// after [`check_ready_note`] and [`load_ready_note`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    pub entry: LedgerEntry,
    /// The name as sent (sanitised again when placed).
    pub name: String,
    pub part: PathBuf,
}

pub(super) fn ready_note(part: &Path) -> PathBuf {
    part.with_extension("ready.json")
}

/// Largest announcement read back (a real one is a few hundred bytes).
pub(super) const MAX_READY_NOTE: u64 = 64 * 1024;

/// Whether `stem` is one this sink gives part files: `<session hex16>-<epoch>-<stream>`.
pub(super) fn is_part_stem(stem: &str) -> bool {
    let mut fields = stem.split('-');
    let (Some(session), Some(epoch), Some(stream), None) = (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    session.len() == 16
        && session.bytes().all(|b| b.is_ascii_hexdigit())
        && !epoch.is_empty()
        && epoch.len() <= 10
        && epoch.bytes().all(|b| b.is_ascii_digit())
        && !stream.is_empty()
        && stream.len() <= 20
        && stream.bytes().all(|b| b.is_ascii_digit())
}

/// Checks an announcement read back from the part folder without touching the file system: it must
/// have the name this sink gives announcements, name the part file beside it (nothing else anywhere),
/// a ledger id and a BLAKE3 of the expected form, and a name that would be accepted.
pub fn check_ready_note(bytes: &[u8], note_name: &str, part_dir: &Path) -> Result<Ready, String> {
    let stem = note_name
        .strip_suffix(".ready.json")
        .filter(|stem| is_part_stem(stem))
        .ok_or_else(|| format!("'{note_name}' is not a name this node gives announcements"))?;
    let ready: Ready = serde_json::from_slice(bytes).map_err(|e| format!("not an announcement: {e}"))?;
    let expected = part_dir.join(format!("{stem}.part"));
    if ready.part != expected {
        return Err(format!("it names {} instead of its own part file {}", ready.part.display(), expected.display()));
    }
    if !ready.entry.is_well_formed() || ready.entry.blake3.is_empty() {
        return Err("its ledger id or BLAKE3 is not of the form this node writes".into());
    }
    sanitize(&ready.name).map_err(|e| format!("its name is refused: {e}"))?;
    Ok(ready)
}

/// Reads an announcement and its part file: both must be regular files of this folder (no link of any
/// kind), and the part must have the announced length and BLAKE3 before anything is placed from it.
pub(super) fn load_ready_note(note: &Path, note_name: &str, part_dir: &Path) -> Result<Ready, String> {
    let meta = std::fs::symlink_metadata(note).map_err(|e| format!("cannot read it: {e}"))?;
    if !meta.file_type().is_file() || meta.len() > MAX_READY_NOTE {
        return Err("not a regular file of at most 64 KiB".into());
    }
    let bytes = std::fs::read(note).map_err(|e| format!("cannot read it: {e}"))?;
    let ready = check_ready_note(&bytes, note_name, part_dir)?;
    let part = std::fs::symlink_metadata(&ready.part).map_err(|e| format!("its part file: {e}"))?;
    if !part.file_type().is_file() {
        return Err("its part file is not a regular file".into());
    }
    if std::os::unix::fs::MetadataExt::nlink(&part) != 1 {
        return Err("its part file has other hard links".into());
    }
    let mut hash = [0u8; 32];
    if let Ok(bytes) = hex::decode(&ready.entry.blake3) {
        hash.copy_from_slice(&bytes);
    }
    if !same_content(&ready.part, ready.entry.size, &hash) {
        return Err("its part file does not have the announced length and BLAKE3".into());
    }
    Ok(ready)
}
