//! The integration harness: starts processes, builds topologies on loopback and in network namespaces,
//! and holds the `diode-lab` demo and benchmarks.
//!
//! For now it holds the protocol round-trip example that the README runs.
