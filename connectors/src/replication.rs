//! What the spool and the output folders need from an HA pair, and nothing more: they copy accepted
//! files, announce deliveries and report sends through [`Replication`], and the pair channel (in
//! `ha-carp`) implements it. So the connectors never name the pair channel's types.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

use crate::ledger::LedgerEntry;
use crate::spool::SpoolEntry;

/// Why the standby did not take something. The caller goes ahead without it: a pair without its
/// standby keeps working and reports itself not redundant.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("this node is not active")]
    NotActive,
    #[error("the standby is not connected")]
    NotConnected,
    #[error("the standby is not reachable")]
    Unreachable,
    #[error("the standby did not answer in time")]
    NoAnswer,
    #[error("the pair channel closed")]
    Closed,
    #[error("the pair channel's queue is full")]
    QueueFull,
    #[error("cannot read {path} to copy it: {source}")]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("the standby refused: {0}")]
    Refused(String),
}

/// Why a standby did not take what its active pushed. Its text goes back in the acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("this node has no files or vault channel {0}")]
    NoSuchChannel(u16),
    #[error("'{0}' is not a file id")]
    NotAFileId(String),
    #[error("RED holds no spool: files come over the fibers")]
    NoSpool,
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{received} bytes arrived of {len}")]
    Short { received: u64, len: u64 },
    #[error("the content's BLAKE3 differs from the one announced")]
    HashMismatch,
    #[error("the delivery's id or BLAKE3 is not of the form a node writes")]
    MalformedDelivery,
    #[error("the files sink has stopped")]
    SinkStopped,
    #[error("the files sink did not answer")]
    SinkSilent,
    #[error("the standby's handler failed: {0}")]
    Handler(String),
}

impl Refusal {
    pub fn io(what: &'static str, source: std::io::Error) -> Refusal {
        Refusal::Io { what, source }
    }
}

/// A future the replication's caller awaits (boxed: the trait is used as a trait object).
pub type Replicating<'a> = Pin<Box<dyn Future<Output = Result<(), ReplicationError>> + Send + 'a>>;

/// The active's way to its standby, as the spool (BLUE) and the files sinks (RED) use it.
pub trait Replication: Send + Sync + 'static {
    /// BLUE: copies an accepted file (content at `content`) to the standby, before it counts as accepted.
    fn copy_accepted(&self, channel: u16, entry: &SpoolEntry, content: PathBuf) -> Replicating<'_>;
    /// BLUE: this node has sent the file (fire and forget; the periodic pending list repairs a loss).
    fn sent(&self, channel: u16, id: &str);
    /// BLUE: a file accepted while the standby had no copy has been sent, so a failure now could lose it.
    fn sent_without_copy(&self);
    /// RED: tells the standby a file is being delivered, blocking until its ledger has it (or why not).
    fn announce_delivery(&self, channel: u16, entry: LedgerEntry) -> Result<(), ReplicationError>;
}
