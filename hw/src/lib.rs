//! Everything that touches the machine for the data path: fiber links over UDP with batched
//! syscalls, buffer sizing and kernel drop counters ([`fiber`]), pacing on wire bits ([`pacer`]), link
//! state for metrics ([`link`]), and the fiber simulator that stands in for the optics ([`sim`], run as a
//! process by [`forwarder`] and the `fiber-sim` binary).
//!
//! [`vip`] adds and removes virtual IPs through rtnetlink and announces them with gratuitous ARP.

pub mod fiber;
pub mod forwarder;
pub mod link;
pub mod pacer;
pub mod sim;
mod sys;
pub mod vip;

pub use fiber::{BufferWarning, FiberError, FiberRx, FiberTx, RxConfig, TxConfig};
pub use pacer::Pacer;
pub use sim::{LinkSim, SimConfig, SimStats};
pub use sys::{keep_freed_memory, raise_thread_priority, tcp_send_state, tighten_timer_slack, Gather, TcpSendState};
