//! Wiring: sources → channel pipelines → scheduler → encoders → transmitter → fibers, and the status
//! file. Stops cleanly on SIGTERM or SIGINT: sources stop (open TCP streams are aborted with reason
//! "shutting down"), every accepted byte is flushed to the fibers, and the last beacons say so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use connectors::config::ChannelKind;
use connectors::runtime::write_json;
use connectors::source::{bind_udp, run_tcp_source, run_udp_source, SourceStats};
use hw::fiber::{FiberTx, TxConfig};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tracing::{info, warn};

use crate::config::Checked;
use crate::pipeline::{schedule, ChannelPipeline, Lane, PipelineStats};
use crate::transmit::{spawn_encoders, Transmitter, TxStats};

/// Source events a channel may have queued before its sources wait.
const SOURCE_QUEUE: usize = 64;

struct ChannelHandles {
    number: u16,
    name: String,
    kind: ChannelKind,
    source: Arc<SourceStats>,
    pipeline: Arc<PipelineStats>,
}

fn random_session() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Without the OS generator, time and pid still make a restart's session differ.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        return nanos ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_le_bytes(bytes)
}

/// Runs the daemon until a stop signal. Errors are startup failures (a port in use, a fiber that
/// cannot be opened), reported with what failed.
pub fn run(checked: Checked) -> Result<(), String> {
    connectors::runtime::block_on("blue-tx", run_async(checked))
}

async fn run_async(checked: Checked) -> Result<(), String> {
    let session = random_session();
    let epoch = checked.config.link.epoch;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(Notify::new());
    let mut lanes = Vec::new();
    let mut handles = Vec::new();
    let mut pipelines = Vec::new();
    for source in &checked.sources {
        let channel = source.config.number;
        let (events_tx, events_rx) = mpsc::channel(SOURCE_QUEUE);
        let (sealed_tx, sealed_rx) = mpsc::channel(checked.config.link.queue_blocks);
        let source_stats = Arc::new(SourceStats::default());
        let pipeline_stats = Arc::new(PipelineStats::default());
        match source.config.kind {
            ChannelKind::Tcp => {
                let listener = TcpListener::bind(source.listen)
                    .await
                    .map_err(|e| format!("channel {channel}: cannot listen on {}: {e}", source.listen))?;
                tokio::spawn(run_tcp_source(
                    channel,
                    listener,
                    source.config.max_sessions,
                    Duration::from_secs(source.config.idle_timeout_s),
                    events_tx,
                    Arc::clone(&source_stats),
                    shutdown_rx.clone(),
                ));
            }
            ChannelKind::Udp => {
                let socket = bind_udp(source.listen, source.multicast, 8 << 20)
                    .map_err(|e| format!("channel {channel}: cannot receive on {}: {e}", source.listen))?;
                tokio::spawn(run_udp_source(
                    channel,
                    socket,
                    events_tx,
                    Arc::clone(&source_stats),
                    shutdown_rx.clone(),
                ));
            }
            ChannelKind::Files | ChannelKind::Vault => {
                return Err(format!("channel {channel}: kind not supported yet"))
            }
        }
        info!(channel, name = %source.config.name, kind = source.config.kind.as_str(), listen = %source.listen, "channel ready");
        pipelines.push(tokio::spawn(
            ChannelPipeline {
                channel,
                max_block_len: checked.fec.max_block_len(),
                flush: Duration::from_millis(source.config.flush_ms),
                keepalive: Duration::from_secs(checked.config.link.keepalive_s),
                events: events_rx,
                sealed: sealed_tx,
                ready: Arc::clone(&ready),
                stats: Arc::clone(&pipeline_stats),
            }
            .run(),
        ));
        lanes.push(Lane::new(channel, source.config.share, sealed_rx));
        handles.push(ChannelHandles {
            number: channel,
            name: source.config.name.clone(),
            kind: source.config.kind,
            source: source_stats,
            pipeline: pipeline_stats,
        });
    }

    let mut fibers = Vec::new();
    let mut warnings = Vec::new();
    for (index, (remote, local)) in checked.fibers.iter().enumerate() {
        let fiber_config = &checked.config.fibers[index];
        let config = TxConfig {
            local: *local,
            send_buffer: fiber_config.send_buffer,
            force_buffer: fiber_config.force_buffer,
            ..TxConfig::new(*remote)
        };
        let fiber = FiberTx::open(&config).map_err(|e| format!("fiber {}: {e}", index + 1))?;
        for warning in fiber.warnings() {
            warn!(fiber = index + 1, "{warning}");
            warnings.push(warning.to_string());
        }
        fibers.push(fiber);
    }

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (encode_tx, encode_rx) = mpsc::channel(threads * 2);
    let (encoded_tx, encoded_rx) = std::sync::mpsc::sync_channel(usize::from(checked.fec.interleave_depth) * 2);
    let encoders = spawn_encoders(threads, checked.fec, encode_rx, encoded_tx)
        .map_err(|e| format!("cannot start encoders: {e}"))?;
    let scheduler = tokio::spawn(schedule(lanes, Arc::clone(&ready), encode_tx));
    let tx_stats = Arc::new(TxStats::default());
    let stopping = Arc::new(AtomicBool::new(false));
    let transmitter = Transmitter {
        session,
        epoch,
        fec: checked.fec,
        mode: checked.mode,
        rate_bps: checked.rate_bps,
        beacon_interval: checked.beacon_interval,
        fingerprint: checked.fingerprint,
        fibers,
        encoded: encoded_rx,
        stats: Arc::clone(&tx_stats),
        stopping: Arc::clone(&stopping),
    };
    let transmitter = std::thread::Builder::new()
        .name("transmit".into())
        .spawn(move || transmitter.run())
        .map_err(|e| format!("cannot start the transmitter: {e}"))?;
    info!(node = %checked.config.node.name, session = format!("{session:016x}"), epoch, fibers = checked.fibers.len(), rate_bps = checked.rate_bps, "blue-tx running");

    let status = checked.config.node.status_file.clone();
    let write_status = |state: &str| {
        if let Some(path) = &status {
            let value = status_json(&checked, session, epoch, state, &handles, &tx_stats, &warnings);
            write_json(path, &value);
        }
    };
    write_status("active");
    connectors::runtime::tick_until_stopped(|| write_status("active")).await?;
    info!("stopping: flushing what was accepted");
    stopping.store(true, Ordering::SeqCst);
    let _ = shutdown_tx.send(true);
    for pipeline in pipelines {
        let _ = pipeline.await;
    }
    let _ = scheduler.await;
    let _ = tokio::task::spawn_blocking(move || {
        for encoder in encoders {
            let _ = encoder.join();
        }
        let _ = transmitter.join();
    })
    .await;
    write_status("stopped");
    info!("stopped");
    Ok(())
}

fn status_json(
    checked: &Checked,
    session: u64,
    epoch: u32,
    state: &str,
    channels: &[ChannelHandles],
    tx: &TxStats,
    warnings: &[String],
) -> serde_json::Value {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    json!({
        "node": checked.config.node.name,
        "side": "blue",
        "state": state,
        "session": format!("{session:016x}"),
        "epoch": epoch,
        "fibers": checked.fibers.iter().map(|(remote, _)| remote.to_string()).collect::<Vec<_>>(),
        "transmit": {
            "datagrams": load(&tx.datagrams),
            "wire_bytes": load(&tx.wire_bytes),
            "blocks": load(&tx.blocks),
            "beacons": load(&tx.beacons),
            "send_errors": load(&tx.send_errors),
        },
        "channels": channels.iter().map(|c| json!({
            "number": c.number,
            "name": c.name,
            "kind": c.kind.as_str(),
            "accepted": load(&c.source.accepted),
            "refused": load(&c.source.refused),
            "completed": load(&c.source.completed),
            "aborted": load(&c.source.aborted),
            "bytes": load(&c.source.bytes),
            "datagrams": load(&c.source.datagrams),
            "datagrams_dropped": load(&c.source.datagrams_dropped),
            "blocks_sealed": load(&c.pipeline.blocks_sealed),
        })).collect::<Vec<_>>(),
        "warnings": warnings,
    })
}
