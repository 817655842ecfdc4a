//! The diode's connectors: BLUE sources that turn client traffic into stream events, and RED sinks
//! that deliver verified streams and datagrams to destination pools with health checks.
//!
//! What is here: channel configuration and its checks ([`config`]), TCP and UDP sources ([`source`]),
//! destination pools with TCP/HTTP health checks ([`pool`]), TCP and UDP sinks ([`sink`]). Not yet:
//! drop folders, output folders, the HTTP vault and the spool (issue "Files and the HTTP vault").
//! Connectors never depend on a daemon; the daemons wire them to the protocol.

pub mod config;
pub mod pool;
pub mod runtime;
pub mod sink;
pub mod source;
