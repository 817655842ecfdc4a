//! The RED-side daemon: configuration, wiring of fibers to the receiver and sinks, pair replication,
//! management API. Nothing here may send on a fiber.
//!
//! Not yet built: see the issue "blue-tx and red-rx".
