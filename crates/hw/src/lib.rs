//! Everything that touches the machine: fiber links over UDP (batching, buffer sizing, pacing), the
//! fiber simulator, VIP add/remove and gratuitous ARP, link state and kernel drop counters.
//!
//! Not yet built: see the issue "Fiber links, pacing, and the loopback fiber simulator".
