//! Pair replication on RED (DESIGN §2 and §7): the standby decodes every block in shadow (the
//! cross-connect gives it the same symbols) and learns from the active which files it delivers, so a
//! takeover delivers what the shadow holds and never a file twice.
//!
//! The active pushes, on every new connection, its configuration and its ledger (in parts), then
//! each delivery before it places the file. The standby's files sinks keep the ledger lines and drop
//! their shadow copies; see `connectors::filesink` for the crash-safe order.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chassis::runtime::DaemonError;
use connectors::filesink::FileSinkConfig;
use connectors::ledger::Ledger;
use connectors::replication::Refusal;
use connectors::sink::{Reply, SinkEvent};
use connectors::spool::SpoolEntry;
use ha_carp::driver::Role;
use ha_carp::pair::{
    serve_standby, spawn_pusher, CheckedPair, PairHandler, PairMessage, PairStats, Replicator, Request,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tracing::warn;

/// Ledger entries per snapshot message (each about 300 bytes of JSON, well inside a frame).
const LEDGER_PART: usize = 5000;

/// Starts the pusher (used while this node is active) and returns its replicator; the standby's
/// listener is started by [`serve`] once the sinks exist.
pub(crate) fn pusher(
    pair: &CheckedPair,
    node: &str,
    config_path: PathBuf,
    files: Vec<FileSinkConfig>,
    role: watch::Receiver<Role>,
    stats: Arc<PairStats>,
) -> Replicator {
    let active = ha_carp::pair::follow_active(role, |r| *r == Role::Active);
    let snapshot = {
        let stats = Arc::clone(&stats);
        Box::new(move || snapshot(&config_path, &files, &stats))
    };
    spawn_pusher(pair, node.to_string(), "red", active, snapshot, stats)
}

/// The configuration, then each channel's ledger in parts: what the ledger file holds and the deliveries
/// made without the standby since the last snapshot (whose ledger lines may still be on their way).
fn snapshot(config_path: &std::path::Path, files: &[FileSinkConfig], stats: &PairStats) -> Vec<Request> {
    let mut requests = Vec::new();
    let unannounced = stats.take_unannounced();
    match std::fs::read_to_string(config_path) {
        Ok(toml) => requests.push(Request::Notice(PairMessage::Config { toml })),
        Err(error) => warn!(%error, "cannot read this node's configuration to replicate it"),
    }
    for config in files {
        // Read from the file: the sink thread owns the open ledger, and a torn last line is skipped.
        let mut entries: Vec<_> = match Ledger::open(&config.ledger, config.ledger_entries) {
            Ok(ledger) => ledger.entries().cloned().collect(),
            Err(error) => {
                warn!(channel = config.channel, %error, "cannot read the ledger to replicate it");
                continue;
            }
        };
        let known: std::collections::HashSet<String> = entries.iter().map(|e| e.id.clone()).collect();
        entries.extend(
            unannounced
                .iter()
                .filter(|(channel, entry)| *channel == config.channel && !known.contains(&entry.id))
                .map(|(_, entry)| entry.clone()),
        );
        let parts = entries.len().div_ceil(LEDGER_PART).max(1);
        let mut chunks = entries.chunks(LEDGER_PART);
        for part in 0..parts {
            let entries = chunks.next().map(<[_]>::to_vec).unwrap_or_default();
            let complete = part + 1 == parts;
            requests.push(Request::Notice(PairMessage::Ledger { channel: config.channel, entries, complete }));
        }
    }
    requests
}

/// Serves the standby's side on the pair listen address.
pub(crate) async fn serve(
    pair: &CheckedPair,
    node: &str,
    config_path: PathBuf,
    sinks: HashMap<u16, mpsc::Sender<SinkEvent>>,
    reload: Arc<Notify>,
    stats: Arc<PairStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), DaemonError> {
    let listener = TcpListener::bind(pair.listen)
        .await
        .map_err(|e| DaemonError::io(format!("pair: cannot listen on {}", pair.listen), e))?;
    let standby =
        Arc::new(RedStandby { sinks, config_path, reload, stats: Arc::clone(&stats), timeout: pair.ack_timeout });
    tokio::spawn(serve_standby(listener, pair.key.clone(), node.to_string(), "red", standby, stats, shutdown));
    Ok(())
}

struct RedStandby {
    sinks: HashMap<u16, mpsc::Sender<SinkEvent>>,
    config_path: PathBuf,
    reload: Arc<Notify>,
    stats: Arc<PairStats>,
    timeout: Duration,
}

impl RedStandby {
    fn sink(&self, channel: u16) -> Result<&mpsc::Sender<SinkEvent>, Refusal> {
        self.sinks.get(&channel).ok_or(Refusal::NoSuchChannel(channel))
    }

    fn apply_config(&self, toml: &str) -> PairMessage {
        let check = |path: &std::path::Path, text: &str| {
            let config = connectors::config::parse_toml(path, text)?;
            crate::config::check(path, config).map(|_| ())
        };
        ha_carp::pair::apply_on_standby(&self.config_path, toml, &self.stats, &self.reload, check)
    }
}

impl PairHandler for RedStandby {
    fn file_path(&self, _channel: u16, _entry: &SpoolEntry) -> Result<PathBuf, Refusal> {
        Err(Refusal::NoSpool)
    }

    fn file_received(&self, _channel: u16, _entry: SpoolEntry) -> Result<(), Refusal> {
        Err(Refusal::NoSpool)
    }

    fn message(&self, message: PairMessage) -> Option<PairMessage> {
        match message {
            PairMessage::Config { toml } => Some(self.apply_config(&toml)),
            PairMessage::Delivered { request, channel, entry } => {
                let result = self.sink(channel).and_then(|sink| {
                    let (reply, answer) = std::sync::mpsc::sync_channel(1);
                    sink.blocking_send(SinkEvent::PeerDelivered { entry, reply: Reply(reply) })
                        .map_err(|_| Refusal::SinkStopped)?;
                    answer.recv_timeout(self.timeout).map_err(|_| Refusal::SinkSilent)?
                });
                let reason = result.as_ref().err().map(ToString::to_string);
                Some(PairMessage::Ack { request, ok: result.is_ok(), reason })
            }
            PairMessage::Ledger { channel, entries, complete } => {
                if let Ok(sink) = self.sink(channel) {
                    let _ = sink.blocking_send(SinkEvent::PeerLedger { entries, complete });
                }
                None
            }
            other => {
                warn!(?other, "a message RED does not take: ignored");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use connectors::ledger::LedgerEntry;

    fn entry(id: &str) -> LedgerEntry {
        LedgerEntry { id: id.into(), path: format!("{id}.bin"), node: "red1".into(), ..LedgerEntry::default() }
    }

    #[test]
    fn the_snapshot_carries_deliveries_made_without_the_standby_even_before_their_ledger_line() {
        let dir = std::env::temp_dir().join(format!("red-snapshot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config_path = dir.join("red.toml");
        std::fs::write(&config_path, "[node]\nname = \"red1\"\n").unwrap();
        let files = FileSinkConfig {
            channel: 3,
            folder: dir.join("files"),
            quarantine: dir.join("quarantine"),
            ledger: dir.join("ledger.jsonl"),
            ledger_entries: 100,
            on_failure: connectors::filesink::OnFailure::Quarantine,
            max_file_size: u64::MAX,
        };
        let mut ledger = Ledger::open(&files.ledger, 100).unwrap();
        ledger.record(entry("written")).unwrap();
        // The standby is not connected: the delivery goes ahead and is remembered, and the snapshot of
        // the next connection carries it although its ledger line was never written.
        let replicator = Replicator::unconnected();
        assert!(replicator.replicate_delivery_blocking(3, entry("in-flight")).is_err());
        assert!(replicator.replicate_delivery_blocking(3, entry("written")).is_err());
        let requests = snapshot(&config_path, &[files], &replicator.stats);
        let ledgers: Vec<(Vec<String>, bool)> = requests
            .into_iter()
            .filter_map(|request| match request {
                Request::Notice(PairMessage::Ledger { channel: 3, entries, complete }) => {
                    Some((entries.into_iter().map(|e| e.id).collect(), complete))
                }
                _ => None,
            })
            .collect();
        assert_eq!(ledgers, vec![(vec!["written".to_string(), "in-flight".to_string()], true)]);
        assert!(replicator.stats.take_unannounced().is_empty(), "taken by the snapshot");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
