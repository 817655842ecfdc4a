//! Manifests: which files a channel has just sent, repeated on the beacon timer.
//!
//! A file small enough to fit in one block disappears without a trace when that block is lost: the
//! receiver never saw its open record, so it cannot say which file it missed. Shortly after each file's
//! last block has gone out, the sender repeats a manifest entry naming it; once the receiver's
//! channel has passed that block (delivered or given up) and it never heard of the stream, it reports
//! the file as never arrived, by name.
//!
//! ```text
//!  0  entry count u16
//!  2  count x (stream u64 | end block u64 | size u64 | file id [16] | name length u16 | name)
//! ```
//!
//! The datagram's header carries the channel (block sequence, payload id and block length are zero).
//! The name is UTF-8, cut to [`MAX_NAME_LEN`] bytes by the sender; it is for the report only.

use crate::record::FILE_ID_LEN;
use crate::wire::{Reader, WireError};

/// Longest name a manifest entry carries (longer names are cut at a character boundary).
pub const MAX_NAME_LEN: usize = 200;
const ENTRY_FIXED_LEN: usize = 8 + 8 + 8 + FILE_ID_LEN + 2;

/// One file the sender has finished sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    pub stream: u64,
    /// The channel block that carried the stream's end record.
    pub end_seq: u64,
    pub size: u64,
    pub file_id: [u8; FILE_ID_LEN],
    pub name: String,
}

impl ManifestEntry {
    /// An entry whose name is cut to [`MAX_NAME_LEN`] bytes.
    pub fn new(stream: u64, end_seq: u64, size: u64, file_id: [u8; FILE_ID_LEN], name: &str) -> ManifestEntry {
        let mut cut = name.len().min(MAX_NAME_LEN);
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        ManifestEntry { stream, end_seq, size, file_id, name: name[..cut].to_string() }
    }

    pub fn encoded_len(&self) -> usize {
        ENTRY_FIXED_LEN + self.name.len()
    }
}

/// A parsed manifest body.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Manifest {
    pub entries: Vec<ManifestEntry>,
}

impl Manifest {
    pub const HEADER_LEN: usize = 2;

    pub fn encoded_len(&self) -> usize {
        Self::HEADER_LEN + self.entries.iter().map(ManifestEntry::encoded_len).sum::<usize>()
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.entries.len() as u16).to_be_bytes());
        for entry in &self.entries {
            out.extend_from_slice(&entry.stream.to_be_bytes());
            out.extend_from_slice(&entry.end_seq.to_be_bytes());
            out.extend_from_slice(&entry.size.to_be_bytes());
            out.extend_from_slice(&entry.file_id);
            out.extend_from_slice(&(entry.name.len() as u16).to_be_bytes());
            out.extend_from_slice(entry.name.as_bytes());
        }
    }

    pub fn parse(body: &[u8]) -> Result<Manifest, WireError> {
        let mut r = Reader::new(body);
        let count = usize::from(r.u16()?);
        if count * ENTRY_FIXED_LEN > r.remaining() {
            return Err(WireError::BadCount { what: "manifest entries", count });
        }
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            let stream = r.u64()?;
            let end_seq = r.u64()?;
            let size = r.u64()?;
            let file_id = r.array::<FILE_ID_LEN>()?;
            let name_len = usize::from(r.u16()?);
            if name_len > MAX_NAME_LEN {
                return Err(WireError::BadValue { what: "manifest name length" });
            }
            let name = std::str::from_utf8(r.bytes(name_len)?)
                .map_err(|_| WireError::BadValue { what: "manifest name" })?
                .to_string();
            entries.push(ManifestEntry { stream, end_seq, size, file_id, name });
        }
        r.finish()?;
        Ok(Manifest { entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            entries: vec![
                ManifestEntry::new(7, 120, 20_566, [0xAB; FILE_ID_LEN], "plant-2/line 0/report-044.dat"),
                ManifestEntry::new(8, 121, 0, [1; FILE_ID_LEN], ""),
            ],
        }
    }

    #[test]
    fn manifest_round_trips() {
        let manifest = sample();
        let mut out = Vec::new();
        manifest.emit(&mut out);
        assert_eq!(out.len(), manifest.encoded_len());
        assert_eq!(Manifest::parse(&out), Ok(manifest));
    }

    #[test]
    fn truncated_padded_or_miscounted_manifests_are_refused() {
        let mut out = Vec::new();
        sample().emit(&mut out);
        for cut in 0..out.len() {
            assert!(Manifest::parse(&out[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = out.clone();
        padded.push(0);
        assert!(Manifest::parse(&padded).is_err());
        let mut miscounted = out;
        miscounted[1] = 0xFF;
        assert!(Manifest::parse(&miscounted).is_err());
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary_and_bad_utf8_is_refused() {
        let entry = ManifestEntry::new(1, 1, 1, [0; FILE_ID_LEN], &"é".repeat(150));
        assert!(entry.name.len() <= MAX_NAME_LEN);
        assert!(entry.name.chars().all(|c| c == 'é'));
        let mut out = Vec::new();
        Manifest { entries: vec![ManifestEntry::new(1, 1, 1, [0; FILE_ID_LEN], "ab")] }.emit(&mut out);
        let last = out.len() - 1;
        out[last] = 0xFF;
        assert_eq!(Manifest::parse(&out), Err(WireError::BadValue { what: "manifest name" }));
    }
}
