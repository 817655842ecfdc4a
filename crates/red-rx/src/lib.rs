//! The RED-side daemon: receives symbols on one or two fibers, rebuilds and verifies blocks and streams,
//! and delivers them to health-checked destination pools. It cannot send on a fiber.
//!
//! [`config`] reads and checks the file; [`daemon`] wires the fibers, the protocol thread and the
//! sinks, and writes the status file. Not yet: HA (issue "ha-carp"), files and vault (issue "Files and
//! the HTTP vault"), the management API (issue "Management").

pub mod config;
pub mod daemon;
