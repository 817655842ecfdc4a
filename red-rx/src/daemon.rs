//! Wiring: fibers → one receive thread per fiber, each running its batches through the shared
//! receiver (reassembly, decoding, verification) in turn, plus a timer thread for timeouts →
//! per-channel sinks → destinations, plus health checks and the status file.
//!
//! Nothing here can send on a fiber: the fibers are [`FiberRx`], which has no send method.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chassis::runtime::{write_json, DaemonError, RunEnd};
use connectors::config::{ChannelKind, ConfigError};
use connectors::filesink::{spawn_file_sink, FileSinkPair, FileSinkStats};
use connectors::pool::Pool;
use connectors::sink::{
    run_tcp_sink, run_udp_sink, DatagramDrop, SinkEvent, SinkStats, StreamAbort, StreamQueueLimits,
};
use connectors::store::stream::{spawn_stream_spool, StreamSpool};
use connectors::store::{SpoolFolder, SpoolStats};
use connectors::vault::download_router;
use diode_proto::{Event, Receiver};
use ha_carp::driver::{HaHandle, Role};
use ha_carp::machine::{Command, Fault};
use hw::fiber::{FiberRx, RxConfig, RxCounters};
use tokio::sync::{mpsc, watch, Notify};
use tracing::{error, info, warn};

use crate::backlog::{Backlog, Handoff, Overflow};
use crate::config::Checked;
use crate::gate::{DeliveryGate, GateAction};
use crate::status::{Shared, SinkHandle, SpoolHandle, StatusView};

/// Runs the daemon until a stop signal. A standby that receives a new configuration from its active
/// peer stops everything and starts again with it, in the same process.
pub fn run(checked: Checked) -> Result<(), DaemonError> {
    let path = checked.path.clone();
    chassis::runtime::run_reloading("red-rx", checked, path, crate::config::load, run_async)
}

async fn run_async(checked: Checked) -> Result<RunEnd, DaemonError> {
    let checked = Arc::new(checked);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (driver_shutdown, driver_shutdown_rx) = watch::channel(false);
    let ha = match &checked.ha {
        Some(config) => Some(
            ha_carp::driver::spawn(config.clone(), u64::from(std::process::id()) << 32, driver_shutdown_rx)
                .map_err(|e| DaemonError::part("HA", e))?,
        ),
        None => None,
    };
    let pair_stats = checked.pair.as_ref().map(|_| Arc::new(ha_carp::pair::PairStats::default()));
    let replicator = match (&checked.pair, &ha, &pair_stats) {
        (Some(pair), Some(handle), Some(stats)) => {
            let files = checked.sinks.iter().filter_map(|s| s.files.clone()).collect();
            let node = &checked.config.node.name;
            let role = handle.role.clone();
            Some(crate::replicate::pusher(pair, node, checked.path.clone(), files, role, Arc::clone(stats)))
        }
        _ => None,
    };
    let mut standby_sinks = HashMap::new();
    let mut sinks = Vec::new();
    // The only long-lived senders to the sinks are the protocol thread's: when it ends, the sinks end.
    let mut senders = Vec::new();
    let mut sink_tasks = Vec::new();
    let mut sink_threads = Vec::new();
    let mut vaults = Vec::new();
    for sink in &checked.sinks {
        let channel = sink.config.number;
        let (events_tx, events_rx) = mpsc::channel(sink.config.queue);
        let stats = Arc::new(SinkStats::default());
        let stats_of_sink = Arc::clone(&stats);
        let mut pool = None;
        let mut spool = None;
        let mut files = None;
        match (sink.config.kind, &sink.files) {
            (ChannelKind::Tcp | ChannelKind::Udp, _) => {
                let destinations = Pool::new(channel, &sink.destinations, sink.config.mode, sink.health.clone());
                tokio::spawn(Arc::clone(&destinations).run_health_checks(shutdown_rx.clone()));
                let task = if let Some(config) = sink.spool.clone() {
                    let folder = SpoolFolder::open(config).map_err(|e| {
                        let field = format!("channel {channel}: spool: folder");
                        DaemonError::Config(ConfigError::new(&checked.path, field, e.to_string()))
                    })?;
                    let stats = Arc::new(SpoolStats::default());
                    spool = Some(SpoolHandle { stats: Arc::clone(&stats), config: folder.config.clone() });
                    let spool = StreamSpool {
                        channel,
                        folder,
                        pool: Arc::clone(&destinations),
                        sink: Arc::clone(&stats_of_sink),
                        stats,
                    };
                    let (writer, scheduler) =
                        spawn_stream_spool(spool, events_rx, tokio::runtime::Handle::current(), shutdown_rx.clone())
                            .map_err(|e| {
                                DaemonError::io(format!("channel {channel}: cannot start the spool's writer"), e)
                            })?;
                    sink_threads.push(writer);
                    scheduler
                } else if sink.config.kind == ChannelKind::Tcp {
                    let limits = StreamQueueLimits { events: sink.config.queue, bytes: sink.config.queue_bytes };
                    tokio::spawn(run_tcp_sink(
                        channel,
                        events_rx,
                        Arc::clone(&destinations),
                        limits,
                        Arc::clone(&stats),
                    ))
                } else {
                    let multicast = (sink.config.multicast_ttl, sink.multicast_interface);
                    tokio::spawn(run_udp_sink(
                        channel,
                        events_rx,
                        Arc::clone(&destinations),
                        multicast,
                        Arc::clone(&stats),
                    ))
                };
                sink_tasks.push(task);
                pool = Some(destinations);
            }
            (ChannelKind::Files | ChannelKind::Vault, Some(config)) => {
                let file_stats = Arc::new(FileSinkStats::default());
                let pair = checked.pair.as_ref().zip(replicator.clone()).map(|(pair, replicator)| FileSinkPair {
                    node: checked.config.node.name.clone(),
                    shadow_files: pair.shadow_files,
                    replication: Arc::new(replicator),
                });
                if pair.is_some() {
                    standby_sinks.insert(channel, events_tx.clone());
                }
                let thread =
                    spawn_file_sink(config.clone(), events_rx, Arc::clone(&file_stats), pair).map_err(|e| {
                        DaemonError::io(format!("channel {channel}: output folder {}", config.folder.display()), e)
                    })?;
                sink_threads.push(thread);
                if let Some(listen) = sink.vault_listen {
                    vaults.push((channel, listen, download_router(config.folder.clone(), sink.config.allow_delete)));
                }
                files = Some(file_stats);
            }
            (ChannelKind::Files | ChannelKind::Vault, None) => {
                return Err(DaemonError::Unchecked(format!("channel {channel}: no output folder")))
            }
        }
        info!(channel, name = %sink.config.name, kind = sink.config.kind.as_str(), destinations = sink.destinations.len(), "channel ready");
        sinks.push(SinkHandle {
            number: channel,
            name: sink.config.name.clone(),
            kind: sink.config.kind,
            stats,
            pool,
            files,
            spool,
        });
        senders.push((channel, sink.config.kind, events_tx, Arc::clone(&stats_of_sink), sink.config.queue_bytes));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let mut fibers = Vec::new();
    let mut fiber_counters = Vec::new();
    let mut warnings = Vec::new();
    for (index, listen) in checked.fibers.iter().enumerate() {
        let mut config = RxConfig::new(*listen);
        config.recv_buffer = checked.config.fibers[index].recv_buffer;
        config.force_buffer = checked.config.fibers[index].force_buffer;
        config.timeout = Duration::from_millis(20);
        let fiber = FiberRx::open(&config).map_err(|source| DaemonError::Fiber { index: index + 1, source })?;
        for warning in fiber.warnings() {
            warn!(fiber = index + 1, "{warning}");
            warnings.push(warning.to_string());
        }
        let counters = Arc::new(Mutex::new(RxCounters::default()));
        fiber_counters.push((*listen, Arc::clone(&counters)));
        fibers.push((fiber, counters));
    }

    let shared =
        Arc::new(Mutex::new(Shared { fiber_harmful_drops: vec![0; checked.fibers.len()], ..Shared::default() }));
    let kinds = senders.iter().map(|(number, kind, ..)| (*number, *kind)).collect();
    let routes: HashMap<u16, Route> = senders
        .into_iter()
        .map(|(number, _, sender, stats, limit)| (number, Route { sender, backlog: Backlog::new(limit), stats }))
        .collect();
    let reload = Arc::new(Notify::new());
    let (pair_stop, pair_stop_rx) = watch::channel(false);
    if let (Some(pair), Some(stats)) = (&checked.pair, &pair_stats) {
        let node = &checked.config.node.name;
        let (path, reload) = (checked.path.clone(), Arc::clone(&reload));
        crate::replicate::serve(pair, node, path, standby_sinks, reload, Arc::clone(stats), pair_stop_rx).await?;
    }
    let active = Arc::new(AtomicBool::new(ha.is_none()));
    let last_beacon = Arc::new(Mutex::new(None));
    let dispatcher = Dispatcher {
        own_fingerprint: checked.fingerprint,
        routes,
        gate: DeliveryGate::new(kinds, checked.pair.is_some(), ha.is_none()),
        local: Shared::default(),
        active: Arc::clone(&active),
        last_beacon: Arc::clone(&last_beacon),
    };
    let protocol_state =
        Arc::new(Mutex::new(Protocol { receiver: Receiver::new(checked.receiver.clone()), dispatcher }));
    let mut fiber_threads = Vec::new();
    for (index, (fiber, counters)) in fibers.into_iter().enumerate() {
        let (protocol, stop) = (Arc::clone(&protocol_state), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name(format!("fiber-{}", index + 1))
            .spawn(move || receive_fiber(index as u8, fiber, &protocol, counters, &stop))
            .map_err(|e| DaemonError::io(format!("cannot start fiber {} thread", index + 1), e))?;
        fiber_threads.push(thread);
    }
    let protocol = {
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
        std::thread::Builder::new()
            .name("protocol".into())
            .spawn(move || protocol_loop(&protocol_state, &shared, &stop))
            .map_err(|e| DaemonError::io("cannot start the protocol thread", e))?
    };
    if let Some(handle) = &ha {
        tokio::spawn(follow_role(handle.clone(), Arc::clone(&active), Arc::clone(&last_beacon)));
        if let Some(path) = &checked.config.node.control_socket {
            let handle = handle.clone();
            chassis::runtime::serve_control(path.clone(), move |line| {
                let handle = handle.clone();
                async move { ha_carp::driver::answer(&handle, &line).await }
            })
            .await?;
        }
    }
    for (channel, listen, router) in vaults {
        let role = ha.as_ref().map(|h| h.role.clone());
        tokio::spawn(serve_vault(channel, listen, router, role, shutdown_rx.clone()));
    }
    info!(node = %checked.config.node.name, fibers = checked.fibers.len(), "red-rx running");

    let view = Arc::new(StatusView {
        checked: Arc::clone(&checked),
        shared: Arc::clone(&shared),
        sinks,
        fibers: fiber_counters,
        warnings,
        ha: ha.clone(),
        pair: pair_stats.clone(),
        replicator: replicator.clone(),
    });
    let (management_stop, management_stop_rx) = watch::channel(false);
    let management = match &checked.management {
        Some(config) => {
            let managed = crate::manage::RedManaged { view: Arc::clone(&view) };
            Some(chassis::management::spawn(config.clone(), Arc::new(managed), management_stop_rx).await?)
        }
        None => None,
    };
    let status_file = checked.config.node.status_file.clone();
    let write_status = |state: &str| {
        if let Some(path) = &status_file {
            write_json(path, &view.status(state));
        }
    };
    let exit = tokio::select! {
        result = chassis::runtime::tick_until_stopped(|| write_status("active")) => {
            result?;
            RunEnd::Stopped
        }
        _ = reload.notified() => RunEnd::Reload,
    };
    info!("stopping");
    let _ = driver_shutdown.send(true);
    let _ = pair_stop.send(true);
    stop.store(true, Ordering::SeqCst);
    let _ = tokio::task::spawn_blocking(move || {
        for thread in fiber_threads {
            let _ = thread.join();
        }
        let _ = protocol.join();
    })
    .await;
    let _ = shutdown_tx.send(true);
    write_status("stopped");
    for task in sink_tasks {
        let _ = task.await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        for thread in sink_threads {
            let _ = thread.join();
        }
    })
    .await;
    let _ = management_stop.send(true);
    if let Some(task) = management {
        let _ = task.await;
    }
    info!("stopped");
    Ok(exit)
}

/// Serves a vault channel's downloads while this node is active (always, without HA): with HA the
/// vault listens on the VIP, which only the active node holds.
async fn serve_vault(
    channel: u16,
    listen: SocketAddr,
    router: axum::Router,
    mut role: Option<watch::Receiver<Role>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Some(role) = role.as_mut() {
            tokio::select! {
                result = role.wait_for(|r| *r == Role::Active) => if result.is_err() { return },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(listener) => listener,
            Err(error) => {
                warn!(channel, %listen, %error, "cannot listen for the vault yet: retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        };
        info!(channel, %listen, "vault serving downloads");
        let (stop_tx, stop_rx) = watch::channel(false);
        let server = tokio::spawn(connectors::vault::serve(listener, router.clone(), stop_rx));
        let stopping = tokio::select! {
            _ = async {
                match role.as_mut() {
                    Some(role) => { let _ = role.wait_for(|r| *r != Role::Active).await; }
                    None => std::future::pending::<()>().await,
                }
            } => false,
            _ = shutdown.wait_for(|stop| *stop) => true,
        };
        let _ = stop_tx.send(true);
        let _ = server.await;
        info!(channel, %listen, "vault stopped serving");
        if stopping {
            return;
        }
    }
}

/// How long without a beacon on any fiber before this node counts as blind (a few beacon intervals).
const BLIND_AFTER: Duration = Duration::from_secs(1);

/// Mirrors the HA role into the delivery switch, and demotes this node while it hears no beacon: a
/// RED that cannot see BLUE should not be the one delivering when its peer can.
async fn follow_role(handle: HaHandle, active: Arc<AtomicBool>, last_beacon: Arc<Mutex<Option<Instant>>>) {
    let mut role = handle.role.clone();
    let mut blind = false;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    loop {
        active.store(*role.borrow() == Role::Active, Ordering::SeqCst);
        let heard = last_beacon.lock().ok().and_then(|l| *l);
        let now_blind = heard.is_none_or(|t| t.elapsed() > BLIND_AFTER);
        if now_blind != blind {
            blind = now_blind;
            let command = if blind { Command::Fault(Fault::NoBeacon) } else { Command::Clear(Fault::NoBeacon) };
            if blind {
                warn!("no beacon on any fiber: demoting this node");
            } else {
                info!("beacons heard again: clearing the demotion");
            }
            let _ = handle.command(command).await;
        }
        tokio::select! {
            changed = role.changed() => if changed.is_err() { return },
            _ = ticker.tick() => {}
        }
    }
}

/// The fiber threads' nice value. A datagram the kernel drops because its socket buffer filled
/// while the thread waited for a CPU is gone for good (nothing goes back to BLUE), whereas any other
/// work of red-rx or of the machine can wait a little: the fiber threads go first.
const FIBER_THREAD_NICE: i32 = -10;
/// A fiber thread that read fewer than this many datagrams waits [`COALESCE_WAIT`] before reading
/// again. At its priority it would otherwise wake for nearly every datagram of a slow link, and a
/// wakeup costs more than a datagram: at 1 Gbit/s and MTU 1500, context switches were a quarter of
/// red-rx's CPU. The wait is far inside what the socket buffer holds (32 MiB: 27 ms at 10 Gbit/s).
const COALESCE_BELOW: usize = 32;
const COALESCE_WAIT: Duration = Duration::from_micros(200);

/// Reads one fiber and runs each batch through the receiver in place, under the protocol lock: the
/// datagrams are never copied or queued in this process. While the other fiber's thread (or the
/// timer) holds the lock, this fiber's datagrams wait in its kernel socket buffer (`recv_buffer`),
/// so red-rx's memory does not grow with a burst.
fn receive_fiber(
    fiber: u8,
    mut rx: FiberRx,
    protocol: &Mutex<Protocol>,
    counters: Arc<Mutex<RxCounters>>,
    stop: &AtomicBool,
) {
    if let Err(error) = hw::raise_thread_priority(FIBER_THREAD_NICE) {
        warn!(fiber = fiber + 1, %error, nice = FIBER_THREAD_NICE, "cannot raise the fiber thread's priority; under CPU load the kernel may drop datagrams while it waits");
    }
    let mut last_refresh = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let batch = match rx.recv_batch(Instant::now()) {
            Ok(batch) => batch,
            Err(error) => {
                error!(fiber = fiber + 1, %error, "fiber receive failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // After an empty read the receive call itself has just waited; only a short batch coalesces.
        let few = !batch.is_empty() && batch.len() < COALESCE_BELOW;
        if !batch.is_empty() {
            let Ok(mut guard) = protocol.lock() else { return };
            let Protocol { receiver, dispatcher } = &mut *guard;
            dispatcher.sync_role();
            let now = Instant::now();
            for datagram in batch.iter() {
                let _ = receiver.handle_datagram(now, fiber, datagram);
                dispatch(receiver, dispatcher);
            }
        }
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            let _ = rx.refresh_kernel_drops();
            last_refresh = Instant::now();
        }
        if let Ok(mut shared) = counters.lock() {
            shared.clone_from(rx.counters());
        }
        if few {
            std::thread::sleep(COALESCE_WAIT);
        }
    }
}

/// The receiver and what routes its events, taken in turn by the fiber threads and the timer.
struct Protocol {
    receiver: Receiver,
    dispatcher: Dispatcher,
}

/// A channel's way to its sink. Never waits: what the sink cannot take now waits in the backlog.
struct Route {
    sender: mpsc::Sender<SinkEvent>,
    backlog: Backlog,
    stats: Arc<SinkStats>,
}

impl Route {
    fn try_send(sender: &mpsc::Sender<SinkEvent>) -> impl FnMut(SinkEvent) -> Handoff + '_ {
        |event| match sender.try_send(event) {
            Ok(()) => Handoff::Taken,
            Err(mpsc::error::TrySendError::Full(event)) => Handoff::Full(event),
            // Only at shutdown: nothing will take it.
            Err(mpsc::error::TrySendError::Closed(_)) => Handoff::Taken,
        }
    }

    fn deliver(&mut self, channel: u16, event: SinkEvent) {
        for overflow in self.backlog.offer(event, &mut Self::try_send(&self.sender)) {
            match overflow {
                Overflow::StreamCut { stream, told } => {
                    error!(channel, stream, waiting_bytes = self.backlog.bytes(), "ALARM the channel's sink fell behind decoding by its whole queue_bytes: stream broken (sink_overloaded)");
                    if !told {
                        self.stats.aborted.add(StreamAbort::SinkOverloaded);
                    }
                }
                Overflow::DatagramDropped => {
                    self.stats.datagrams_dropped.add(DatagramDrop::SinkOverloaded);
                }
            }
        }
    }

    fn drain(&mut self) {
        self.backlog.drain(&mut Self::try_send(&self.sender));
    }
}

/// Hands receiver events to the sinks the delivery gate lets them through to (see [`crate::gate`]).
struct Dispatcher {
    own_fingerprint: [u8; 16],
    routes: HashMap<u16, Route>,
    gate: DeliveryGate,
    local: Shared,
    /// The election's role, as the HA task last set it.
    active: Arc<AtomicBool>,
    last_beacon: Arc<Mutex<Option<Instant>>>,
}

impl Dispatcher {
    /// Tells the gate the role the election last set.
    fn sync_role(&mut self) {
        let active = self.active.load(Ordering::SeqCst);
        if active != self.gate.active() {
            self.gate.handle_role(active);
            self.carry_out();
        }
    }

    fn route(&mut self, channel: u16, event: SinkEvent) {
        self.gate.handle_event(channel, event);
        self.carry_out();
    }

    fn carry_out(&mut self) {
        for route in self.routes.values_mut() {
            route.drain();
        }
        while let Some(action) = self.gate.poll_action() {
            match action {
                GateAction::Deliver { channel, event } => {
                    let Some(route) = self.routes.get_mut(&channel) else {
                        warn!(channel, "no sink for the channel: event dropped");
                        continue;
                    };
                    route.deliver(channel, event);
                }
                GateAction::UnknownChannel(channel) => {
                    error!(channel, "ALARM data for a channel this RED does not have: dropped");
                }
                GateAction::BeganBeforeActive { channel, stream } => {
                    warn!(channel, stream, "stream began before this node was active: not delivered");
                }
            }
        }
    }
}

/// The timer: block and stream timeouts, role changes while no datagram arrives, and the counters
/// the status page shows.
fn protocol_loop(protocol: &Mutex<Protocol>, shared: &Mutex<Shared>, stop: &AtomicBool) {
    let mut last_publish = Instant::now();
    while !stop.load(Ordering::SeqCst) {
        let wait = {
            let Ok(mut guard) = protocol.lock() else { return };
            let Protocol { receiver, dispatcher } = &mut *guard;
            dispatcher.sync_role();
            receiver.handle_timeout(Instant::now());
            dispatch(receiver, dispatcher);
            // What waits for a full sink moves on even while no datagram arrives.
            dispatcher.carry_out();
            if last_publish.elapsed() >= Duration::from_millis(200) {
                publish(receiver, dispatcher, shared);
                last_publish = Instant::now();
            }
            receiver.poll_timeout().map_or(Duration::from_millis(20), |t| t.saturating_duration_since(Instant::now()))
        };
        std::thread::sleep(wait.clamp(Duration::from_millis(1), Duration::from_millis(20)));
    }
    if let Ok(guard) = protocol.lock() {
        publish(&guard.receiver, &guard.dispatcher, shared);
    }
}

fn publish(receiver: &Receiver, dispatcher: &Dispatcher, shared: &Mutex<Shared>) {
    let (local, gate) = (&dispatcher.local, &dispatcher.gate);
    let Ok(mut out) = shared.lock() else { return };
    let stats = receiver.stats();
    out.session = receiver.session();
    out.stale_sender = receiver.stale_sender(Instant::now());
    out.config_mismatch = local.config_mismatch;
    out.blue_fingerprint = local.blue_fingerprint;
    out.unknown_channels = gate.counts().unknown_channels.iter().copied().collect();
    out.streams_ended = local.streams_ended;
    out.streams_broken.clone_from(&local.streams_broken);
    out.datagrams_delivered = local.datagrams_delivered;
    out.standby_skipped = gate.counts().standby_skipped;
    out.shadowed = gate.counts().shadowed;
    out.blocks_lost = stats.blocks_lost;
    out.blocks_lost_by = stats.blocks_lost_by;
    out.blocks_decoded = stats.blocks_decoded;
    out.blocks_without_decoder = stats.blocks_without_decoder;
    out.source_symbols = stats.source_symbols;
    out.source_symbols_missing = stats.source_symbols_missing;
    out.blocks_near_repair_limit = stats.blocks_near_repair_limit;
    out.announced_repair = local.announced_repair;
    out.drops = stats.drops.nonzero();
    for (index, harmful) in out.fiber_harmful_drops.iter_mut().enumerate() {
        *harmful = stats.fibers.get(index).map_or(0, |f| f.harmful_drops);
    }
}

fn dispatch(receiver: &mut Receiver, dispatcher: &mut Dispatcher) {
    let own_fingerprint = dispatcher.own_fingerprint;
    while let Some(event) = receiver.poll_event() {
        let local = &mut dispatcher.local;
        let (channel, sink_event) = match event {
            Event::BeaconReceived { beacon, .. } => {
                local.announced_repair = Some((beacon.fec.repair_symbols(), u32::from(beacon.fec.max_block_symbols)));
                let mismatch = beacon.config_fingerprint != own_fingerprint;
                if mismatch && !local.config_mismatch {
                    error!(
                        blue = hex::encode(beacon.config_fingerprint),
                        red = hex::encode(own_fingerprint),
                        "ALARM configuration mismatch: BLUE's channel table differs from this RED's (number, kind or name)"
                    );
                } else if !mismatch && local.config_mismatch {
                    info!("configuration mismatch cleared: BLUE's channel table matches again");
                }
                local.config_mismatch = mismatch;
                local.blue_fingerprint = Some(beacon.config_fingerprint);
                if let Ok(mut last) = dispatcher.last_beacon.lock() {
                    *last = Some(Instant::now());
                }
                continue;
            }
            Event::SessionStarted { session, epoch, replaced } => {
                info!(session = format!("{session:016x}"), epoch, replaced = ?replaced, "sender session started");
                continue;
            }
            Event::BlocksLost { channel, first, last, reason } => {
                warn!(channel, first, last, ?reason, "blocks lost");
                continue;
            }
            Event::Alarm(alarm) => {
                error!(?alarm, "ALARM");
                continue;
            }
            Event::StreamOpened { channel, stream, meta } => {
                let (session, epoch) = receiver.session().unwrap_or((0, 0));
                (channel, SinkEvent::Open { stream, meta, session, epoch })
            }
            Event::StreamData { channel, stream, data, .. } => (channel, SinkEvent::Data { stream, data }),
            Event::StreamEnded { channel, stream, total_len, hash } => {
                local.streams_ended += 1;
                (channel, SinkEvent::End { stream, total_len, hash })
            }
            Event::StreamBroken { channel, stream, reason } => {
                local.streams_broken.add(reason, 1);
                warn!(channel, stream, %reason, reason_label = reason.label(), "stream broken");
                (channel, SinkEvent::Broken { stream, reason: StreamAbort::Broken(reason) })
            }
            Event::StreamNeverArrived { channel, entry } => {
                let event = SinkEvent::NeverArrived {
                    stream: entry.stream,
                    name: entry.name,
                    size: entry.size,
                    file_id: entry.file_id,
                };
                (channel, event)
            }
            Event::Datagram { channel, payload } => {
                local.datagrams_delivered += 1;
                (channel, SinkEvent::Datagram(payload))
            }
        };
        dispatcher.route(channel, sink_event);
    }
}
