//! The RED-side daemon: receives symbols on one or two fibers, rebuilds and verifies blocks and streams,
//! and delivers them to health-checked destination pools, output folders and the vault. It cannot send on
//! a fiber.
//!
//! [`config`] reads and checks the file; [`gate`] decides which decoded events reach a sink (a
//! sans-IO state machine); [`daemon`] wires the fibers, the protocol thread, the sinks
//! (destinations, output folders, the vault) and HA, and writes the status file; [`status`] holds the shared counters and renders the status
//! object; [`manage`] is what the
//! management API shows and does, with the FEC advice; [`replicate`] is the pair channel: ledger
//! replication to the standby and the configuration, while the standby decodes in shadow.

mod backlog;
pub mod config;
pub mod daemon;
pub mod gate;
pub mod manage;
pub mod replicate;
pub mod status;
