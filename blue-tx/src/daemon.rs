//! Wiring: sources → channel pipelines → scheduler → encoders → transmitter → fibers, the HA role,
//! the control socket and the status file.
//!
//! Transmission runs in *terms*: one term is the whole chain with one session id and epoch. Without HA
//! one term runs from start to stop. With HA a term runs while this node is active: becoming active
//! binds the sources (on the VIP) and starts a term under a new, higher epoch; becoming standby stops
//! the sources (open TCP streams are aborted with reason "shutting down"), flushes what was accepted
//! and ends the term, so a standby never transmits. SIGTERM or SIGINT ends the term the same way, and
//! an active node hands the VIP to its peer as it leaves.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use chassis::runtime::{write_json, DaemonError, RunEnd};
use connectors::config::ChannelKind;
use connectors::source::{bind_udp, run_tcp_source, run_udp_source, SourceStats};
use connectors::spool::{run_spool_sender, unix_ms, Spool};
use connectors::vault::{serve as serve_http, upload_router};
use diode_proto::sender::{Framer, SenderConfig};
use ha_carp::driver::{HaError, HaHandle, Role};
use hw::fiber::{FiberTx, TxConfig};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle as TaskHandle;
use tracing::{info, warn};

use crate::config::Checked;
use crate::manifest::ManifestBook;
use crate::pipeline::{schedule, ChannelPipeline, Lane, PipelineStats};
use crate::term::{EndReason, Exit, TermAction, TermLifecycle};
use crate::transmit::{spawn_encoders, Transmitter, TxStats};

/// Source events a channel may have queued before its sources wait.
const SOURCE_QUEUE: usize = 64;

/// Counters that outlive terms, so the status page adds up over failovers.
pub(crate) struct Counters {
    pub(crate) channels: Vec<ChannelCounters>,
    pub(crate) transmit: Arc<TxStats>,
    pub(crate) terms: AtomicU64,
    pub(crate) session: AtomicU64,
    pub(crate) epoch: AtomicU32,
    pub(crate) warnings: Mutex<Vec<String>>,
    /// With a `[pair]`: the pair channel's state.
    pub(crate) pair: Option<Arc<ha_carp::pair::PairStats>>,
}

pub(crate) struct ChannelCounters {
    pub(crate) number: u16,
    pub(crate) name: String,
    pub(crate) kind: ChannelKind,
    pub(crate) source: Arc<SourceStats>,
    pub(crate) pipeline: Arc<PipelineStats>,
    /// Files and vault channels: the folder where accepted files wait until sent.
    pub(crate) spool: Option<Spool>,
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Without the OS generator, time and pid still make two starts differ.
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        return nanos ^ (u64::from(std::process::id()) << 32);
    }
    u64::from_le_bytes(bytes)
}

/// One term of transmission.
struct Term {
    shutdown: watch::Sender<bool>,
    stopping: Arc<AtomicBool>,
    pipelines: Vec<TaskHandle<()>>,
    scheduler: TaskHandle<()>,
    threads: Vec<JoinHandle<()>>,
}

async fn start_term(checked: &Checked, counters: &Counters, session: u64, epoch: u32) -> Result<Term, DaemonError> {
    let (shutdown, shutdown_rx) = watch::channel(false);
    let ready = Arc::new(Notify::new());
    let manifest = Arc::new(ManifestBook::default());
    let mut lanes = Vec::new();
    let mut pipelines = Vec::new();
    for (source, stats) in checked.sources.iter().zip(&counters.channels) {
        let channel = source.config.number;
        let (events_tx, events_rx) = mpsc::channel(SOURCE_QUEUE);
        let (sealed_tx, sealed_rx) = mpsc::channel(checked.config.link.queue_blocks);
        let listen_text = source.listen.map(|l| l.to_string()).unwrap_or_default();
        let listen = |kind: &str| {
            source
                .listen
                .ok_or_else(|| DaemonError::Unchecked(format!("channel {channel}: a {kind} channel without listen")))
        };
        match source.config.kind {
            ChannelKind::Tcp => {
                let listen = listen("tcp")?;
                let listener = TcpListener::bind(listen)
                    .await
                    .map_err(|e| DaemonError::io(format!("channel {channel}: cannot listen on {listen}"), e))?;
                tokio::spawn(run_tcp_source(
                    channel,
                    listener,
                    source.config.max_sessions,
                    Duration::from_secs(source.config.idle_timeout_s),
                    events_tx,
                    Arc::clone(&stats.source),
                    shutdown_rx.clone(),
                ));
            }
            ChannelKind::Udp => {
                let listen = listen("udp")?;
                let socket = bind_udp(listen, source.multicast, 8 << 20)
                    .map_err(|e| DaemonError::io(format!("channel {channel}: cannot receive on {listen}"), e))?;
                tokio::spawn(run_udp_source(
                    channel,
                    socket,
                    events_tx,
                    Arc::clone(&stats.source),
                    shutdown_rx.clone(),
                ));
            }
            ChannelKind::Files | ChannelKind::Vault => {
                let spool = stats
                    .spool
                    .clone()
                    .ok_or_else(|| DaemonError::Unchecked(format!("channel {channel}: no spool")))?;
                if let Some(drop_folder) = &source.drop_folder {
                    tokio::spawn(drop_folder.clone().run(spool.clone(), shutdown_rx.clone()));
                }
                if source.config.kind == ChannelKind::Vault {
                    let listen = listen("vault")?;
                    let listener = TcpListener::bind(listen)
                        .await
                        .map_err(|e| DaemonError::io(format!("channel {channel}: cannot listen on {listen}"), e))?;
                    let router = upload_router(channel, spool.clone(), source.config.max_file_size);
                    let stop = shutdown_rx.clone();
                    tokio::spawn(async move {
                        if let Err(error) = serve_http(listener, router, stop).await {
                            warn!(channel, %error, "vault upload server failed");
                        }
                    });
                }
                tokio::spawn(run_spool_sender(channel, spool, source.config.repeat, events_tx, shutdown_rx.clone()));
            }
        }
        info!(channel, name = %source.config.name, kind = source.config.kind.as_str(), listen = %listen_text, "channel ready");
        pipelines.push(tokio::spawn(
            ChannelPipeline {
                channel,
                max_block_len: checked.fec.max_block_len(),
                flush: Duration::from_millis(source.config.flush_ms),
                keepalive: Duration::from_secs(checked.config.link.keepalive_s),
                events: events_rx,
                sealed: sealed_tx,
                ready: Arc::clone(&ready),
                stats: Arc::clone(&stats.pipeline),
                manifest: matches!(source.config.kind, ChannelKind::Files | ChannelKind::Vault)
                    .then(|| Arc::clone(&manifest)),
            }
            .run(),
        ));
        lanes.push(Lane::new(channel, source.config.share, sealed_rx));
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
        let fiber = FiberTx::open(&config).map_err(|source| DaemonError::Fiber { index: index + 1, source })?;
        for warning in fiber.warnings() {
            warn!(fiber = index + 1, "{warning}");
            warnings.push(warning.to_string());
        }
        fibers.push(fiber);
    }
    if let Ok(mut shared) = counters.warnings.lock() {
        *shared = warnings;
    }

    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (encode_tx, encode_rx) = mpsc::channel(threads * 2);
    let (encoded_tx, encoded_rx) = std::sync::mpsc::sync_channel(usize::from(checked.fec.interleave_depth) * 2);
    let mut workers = spawn_encoders(threads, checked.fec, encode_rx, encoded_tx)
        .map_err(|e| DaemonError::io("cannot start encoders", e))?;
    let scheduler = tokio::spawn(schedule(lanes, Arc::clone(&ready), encode_tx));
    let stopping = Arc::new(AtomicBool::new(false));
    let framer = Framer::new(SenderConfig {
        session,
        stamped: true,
        epoch,
        fec: checked.fec,
        auth: checked.auth.clone(),
        fiber_mode: checked.mode,
        config_fingerprint: checked.fingerprint,
        beacon_interval_ms: checked.beacon_interval.as_millis().min(u128::from(u16::MAX)) as u16,
    });
    let transmitter = Transmitter {
        framer,
        rate_bps: checked.rate_bps,
        beacon_interval: checked.beacon_interval,
        fibers,
        encoded: encoded_rx,
        stats: Arc::clone(&counters.transmit),
        stopping: Arc::clone(&stopping),
        manifest,
    };
    workers.push(
        std::thread::Builder::new()
            .name("transmit".into())
            .spawn(move || transmitter.run())
            .map_err(|e| DaemonError::io("cannot start the transmitter", e))?,
    );
    counters.session.store(session, Ordering::Relaxed);
    counters.epoch.store(epoch, Ordering::Relaxed);
    info!(
        session = format!("{session:016x}"),
        epoch,
        fibers = checked.fibers.len(),
        rate_bps = checked.rate_bps,
        "transmitting"
    );
    Ok(Term { shutdown, stopping, pipelines, scheduler, threads: workers })
}

/// Stops the sources, flushes everything they accepted onto the fibers, and waits for the chain to end.
async fn stop_term(term: Term) {
    term.stopping.store(true, Ordering::SeqCst);
    let _ = term.shutdown.send(true);
    for pipeline in term.pipelines {
        let _ = pipeline.await;
    }
    let _ = term.scheduler.await;
    let threads = term.threads;
    let _ = tokio::task::spawn_blocking(move || {
        for thread in threads {
            let _ = thread.join();
        }
    })
    .await;
    info!("transmission stopped: everything accepted was sent");
}

/// Runs the daemon until a stop signal. Errors are startup failures (a port in use, a fiber that
/// cannot be opened), reported with what failed. A standby that receives a new configuration from
/// its active peer stops everything and starts again with it, in the same process.
pub fn run(checked: Checked) -> Result<(), DaemonError> {
    let path = checked.path.clone();
    chassis::runtime::run_reloading("blue-tx", checked, path, crate::config::load, run_async)
}

async fn run_async(checked: Checked) -> Result<RunEnd, DaemonError> {
    // Spools outlive terms: what was accepted while active is still sent after a restart or a takeover.
    let mut spools = std::collections::HashMap::new();
    for source in &checked.sources {
        if let Some(dir) = &source.spool {
            let channel = source.config.number;
            let spool = Spool::open(dir)
                .map_err(|e| DaemonError::io(format!("channel {channel}: spool folder {}", dir.display()), e))?;
            if let Some(drop) = &source.drop_folder {
                std::fs::create_dir_all(&drop.folder).map_err(|e| {
                    DaemonError::io(format!("channel {channel}: drop folder {}", drop.folder.display()), e)
                })?;
            }
            spools.insert(channel, spool);
        }
    }
    let checked = Arc::new(checked);
    let counters = Arc::new(Counters {
        channels: checked
            .sources
            .iter()
            .map(|s| ChannelCounters {
                number: s.config.number,
                name: s.config.name.clone(),
                kind: s.config.kind,
                source: Arc::new(SourceStats::default()),
                pipeline: Arc::new(PipelineStats::default()),
                spool: spools.remove(&s.config.number),
            })
            .collect(),
        transmit: Arc::new(TxStats::default()),
        terms: AtomicU64::new(0),
        session: AtomicU64::new(0),
        epoch: AtomicU32::new(0),
        warnings: Mutex::new(Vec::new()),
        pair: checked.pair.as_ref().map(|_| Arc::new(ha_carp::pair::PairStats::default())),
    });
    let (driver_shutdown, driver_shutdown_rx) = watch::channel(false);
    let ha = match &checked.ha {
        Some(config) => Some(
            ha_carp::driver::spawn(config.clone(), random_u64(), driver_shutdown_rx)
                .map_err(|e| DaemonError::part("HA", e))?,
        ),
        None => None,
    };
    let fiber_interfaces: Vec<String> = checked.config.fibers.iter().filter_map(|f| f.interface.clone()).collect();
    if let (Some(handle), false) = (&ha, fiber_interfaces.is_empty()) {
        tokio::spawn(watch_fibers(handle.clone(), fiber_interfaces));
    }
    if let (Some(path), Some(handle)) = (&checked.config.node.control_socket, &ha) {
        let handle = handle.clone();
        chassis::runtime::serve_control(path.clone(), move |line| {
            let handle = handle.clone();
            async move { ha_carp::driver::answer(&handle, &line).await }
        })
        .await?;
    }
    let reload = Arc::new(Notify::new());
    let (pair_stop, pair_stop_rx) = watch::channel(false);
    let replication = match (&ha, &counters.pair) {
        (Some(handle), Some(stats)) => {
            tokio::spawn(crate::replicate::hold_preemption_until_synced(
                handle.clone(),
                Arc::clone(stats),
                pair_stop_rx.clone(),
            ));
            let spools = counters.channels.iter().filter_map(|c| c.spool.clone().map(|s| (c.number, s))).collect();
            Some(
                crate::replicate::start(
                    &checked,
                    spools,
                    handle.role.clone(),
                    Arc::clone(&reload),
                    Arc::clone(stats),
                    pair_stop_rx,
                )
                .await?,
            )
        }
        _ => None,
    };
    let transmitting = Arc::new(AtomicBool::new(false));
    let (management_stop, management_stop_rx) = watch::channel(false);
    let management = match &checked.management {
        Some(config) => {
            let managed = crate::manage::BlueManaged {
                checked: Arc::clone(&checked),
                counters: Arc::clone(&counters),
                ha: ha.clone(),
                transmitting: Arc::clone(&transmitting),
                pair: replication.clone(),
            };
            Some(chassis::management::spawn(config.clone(), Arc::new(managed), management_stop_rx).await?)
        }
        None => None,
    };
    let status_file = checked.config.node.status_file.clone();
    let write_status = |state: &str, term_active: bool| {
        transmitting.store(term_active, Ordering::Relaxed);
        if let Some(path) = &status_file {
            write_json(path, &crate::status::status_json(&checked, state, term_active, &counters, ha.as_ref()));
        }
    };
    info!(node = %checked.config.node.name, ha = ha.is_some(), "blue-tx running");

    let stop = chassis::runtime::stop_signal();
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    let mut role = ha.as_ref().map(|h| h.role.clone());
    let mut reasserts = ha.as_ref().map(|h| h.reasserts.clone());
    let is_active = |role: &Option<watch::Receiver<Role>>| role.as_ref().is_some_and(|r| *r.borrow() == Role::Active);
    let mut lifecycle = TermLifecycle::new(unix_ms(), ha.is_some(), checked.config.link.epoch, random_u64() as u16);
    lifecycle.handle_role(unix_ms(), is_active(&role));
    let mut term: Option<Term> = None;
    // Without HA a term that cannot start ends the daemon with the error that stopped it.
    let mut start_error: Option<DaemonError> = None;
    let exit = 'run: loop {
        while let Some(action) = lifecycle.poll_action() {
            match action {
                TermAction::Start { session, epoch } => match start_term(&checked, &counters, session, epoch).await {
                    Ok(started) => {
                        term = Some(started);
                        lifecycle.handle_started(unix_ms());
                        counters.terms.store(lifecycle.terms_started(), Ordering::Relaxed);
                        write_status("running", lifecycle.transmitting());
                    }
                    // With HA the previous active may still hold the port for a moment: the
                    // lifecycle tries again shortly. Without HA it answers with `Fail`.
                    Err(error) => {
                        if ha.is_some() {
                            warn!(%error, "cannot start transmitting yet; retrying");
                        }
                        lifecycle.handle_start_failed(unix_ms(), &error.to_string());
                        start_error = Some(error);
                    }
                },
                TermAction::End(reason) => {
                    match reason {
                        EndReason::BecameStandby => info!("became standby: stopping transmission"),
                        EndReason::Reasserted => info!("healed partition: restarting transmission under a new epoch"),
                        EndReason::Stopping => info!("stopping: flushing what was accepted"),
                    }
                    if let Some(ending) = term.take() {
                        stop_term(ending).await;
                    }
                    lifecycle.handle_ended(unix_ms());
                    write_status("running", false);
                }
                TermAction::Exit(exit) => break 'run exit,
                TermAction::Fail(reason) => {
                    return Err(start_error.take().unwrap_or(DaemonError::Unchecked(reason)));
                }
            }
        }
        let retry = lifecycle.poll_timeout().map(|at| Duration::from_millis(at.saturating_sub(unix_ms())));
        tokio::select! {
            _ = ticker.tick() => write_status("running", lifecycle.transmitting()),
            () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => lifecycle.handle_timeout(unix_ms()),
            changed = role_changed(&mut role) => {
                if !changed {
                    return Err(DaemonError::part("HA", HaError::DriverStopped));
                }
                lifecycle.handle_role(unix_ms(), is_active(&role));
            }
            changed = watch_changed(&mut reasserts) => {
                if !changed {
                    return Err(DaemonError::part("HA", HaError::DriverStopped));
                }
                // The other side of a healed partition may have transmitted under a higher epoch.
                lifecycle.handle_reassert(unix_ms());
            }
            result = &mut stop => {
                result?;
                lifecycle.handle_stop(unix_ms(), false);
            }
            _ = reload.notified() => lifecycle.handle_stop(unix_ms(), true),
        }
    };
    let exit = match exit {
        Exit::Stopped => RunEnd::Stopped,
        Exit::Reload => RunEnd::Reload,
    };
    // Hand the VIP over now rather than after the peer's master-down time.
    let _ = driver_shutdown.send(true);
    let _ = pair_stop.send(true);
    tokio::time::sleep(Duration::from_millis(100)).await;
    write_status(if matches!(exit, RunEnd::Reload) { "reloading" } else { "stopped" }, false);
    let _ = management_stop.send(true);
    if let Some(task) = management {
        let _ = task.await;
    }
    drop(replication);
    info!("stopped");
    Ok(exit)
}

/// How long a fiber interface must stay down before this node is demoted: links flap, and the kernel
/// reports a freshly raised veth or NIC down for up to a second before its state settles.
const FIBER_DOWN_AFTER: Duration = Duration::from_millis(1500);

/// Demotes this node while any of its fiber interfaces has been down for [`FIBER_DOWN_AFTER`], and
/// clears the demotion when they are all up again: a BLUE that cannot reach every RED should not be the
/// active one.
async fn watch_fibers(handle: HaHandle, interfaces: Vec<String>) {
    let mut faulted = false;
    let mut down_since: Option<tokio::time::Instant> = None;
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    loop {
        ticker.tick().await;
        let down: Vec<&String> = interfaces.iter().filter(|i| !hw::link::interface_up(i)).collect();
        down_since = if down.is_empty() { None } else { down_since.or(Some(tokio::time::Instant::now())) };
        let should_fault = down_since.is_some_and(|since| since.elapsed() >= FIBER_DOWN_AFTER);
        if should_fault != faulted {
            faulted = should_fault;
            let command = if faulted {
                warn!(?down, "fiber link down: demoting this node");
                ha_carp::machine::Command::Fault(ha_carp::machine::Fault::FibersDown)
            } else {
                info!("fiber links up again: clearing the demotion");
                ha_carp::machine::Command::Clear(ha_carp::machine::Fault::FibersDown)
            };
            if handle.command(command).await.is_err() {
                return;
            }
        }
    }
}

/// Waits for the next role change; `false` when the driver is gone. Never resolves without HA.
async fn role_changed(role: &mut Option<watch::Receiver<Role>>) -> bool {
    watch_changed(role).await
}

async fn watch_changed<T>(receiver: &mut Option<watch::Receiver<T>>) -> bool {
    match receiver {
        Some(receiver) => receiver.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}
