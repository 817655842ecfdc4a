//! The daemons' shared chassis: what blue-tx and red-rx both run around their channels, and nothing
//! about the channels themselves.
//!
//! What is here: the management server and dashboard ([`management`]: roles, sessions, CSRF checks,
//! per-source throttling, TLS, the metrics endpoint), what a configuration export hides
//! ([`redact`]), and the runtime every daemon's `main` starts from ([`runtime`]: logging, the status
//! file, the command line shared by both daemons). Channels live in `connectors`, the election and the
//! pair channel in `ha-carp`.

pub mod management;
pub mod redact;
pub mod runtime;
