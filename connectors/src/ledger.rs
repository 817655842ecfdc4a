//! The delivered-file ledger: which file ids RED has already delivered, kept across restarts so that a
//! repeat, a resend after a sender restart or a resend after a takeover is recognised and not delivered
//! twice.
//!
//! One JSON line per delivery, appended and synced before the file is renamed into place. A torn last
//! line (power cut mid-write) is ignored when the ledger is read back. The ledger remembers the last
//! `capacity` deliveries; the file is rewritten (to a temporary name, synced, renamed) when it holds
//! twice that many lines, so it stays small.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One delivered file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The file id chosen by BLUE when it took the file (hex).
    pub id: String,
    /// BLAKE3 of the content (hex).
    pub blake3: String,
    /// Sender session (hex), epoch and stream it arrived in.
    pub session: String,
    pub epoch: u32,
    pub stream: u64,
    /// Where it was delivered, relative to the output folder.
    pub path: String,
    pub size: u64,
    /// Unix seconds of the delivery.
    pub delivered_at: u64,
    /// The node that placed it (with a pair, the standby's ledger also holds the active's deliveries).
    #[serde(default)]
    pub node: String,
}

impl LedgerEntry {
    /// Reads one ledger line back, or nothing when it is torn, foreign or holds values this node never
    /// writes (an id that is not ASCII letters, digits and dashes, a BLAKE3 that is not 64 hex digits
    /// when present).
    pub fn parse_line(line: &str) -> Option<LedgerEntry> {
        let entry: LedgerEntry = serde_json::from_str(line).ok()?;
        entry.is_well_formed().then_some(entry)
    }

    /// Whether the id and hash have the form this node writes (the id names shadow files).
    pub fn is_well_formed(&self) -> bool {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        let hash_ok =
            self.blake3.is_empty() || (self.blake3.len() == 64 && self.blake3.bytes().all(|b| b.is_ascii_hexdigit()));
        id_ok && hash_ok
    }
}

pub struct Ledger {
    path: PathBuf,
    file: File,
    capacity: usize,
    lines_in_file: usize,
    by_id: HashMap<String, LedgerEntry>,
    order: VecDeque<String>,
}

impl Ledger {
    /// Opens (or creates) the ledger at `path`, remembering at most `capacity` deliveries.
    pub fn open(path: &Path, capacity: usize) -> std::io::Result<Ledger> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut by_id = HashMap::new();
        let mut order = VecDeque::new();
        let mut lines_in_file = 0;
        if let Ok(file) = File::open(path) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                lines_in_file += 1;
                // A torn or foreign line is skipped, not fatal: the rest of the ledger still counts.
                let Some(entry) = LedgerEntry::parse_line(&line) else { continue };
                order.push_back(entry.id.clone());
                by_id.insert(entry.id.clone(), entry);
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let mut ledger =
            Ledger { path: path.to_path_buf(), file, capacity: capacity.max(1), lines_in_file, by_id, order };
        ledger.trim();
        Ok(ledger)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    pub fn get(&self, id: &str) -> Option<&LedgerEntry> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Deliveries from the oldest remembered to the newest.
    pub fn entries(&self) -> impl Iterator<Item = &LedgerEntry> {
        self.order.iter().filter_map(|id| self.by_id.get(id))
    }

    /// Records a delivery durably. Returns false (and writes nothing) when the id is already there.
    pub fn record(&mut self, entry: LedgerEntry) -> std::io::Result<bool> {
        if self.by_id.contains_key(&entry.id) {
            return Ok(false);
        }
        let mut line = serde_json::to_string(&entry).map_err(std::io::Error::other)?;
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        self.lines_in_file += 1;
        self.order.push_back(entry.id.clone());
        self.by_id.insert(entry.id.clone(), entry);
        self.trim();
        if self.lines_in_file >= 2 * self.capacity {
            self.compact()?;
        }
        Ok(true)
    }

    fn trim(&mut self) {
        while self.order.len() > self.capacity {
            if let Some(id) = self.order.pop_front() {
                self.by_id.remove(&id);
            }
        }
    }

    /// Rewrites the file with only the remembered entries.
    fn compact(&mut self) -> std::io::Result<()> {
        let temporary = self.path.with_extension("compacting");
        {
            let mut out = File::create(&temporary)?;
            for entry in self.entries() {
                let mut line = serde_json::to_string(entry).map_err(std::io::Error::other)?;
                line.push('\n');
                out.write_all(line.as_bytes())?;
            }
            out.sync_all()?;
        }
        std::fs::rename(&temporary, &self.path)?;
        sync_parent(&self.path)?;
        self.file = OpenOptions::new().append(true).open(&self.path)?;
        self.lines_in_file = self.order.len();
        Ok(())
    }
}

/// Syncs the folder holding `path`, so a rename or a new name in it survives a power cut.
pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => File::open(parent)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> LedgerEntry {
        LedgerEntry {
            id: id.into(),
            blake3: "0f".repeat(32),
            session: "1".into(),
            epoch: 1,
            stream: 1,
            path: format!("{id}.bin"),
            size: 1,
            delivered_at: 0,
            node: String::new(),
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ledger-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn deliveries_survive_a_reopen_and_a_torn_last_line() {
        let dir = temp_dir("reopen");
        let path = dir.join("ledger.jsonl");
        {
            let mut ledger = Ledger::open(&path, 100).unwrap();
            assert!(ledger.record(entry("a")).unwrap());
            assert!(!ledger.record(entry("a")).unwrap(), "a second delivery of the same id is refused");
            assert!(ledger.record(entry("b")).unwrap());
        }
        // A power cut in the middle of appending the next line.
        OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"id\":\"c\",\"bla").unwrap();
        let ledger = Ledger::open(&path, 100).unwrap();
        assert!(ledger.contains("a") && ledger.contains("b") && !ledger.contains("c"));
        assert_eq!(ledger.len(), 2);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_file_is_compacted_to_the_remembered_window() {
        let dir = temp_dir("compact");
        let path = dir.join("ledger.jsonl");
        let mut ledger = Ledger::open(&path, 10).unwrap();
        for i in 0..35 {
            ledger.record(entry(&format!("id{i}"))).unwrap();
        }
        assert_eq!(ledger.len(), 10);
        assert!(ledger.contains("id34") && !ledger.contains("id24"));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 20, "{lines} lines left in the file");
        let reopened = Ledger::open(&path, 10).unwrap();
        assert_eq!(
            reopened.entries().map(|e| e.id.clone()).collect::<Vec<_>>(),
            ledger.entries().map(|e| e.id.clone()).collect::<Vec<_>>()
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
