//! The integration harness: starts blue-tx, red-rx and fiber-sim as real processes on loopback, feeds
//! them from in-process sources and checks what in-process destinations received.
//!
//! [`bins`] finds (and builds) the binaries, [`bench`] is `diode-lab bench`, [`lab`] runs a topology and its endpoints, [`http`] is a small
//! client for the vault, [`folders`] writes and compares files, [`demo`] is
//! `diode-lab demo`, [`pairs`] is the full HA pair-of-pairs on loopback and [`failover`] is
//! `diode-lab failover` on it, and [`roundtrip`] is the single-process protocol round trip (`diode-lab
//! roundtrip`). [`netns`] and [`ha_lab`] build the HA pairs in network namespaces (`diode-lab ha
//! --netns`, root); [`nshelp`] are the small clients it runs inside them. [`rawwire`] starts a red-rx
//! alone and sends it raw protocol datagrams, for the hostile-input tests. [`metrics`] reads a
//! `/metrics` scrape and checks that every label value is bounded. [`outage`] is `diode-lab outage`: the
//! RED destinations go away mid-run and come back.

pub mod bench;
pub mod bins;
pub mod demo;
pub mod error;
pub mod failover;
pub mod folders;
pub mod ha_lab;
pub mod http;
pub mod lab;
pub mod metrics;
pub mod netns;
pub mod nshelp;
pub mod outage;
pub mod pairs;
pub mod rawwire;
pub mod roundtrip;
