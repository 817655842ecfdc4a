//! Pair replication on BLUE (DESIGN §2 and §7): an accepted file is copied to the standby before its
//! source is removed or its upload answered, so a takeover can resend it.
//!
//! The active pushes, on every new connection, its configuration, every file its spools hold and the
//! list of what they hold; then each accepted file as it comes, a notice as each is sent, and the list
//! again every few seconds (which repairs a lost notice). The standby keeps each replica in its own
//! spool, unsent. A replica the active has sent (or no longer holds) is kept for the resend window and
//! then forgotten; when this node takes over, its term's spool sender sends everything still held,
//! under the new, higher epoch, and RED's ledger recognises what it already delivered.
//! TCP and UDP are not replicated: a takeover aborts open streams with a reason and loses datagrams
//! in flight, counted.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chassis::runtime::DaemonError;
use connectors::replication::Refusal;
use connectors::spool::{Spool, SpoolEntry};
use ha_carp::driver::{HaHandle, Role};
use ha_carp::machine::Command;
use ha_carp::pair::{serve_standby, spawn_pusher, stopped, PairHandler, PairMessage, PairStats, Replicator, Request};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::config::Checked;

/// How often the active repeats the list of what it holds.
const PENDING_EVERY: Duration = Duration::from_secs(5);
/// How often a standby checks whether it may preempt again.
const SYNC_CHECK_EVERY: Duration = Duration::from_millis(100);

/// Starts both halves: the pusher (used while this node is active) and the standby's listener. Returns
/// the active's handle to its standby.
pub(crate) async fn start(
    checked: &Checked,
    spools: Vec<(u16, Spool)>,
    role: watch::Receiver<Role>,
    reload: Arc<Notify>,
    stats: Arc<PairStats>,
    shutdown: watch::Receiver<bool>,
) -> Result<Replicator, DaemonError> {
    let pair = checked.pair.as_ref().ok_or_else(|| DaemonError::Unchecked("no [pair] section".into()))?;
    let (node, config_path) = (checked.config.node.name.as_str(), checked.path.clone());
    let active = ha_carp::pair::follow_active(role.clone(), |r| *r == Role::Active);
    let snapshot = {
        let (config_path, spools) = (config_path.clone(), spools.clone());
        Box::new(move || snapshot(&config_path, &spools))
    };
    let replicator = spawn_pusher(pair, node.to_string(), "blue", active, snapshot, Arc::clone(&stats));
    for (channel, spool) in &spools {
        spool.set_replication(*channel, Arc::new(replicator.clone()));
    }
    let standby = Arc::new(BlueStandby {
        spools: spools.iter().cloned().collect(),
        sent: Mutex::default(),
        window: pair.resend_window,
        config_path,
        reload,
        stats: Arc::clone(&stats),
    });
    let listener = TcpListener::bind(pair.listen)
        .await
        .map_err(|e| DaemonError::io(format!("pair: cannot listen on {}", pair.listen), e))?;
    tokio::spawn(serve_standby(
        listener,
        pair.key.clone(),
        node.to_string(),
        "blue",
        Arc::clone(&standby) as Arc<dyn PairHandler>,
        Arc::clone(&stats),
        shutdown.clone(),
    ));
    tokio::spawn(housekeeping(role, standby, replicator.clone(), spools, shutdown));
    Ok(replicator)
}

/// Holds the election's preemption while this node is a standby without its active peer's state (the
/// pair channel down, its snapshot incomplete, or the configuration refused), or while the peer is
/// exposed (it recently sent files it accepted when this node had no copy, which may still be on
/// their way): taking the VIP back then would lose them, since RED follows the new epoch at once and
/// drops what the old active still transmits. The driver starts held
/// ([`ha_carp::driver::DriverConfig::hold_preemption`]); this releases it once in sync. A held node
/// still takes over from a peer that dies or is demoted.
pub(crate) async fn hold_preemption_until_synced(
    handle: HaHandle,
    stats: Arc<PairStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut role = handle.role.clone();
    let mut held = true;
    let mut ticker = tokio::time::interval(SYNC_CHECK_EVERY);
    loop {
        let hold = *role.borrow() != Role::Active
            && (stats.in_sync().is_err() || stats.peer_exposed.load(std::sync::atomic::Ordering::Relaxed));
        if hold != held {
            // Said before the command: once released, the election may take the VIP at once, and
            // the log must show the decision before its effect.
            info!(held = hold, "preemption {}", if hold { "held until the pair is in sync" } else { "released" });
            if handle.command(Command::HoldPreemption(hold)).await.is_err() {
                return;
            }
            held = hold;
        }
        tokio::select! {
            _ = ticker.tick() => {}
            changed = role.changed() => if changed.is_err() { return },
            _ = stopped(&mut shutdown) => return,
        }
    }
}

/// What a new connection starts with: the configuration, every held file, then what is held.
fn snapshot(config_path: &std::path::Path, spools: &[(u16, Spool)]) -> Vec<Request> {
    let mut requests = Vec::new();
    match std::fs::read_to_string(config_path) {
        Ok(toml) => requests.push(Request::Notice(PairMessage::Config { toml })),
        Err(error) => warn!(%error, "cannot read this node's configuration to replicate it"),
    }
    for (channel, spool) in spools {
        let entries = spool.list();
        for entry in &entries {
            // Nobody waits for these answers: a file that does not make it is sent again next time.
            let (done, _) = tokio::sync::oneshot::channel();
            requests.push(Request::File {
                channel: *channel,
                entry: entry.clone(),
                path: spool.data_path(&entry.id),
                done,
            });
        }
        let ids: Vec<String> = entries.into_iter().map(|e| e.id).collect();
        spool.copied(&ids);
        requests.push(Request::Notice(PairMessage::Pending { channel: *channel, ids }));
    }
    requests
}

/// Standby: forgets replicas past the resend window. Active: repeats the list of what it holds.
async fn housekeeping(
    role: watch::Receiver<Role>,
    standby: Arc<BlueStandby>,
    replicator: Replicator,
    spools: Vec<(u16, Spool)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut last_pending = Instant::now();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stopped(&mut shutdown) => return,
        }
        if *role.borrow() == Role::Active {
            // A takeover resends everything held: the sent marks were for the old active.
            standby.forget_marks();
            if last_pending.elapsed() >= PENDING_EVERY {
                last_pending = Instant::now();
                for (channel, spool) in &spools {
                    let ids = spool.list().into_iter().map(|e| e.id).collect();
                    replicator.notice(PairMessage::Pending { channel: *channel, ids });
                }
            }
        } else {
            standby.expire();
        }
    }
}

/// The standby's side: applies what the active pushes.
pub(crate) struct BlueStandby {
    spools: HashMap<u16, Spool>,
    /// Replicas the active has sent or no longer holds, and since when.
    sent: Mutex<HashMap<(u16, String), Instant>>,
    window: Duration,
    config_path: PathBuf,
    reload: Arc<Notify>,
    stats: Arc<PairStats>,
}

impl BlueStandby {
    fn spool(&self, channel: u16) -> Result<&Spool, Refusal> {
        self.spools.get(&channel).ok_or(Refusal::NoSuchChannel(channel))
    }

    fn mark(&self, channel: u16, id: String) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.entry((channel, id)).or_insert_with(Instant::now);
        }
    }

    fn forget_marks(&self) {
        if let Ok(mut sent) = self.sent.lock() {
            sent.clear();
        }
    }

    /// Removes the replicas sent more than the resend window ago.
    fn expire(&self) {
        let expired: Vec<(u16, String)> = match self.sent.lock() {
            Ok(sent) => sent.iter().filter(|(_, at)| at.elapsed() >= self.window).map(|(key, _)| key.clone()).collect(),
            Err(_) => return,
        };
        for (channel, id) in expired {
            if let Some(Err(error)) = self.spools.get(&channel).map(|spool| spool.remove(&id)) {
                warn!(channel, %id, %error, "cannot forget a replica");
                continue;
            }
            if let Ok(mut sent) = self.sent.lock() {
                sent.remove(&(channel, id));
            }
        }
    }

    fn apply_config(&self, toml: &str) -> PairMessage {
        let check = |path: &std::path::Path, text: &str| {
            let config = connectors::config::parse_toml(path, text)?;
            crate::config::check(path, config).map(|_| ())
        };
        ha_carp::pair::apply_on_standby(&self.config_path, toml, &self.stats, &self.reload, check)
    }
}

impl PairHandler for BlueStandby {
    fn file_path(&self, channel: u16, entry: &SpoolEntry) -> Result<PathBuf, Refusal> {
        // The id names files here: only the 32 hex digits an id has are accepted.
        if entry.file_id().is_none() {
            return Err(Refusal::NotAFileId(entry.id.clone()));
        }
        Ok(self.spool(channel)?.partial_path(&entry.id))
    }

    fn file_received(&self, channel: u16, entry: SpoolEntry) -> Result<(), Refusal> {
        self.spool(channel)?.commit_replica(&entry).map_err(|e| Refusal::io("cannot keep the replica", e))?;
        if let Ok(mut sent) = self.sent.lock() {
            sent.remove(&(channel, entry.id));
        }
        Ok(())
    }

    fn message(&self, message: PairMessage) -> Option<PairMessage> {
        match message {
            PairMessage::Config { toml } => Some(self.apply_config(&toml)),
            PairMessage::Sent { channel, id } => {
                self.mark(channel, id);
                None
            }
            PairMessage::Pending { channel, ids } => {
                let held: HashSet<String> = ids.into_iter().collect();
                if let Some(spool) = self.spools.get(&channel) {
                    for entry in spool.list().into_iter().filter(|e| !held.contains(&e.id)) {
                        self.mark(channel, entry.id);
                    }
                }
                None
            }
            other => {
                warn!(?other, "a message BLUE does not take: ignored");
                None
            }
        }
    }
}
