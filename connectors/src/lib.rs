//! The diode's connectors: BLUE sources that turn client traffic into stream events, and RED sinks
//! that deliver verified streams and datagrams to destination pools with health checks.
//!
//! What is here: channel configuration and its checks ([`config`]), TCP and UDP sources ([`source`]),
//! drop folders ([`dropfolder`]) feeding BLUE's [`spool`], destination pools with TCP/HTTP health
//! checks ([`pool`]), TCP and UDP sinks ([`sink`]), RED output folders ([`filesink`]) with their
//! delivered-file [`ledger`], the HTTP [`vault`] (uploads on BLUE, downloads on RED), and the checks
//! that make a file name from the wire safe to use as a path ([`names`]).
//! Connectors never depend on a daemon; the daemons wire them to the protocol.

pub mod config;
pub mod dropfolder;
pub mod filesink;
pub mod ledger;
pub mod names;
pub mod pool;
pub mod replication;
pub mod sink;
pub mod source;
pub mod spool;
pub mod store;
pub mod vault;
