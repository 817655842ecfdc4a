//! The BLUE-side daemon: accepts TCP streams and UDP datagrams on its channels, cuts them into blocks,
//! protects every block with RaptorQ and sends the symbols, paced on wire bits, over one or two fibers.
//!
//! [`config`] reads and checks the file; [`pipeline`] turns source events into blocks and shares the
//! link between channels; [`transmit`] encodes and sends; [`daemon`] wires it all and writes the
//! status file. Not yet: HA (issue "ha-carp"), files and vault (issue "Files and the HTTP vault"),
//! the management API (issue "Management").

pub mod config;
pub mod daemon;
pub mod pipeline;
pub mod transmit;
