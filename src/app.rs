//! Start-up and orderly shutdown of the whole service.
//!
//! Start order: sink, pipeline, HTTP, scheduler (which opens the
//! connections). Shutdown runs the other way, so nothing received before the
//! signal is lost: readiness turns 503, every WebSocket closes with code
//! 1000 and its reader hands over its last frames, the pipeline drains its
//! queue into the ring, and the sink writes, flushes and fsyncs what the ring
//! holds before the process exits.
//!
//! The memory sampler starts with the sink and stops last. At the critical
//! memory level with `MEMORY_EXIT_ON_CRITICAL` set, the same orderly
//! shutdown runs and [`run`] returns [`Error::MemoryCritical`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::config::Config;
use crate::connection::{ConnectionStats, SlotStatus};
use crate::error::Error;
use crate::frame::{FrameBatch, FrameSender, QueueBytes};
use crate::health::Health;
use crate::http::{HttpContext, HttpServer, HttpStats};
use crate::liveness::{Liveness, STALL_AFTER};
use crate::memory::{Budget, MemorySettings, MemoryStatus};
use crate::metrics::{Exposition, MetricType, PREFIX};
use crate::notify::Notifier;
use crate::pipeline::{self, PipelineSettings, PipelineStats};
use crate::plan::{ConnectionPlan, plan_connections};
use crate::process::ProcessSample;
use crate::reader::ReaderSettings;
use crate::ring::Ring;
use crate::scheduler::{self, SchedulerContext, SchedulerHandle, SchedulerSettings};
use crate::sink::{self, SinkSettings, SinkStats};
use crate::timer::TimerSettings;

/// A second SIGTERM or SIGINT within this time of the first is taken as a
/// duplicate of it, not as a request to exit at once.
const SECOND_SIGNAL_GRACE: Duration = Duration::from_millis(500);

/// Exit status after a clean shutdown.
pub const EXIT_OK: i32 = 0;

/// Cause [`Service::wait`] returns when resident memory reached the
/// critical level and a shutdown is configured.
pub const CAUSE_MEMORY_CRITICAL: &str = "critical memory level";

/// A running service.
pub struct Service {
    health: Arc<Health>,
    scheduler: Option<SchedulerHandle>,
    pipeline: Option<JoinHandle<()>>,
    sink: Option<JoinHandle<()>>,
    sink_stats: Arc<SinkStats>,
    http: Option<HttpServer>,
    liveness: Arc<Liveness>,
    notifier: Notifier,
    memory: Arc<MemoryStatus>,
    sampler: Option<JoinHandle<()>>,
    sampler_stop: Option<Sender<()>>,
    /// Requests from the sampler to shut down; the service keeps a sender
    /// so the channel never disconnects while it waits.
    memory_critical: (Sender<()>, Receiver<()>),
}

/// Starts every thread of the service.
///
/// # Errors
///
/// Fails when the TLS configuration cannot be built, the data directory
/// cannot be created, the HTTP address cannot be bound, or a thread cannot
/// start.
pub fn start(config: &Config) -> Result<Service, Error> {
    let endpoint = config.effective_endpoint();
    let plans = plan_connections(
        config.venue,
        &config.streams,
        config.max_streams_per_connection,
        config.routing,
    );
    log::info!(
        "starting binance-ingest {} venue={} endpoint={} streams={} connections={} data_dir={}",
        env!("CARGO_PKG_VERSION"),
        config.venue,
        endpoint,
        config.streams.len(),
        plans.len(),
        config.data_dir.display()
    );
    if !endpoint.secure {
        log::warn!(
            "endpoint {endpoint} is plain ws://: this connection is not encrypted or \
             authenticated; use it only against a local test server"
        );
    }
    for stream in config.streams.iter().filter(|s| !crate::plan::is_known_stream_type(s)) {
        log::warn!(
            "stream {stream} has a type this service does not know; Binance accepts a \
             misspelt stream and then sends nothing for it, so check the name"
        );
    }
    let budget = Budget::worst_case(config);
    log::info!("{}", budget.log_line(config.memory_limit));
    for warning in crate::memory::level_warnings(config, &budget) {
        log::warn!("memory level too low: {warning}");
    }
    match MemorySettings::from_config(config).leak_detection_limit() {
        (line, true) => log::warn!("{line}"),
        (line, false) => log::info!("{line}"),
    }
    let tls = crate::tls::client_config(config.ca_file.as_deref())?;
    if config.data_dir.exists() && !config.data_dir.is_dir() {
        return Err(Error::Usage(format!(
            "BINANCE_INGEST_DATA_DIR={} is not a folder; point it at a folder the service \
             may create and write",
            config.data_dir.display()
        )));
    }
    std::fs::create_dir_all(&config.data_dir).map_err(|source| Error::File {
        action: "create data directory (BINANCE_INGEST_DATA_DIR)",
        path: config.data_dir.clone(),
        source,
    })?;

    let liveness = Arc::new(Liveness::new());
    let ring = Arc::new(Ring::new(config.cache_size));
    let connection_stats = Arc::new(ConnectionStats::default());
    let pipeline_stats = Arc::new(PipelineStats::default());
    let sink_stats = Arc::new(SinkStats::default());
    let slots: Vec<Arc<SlotStatus>> =
        plans.iter().map(|plan| Arc::new(slot_status(plan))).collect();
    let health = Arc::new(Health::new(
        liveness.clone(),
        slots.clone(),
        sink_stats.clone(),
        config.effective_stale_after(),
    ));

    let sink_settings = SinkSettings {
        data_dir: config.data_dir.clone(),
        instance: config.instance.clone(),
        venue: config.venue,
        flush_interval: config.flush_interval,
        max_staged_bytes: config.sink_buffer_size,
        shutdown_retry: config.sink_shutdown_retry,
    };
    let sink =
        sink::spawn(sink_settings, ring.clone(), sink_stats.clone(), liveness.register("sink"))
            .map_err(|source| Error::Spawn { thread: "sink".into(), source })?;

    let memory = Arc::new(MemoryStatus::new());
    memory.budget_bytes.set(budget.total());
    health.attach_memory(memory.clone());
    let (sampler_stop, sampler_stop_rx) = crossbeam_channel::bounded(1);
    let memory_critical = crossbeam_channel::bounded(1);
    let sampler = crate::memory::spawn(
        MemorySettings::from_config(config),
        memory.clone(),
        ring.clone(),
        sampler_stop_rx,
        memory_critical.0.clone(),
        liveness.register("memory-sampler"),
    )
    .map_err(|source| Error::Spawn { thread: "memory-sampler".into(), source })?;

    let (frame_tx, frame_rx) = crossbeam_channel::bounded(config.frame_queue);
    let frames = FrameSender::new(frame_tx, config.frame_queue_bytes);
    let frame_queue_bytes = frames.bytes();
    let frame_queue = frame_rx.clone();
    let (notice_tx, notices) = crossbeam_channel::bounded(64);
    let (control, control_rx) = crossbeam_channel::bounded(64);
    let pipeline_settings = PipelineSettings {
        venue: config.venue,
        dedup_window: config.dedup_window,
        max_streams: config.max_streams,
    };
    let pipeline = pipeline::spawn_with_control(
        pipeline_settings,
        frame_rx,
        control_rx,
        ring.clone(),
        pipeline_stats.clone(),
        notice_tx,
        liveness.register("pipeline"),
    )
    .map_err(|source| Error::Spawn { thread: "pipeline".into(), source })?;

    let http_stats = Arc::new(HttpStats::default());
    let render = metrics_renderer(MetricSources {
        connections: connection_stats.clone(),
        pipeline: pipeline_stats.clone(),
        sink: sink_stats.clone(),
        ring: ring.clone(),
        health: health.clone(),
        http: http_stats.clone(),
        started: Instant::now(),
        memory: memory.clone(),
        frame_queue,
        frame_queue_bytes,
    });
    let http_context =
        HttpContext { health: health.clone(), ring, metrics: render, stats: http_stats };
    let http = HttpServer::start(config.http_addr, config.http_threads, http_context, &liveness)?;

    let scheduler_settings = SchedulerSettings {
        reconnect_min: config.reconnect_min,
        reconnect_max: config.reconnect_max,
        healthy_after: config.healthy_after,
        overlap_timeout: config.overlap_timeout,
        timer: TimerSettings {
            client_ping_interval: config.client_ping_interval,
            pong_timeout: config.pong_timeout,
            stale_after: config.effective_stale_after(),
            data_stale_after: config.data_stale_after,
            stream_stale_after: config.stream_stale_after.clone(),
            rotate_interval: config.rotate_interval,
            rotate_jitter_percent: config.rotate_jitter_percent,
        },
        reader: ReaderSettings {
            endpoint,
            tls,
            connect_timeout: config.connect_timeout,
            max_message_size: config.max_message_size,
            max_frame_size: config.max_frame_size,
            batch_delay: config.batch_delay,
            batch_size: config.batch_size,
        },
    };
    let context = SchedulerContext {
        frames,
        notices,
        slots,
        stats: connection_stats,
        liveness: liveness.clone(),
        control,
        stream_ages: Arc::new(move || pipeline_stats.stream_last_event()),
    };
    let scheduler = scheduler::spawn(scheduler_settings, plans, context)
        .map_err(|source| Error::Spawn { thread: "scheduler".into(), source })?;

    let notifier = Notifier::from_env();
    notifier.ready();
    Ok(Service {
        health,
        scheduler: Some(scheduler),
        pipeline: Some(pipeline),
        sink: Some(sink),
        sink_stats,
        http: Some(http),
        liveness,
        notifier,
        memory,
        sampler: Some(sampler),
        sampler_stop: Some(sampler_stop),
        memory_critical,
    })
}

impl Service {
    /// Address of the HTTP listener.
    pub fn http_address(&self) -> Option<SocketAddr> {
        self.http.as_ref().map(HttpServer::address)
    }

    /// Shared memory figures and alerts.
    pub fn memory(&self) -> &Arc<MemoryStatus> {
        &self.memory
    }

    /// Runs until a message arrives on `stop` or the memory sampler requests
    /// a shutdown ([`CAUSE_MEMORY_CRITICAL`]), sending the systemd
    /// watchdog keep-alive while every worker checks in.
    pub fn wait(&self, stop: &Receiver<&'static str>) -> &'static str {
        let tick = crossbeam_channel::tick(Duration::from_secs(1));
        loop {
            select! {
                recv(stop) -> cause => return cause.unwrap_or("stop channel closed"),
                recv(self.memory_critical.1) -> _ => return CAUSE_MEMORY_CRITICAL,
                recv(tick) -> _ => {
                    let stalled = self.liveness.stalled(STALL_AFTER);
                    if stalled.is_empty() {
                        self.notifier.watchdog();
                    } else {
                        log::error!("worker threads stalled: {}", stalled.join(", "));
                    }
                }
            }
        }
    }

    /// Shuts down in order and returns once the sink has fsynced.
    pub fn shutdown(mut self) {
        let started = Instant::now();
        self.health.begin_shutdown();
        self.notifier.stopping();
        log::info!("shutdown: readiness now fails; closing connections");

        if let Some(scheduler) = self.scheduler.take() {
            scheduler.stop();
        }
        log::info!("shutdown: connections closed; draining the pipeline");
        join("pipeline", self.pipeline.take());
        log::info!("shutdown: pipeline drained; waiting for the sink to flush and fsync");
        join("sink", self.sink.take());
        drop(self.sampler_stop.take());
        join("memory-sampler", self.sampler.take());
        if let Some(http) = self.http.take() {
            http.stop();
        }
        log::info!("stopped after {:.2} s of shutdown", started.elapsed().as_secs_f64());
    }
}

fn join(name: &str, handle: Option<JoinHandle<()>>) {
    if let Some(handle) = handle {
        if handle.join().is_err() {
            log::error!("{name} thread panicked");
        }
    }
}

fn slot_status(plan: &ConnectionPlan) -> SlotStatus {
    let description = format!("{} {} stream(s)", plan.route.name(), plan.streams.len());
    SlotStatus::new(plan.slot, description)
}

struct MetricSources {
    connections: Arc<ConnectionStats>,
    pipeline: Arc<PipelineStats>,
    sink: Arc<SinkStats>,
    ring: Arc<Ring>,
    health: Arc<Health>,
    http: Arc<HttpStats>,
    started: Instant,
    memory: Arc<MemoryStatus>,
    /// A receiver clone, only for its length: a sender clone would keep the
    /// pipeline from seeing the end of input at shutdown.
    frame_queue: Receiver<FrameBatch>,
    frame_queue_bytes: Arc<QueueBytes>,
}

fn metrics_renderer(sources: MetricSources) -> Arc<dyn Fn() -> String + Send + Sync> {
    Arc::new(move || {
        let mut out = Exposition::new();
        let name = format!("{PREFIX}build_info");
        out.family(&name, MetricType::Gauge, "Build information; the value is always 1.");
        out.sample_u64(&name, &[("version", env!("CARGO_PKG_VERSION"))], 1);
        out.single_f64(
            &format!("{PREFIX}uptime_seconds"),
            MetricType::Gauge,
            "Time since the service started.",
            sources.started.elapsed().as_secs_f64(),
        );
        let ready = sources.health.ready().status != crate::health::Status::Fail;
        out.single_u64(
            &format!("{PREFIX}ready"),
            MetricType::Gauge,
            "1 while /readyz returns 200, else 0.",
            u64::from(ready),
        );
        ProcessSample::read().write_metrics(&mut out);
        sources.connections.write_metrics(&mut out);
        sources.pipeline.write_metrics(&mut out);
        sources.ring.write_metrics(&mut out);
        sources.sink.write_metrics(&mut out, &sources.ring);
        sources.http.write_metrics(&mut out);
        sources.memory.write_metrics(&mut out);
        out.single_u64(
            &format!("{PREFIX}frame_queue_length"),
            MetricType::Gauge,
            "Frame batches waiting between the readers and the pipeline.",
            sources.frame_queue.len() as u64,
        );
        out.single_u64(
            &format!("{PREFIX}frame_queue_capacity"),
            MetricType::Gauge,
            "Capacity of the frame queue in batches (FRAME_QUEUE).",
            sources.frame_queue.capacity().unwrap_or(0) as u64,
        );
        out.single_u64(
            &format!("{PREFIX}frame_queue_bytes"),
            MetricType::Gauge,
            "Heap bytes of the frame batches queued for or held by the pipeline.",
            sources.frame_queue_bytes.used(),
        );
        out.single_u64(
            &format!("{PREFIX}frame_queue_capacity_bytes"),
            MetricType::Gauge,
            "Ceiling on frame_queue_bytes (FRAME_QUEUE_BYTES); an empty queue takes one larger batch.",
            sources.frame_queue_bytes.limit(),
        );
        out.finish()
    })
}

/// Starts the service, waits for SIGTERM or SIGINT, and shuts down.
/// A second signal during shutdown exits at once with status 130.
///
/// # Errors
///
/// Fails when start-up fails; see [`start`].
pub fn run(config: &Config) -> Result<(), Error> {
    let stop = signal_channel()?;
    let service = start(config)?;
    let cause = service.wait(&stop);
    let memory = service.memory().clone();
    let sink_stats = service.sink_stats.clone();
    log::info!("received {cause}, shutting down");

    let first_signal = Instant::now();
    std::thread::Builder::new()
        .name("second-signal".into())
        .spawn(move || {
            while let Ok(cause) = stop.recv() {
                // A signal sent to the whole process group (as `timeout`
                // and some shells do) can arrive twice within microseconds;
                // only a deliberate second signal aborts the shutdown.
                if first_signal.elapsed() < SECOND_SIGNAL_GRACE {
                    log::info!("ignoring {cause} that followed the first signal at once");
                    continue;
                }
                log::error!("received {cause} during shutdown, exiting at once");
                std::process::exit(130);
            }
        })
        .map_err(|source| Error::Spawn { thread: "second-signal".into(), source })?;

    service.shutdown();
    let unwritten = sink_stats.abandoned_records();
    if unwritten > 0 {
        return Err(Error::UnwrittenRecords {
            records: unwritten,
            overwritten: sink_stats.progress().overwritten,
        });
    }
    if cause == CAUSE_MEMORY_CRITICAL {
        return Err(Error::MemoryCritical { resident_bytes: memory.resident_bytes.get() });
    }
    Ok(())
}

fn signal_channel() -> Result<Receiver<&'static str>, Error> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|source| Error::Spawn { thread: "signals".into(), source })?;
    let (sender, receiver) = crossbeam_channel::bounded(2);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGTERM { "SIGTERM" } else { "SIGINT" };
                if sender.try_send(name).is_err() {
                    log::debug!("{name} ignored: shutdown is already under way");
                }
            }
        })
        .map_err(|source| Error::Spawn { thread: "signals".into(), source })?;
    Ok(receiver)
}
