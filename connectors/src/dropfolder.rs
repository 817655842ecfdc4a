//! BLUE drop folders: files that users put in a folder are taken into the channel's spool once they
//! have stopped changing.
//!
//! The folder is scanned when the file system reports a change (inotify through `notify`) and on a
//! timer, so nothing is missed when events overflow or the watcher restarts. A file is taken when its
//! size and mtime have not changed for the settle time. Subfolders are kept as relative paths. Names
//! starting with '.' are skipped (writers' temporary files, and the diode's own `.diode` folder). A
//! symbolic link (it could point outside the folder), anything that is not a regular file (a FIFO, a
//! socket, a device), a file with more than one hard link (linked from elsewhere, it cannot be shown to
//! belong to the folder), a file over the size limit, or one whose name RED would refuse, is moved to
//! the rejected folder with a `.reason.txt` beside it and counted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use globset::GlobSet;
use notify::Watcher;
use tokio::sync::{mpsc as tokio_mpsc, watch};
use tracing::{info, warn};

use crate::names::sanitize;
use crate::spool::{free_name, Finish, Spool, SpoolEntry};

#[derive(Clone, Debug)]
pub struct DropFolder {
    pub channel: u16,
    pub folder: PathBuf,
    pub settle: Duration,
    pub rescan: Duration,
    pub include: GlobSet,
    pub exclude: GlobSet,
    pub max_file_size: u64,
    pub finish: Finish,
    pub rejected: PathBuf,
}

/// What a scan saw of one file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime: Option<SystemTime>,
}

impl DropFolder {
    /// Watches and scans until `shutdown`.
    #[tracing::instrument(name = "channel", skip_all, fields(number = self.channel))]
    pub async fn run(self, spool: Spool, mut shutdown: watch::Receiver<bool>) {
        let (changed_tx, mut changed_rx) = tokio_mpsc::channel::<()>(1);
        let watcher = notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
            let _ = changed_tx.try_send(());
        });
        let _watcher = match watcher {
            Ok(mut watcher) => match watcher.watch(&self.folder, notify::RecursiveMode::Recursive) {
                Ok(()) => Some(watcher),
                Err(error) => {
                    warn!(%error, "cannot watch the drop folder: relying on rescans");
                    None
                }
            },
            Err(error) => {
                warn!(%error, "no file system watcher: relying on rescans");
                None
            }
        };
        let mut candidates: HashMap<PathBuf, (Seen, Instant)> = HashMap::new();
        let mut last_scan: Option<Instant> = None;
        loop {
            let scan_now = last_scan.is_none_or(|t| t.elapsed() >= self.rescan) || !candidates.is_empty();
            if scan_now {
                last_scan = Some(Instant::now());
                let folder = self.clone();
                let spool = spool.clone();
                let pending = std::mem::take(&mut candidates);
                candidates =
                    tokio::task::spawn_blocking(move || folder.scan(&spool, pending)).await.unwrap_or_default();
            }
            // While files are settling, look again soon; otherwise wait for an event or the rescan.
            let wait =
                if candidates.is_empty() { self.rescan } else { (self.settle / 4).max(Duration::from_millis(50)) };
            tokio::select! {
                _ = changed_rx.recv() => {
                    // Let a burst of events finish before scanning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    last_scan = None;
                }
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One pass over the folder: takes the files that have settled and returns those still settling.
    fn scan(&self, spool: &Spool, previous: HashMap<PathBuf, (Seen, Instant)>) -> HashMap<PathBuf, (Seen, Instant)> {
        let mut settling = HashMap::new();
        let mut stack = vec![self.folder.clone()];
        let now = Instant::now();
        while let Some(dir) = stack.pop() {
            let Ok(items) = std::fs::read_dir(&dir) else { continue };
            for item in items.flatten() {
                let name = item.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let path = item.path();
                let Ok(kind) = item.file_type() else { continue };
                if kind.is_dir() {
                    stack.push(path);
                    continue;
                }
                if kind.is_symlink() {
                    let Ok(relative) = path.strip_prefix(&self.folder) else { continue };
                    self.reject(
                        spool,
                        &path,
                        relative,
                        "a symbolic link is not sent: it could point outside the drop folder",
                    );
                    continue;
                }
                if !kind.is_file() {
                    let Ok(relative) = path.strip_prefix(&self.folder) else { continue };
                    self.reject(spool, &path, relative, "not a regular file (a FIFO, socket or device): not sent");
                    continue;
                }
                let Ok(meta) = item.metadata() else { continue };
                let seen = Seen { size: meta.len(), mtime: meta.modified().ok() };
                let since = match previous.get(&path) {
                    Some((before, since)) if *before == seen => *since,
                    _ => now,
                };
                if now.duration_since(since) >= self.settle {
                    self.take(spool, &path, &meta);
                } else {
                    settling.insert(path, (seen, since));
                }
            }
        }
        settling
    }

    fn take(&self, spool: &Spool, path: &Path, meta: &std::fs::Metadata) {
        let Ok(relative) = path.strip_prefix(&self.folder) else { return };
        let relative_text = relative.to_string_lossy().to_string();
        if !self.include.is_empty() && !self.include.is_match(relative) {
            return;
        }
        if self.exclude.is_match(relative) {
            return;
        }
        let name = match relative.to_str().map(sanitize) {
            Some(Ok(name)) => name,
            Some(Err(error)) => return self.reject(spool, path, relative, &format!("name refused: {error}")),
            None => return self.reject(spool, path, relative, "name refused: not valid UTF-8"),
        };
        let links = std::os::unix::fs::MetadataExt::nlink(meta);
        if links > 1 {
            let reason = format!(
                "the file has {links} hard links: linked from elsewhere, it cannot be shown to belong to the drop folder"
            );
            return self.reject(spool, path, relative, &reason);
        }
        if meta.len() > self.max_file_size {
            let reason = format!("{} bytes is over the channel's max_file_size of {}", meta.len(), self.max_file_size);
            return self.reject(spool, path, relative, &reason);
        }
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok());
        let entry = SpoolEntry::new(
            name.as_text(),
            meta.len(),
            mtime.map(|d| (d.as_secs() as i64, d.subsec_nanos())),
            "drop folder".into(),
            self.finish.clone(),
        );
        match spool.take(path, &entry) {
            Ok(()) => {
                info!(id = %entry.id, name = %relative_text, size = meta.len(), "file taken")
            }
            Err(error) => {
                warn!(name = %relative_text, %error, "cannot take the file into the spool")
            }
        }
    }

    fn reject(&self, spool: &Spool, path: &Path, relative: &Path, reason: &str) {
        spool.stats.rejected.fetch_add(1, Ordering::Relaxed);
        let size = std::fs::symlink_metadata(path).map_or(0, |m| m.len());
        spool.stats.note("", &relative.to_string_lossy(), size, "rejected", Some(reason.to_string()));
        let target = free_name(&self.rejected.join(relative));
        let moved = target
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::rename(path, &target))
            .and_then(|()| {
                let mut note = target.clone().into_os_string();
                note.push(".reason.txt");
                std::fs::write(note, format!("{reason}\n"))
            });
        match moved {
            Ok(()) => {
                warn!(name = %relative.display(), %reason, rejected = %target.display(), "file rejected")
            }
            Err(error) => {
                warn!(name = %relative.display(), %reason, %error, "file rejected but could not be moved")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(patterns: &[&str]) -> GlobSet {
        let mut builder = globset::GlobSetBuilder::new();
        for p in patterns {
            builder.add(globset::Glob::new(p).unwrap());
        }
        builder.build().unwrap()
    }

    #[test]
    fn settled_files_are_taken_and_the_rest_filtered_or_rejected() {
        let root = std::env::temp_dir().join(format!("drop-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let folder = root.join("drop");
        std::fs::create_dir_all(folder.join("sub/deeper")).unwrap();
        std::fs::write(folder.join("sub/deeper/a.csv"), b"a").unwrap();
        std::fs::write(folder.join("b.tmp"), b"b").unwrap();
        std::fs::write(folder.join(".hidden"), b"h").unwrap();
        std::fs::write(folder.join("big.csv"), vec![0u8; 100]).unwrap();
        std::fs::write(folder.join("CON.csv"), b"c").unwrap();
        let spool = Spool::open(&folder.join(".diode/spool")).unwrap();
        let drop = DropFolder {
            channel: 1,
            folder: folder.clone(),
            settle: Duration::ZERO,
            rescan: Duration::from_secs(1),
            include: globs(&["**/*.csv"]),
            exclude: GlobSet::empty(),
            max_file_size: 10,
            finish: Finish::Delete,
            rejected: folder.join(".diode/rejected"),
        };
        let left = drop.scan(&spool, HashMap::new());
        assert!(left.is_empty());
        let names: Vec<String> = spool.list().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["sub/deeper/a.csv".to_string()]);
        assert!(folder.join("b.tmp").exists() && folder.join(".hidden").exists(), "excluded files stay");
        let reason = std::fs::read_to_string(folder.join(".diode/rejected/big.csv.reason.txt")).unwrap();
        assert!(reason.contains("max_file_size"), "{reason}");
        let reason = std::fs::read_to_string(folder.join(".diode/rejected/CON.csv.reason.txt")).unwrap();
        assert!(reason.contains("Windows device name"), "{reason}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn links_and_special_files_are_rejected_with_a_reason() {
        let root = std::env::temp_dir().join(format!("drop-links-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let folder = root.join("drop");
        std::fs::create_dir_all(&folder).unwrap();
        let outside = root.join("outside-secret.txt");
        std::fs::write(&outside, b"not for RED").unwrap();
        std::fs::hard_link(&outside, folder.join("hard.txt")).unwrap();
        std::os::unix::fs::symlink(&outside, folder.join("soft.txt")).unwrap();
        let made_fifo =
            std::process::Command::new("mkfifo").arg(folder.join("pipe")).status().is_ok_and(|s| s.success());
        std::fs::write(folder.join("plain.txt"), b"fine").unwrap();
        let spool = Spool::open(&root.join("spool")).unwrap();
        let drop = DropFolder {
            channel: 1,
            folder: folder.clone(),
            settle: Duration::ZERO,
            rescan: Duration::from_secs(1),
            include: GlobSet::empty(),
            exclude: GlobSet::empty(),
            max_file_size: u64::MAX,
            finish: Finish::Delete,
            rejected: root.join("rejected"),
        };
        drop.scan(&spool, HashMap::new());
        let names: Vec<String> = spool.list().into_iter().map(|e| e.name).collect();
        assert_eq!(names, vec!["plain.txt".to_string()]);
        let reason = |name: &str| std::fs::read_to_string(root.join(format!("rejected/{name}.reason.txt"))).unwrap();
        assert!(reason("hard.txt").contains("hard links"), "{}", reason("hard.txt"));
        assert!(reason("soft.txt").contains("symbolic link"));
        if made_fifo {
            assert!(reason("pipe").contains("not a regular file"));
        }
        assert_eq!(spool.stats.rejected.load(Ordering::Relaxed), if made_fifo { 3 } else { 2 });
        assert_eq!(std::fs::read(&outside).unwrap(), b"not for RED", "the linked file itself is untouched");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn a_file_still_changing_is_not_taken() {
        let root = std::env::temp_dir().join(format!("drop-settle-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("growing.bin"), b"1").unwrap();
        let spool = Spool::open(&root.join(".diode/spool")).unwrap();
        let drop = DropFolder {
            channel: 1,
            folder: root.clone(),
            settle: Duration::from_secs(3600),
            rescan: Duration::from_secs(1),
            include: GlobSet::empty(),
            exclude: GlobSet::empty(),
            max_file_size: u64::MAX,
            finish: Finish::Delete,
            rejected: root.join(".diode/rejected"),
        };
        let left = drop.scan(&spool, HashMap::new());
        assert_eq!(left.len(), 1);
        std::fs::write(root.join("growing.bin"), b"12").unwrap();
        let left = drop.scan(&spool, left);
        assert_eq!(left.len(), 1, "a change restarts the settle time");
        assert!(spool.list().is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }
}
