//! The Active/Standby election of an appliance pair: CARP semantics as a pure state machine
//! ([`machine::Carp`]: adverts, commands and time in, actions out; no sockets, no runtime, no clock) and
//! the CARP v2 advertisement format, byte-compatible with ucarp ([`advert`]).
//!
//! [`driver`] is the thin async layer that moves adverts (IP protocol 112 or UDP unicast) and applies
//! actions through `hw` (VIP add/remove, gratuitous ARP). The state machine imports none of it.
//!
//! [`pair`] is the pair channel: what the active replicates to its standby so a takeover loses
//! nothing (configuration, accepted files on BLUE, deliveries on RED), and which settings the pair
//! shares.

pub mod advert;
pub mod driver;
pub mod machine;
pub mod pair;

pub use advert::{Advert, AdvertError, AdvertKey};
pub use machine::{Action, Carp, CarpConfig, Command, CommandRefused, Fault, State};
