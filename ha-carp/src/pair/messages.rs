//! What the two nodes of a pair say to each other.

use serde::{Deserialize, Serialize};

use connectors::ledger::LedgerEntry;
use connectors::spool::SpoolEntry;

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
