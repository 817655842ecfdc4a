//! The optical data diode's wire protocol as pure code.
//!
//! This crate is the protocol and nothing else: datagram and beacon formats, records, cutting a
//! channel's records into blocks, the RaptorQ block codec, interleaving, and the receiver's block and
//! stream reassembly. It has no sockets, no async runtime and no clock of its own: time is passed in as
//! [`std::time::Instant`] values, so every behaviour (loss, reordering, a sender restart, a takeover)
//! is a deterministic unit test and a fuzz target. Sockets and pacing live in `hw`, the daemons in
//! `blue-tx` and `red-rx`. The byte-level specification is `docs/PROTOCOL.md`.
//!
//! Data path: [`block::BlockBuilder`] → [`fec::BlockEncoder`] → [`interleave::Interleaver`] →
//! [`header::write_datagram`] on the sender (or [`sender::Sender`] for all of it); on the receiver,
//! [`receiver::Receiver`] turns datagrams into [`event::Event`]s.

pub mod auth;
pub mod beacon;
pub mod block;
pub mod error;
pub mod event;
pub mod fec;
mod gf256;
pub mod header;
pub mod interleave;
pub mod manifest;
pub mod reason;
pub mod receiver;
pub mod record;
pub mod sender;
mod stream;
mod stream_hash;
pub mod wire;

pub use auth::{LinkAuth, LinkKey};
pub use beacon::{Beacon, FiberMode, SenderState};
pub use error::{DropCounters, DropReason};
pub use event::{Alarm, BreakCounts, BreakReason, Event, LossCounts, LossReason};
pub use fec::FecParams;
pub use manifest::{Manifest, ManifestEntry};
pub use reason::{AtomicReasonCounts, Reason, ReasonCounts};
pub use receiver::{Receiver, ReceiverConfig};
pub use record::{AbortReason, StreamMeta};
pub use sender::{Sender, SenderConfig};
