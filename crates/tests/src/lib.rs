//! The integration harness: starts blue-tx, red-rx and fiber-sim as real processes on loopback, feeds
//! them from in-process sources and checks what in-process destinations received.
//!
//! [`bins`] finds (and builds) the binaries, [`lab`] runs a topology and its endpoints, [`demo`] is
//! `diode-lab demo`, and [`roundtrip`] is the single-process protocol round trip (`diode-lab
//! roundtrip`). Network-namespace topologies join with HA (issue "ha-carp").

pub mod bins;
pub mod demo;
pub mod lab;
pub mod roundtrip;
