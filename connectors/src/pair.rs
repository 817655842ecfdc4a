//! The pair channel: how the two nodes of an Active/Standby pair talk over their data network. The
//! active pushes (configuration, accepted files, delivered files); the standby applies and answers.
//!
//! Transport: one TCP connection from the active to the standby. Both ends first send a hello (node,
//! side, a fresh 16-byte nonce) tagged with a key derived from the pair's security text, so a stranger
//! is refused before anything else is read. Every later frame is `u32 length | payload | 16-byte
//! tag`, the tag a keyed BLAKE3 of a per-direction sequence number and the payload under a key derived
//! from the security text and both nonces: a frame from another connection, replayed, reordered,
//! altered or cut is refused, the connection closed and the refusal counted by reason.
//!
//! Payloads are one byte of type (`J`: a JSON [`PairMessage`]; `D`: raw file content following a
//! [`PairMessage::File`]) and the body. JSON keeps the control messages readable in a capture; file
//! content travels raw in chunks of [`CHUNK`] bytes, so a large file never sits in memory.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use crate::ledger::LedgerEntry;
use crate::spool::{hex_encode, SpoolEntry};

/// File content per data frame.
pub const CHUNK: usize = 256 * 1024;
/// Largest frame accepted: a chunk, or a ledger snapshot of a few thousand entries.
pub const MAX_FRAME: usize = 8 << 20;
const TAG_LEN: usize = 16;
const NONCE_LEN: usize = 16;
/// How often the active says it is alive; the standby counts the link lost after three missed.
pub const HEARTBEAT: Duration = Duration::from_millis(500);
const PROTOCOL_VERSION: u32 = 1;
/// Connections a standby serves at once.
const MAX_CONNECTIONS: usize = 4;

/// The pair channel's section of a daemon's configuration (`[pair]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairConfig {
    /// Where this node accepts its active peer's connection (`ip:port` on the data network).
    pub listen: String,
    /// Where the peer accepts this node's connection when this node is active.
    pub peer: String,
    /// How long an accepted file or a delivery waits for the standby's acknowledgement before it
    /// goes ahead without it (and the pair counts as not redundant).
    #[serde(default = "default_ack_timeout_ms")]
    pub ack_timeout_ms: u64,
    /// BLUE: files the active reported sent are kept this long on the standby and resent after a
    /// takeover (RED's ledger recognises those already delivered).
    pub resend_window_s: Option<u64>,
    /// RED: verified files the standby keeps from its shadow decoding, waiting for the active to
    /// report them delivered (oldest dropped first, and counted, beyond this).
    pub shadow_files: Option<usize>,
}

fn default_ack_timeout_ms() -> u64 {
    2000
}

pub const DEFAULT_RESEND_WINDOW_S: u64 = 30;
pub const DEFAULT_SHADOW_FILES: usize = 1000;
/// Deliveries without acknowledgement an active RED keeps for its next snapshot. Only the ones whose
/// ledger line was not yet written when the snapshot read the ledger matter, so a few are enough.
const MAX_UNANNOUNCED: usize = 4096;

/// A checked `[pair]` section.
#[derive(Clone, Debug)]
pub struct CheckedPair {
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    pub ack_timeout: Duration,
    pub resend_window: Duration,
    pub shadow_files: usize,
    pub key: PairKey,
}

impl PairConfig {
    /// Checks the section; `side` is "blue" or "red" (each has one field of its own), the security text
    /// comes from `[ha]`.
    pub fn check(&self, side: &str, security_text: &str) -> Result<CheckedPair, (String, String)> {
        let field = |name: &str, reason: String| (format!("pair.{name}"), reason);
        let listen = crate::config::parse_addr(&self.listen).map_err(|e| field("listen", e))?;
        let peer = crate::config::parse_addr(&self.peer).map_err(|e| field("peer", e))?;
        if listen == peer {
            return Err(field("peer", "the peer's address is this node's own".into()));
        }
        if listen.ip().is_unspecified() {
            return Err(field("listen", "give this node's data address, not 0.0.0.0".into()));
        }
        if !(100..=60_000).contains(&self.ack_timeout_ms) {
            return Err(field("ack_timeout_ms", "must be between 100 and 60000".into()));
        }
        if side == "red" && self.resend_window_s.is_some() {
            return Err(field("resend_window_s", "only blue-tx resends; red-rx has shadow_files".into()));
        }
        if side == "blue" && self.shadow_files.is_some() {
            return Err(field("shadow_files", "only red-rx decodes in shadow; blue-tx has resend_window_s".into()));
        }
        let resend_window_s = self.resend_window_s.unwrap_or(DEFAULT_RESEND_WINDOW_S);
        if !(1..=86_400).contains(&resend_window_s) {
            return Err(field("resend_window_s", "must be between 1 and 86400 seconds".into()));
        }
        let shadow_files = self.shadow_files.unwrap_or(DEFAULT_SHADOW_FILES);
        if !(1..=1_000_000).contains(&shadow_files) {
            return Err(field("shadow_files", "must be between 1 and 1000000".into()));
        }
        if security_text.is_empty() {
            return Err(("ha.security_text".into(), "the pair channel is authenticated with it: set one".into()));
        }
        Ok(CheckedPair {
            listen,
            peer,
            ack_timeout: Duration::from_millis(self.ack_timeout_ms),
            resend_window: Duration::from_secs(resend_window_s),
            shadow_files,
            key: PairKey::from_security_text(security_text),
        })
    }
}

/// Checks a daemon's optional `[pair]` section against its `[ha]` (the security text and the VIP).
pub fn check_section(
    path: &std::path::Path,
    pair: Option<&PairConfig>,
    side: &str,
    ha: Option<(&str, std::net::Ipv4Addr)>,
) -> Result<Option<CheckedPair>, crate::config::ConfigError> {
    let Some(pair) = pair else { return Ok(None) };
    let err = |field: String, reason: String| crate::config::ConfigError::new(path, field, reason);
    let Some((security_text, vip)) = ha else {
        return Err(err("pair".into(), "the pair channel needs an [ha] section (its security text and VIP)".into()));
    };
    let checked = pair.check(side, security_text).map_err(|(field, reason)| err(field, reason))?;
    for (field, addr) in [("pair.listen", checked.listen), ("pair.peer", checked.peer)] {
        if addr.ip() == std::net::IpAddr::V4(vip) {
            return Err(err(
                field.into(),
                format!("{addr} is the VIP: the pair channel must reach the standby, which does not hold it"),
            ));
        }
    }
    Ok(Some(checked))
}

/// The pair's key, derived from the security text (never the text itself on the wire).
#[derive(Clone)]
pub struct PairKey([u8; 32]);

impl std::fmt::Debug for PairKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PairKey(..)")
    }
}

impl PairKey {
    pub fn from_security_text(text: &str) -> PairKey {
        PairKey(blake3::derive_key("diode pair channel v1 key", text.as_bytes()))
    }

    fn tag(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        for part in parts {
            hasher.update(part);
        }
        *hasher.finalize().as_bytes()
    }
}

/// What each end says first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    pub version: u32,
    pub node: String,
    /// "blue" or "red": a BLUE never pairs with a RED.
    pub side: String,
    /// Hex of 16 random bytes, fresh per connection.
    pub nonce: String,
}

impl Hello {
    pub fn new(node: &str, side: &str) -> Hello {
        let mut nonce = [0u8; NONCE_LEN];
        if getrandom::fill(&mut nonce).is_err() {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            nonce.copy_from_slice(&now.to_le_bytes());
        }
        Hello { version: PROTOCOL_VERSION, node: node.into(), side: side.into(), nonce: hex_encode(&nonce) }
    }
}

/// Everything the pair says to each other.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PairMessage {
    /// The active's configuration file; the standby keeps its local settings and applies the rest.
    Config { toml: String },
    /// The standby's answer to `Config`: applied, or refused with the field and reason.
    ConfigResult { ok: bool, reason: Option<String> },
    /// BLUE: an accepted file; `len` bytes of content follow in data frames.
    File { request: u64, channel: u16, entry: SpoolEntry, len: u64 },
    /// BLUE: the active has sent this file (the standby keeps it for the resend window).
    Sent { channel: u16, id: String },
    /// BLUE: every file the active still holds for a channel; the standby's other copies count as sent.
    Pending { channel: u16, ids: Vec<String> },
    /// RED: the active is delivering this file; the standby must not deliver it.
    Delivered { request: u64, channel: u16, entry: LedgerEntry },
    /// RED: the active's ledger, sent on each connection before anything else, in parts;
    /// `complete` marks the last part.
    Ledger { channel: u16, entries: Vec<LedgerEntry>, complete: bool },
    /// The standby's answer to a request.
    Ack { request: u64, ok: bool, reason: Option<String> },
    /// The active is alive; `synced` says its connection-time snapshot is complete. `exposed` (BLUE):
    /// within its resend window the active sent files it had accepted while the standby had no copy,
    /// so if it stopped transmitting now they could be lost; the standby does not preempt meanwhile.
    Heartbeat {
        synced: bool,
        #[serde(default)]
        exposed: bool,
    },
}

/// One received frame.
#[derive(Debug)]
pub enum Frame {
    Message(PairMessage),
    Data(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("the peer's tag does not match: not our pair, or altered, replayed or reordered")]
    BadTag,
    #[error("frame of {0} bytes is over the limit")]
    TooLong(usize),
    #[error("hello refused: {0}")]
    BadHello(String),
    #[error("message not understood: {0}")]
    BadMessage(String),
    #[error("connection closed")]
    Closed,
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl PairError {
    /// The label under which a refusal is counted.
    pub fn label(&self) -> &'static str {
        match self {
            PairError::BadTag => "bad_tag",
            PairError::TooLong(_) => "too_long",
            PairError::BadHello(_) => "bad_hello",
            PairError::BadMessage(_) => "bad_message",
            PairError::Closed => "closed",
            PairError::Io(_) => "io",
        }
    }

    /// Whether this was the peer misbehaving (counted as a refusal) rather than the network.
    pub fn is_refusal(&self) -> bool {
        matches!(self, PairError::BadTag | PairError::TooLong(_) | PairError::BadHello(_) | PairError::BadMessage(_))
    }
}

pub struct PairReader {
    stream: OwnedReadHalf,
    key: PairKey,
    seq: u64,
}

pub struct PairWriter {
    stream: OwnedWriteHalf,
    key: PairKey,
    seq: u64,
}

impl PairWriter {
    async fn send_raw(&mut self, kind: u8, body: &[u8]) -> Result<(), PairError> {
        let len = 1 + body.len() + TAG_LEN;
        if len > MAX_FRAME {
            return Err(PairError::TooLong(len));
        }
        let tag = self.key.tag(&[&self.seq.to_le_bytes(), &[kind], body]);
        self.seq += 1;
        let mut frame = Vec::with_capacity(4 + len);
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        frame.push(kind);
        frame.extend_from_slice(body);
        frame.extend_from_slice(&tag[..TAG_LEN]);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    pub async fn send(&mut self, message: &PairMessage) -> Result<(), PairError> {
        let body = serde_json::to_vec(message).map_err(|e| PairError::BadMessage(e.to_string()))?;
        self.send_raw(b'J', &body).await
    }

    pub async fn send_data(&mut self, data: &[u8]) -> Result<(), PairError> {
        self.send_raw(b'D', data).await
    }
}

impl PairReader {
    pub async fn recv(&mut self) -> Result<Frame, PairError> {
        let mut length = [0u8; 4];
        match self.stream.read_exact(&mut length).await {
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Err(PairError::Closed),
            Err(error) => return Err(error.into()),
        }
        let len = u32::from_be_bytes(length) as usize;
        if len > MAX_FRAME {
            return Err(PairError::TooLong(len));
        }
        if len < 1 + TAG_LEN {
            return Err(PairError::BadTag);
        }
        let mut frame = vec![0u8; len];
        self.stream.read_exact(&mut frame).await?;
        let (content, tag) = frame.split_at(len - TAG_LEN);
        let expected = self.key.tag(&[&self.seq.to_le_bytes(), content]);
        if !constant_time_eq(&expected[..TAG_LEN], tag) {
            return Err(PairError::BadTag);
        }
        self.seq += 1;
        match content[0] {
            b'J' => serde_json::from_slice(&content[1..])
                .map(Frame::Message)
                .map_err(|e| PairError::BadMessage(e.to_string())),
            b'D' => Ok(Frame::Data(content[1..].to_vec())),
            other => Err(PairError::BadMessage(format!("frame type {other}"))),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Exchanges hellos on a fresh connection and derives the connection's keys. `initiator` is the end
/// that connected (the active).
pub async fn handshake(
    stream: TcpStream,
    key: &PairKey,
    me: &Hello,
    initiator: bool,
) -> Result<(Hello, PairReader, PairWriter), PairError> {
    let _ = stream.set_nodelay(true);
    let (mut read, mut write) = stream.into_split();
    let body = serde_json::to_vec(me).map_err(|e| PairError::BadMessage(e.to_string()))?;
    let tag = key.tag(&[b"hello", &body]);
    let mut frame = Vec::with_capacity(4 + body.len() + TAG_LEN);
    frame.extend_from_slice(&((body.len() + TAG_LEN) as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    frame.extend_from_slice(&tag[..TAG_LEN]);
    write.write_all(&frame).await?;

    let mut length = [0u8; 4];
    let read_hello = async {
        read.read_exact(&mut length).await?;
        let len = u32::from_be_bytes(length) as usize;
        if !(TAG_LEN + 2..=4096).contains(&len) {
            return Err(PairError::BadHello(format!("a hello of {len} bytes")));
        }
        let mut frame = vec![0u8; len];
        read.read_exact(&mut frame).await?;
        Ok::<_, PairError>(frame)
    };
    let frame = tokio::time::timeout(Duration::from_secs(5), read_hello)
        .await
        .map_err(|_| PairError::BadHello("no hello within 5 s".into()))??;
    let (body, tag) = frame.split_at(frame.len() - TAG_LEN);
    if !constant_time_eq(&key.tag(&[b"hello", body])[..TAG_LEN], tag) {
        return Err(PairError::BadTag);
    }
    let peer: Hello = serde_json::from_slice(body).map_err(|e| PairError::BadHello(e.to_string()))?;
    if peer.version != PROTOCOL_VERSION {
        return Err(PairError::BadHello(format!(
            "protocol version {}, this node speaks {PROTOCOL_VERSION}",
            peer.version
        )));
    }
    if peer.side != me.side {
        return Err(PairError::BadHello(format!("the peer is a {} node, this one is {}", peer.side, me.side)));
    }
    if peer.nonce == me.nonce {
        return Err(PairError::BadHello("the peer echoed this node's nonce".into()));
    }
    let (active_nonce, standby_nonce) = if initiator { (&me.nonce, &peer.nonce) } else { (&peer.nonce, &me.nonce) };
    let session = key.tag(&[b"session", active_nonce.as_bytes(), standby_nonce.as_bytes()]);
    let direction = |label: &[u8]| PairKey(PairKey(session).tag(&[label]));
    let (push, answer) = (direction(b"active to standby"), direction(b"standby to active"));
    let (read_key, write_key) = if initiator { (answer, push) } else { (push, answer) };
    Ok((peer, PairReader { stream: read, key: read_key, seq: 0 }, PairWriter { stream: write, key: write_key, seq: 0 }))
}

/// The pair channel's counters and state, for the status page and metrics.
#[derive(Debug, Default)]
pub struct PairStats {
    /// This node (active) has a connection to its standby, or (standby) its active is connected.
    pub connected: AtomicBool,
    /// The connection-time snapshot (configuration, files or ledger) is complete on both ends.
    pub synced: AtomicBool,
    pub connections: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Files (BLUE) or deliveries (RED) the standby acknowledged.
    pub replicated: AtomicU64,
    pub replicated_bytes: AtomicU64,
    /// Requests that went ahead without the standby (unreachable, refused, too slow).
    pub unreplicated: AtomicU64,
    /// Frames and connections refused, by reason.
    pub refused: Mutex<BTreeMap<&'static str, u64>>,
    pub last_heard: Mutex<Option<Instant>>,
    pub peer_node: Mutex<Option<String>>,
    /// Why the standby refused the last configuration, while it does.
    pub config_refused: Mutex<Option<String>>,
    pub configs_applied: AtomicU64,
    /// Active: until when files sent without a copy on the standby may still be in flight.
    pub exposed_until: Mutex<Option<Instant>>,
    /// Standby: the active's last heartbeat said it is exposed.
    pub peer_exposed: AtomicBool,
    /// RED active: deliveries that went ahead without the standby's acknowledgement, newest last, for
    /// the next connection's snapshot. The snapshot reads the ledger file too, but a delivery refused
    /// just before the connection came up may not have its ledger line yet when the file is read.
    unannounced: Mutex<VecDeque<(u16, LedgerEntry)>>,
    /// Entries pushed out of `unannounced` by newer ones (long since in the ledger file).
    pub unannounced_forgotten: AtomicU64,
}

impl PairStats {
    pub fn refuse(&self, label: &'static str) {
        if let Ok(mut refused) = self.refused.lock() {
            *refused.entry(label).or_insert(0) += 1;
        }
    }

    /// Active: a file accepted without a copy on the standby was sent; until `window` has passed it
    /// may still be on its way, and only this node has it.
    pub fn expose(&self, window: Duration) {
        if let Ok(mut until) = self.exposed_until.lock() {
            *until = Some(Instant::now() + window).max(*until);
        }
    }

    /// Marks the pair channel up. Under the lock of the unannounced deliveries, so a delivery either
    /// saw the channel up (and asks the standby) or is in the list the snapshot then takes.
    fn set_connected(&self) {
        let _unannounced = self.unannounced.lock();
        self.connected.store(true, Ordering::Relaxed);
    }

    /// RED active: the deliveries made without the standby's acknowledgement since the last snapshot.
    pub fn take_unannounced(&self) -> Vec<(u16, LedgerEntry)> {
        self.unannounced.lock().map(|mut list| list.drain(..).collect()).unwrap_or_default()
    }

    fn remember_unannounced(&self, list: &mut VecDeque<(u16, LedgerEntry)>, channel: u16, entry: LedgerEntry) {
        if list.len() >= MAX_UNANNOUNCED {
            list.pop_front();
            self.unannounced_forgotten.fetch_add(1, Ordering::Relaxed);
        }
        list.push_back((channel, entry));
    }

    pub fn exposed(&self) -> bool {
        self.exposed_until.lock().ok().and_then(|u| *u).is_some_and(|until| Instant::now() < until)
    }

    pub fn heard(&self) {
        if let Ok(mut last) = self.last_heard.lock() {
            *last = Some(Instant::now());
        }
    }

    /// Whether the link is up and in sync: heard from within three heartbeats, snapshot done, and the
    /// last configuration accepted. `Err` says why not.
    pub fn in_sync(&self) -> Result<(), String> {
        let heard = self.last_heard.lock().ok().and_then(|l| *l);
        if !self.connected.load(Ordering::Relaxed) || heard.is_none_or(|t| t.elapsed() > HEARTBEAT * 4) {
            return Err("the pair channel to the peer is down".into());
        }
        if !self.synced.load(Ordering::Relaxed) {
            return Err("the pair is still synchronising".into());
        }
        if let Some(reason) = self.config_refused.lock().ok().and_then(|r| r.clone()) {
            return Err(format!("the standby refused the active's configuration: {reason}"));
        }
        Ok(())
    }

    /// Metric families of the pair channel, labelled with the node.
    pub fn families(&self, node: &str, redundant: bool) -> Vec<crate::management::Family> {
        use crate::management::{labels, Family};
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let base = || labels(&[("node", node)]);
        let refused = self
            .refused
            .lock()
            .map(|r| r.iter().map(|(reason, n)| (labels(&[("node", node), ("reason", reason)]), *n as f64)).collect())
            .unwrap_or_default();
        vec![
            Family::gauge(
                "pair_redundant",
                "1 while the pair would survive the loss of one node.",
                vec![(base(), f64::from(u8::from(redundant)))],
            ),
            Family::gauge(
                "pair_connected",
                "1 while the pair channel is up.",
                vec![(base(), f64::from(u8::from(self.connected.load(Ordering::Relaxed))))],
            ),
            Family::counter(
                "pair_replicated",
                "Files or deliveries the standby acknowledged.",
                vec![(base(), load(&self.replicated))],
            ),
            Family::counter(
                "pair_unreplicated",
                "Files or deliveries that went ahead without the standby.",
                vec![(base(), load(&self.unreplicated))],
            ),
            Family::counter("pair_refused", "Pair channel frames and connections refused, by reason.", refused),
        ]
    }

    pub fn json(&self) -> serde_json::Value {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "connected": self.connected.load(Ordering::Relaxed),
            "synced": self.synced.load(Ordering::Relaxed),
            "peer": self.peer_node.lock().ok().and_then(|p| p.clone()),
            "connections": load(&self.connections),
            "frames_in": load(&self.frames_in),
            "frames_out": load(&self.frames_out),
            "replicated": load(&self.replicated),
            "replicated_bytes": load(&self.replicated_bytes),
            "unreplicated": load(&self.unreplicated),
            "refused": self.refused.lock().map(|r| r.clone()).unwrap_or_default(),
            "configs_applied": load(&self.configs_applied),
            "config_refused": self.config_refused.lock().ok().and_then(|r| r.clone()),
            "exposed": self.exposed(),
            "unannounced_forgotten": load(&self.unannounced_forgotten),
            "peer_exposed": self.peer_exposed.load(Ordering::Relaxed),
        })
    }
}

/// Redundancy as the daemons report it (`{"state", "reason"}`): the election's view (`None`: HA is
/// off), corrected by the pair channel when there is one: a pair that cannot replicate is not
/// redundant, whatever the election says, and one in sync is.
pub fn redundancy_json(election: Option<(&'static str, String)>, pair: Option<&PairStats>) -> serde_json::Value {
    let (state, reason) = match (election, pair) {
        (None, _) => ("not redundant", "HA is off: a single node".to_string()),
        (Some(("not redundant", reason)), _) => ("not redundant", reason),
        (Some(election), None) => election,
        (Some(_), Some(pair)) => match pair.in_sync() {
            Ok(()) => ("redundant", "the peer is connected and in sync".to_string()),
            Err(reason) => ("not redundant", reason),
        },
    };
    serde_json::json!({"state": state, "reason": reason})
}

/// A configuration imported on this node goes to the standby at once when this node is the active
/// one of a pair. Whether it was handed to the pair channel.
pub fn push_imported_config(replicator: Option<&Replicator>, active: bool, text: &str) -> bool {
    match replicator {
        Some(replicator) if active => {
            replicator.notice(PairMessage::Config { toml: text.to_string() });
            true
        }
        _ => false,
    }
}

/// What the active asks of its standby.
pub enum Request {
    /// Fire and forget (sent notices, pending lists).
    Notice(PairMessage),
    /// A file to copy; answered once the standby has it on disk.
    File { channel: u16, entry: SpoolEntry, path: PathBuf, done: oneshot::Sender<Result<(), String>> },
    /// A delivery to record; answered once the standby has it in its ledger (to a blocking caller).
    Delivered { channel: u16, entry: LedgerEntry, done: std::sync::mpsc::SyncSender<Result<(), String>> },
}

/// Where the standby's answer to a request goes: an async caller's or a blocking caller's channel.
enum Done {
    Async(oneshot::Sender<Result<(), String>>),
    Blocking(std::sync::mpsc::SyncSender<Result<(), String>>),
}

impl Done {
    fn send(self, result: Result<(), String>) {
        match self {
            Done::Async(done) => {
                let _ = done.send(result);
            }
            Done::Blocking(done) => {
                let _ = done.try_send(result);
            }
        }
    }
}

/// The active's handle to its standby. Cheap to clone; never blocks longer than the ack timeout.
#[derive(Clone)]
pub struct Replicator {
    requests: mpsc::Sender<Request>,
    pub stats: Arc<PairStats>,
    ack_timeout: Duration,
    resend_window: Duration,
}

impl Replicator {
    /// A replicator with no pusher behind it: every request fails at once, as with a standby that is
    /// unreachable (for tests of what uses one).
    pub fn unconnected() -> Replicator {
        let (requests, _) = mpsc::channel(1);
        Replicator {
            requests,
            stats: Arc::default(),
            ack_timeout: Duration::from_millis(100),
            resend_window: Duration::from_secs(DEFAULT_RESEND_WINDOW_S),
        }
    }

    /// Copies a file to the standby. `Err` says why it was not (the caller goes ahead: a pair without
    /// its standby keeps working, reported not redundant).
    pub async fn replicate_file(&self, channel: u16, entry: &SpoolEntry, path: PathBuf) -> Result<(), String> {
        let (done, answer) = oneshot::channel();
        let request = Request::File { channel, entry: entry.clone(), path, done };
        let result = self.ask(request, answer, entry.size).await;
        self.count(&result, entry.size);
        result
    }

    /// Tells the standby a file is being delivered, waiting for its ledger to have it.
    pub fn replicate_delivery_blocking(&self, channel: u16, entry: LedgerEntry) -> Result<(), String> {
        {
            // Checked under the lock `set_connected` takes: see there.
            let mut unannounced = self.stats.unannounced.lock().map_err(|_| "poisoned".to_string())?;
            if !self.stats.connected.load(Ordering::Relaxed) {
                self.stats.unreplicated.fetch_add(1, Ordering::Relaxed);
                self.stats.remember_unannounced(&mut unannounced, channel, entry);
                return Err("the standby is not connected".into());
            }
        }
        let remembered = entry.clone();
        let (done, answer) = std::sync::mpsc::sync_channel(1);
        let result = match self.requests.try_send(Request::Delivered { channel, entry, done }) {
            Ok(()) => match answer.recv_timeout(self.ack_timeout) {
                Ok(result) => result,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err("the standby did not answer in time".into()),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err("the pair channel closed".into()),
            },
            Err(_) => Err("the pair channel's queue is full".into()),
        };
        self.count(&result, 0);
        if let (Err(_), Ok(mut unannounced)) = (&result, self.stats.unannounced.lock()) {
            self.stats.remember_unannounced(&mut unannounced, channel, remembered);
        }
        result
    }

    /// Fire-and-forget notice; dropped (the periodic pending list repairs it) when the queue is full.
    pub fn notice(&self, message: PairMessage) {
        let _ = self.requests.try_send(Request::Notice(message));
    }

    /// A file accepted without a copy on the standby has been sent: see [`PairStats::expose`].
    pub fn sent_without_copy(&self) {
        self.stats.expose(self.resend_window);
    }

    async fn ask(
        &self,
        request: Request,
        answer: oneshot::Receiver<Result<(), String>>,
        size: u64,
    ) -> Result<(), String> {
        if !self.stats.connected.load(Ordering::Relaxed) {
            return Err("the standby is not connected".into());
        }
        // Large files take their time on the wire: allow the timeout plus 10 ms per MB.
        let limit = self.ack_timeout + Duration::from_millis(size / 100_000);
        tokio::time::timeout(limit, async {
            self.requests.send(request).await.map_err(|_| "the pair channel has stopped".to_string())?;
            answer.await.map_err(|_| "the pair channel closed".to_string())?
        })
        .await
        .map_err(|_| "the standby did not answer in time".to_string())?
    }

    fn count(&self, result: &Result<(), String>, bytes: u64) {
        match result {
            Ok(()) => {
                self.stats.replicated.fetch_add(1, Ordering::Relaxed);
                self.stats.replicated_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Err(_) => {
                self.stats.unreplicated.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What the active sends first on every new connection (the configuration, its pending files or its
/// ledger), produced fresh for each connection.
pub type Snapshot = Box<dyn Fn() -> Vec<Request> + Send + Sync>;

/// Creates the active's replicator and the task that keeps its connection: while `active` is true it
/// connects to the peer, sends the snapshot, then the requests as they come, and reads the answers.
pub fn spawn_pusher(
    pair: &CheckedPair,
    hello_node: String,
    side: &'static str,
    mut active: watch::Receiver<bool>,
    snapshot: Snapshot,
    stats: Arc<PairStats>,
) -> Replicator {
    let (requests_tx, mut requests) = mpsc::channel::<Request>(256);
    let replicator = Replicator {
        requests: requests_tx,
        stats: Arc::clone(&stats),
        ack_timeout: pair.ack_timeout,
        resend_window: pair.resend_window,
    };
    let (peer, key) = (pair.peer, pair.key.clone());
    tokio::spawn(async move {
        loop {
            // While standby, refuse requests at once rather than let callers wait on a timeout.
            while !*active.borrow() {
                tokio::select! {
                    changed = active.changed() => if changed.is_err() { return },
                    request = requests.recv() => match request {
                        Some(request) => refuse(request, "this node is not active"),
                        None => return,
                    },
                }
            }
            let connection = async {
                let stream = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(peer))
                    .await
                    .map_err(|_| PairError::Io(std::io::ErrorKind::TimedOut.into()))??;
                handshake(stream, &key, &Hello::new(&hello_node, side), true).await
            };
            let (hello, reader, writer) = match connection.await {
                Ok(parts) => parts,
                Err(error) => {
                    if error.is_refusal() {
                        stats.refuse(error.label());
                        warn!(%peer, %error, "pair channel refused");
                    }
                    // Fail what waits, then try again shortly.
                    let retry = tokio::time::sleep(Duration::from_millis(500));
                    tokio::pin!(retry);
                    loop {
                        tokio::select! {
                            _ = &mut retry => break,
                            request = requests.recv() => match request {
                                Some(request) => refuse(request, "the standby is not reachable"),
                                None => return,
                            },
                        }
                    }
                    continue;
                }
            };
            info!(%peer, peer_node = %hello.node, "pair channel up: replicating to the standby");
            stats.connections.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut node) = stats.peer_node.lock() {
                *node = Some(hello.node.clone());
            }
            stats.heard();
            stats.set_connected();
            let outcome = push(reader, writer, &mut requests, &mut active, &snapshot, &stats).await;
            stats.connected.store(false, Ordering::Relaxed);
            stats.synced.store(false, Ordering::Relaxed);
            match outcome {
                Ok(()) => info!(%peer, "pair channel closed"),
                Err(error) => {
                    if error.is_refusal() {
                        stats.refuse(error.label());
                    }
                    warn!(%peer, %error, "pair channel lost");
                }
            }
            if requests.is_closed() {
                return;
            }
        }
    });
    replicator
}

fn refuse(request: Request, reason: &str) {
    match request {
        Request::Notice(_) => {}
        Request::File { done, .. } => Done::Async(done).send(Err(reason.to_string())),
        Request::Delivered { done, .. } => Done::Blocking(done).send(Err(reason.to_string())),
    }
}

type Waiting = Arc<Mutex<HashMap<u64, Done>>>;

async fn push(
    mut reader: PairReader,
    mut writer: PairWriter,
    requests: &mut mpsc::Receiver<Request>,
    active: &mut watch::Receiver<bool>,
    snapshot: &Snapshot,
    stats: &Arc<PairStats>,
) -> Result<(), PairError> {
    let waiting: Waiting = Arc::default();
    let answers = {
        let (waiting, stats) = (Arc::clone(&waiting), Arc::clone(stats));
        tokio::spawn(async move {
            loop {
                let frame = reader.recv().await?;
                stats.frames_in.fetch_add(1, Ordering::Relaxed);
                stats.heard();
                match frame {
                    Frame::Message(PairMessage::Ack { request, ok, reason }) => {
                        let done = waiting.lock().ok().and_then(|mut w| w.remove(&request));
                        if let Some(done) = done {
                            done.send(if ok { Ok(()) } else { Err(reason.unwrap_or_default()) });
                        }
                    }
                    Frame::Message(PairMessage::ConfigResult { ok, reason }) => {
                        if let Ok(mut refused) = stats.config_refused.lock() {
                            *refused = if ok { None } else { reason.clone() };
                        }
                        if let Some(reason) = reason.filter(|_| !ok) {
                            warn!(%reason, "ALARM the standby refused this node's configuration");
                        }
                    }
                    Frame::Message(PairMessage::Heartbeat { .. }) => {}
                    other => {
                        return Err::<(), PairError>(PairError::BadMessage(format!(
                            "unexpected from the standby: {other:?}"
                        )))
                    }
                }
            }
        })
    };
    let mut next_request = 1u64;
    let result = async {
        for request in snapshot() {
            send_request(&mut writer, request, &mut next_request, &waiting, stats).await?;
        }
        stats.synced.store(true, Ordering::Relaxed);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = heartbeat.tick() => {
                    let message = PairMessage::Heartbeat { synced: true, exposed: stats.exposed() };
                    writer.send(&message).await?;
                    stats.frames_out.fetch_add(1, Ordering::Relaxed);
                    let heard = stats.last_heard.lock().ok().and_then(|l| *l);
                    if heard.is_some_and(|t| t.elapsed() > HEARTBEAT * 4) {
                        return Err(PairError::Io(std::io::ErrorKind::TimedOut.into()));
                    }
                }
                request = requests.recv() => match request {
                    Some(request) => send_request(&mut writer, request, &mut next_request, &waiting, stats).await?,
                    None => return Ok(()),
                },
                changed = active.changed() => {
                    if changed.is_err() || !*active.borrow() {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    answers.abort();
    for (_, done) in waiting.lock().map(|mut w| std::mem::take(&mut *w)).unwrap_or_default() {
        done.send(Err("the pair channel closed".into()));
    }
    result
}

async fn send_request(
    writer: &mut PairWriter,
    request: Request,
    next_request: &mut u64,
    waiting: &Waiting,
    stats: &PairStats,
) -> Result<(), PairError> {
    let id = *next_request;
    *next_request += 1;
    match request {
        Request::Notice(message) => {
            writer.send(&message).await?;
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
        }
        Request::Delivered { channel, entry, done } => {
            if let Ok(mut waiting) = waiting.lock() {
                waiting.insert(id, Done::Blocking(done));
            }
            writer.send(&PairMessage::Delivered { request: id, channel, entry }).await?;
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
        }
        Request::File { channel, entry, path, done } => {
            let mut file = match tokio::fs::File::open(&path).await {
                Ok(file) => file,
                Err(error) => {
                    let _ = done.send(Err(format!("cannot read {}: {error}", path.display())));
                    return Ok(());
                }
            };
            let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            if let Ok(mut waiting) = waiting.lock() {
                waiting.insert(id, Done::Async(done));
            }
            writer.send(&PairMessage::File { request: id, channel, entry, len }).await?;
            let mut left = len;
            let mut buffer = vec![0u8; CHUNK];
            while left > 0 {
                let want = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                // A file that shrank underneath is sent short: the standby sees the length wrong and refuses.
                let got = file.read(&mut buffer[..want]).await?;
                if got == 0 {
                    break;
                }
                writer.send_data(&buffer[..got]).await?;
                left -= got as u64;
            }
            if left > 0 {
                writer.send_data(&[]).await?;
            }
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// What the standby does with what its active pushes. Methods block (file system); they run on a
/// blocking thread.
pub trait PairHandler: Send + Sync + 'static {
    /// Where to write a replicated file's content before [`PairHandler::file_received`].
    fn file_path(&self, channel: u16, entry: &SpoolEntry) -> Result<PathBuf, String>;
    /// The content is complete, synced, at `file_path`.
    fn file_received(&self, channel: u16, entry: SpoolEntry) -> Result<(), String>;
    /// Any other message; the answer (if any) goes back to the active.
    fn message(&self, message: PairMessage) -> Option<PairMessage>;
    /// The active's connection ended (the standby may now have to take over).
    fn disconnected(&self) {}
}

/// A `true`/`false` mirror of "this node is active" for the pusher, from the daemon's role watch.
pub fn follow_active<R: Send + Sync + 'static>(
    mut role: watch::Receiver<R>,
    is_active: impl Fn(&R) -> bool + Send + 'static,
) -> watch::Receiver<bool> {
    let (active_tx, active_rx) = watch::channel(is_active(&role.borrow()));
    tokio::spawn(async move {
        while role.changed().await.is_ok() {
            let active = is_active(&role.borrow());
            if active_tx.send(active).is_err() {
                return;
            }
        }
    });
    active_rx
}

/// Resolves once `stop` says true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Accepts the active peer's connections on `listen` and hands what they carry to `handler`.
pub async fn serve_standby(
    listener: TcpListener,
    key: PairKey,
    node: String,
    side: &'static str,
    handler: Arc<dyn PairHandler>,
    stats: Arc<PairStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    // One active peer at a time is the rule; a few more cover a reconnect overlapping a dying
    // connection. Beyond that a stranger could only hold sockets open: refused at once and counted.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, from) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "pair channel accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => return,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            stats.refuse("too_many_connections");
            warn!(%from, "pair channel: too many connections at once, refused");
            continue;
        };
        let (key, node, handler, stats) = (key.clone(), node.clone(), Arc::clone(&handler), Arc::clone(&stats));
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let result = tokio::select! {
                result = apply(stream, &key, &node, side, &handler, &stats) => result,
                _ = stopped(&mut stop) => Ok(()),
            };
            stats.connected.store(false, Ordering::Relaxed);
            stats.synced.store(false, Ordering::Relaxed);
            stats.peer_exposed.store(false, Ordering::Relaxed);
            handler.disconnected();
            match result {
                Ok(()) => info!(%from, "pair channel from the active closed"),
                Err(error) => {
                    if error.is_refusal() {
                        stats.refuse(error.label());
                        warn!(%from, %error, "ALARM pair channel refused");
                    } else {
                        info!(%from, %error, "pair channel from the active lost");
                    }
                }
            }
        });
    }
}

async fn apply(
    stream: TcpStream,
    key: &PairKey,
    node: &str,
    side: &'static str,
    handler: &Arc<dyn PairHandler>,
    stats: &Arc<PairStats>,
) -> Result<(), PairError> {
    let (hello, mut reader, mut writer) = handshake(stream, key, &Hello::new(node, side), false).await?;
    info!(peer_node = %hello.node, "pair channel up: the active replicates to this node");
    stats.connections.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut peer) = stats.peer_node.lock() {
        *peer = Some(hello.node);
    }
    stats.connected.store(true, Ordering::Relaxed);
    loop {
        // The active sends a heartbeat every HEARTBEAT: silence means it is gone, even if TCP has not noticed.
        let frame = tokio::time::timeout(HEARTBEAT * 4, reader.recv())
            .await
            .map_err(|_| PairError::Io(std::io::ErrorKind::TimedOut.into()))??;
        stats.frames_in.fetch_add(1, Ordering::Relaxed);
        stats.heard();
        let reply = match frame {
            Frame::Message(PairMessage::File { request, channel, entry, len }) => {
                let result = receive_file(&mut reader, handler, channel, entry, len).await?;
                if result.is_ok() {
                    stats.replicated.fetch_add(1, Ordering::Relaxed);
                    stats.replicated_bytes.fetch_add(len, Ordering::Relaxed);
                }
                let reason = result.as_ref().err().cloned();
                Some(PairMessage::Ack { request, ok: result.is_ok(), reason })
            }
            Frame::Message(PairMessage::Heartbeat { synced, exposed }) => {
                stats.synced.store(synced, Ordering::Relaxed);
                stats.peer_exposed.store(exposed, Ordering::Relaxed);
                Some(PairMessage::Heartbeat { synced, exposed })
            }
            Frame::Message(message) => {
                let handler = Arc::clone(handler);
                tokio::task::spawn_blocking(move || handler.message(message))
                    .await
                    .map_err(|e| PairError::BadMessage(e.to_string()))?
            }
            Frame::Data(_) => return Err(PairError::BadMessage("file content without a file".into())),
        };
        if let Some(reply) = reply {
            writer.send(&reply).await?;
            stats.frames_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Reads a replicated file's content to the handler's path, syncs it and hands it over. The outer
/// error is the connection's; the inner one is this file's, answered to the active.
async fn receive_file(
    reader: &mut PairReader,
    handler: &Arc<dyn PairHandler>,
    channel: u16,
    entry: SpoolEntry,
    len: u64,
) -> Result<Result<(), String>, PairError> {
    let path = handler.file_path(channel, &entry);
    let mut file = match &path {
        Ok(path) => tokio::fs::File::create(path).await.map_err(|e| format!("cannot create {}: {e}", path.display())),
        Err(reason) => Err(reason.clone()),
    };
    let mut received = 0u64;
    let mut hasher = blake3::Hasher::new();
    while received < len {
        let Frame::Data(data) = reader.recv().await? else {
            return Err(PairError::BadMessage("a message in the middle of a file".into()));
        };
        if data.is_empty() {
            break;
        }
        received += data.len() as u64;
        hasher.update(&data);
        if let Ok(writing) = file.as_mut() {
            if let Err(error) = writing.write_all(&data).await {
                file = Err(format!("cannot write the replica: {error}"));
            }
        }
    }
    let result = async {
        let mut file = file?;
        if received != len {
            return Err(format!("{received} bytes arrived of {len}"));
        }
        if let Some(expected) = &entry.blake3 {
            if *expected != hasher.finalize().to_hex().as_str() {
                return Err("the content's BLAKE3 differs from the one announced".into());
            }
        }
        file.flush().await.map_err(|e| e.to_string())?;
        file.sync_all().await.map_err(|e| format!("cannot sync the replica: {e}"))?;
        drop(file);
        let handler = Arc::clone(handler);
        tokio::task::spawn_blocking(move || handler.file_received(channel, entry)).await.map_err(|e| e.to_string())?
    }
    .await;
    if result.is_err() {
        if let Ok(path) = &path {
            let _ = tokio::fs::remove_file(path).await;
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn connected(
        active_key: &str,
        standby_key: &str,
    ) -> Result<((PairReader, PairWriter), (PairReader, PairWriter)), PairError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let standby_key = PairKey::from_security_text(standby_key);
        let standby = tokio::spawn(async move {
            let (stream, _) = listener.accept().await?;
            handshake(stream, &standby_key, &Hello::new("b2", "blue"), false).await
        });
        let stream = TcpStream::connect(addr).await?;
        let active = handshake(stream, &PairKey::from_security_text(active_key), &Hello::new("b1", "blue"), true).await;
        let standby = standby.await.map_err(|e| PairError::BadMessage(e.to_string()))?;
        let (_, ar, aw) = active?;
        let (_, sr, sw) = standby?;
        Ok(((ar, aw), (sr, sw)))
    }

    #[tokio::test]
    async fn messages_and_data_cross_both_ways() {
        let ((mut ar, mut aw), (mut sr, mut sw)) = connected("pair-secret", "pair-secret").await.unwrap();
        let message = PairMessage::Sent { channel: 3, id: "ab".into() };
        aw.send(&message).await.unwrap();
        aw.send_data(b"content").await.unwrap();
        assert!(matches!(sr.recv().await.unwrap(), Frame::Message(m) if m == message));
        assert!(matches!(sr.recv().await.unwrap(), Frame::Data(d) if d == b"content"));
        let ack = PairMessage::Ack { request: 1, ok: true, reason: None };
        sw.send(&ack).await.unwrap();
        assert!(matches!(ar.recv().await.unwrap(), Frame::Message(m) if m == ack));
    }

    #[tokio::test]
    async fn a_wrong_security_text_is_refused_at_the_hello() {
        let result = connected("pair-secret", "other-secret").await;
        assert!(matches!(result, Err(PairError::BadTag)), "{:?}", result.err());
    }

    #[tokio::test]
    async fn an_altered_or_replayed_frame_is_refused() {
        // Frames are written by hand here: a tag over the wrong sequence number is a replay.
        let ((_ar, mut aw), (mut sr, _sw)) = connected("pair-secret", "pair-secret").await.unwrap();
        let message = PairMessage::Sent { channel: 1, id: "x".into() };
        aw.send(&message).await.unwrap();
        assert!(matches!(sr.recv().await.unwrap(), Frame::Message(_)));
        aw.seq = 0; // the same frame again
        aw.send(&message).await.unwrap();
        assert!(matches!(sr.recv().await, Err(PairError::BadTag)));

        let ((_ar, mut aw), (mut sr, _sw)) = connected("pair-secret", "pair-secret").await.unwrap();
        let mut frame = vec![0, 0, 0, 20, b'D'];
        frame.extend_from_slice(&[7u8; 19]);
        aw.stream.write_all(&frame).await.unwrap();
        assert!(matches!(sr.recv().await, Err(PairError::BadTag)));
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_before_it_is_read() {
        let ((_ar, mut aw), (mut sr, _sw)) = connected("pair-secret", "pair-secret").await.unwrap();
        aw.stream.write_all(&(u32::MAX).to_be_bytes()).await.unwrap();
        assert!(matches!(sr.recv().await, Err(PairError::TooLong(_))));
    }

    #[test]
    fn an_active_is_exposed_for_the_resend_window_after_sending_a_file_without_copy() {
        let stats = PairStats::default();
        assert!(!stats.exposed());
        stats.expose(Duration::from_secs(30));
        assert!(stats.exposed());
        // A shorter exposure never shortens a longer one.
        stats.expose(Duration::ZERO);
        assert!(stats.exposed());
        let expired = PairStats::default();
        expired.expose(Duration::ZERO);
        assert!(!expired.exposed());
        // A heartbeat from a peer that predates the flag reads as not exposed.
        let old: PairMessage = serde_json::from_str(r#"{"type":"heartbeat","synced":true}"#).unwrap();
        assert!(matches!(old, PairMessage::Heartbeat { synced: true, exposed: false }));
    }

    #[test]
    fn check_names_the_field() {
        let config = PairConfig {
            listen: "127.0.0.1:7000".into(),
            peer: "127.0.0.1:7000".into(),
            ack_timeout_ms: 2000,
            resend_window_s: None,
            shadow_files: None,
        };
        assert_eq!(config.check("blue", "x").unwrap_err().0, "pair.peer");
        let config = PairConfig { peer: "127.0.0.2:7000".into(), shadow_files: Some(5), ..config };
        assert_eq!(config.check("blue", "x").unwrap_err().0, "pair.shadow_files");
        assert!(config.check("red", "x").is_ok());
        assert_eq!(config.check("red", "").unwrap_err().0, "ha.security_text");
    }
}
