//! The BLUE-side daemon: configuration, wiring of sources to the encoder and fibers, pair replication,
//! management API.
//!
//! Not yet built: see the issue "blue-tx and red-rx".
