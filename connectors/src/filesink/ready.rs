//! Delivery announcements (`.part/<stem>.ready.json`): what a verified file will be placed as, and
//! the checks an announcement read back at start must pass before anything is linked or served.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::ledger::LedgerEntry;
use crate::names::{sanitize, NameError};

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

/// Why an announcement read back at start is not acted on (it is quarantined with this reason).
#[derive(Debug, thiserror::Error)]
pub enum NoteRefused {
    #[error("'{0}' is not a name this node gives announcements")]
    ForeignName(String),
    #[error("not an announcement: {0}")]
    NotAnAnnouncement(#[from] serde_json::Error),
    #[error("it names {named} instead of its own part file {own}")]
    OtherPart { named: PathBuf, own: PathBuf },
    #[error("its ledger id or BLAKE3 is not of the form this node writes")]
    MalformedEntry,
    #[error("its name is refused: {0}")]
    Name(#[from] NameError),
    #[error("cannot read it: {0}")]
    Unreadable(#[source] std::io::Error),
    #[error("not a regular file of at most 64 KiB")]
    NotARegularFile,
    #[error("its part file: {0}")]
    PartUnreadable(#[source] std::io::Error),
    #[error("its part file is not a regular file")]
    PartNotARegularFile,
    #[error("its part file has other hard links")]
    PartLinked,
    #[error("its part file does not have the announced length and BLAKE3")]
    PartDiffers,
}

/// Checks an announcement read back from the part folder without touching the file system: it must
/// have the name this sink gives announcements, name the part file beside it (nothing else anywhere),
/// a ledger id and a BLAKE3 of the expected form, and a name that would be accepted.
pub fn check_ready_note(bytes: &[u8], note_name: &str, part_dir: &Path) -> Result<Ready, NoteRefused> {
    let stem = note_name
        .strip_suffix(".ready.json")
        .filter(|stem| is_part_stem(stem))
        .ok_or_else(|| NoteRefused::ForeignName(note_name.to_string()))?;
    let ready: Ready = serde_json::from_slice(bytes)?;
    let own = part_dir.join(format!("{stem}.part"));
    if ready.part != own {
        return Err(NoteRefused::OtherPart { named: ready.part, own });
    }
    if !ready.entry.is_well_formed() || ready.entry.blake3.is_empty() {
        return Err(NoteRefused::MalformedEntry);
    }
    sanitize(&ready.name)?;
    Ok(ready)
}

/// Reads an announcement and its part file: both must be regular files of this folder (no link of any
/// kind), and the part must have the announced length and BLAKE3 before anything is placed from it.
pub(super) fn load_ready_note(note: &Path, note_name: &str, part_dir: &Path) -> Result<Ready, NoteRefused> {
    let meta = std::fs::symlink_metadata(note).map_err(NoteRefused::Unreadable)?;
    if !meta.file_type().is_file() || meta.len() > MAX_READY_NOTE {
        return Err(NoteRefused::NotARegularFile);
    }
    let bytes = std::fs::read(note).map_err(NoteRefused::Unreadable)?;
    let ready = check_ready_note(&bytes, note_name, part_dir)?;
    let part = std::fs::symlink_metadata(&ready.part).map_err(NoteRefused::PartUnreadable)?;
    if !part.file_type().is_file() {
        return Err(NoteRefused::PartNotARegularFile);
    }
    if std::os::unix::fs::MetadataExt::nlink(&part) != 1 {
        return Err(NoteRefused::PartLinked);
    }
    let mut hash = [0u8; 32];
    if let Ok(bytes) = hex::decode(&ready.entry.blake3) {
        hash.copy_from_slice(&bytes);
    }
    if !same_content(&ready.part, ready.entry.size, &hash) {
        return Err(NoteRefused::PartDiffers);
    }
    Ok(ready)
}
