//! The CARP-like Active/Standby election as a pure state machine (events and time in, actions out),
//! and later a thin driver that sends and receives advertisements through `hw`.
//!
//! Not yet built: see the issue "ha-carp".
