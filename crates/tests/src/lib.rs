//! The integration harness: starts processes, builds topologies on loopback and in network namespaces,
//! and holds the `diode-lab` demo and benchmarks.
//!
//! For now it holds the protocol round trip ([`roundtrip`]) that `diode-lab roundtrip` runs: real
//! sender and receiver protocol code with a seeded lossy link between them, in one process.

pub mod roundtrip;
