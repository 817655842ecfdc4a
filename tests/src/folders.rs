//! Files on both sides of the lab: deterministic content to drop, what an output folder shows, and the
//! files counters of a daemon's status.

use crate::error::{IoContext, LabResult};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::lab::stream_content;

/// Deterministic content of exactly `len` bytes (empty files included).
pub fn file_content(id: u64, len: usize) -> Vec<u8> {
    let mut bytes = stream_content(id, len);
    bytes.truncate(len);
    bytes
}

/// Writes a file, creating its folders.
pub fn write_file(path: &Path, bytes: &[u8]) -> LabResult<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).doing(|| parent.display().to_string())?;
    }
    std::fs::write(path, bytes).doing(|| path.display().to_string())
}

/// Every visible file under `folder` (the diode's dot folders and part files skipped): its path
/// relative to `folder`, and where it is.
pub fn visible_paths(folder: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![folder.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(items) = std::fs::read_dir(&dir) else { continue };
        for item in items.flatten() {
            if item.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let Ok(kind) = item.file_type() else { continue };
            if kind.is_dir() {
                stack.push(item.path());
            } else if let Ok(relative) = item.path().strip_prefix(folder) {
                out.push((relative.to_string_lossy().to_string(), item.path()));
            }
        }
    }
    out
}

/// Every visible file under `folder`, by relative path, with its content.
pub fn visible_files(folder: &Path) -> BTreeMap<String, Vec<u8>> {
    visible_paths(folder).into_iter().filter_map(|(name, path)| Some((name, std::fs::read(path).ok()?))).collect()
}

/// Every visible file under `folder`, by relative path, with its length and BLAKE3: for folders too
/// large to hold in memory.
pub fn visible_hashes(folder: &Path) -> BTreeMap<String, (u64, [u8; 32])> {
    visible_paths(folder)
        .into_iter()
        .filter_map(|(name, path)| {
            let mut hasher = blake3::Hasher::new();
            let len = std::fs::File::open(path).and_then(|mut f| std::io::copy(&mut f, &mut hasher)).ok()?;
            Some((name, (len, *hasher.finalize().as_bytes())))
        })
        .collect()
}

/// A counter of the first files or vault channel in a daemon's status (0 when absent).
pub fn files_counter(status: &serde_json::Value, kind: &str, key: &str) -> u64 {
    status["channels"]
        .as_array()
        .and_then(|channels| channels.iter().find(|c| c["kind"] == kind))
        .and_then(|c| c["files"][key].as_u64())
        .unwrap_or(0)
}

/// How an output folder compares with what was sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FolderCheck {
    /// Sent files present under their own name with identical content.
    pub intact: usize,
    /// Sent files missing or different.
    pub lost: usize,
    /// Files present that were not sent under that name (a second copy gets " (2)").
    pub extra: usize,
}

pub fn check_folder(expected: &BTreeMap<String, Vec<u8>>, folder: &Path) -> FolderCheck {
    let found = visible_files(folder);
    let intact = expected.iter().filter(|(name, bytes)| found.get(*name) == Some(bytes)).count();
    FolderCheck {
        intact,
        lost: expected.len() - intact,
        extra: found.keys().filter(|name| !expected.contains_key(*name)).count(),
    }
}
