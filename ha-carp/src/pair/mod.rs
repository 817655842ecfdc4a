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

mod config;
mod messages;
mod push;
mod replicated;
mod serve;
mod stats;
#[cfg(test)]
mod tests;
mod wire;

pub use config::*;
pub use messages::*;
pub use push::*;
pub use replicated::*;
pub use serve::*;
pub use stats::*;
pub use wire::*;
