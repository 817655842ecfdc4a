//! Sources (TCP/UDP listeners, HTTP vault upload, drop-folder watcher) and sinks (TCP/UDP destinations
//! with health checks, output folders, HTTP vault server, spool).
//!
//! Not yet built: see the issues "blue-tx and red-rx" and "Files and the HTTP vault".
