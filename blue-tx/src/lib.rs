//! The BLUE-side daemon: accepts TCP streams and UDP datagrams on its channels, cuts them into blocks,
//! protects every block with RaptorQ and sends the symbols, paced on wire bits, over one or two fibers.
//!
//! [`config`] reads and checks the file; [`pipeline`] turns source events into blocks and shares the
//! link between channels; [`transmit`] encodes and sends; [`daemon`] wires it all (sources, drop
//! folders, the vault, HA terms) and writes the status file; [`term`] decides when a term starts, ends
//! and restarts (a sans-IO state machine the daemon drives); [`manage`] is what the management API
//! shows and does; [`status`] reads everything BLUE reports once, for the status and `/metrics`; [`replicate`] copies accepted files and the configuration to the standby of an HA
//! pair.

pub mod config;
pub mod daemon;
pub mod manage;
pub mod manifest;
pub mod pipeline;
pub mod replicate;
pub mod status;
pub mod term;
pub mod transmit;
