//! The files sink on real folders: placing, quarantine, collisions, shadow hand-over, restarts.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;

use bytes::Bytes;
use diode_proto::BreakReason;

use super::*;
use crate::replication::ReplicationError;
use crate::sink::StreamAbort;
use crate::spool::SpoolEntry;

struct Fixture {
    root: PathBuf,
    sink: FileSink,
    stats: Arc<FileSinkStats>,
}

fn config(root: &Path, max_file_size: u64) -> FileSinkConfig {
    FileSinkConfig {
        channel: 3,
        folder: root.join("out"),
        quarantine: root.join("quarantine"),
        ledger: root.join("ledger.jsonl"),
        ledger_entries: 1000,
        on_failure: OnFailure::Quarantine,
        max_file_size,
    }
}

fn fixture(name: &str, max_file_size: u64) -> Fixture {
    let root = std::env::temp_dir().join(format!("filesink-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let stats = Arc::new(FileSinkStats::default());
    let sink = FileSink::open(config(&root, max_file_size), Arc::clone(&stats), None).unwrap();
    Fixture { root, sink, stats }
}

fn send(sink: &mut FileSink, stream: u64, name: &str, id: u8, content: &[u8], announced_hash: Option<[u8; 32]>) {
    let meta = StreamMeta {
        name: name.into(),
        size: Some(content.len() as u64),
        file_id: Some([id; 16]),
        mtime: Some((1_600_000_000, 0)),
        ..StreamMeta::default()
    };
    sink.handle(SinkEvent::Open { stream, meta, session: 1, epoch: 1 });
    for chunk in content.chunks(3) {
        sink.handle(SinkEvent::Data { stream, data: Bytes::copy_from_slice(chunk) });
    }
    let hash = announced_hash.unwrap_or(*blake3::hash(content).as_bytes());
    sink.handle(SinkEvent::End { stream, total_len: content.len() as u64, hash });
}

fn quarantined(root: &Path) -> Vec<String> {
    let mut reasons: Vec<String> = std::fs::read_dir(root.join("quarantine"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".reason.json"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    reasons.sort();
    reasons
}

#[test]
fn a_verified_file_appears_once_with_its_mtime_and_a_repeat_is_recognised() {
    let mut f = fixture("once", u64::MAX);
    send(&mut f.sink, 1, "a/b.txt", 1, b"hello world", None);
    let path = f.root.join("out/a/b.txt");
    assert_eq!(std::fs::read(&path).unwrap(), b"hello world");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(1_600_000_000));
    send(&mut f.sink, 2, "a/b.txt", 1, b"hello world", None);
    assert_eq!(f.stats.duplicates.load(Ordering::Relaxed), 1);
    assert!(!f.root.join("out/a/b (2).txt").exists());
    // The ledger survives a restart.
    let config = f.sink.config.clone();
    drop(f.sink);
    let mut sink = FileSink::open(config, Arc::clone(&f.stats), None).unwrap();
    send(&mut sink, 1, "a/b.txt", 1, b"hello world", None);
    assert_eq!(f.stats.duplicates.load(Ordering::Relaxed), 2);
    assert_eq!(std::fs::read_dir(f.root.join("out/.part")).unwrap().count(), 0);
    std::fs::remove_dir_all(&f.root).unwrap();
}

#[test]
fn a_file_that_never_arrived_is_reported_by_name_unless_another_copy_was_delivered() {
    let mut f = fixture("never", u64::MAX);
    send(&mut f.sink, 1, "plant/kept.dat", 1, b"copy two arrived", None);
    let never =
        |stream, name: &str, id| SinkEvent::NeverArrived { stream, name: name.into(), size: 20, file_id: [id; 16] };
    f.sink.handle(never(2, "plant/kept.dat", 1));
    f.sink.handle(never(3, "plant/lost.dat", 9));
    let reasons = quarantined(&f.root);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("plant/lost.dat") && reasons[0].contains("\"label\": \"never_arrived\""));
    assert_eq!(f.stats.failed.snapshot().nonzero(), BTreeMap::from([("never_arrived", 1)]));
    assert_eq!(f.stats.delivered.load(Ordering::Relaxed), 1);
    std::fs::remove_dir_all(&f.root).unwrap();
}

#[test]
fn a_different_file_with_a_taken_name_gets_a_suffix() {
    let mut f = fixture("collide", u64::MAX);
    send(&mut f.sink, 1, "r.pdf", 1, b"first", None);
    send(&mut f.sink, 2, "r.pdf", 2, b"second", None);
    assert_eq!(std::fs::read(f.root.join("out/r.pdf")).unwrap(), b"first");
    assert_eq!(std::fs::read(f.root.join("out/r (2).pdf")).unwrap(), b"second");
    std::fs::remove_dir_all(&f.root).unwrap();
}

#[test]
fn bad_files_never_show_under_their_name() {
    let mut f = fixture("bad", 100);
    send(&mut f.sink, 1, "../../etc/passwd", 1, b"root", None);
    send(&mut f.sink, 2, "mismatch.bin", 2, b"content", Some([0; 32]));
    send(&mut f.sink, 3, "big.bin", 3, &[7u8; 200], None);
    f.sink.handle(SinkEvent::Open {
        stream: 4,
        meta: StreamMeta { name: "cut.bin".into(), ..StreamMeta::default() },
        session: 1,
        epoch: 1,
    });
    f.sink.handle(SinkEvent::Data { stream: 4, data: Bytes::from_static(b"part") });
    f.sink.handle(SinkEvent::Broken { stream: 4, reason: StreamAbort::Broken(BreakReason::BlockLost { seq: 3 }) });
    let visible: Vec<_> = std::fs::read_dir(f.root.join("out")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(visible, vec![std::ffi::OsString::from(".part")]);
    let reasons = quarantined(&f.root);
    assert_eq!(reasons.len(), 4);
    for label in ["name_refused", "hash_mismatch", "too_large", "incomplete"] {
        assert!(reasons.iter().any(|r| r.contains(&format!("\"label\": \"{label}\""))), "{label} missing: {reasons:?}");
    }
    assert_eq!(f.stats.failed.total(), 4);
    std::fs::remove_dir_all(&f.root).unwrap();
}

/// The visible file names directly in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}

/// A pair whose standby is never reachable: every announcement fails at once, as with a standby
/// that is down.
struct NoStandby;

impl Replication for NoStandby {
    fn copy_accepted(&self, _: u16, _: &SpoolEntry, _: PathBuf) -> crate::replication::Replicating<'_> {
        Box::pin(async { Err(ReplicationError::NotConnected) })
    }
    fn sent(&self, _: u16, _: &str) {}
    fn sent_without_copy(&self) {}
    fn announce_delivery(&self, _: u16, _: LedgerEntry) -> Result<(), ReplicationError> {
        Err(ReplicationError::NotConnected)
    }
}

fn paired(root: &Path) -> FileSink {
    let config = config(root, 1 << 20);
    let pair = FileSinkPair { node: "red2".into(), shadow_files: 2, replication: Arc::new(NoStandby) };
    FileSink::open(config, Arc::new(FileSinkStats::default()), Some(pair)).unwrap()
}

fn entry(id: u8, node: &str) -> LedgerEntry {
    LedgerEntry {
        id: hex::encode([id; 16]),
        blake3: String::new(),
        session: "1".into(),
        epoch: 1,
        stream: 0,
        path: String::new(),
        size: 0,
        delivered_at: 0,
        node: node.into(),
    }
}

#[test]
fn a_standby_holds_files_in_shadow_and_delivers_only_what_the_active_did_not() {
    let root = std::env::temp_dir().join(format!("filesink-shadow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut sink = paired(&root);
    send(&mut sink, 1, "a.txt", 1, b"first", None);
    send(&mut sink, 2, "b.txt", 2, b"second", None);
    assert!(names_in(&root.join("out")).is_empty(), "a standby delivers nothing");
    assert_eq!(sink.stats.shadow_held.load(Ordering::Relaxed), 2);
    // The active delivered a.txt: the standby records it and drops its copy.
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    sink.handle(SinkEvent::PeerDelivered { entry: entry(1, "red1"), reply: Reply(reply) });
    assert!(answer.recv().unwrap().is_ok());
    assert_eq!(sink.stats.shadow_held.load(Ordering::Relaxed), 1);
    // A third file pushes nothing out (the limit is 2); a fourth drops the oldest held.
    send(&mut sink, 3, "c.txt", 3, b"third", None);
    send(&mut sink, 4, "d.txt", 4, b"fourth", None);
    assert_eq!(sink.stats.shadow_evicted.load(Ordering::Relaxed), 1);
    // Takeover: what the shadow holds is delivered, what the active delivered is not.
    sink.handle(SinkEvent::Role { active: true });
    assert_eq!(names_in(&root.join("out")), vec!["c.txt".to_string(), "d.txt".to_string()]);
    assert_eq!(sink.stats.shadow_delivered.load(Ordering::Relaxed), 2);
    // A resend of a.txt after the takeover is recognised.
    send(&mut sink, 5, "a.txt", 1, b"first", None);
    assert!(!root.join("out/a.txt").exists());
    assert_eq!(sink.stats.duplicates.load(Ordering::Relaxed), 1);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn an_announced_delivery_is_finished_after_a_crash_only_if_the_peer_counted_on_it() {
    let root = std::env::temp_dir().join(format!("filesink-pending-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let mut sink = paired(&root);
    // Active: each delivery is announced (the standby is unreachable here, so it goes ahead).
    sink.handle(SinkEvent::Role { active: true });
    send(&mut sink, 1, "kept.txt", 1, b"kept", None);
    assert!(root.join("out/kept.txt").exists());
    drop(sink);
    // Two deliveries announced and not placed when the node died.
    let part_dir = root.join("out/.part");
    for (id, name) in [(7u8, "counted.txt"), (8u8, "not-counted.txt")] {
        let part = part_dir.join(format!("{:016x}-1-{id}.part", 1));
        std::fs::write(&part, name).unwrap();
        let mut announced = entry(id, "red2");
        announced.blake3 = hex::encode(blake3::hash(name.as_bytes()).as_bytes());
        announced.size = name.len() as u64;
        let ready = Ready { entry: announced, name: name.into(), part: part.clone() };
        std::fs::write(ready_note(&part), serde_json::to_vec(&ready).unwrap()).unwrap();
    }
    std::fs::write(part_dir.join("0000000000000001-1-9.part"), b"half a file").unwrap();
    let mut sink = paired(&root);
    assert!(!part_dir.join("0000000000000001-1-9.part").exists(), "a plain part file of the dead run is removed");
    // The peer's ledger: 7 counted on this node (red2) delivering it, 8 delivered by the peer.
    let entries = vec![entry(7, "red2"), entry(8, "red1")];
    sink.handle(SinkEvent::PeerLedger { entries, complete: true });
    assert_eq!(std::fs::read(root.join("out/counted.txt")).unwrap(), b"counted.txt");
    assert!(!root.join("out/not-counted.txt").exists());
    assert_eq!(std::fs::read_dir(&part_dir).unwrap().count(), 0);
    std::fs::remove_dir_all(root).unwrap();
}

#[test]
fn a_file_that_fails_again_and_again_is_quarantined_once() {
    let mut f = fixture("once-in-quarantine", u64::MAX);
    for stream in 1..=5 {
        send(&mut f.sink, stream, "changing.log", 4, b"a copy that does not match", Some([1; 32]));
    }
    assert_eq!(quarantined(&f.root).len(), 1, "one copy to look at");
    assert_eq!(f.stats.failed.get(FileFailure::HashMismatch), 5, "every try is counted");
    send(&mut f.sink, 6, "other.log", 5, b"another file", Some([1; 32]));
    assert_eq!(quarantined(&f.root).len(), 2);
    std::fs::remove_dir_all(&f.root).unwrap();
}

/// The attack of the security review: a file named to land in `.part/` as an announcement naming
/// a file elsewhere, then a restart. Nothing may be placed under the hostile name, and the
/// announcement must neither link nor remove the file it names.
#[test]
fn a_forged_announcement_moves_nothing_at_the_next_start() {
    let mut f = fixture("forged", u64::MAX);
    let secret = f.root.join("secret.txt");
    std::fs::write(&secret, b"RED's own file").unwrap();
    let part_dir = f.root.join("out/.part");
    let forged = |part: &Path, name: &str| {
        let mut entry = entry(9, "");
        entry.size = 14;
        entry.blake3 = hex::encode(blake3::hash(b"RED's own file").as_bytes());
        serde_json::to_vec(&Ready { entry, name: name.into(), part: part.to_path_buf() }).unwrap()
    };
    // Through the wire: the hostile names are quarantined, nothing shows in `.part`.
    let stem = "00000000000000aa-1-1";
    send(&mut f.sink, 1, &format!(".part/{stem}.ready.json"), 1, &forged(&secret, "stolen.txt"), None);
    send(&mut f.sink, 2, ".quarantine/x.reason.json", 2, b"{}", None);
    send(&mut f.sink, 3, ".ledger (2).jsonl", 3, b"{}", None);
    assert!(!part_dir.join(format!("{stem}.ready.json")).exists());
    assert_eq!(f.stats.failed.get(FileFailure::NameRefused), 3);
    // Planted by any other means: a note naming a file outside, one naming a hard link to it,
    // and one whose part does not hold what it announces.
    std::fs::write(part_dir.join(format!("{stem}.ready.json")), forged(&secret, "stolen.txt")).unwrap();
    let linked = part_dir.join("00000000000000bb-1-1.part");
    std::fs::hard_link(&secret, &linked).unwrap();
    std::fs::write(part_dir.join("00000000000000bb-1-1.ready.json"), forged(&linked, "linked.txt")).unwrap();
    let altered = part_dir.join("00000000000000cc-1-1.part");
    std::fs::write(&altered, b"something else").unwrap();
    std::fs::write(part_dir.join("00000000000000cc-1-1.ready.json"), forged(&altered, "altered.txt")).unwrap();
    let config = f.sink.config.clone();
    drop(f.sink);
    let sink = FileSink::open(config, Arc::clone(&f.stats), None).unwrap();
    assert!(sink.pending.is_empty());
    assert_eq!(std::fs::read(&secret).unwrap(), b"RED's own file", "the named file stays where it was");
    assert_eq!(std::fs::metadata(&secret).unwrap().nlink(), 1, "and is linked nowhere");
    assert!(names_in(&f.root.join("out")).is_empty(), "nothing placed");
    assert_eq!(std::fs::read_dir(&part_dir).unwrap().count(), 0, "the notes and parts are gone");
    std::fs::remove_dir_all(&f.root).unwrap();
}

#[test]
fn an_announcement_is_trusted_only_for_its_own_part_file() {
    let dir = Path::new("/srv/out/.part");
    let note = |part: &str, name: &str, blake3: &str| {
        let mut entry = entry(1, "red1");
        entry.blake3 = blake3.into();
        serde_json::to_vec(&Ready { entry, name: name.into(), part: PathBuf::from(part) }).unwrap()
    };
    let hash = "ab".repeat(32);
    let own = "/srv/out/.part/0000000000000001-2-3.part";
    assert!(check_ready_note(&note(own, "a/b.txt", &hash), "0000000000000001-2-3.ready.json", dir).is_ok());
    let refused = [
        (note(own, "a/b.txt", &hash), "0000000000000001-2-4.ready.json"),
        (note(own, "a/b.txt", &hash), "../x.ready.json"),
        (note("/etc/shadow", "a/b.txt", &hash), "0000000000000001-2-3.ready.json"),
        (note("/srv/out/.part/../../x/0000000000000001-2-3.part", "b", &hash), "0000000000000001-2-3.ready.json"),
        (note(own, ".part/x", &hash), "0000000000000001-2-3.ready.json"),
        (note(own, "a/b.txt", "00"), "0000000000000001-2-3.ready.json"),
        (b"not json".to_vec(), "0000000000000001-2-3.ready.json"),
    ];
    for (bytes, name) in refused {
        assert!(check_ready_note(&bytes, name, dir).is_err(), "{name}: {}", String::from_utf8_lossy(&bytes));
    }
}
