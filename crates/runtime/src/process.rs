//! The long-running processes: [`run_orchestrator`] and [`run_worker`].
//! Each takes resolved settings, the HTTP listener it serves `/healthz`,
//! `/readyz` and `/metrics` on (bound by the caller: tests pass port 0), and
//! a shutdown token; it opens the backend, runs until the token is
//! cancelled, then drains within the configured budget and returns.

use std::sync::Arc;
use std::time::Duration;

use sqsaga_config::Settings;
use sqsaga_core::Millis;
use sqsaga_http::{Probe, router, serve_on};
use sqsaga_orchestrator::{Definitions, ORCHESTRATOR_QUEUE, Orchestrator, OrchestratorOptions, SystemClock};
use sqsaga_worker::{AnyParticipant, Worker, WorkerOptions};
use tokio::net::TcpListener;

use crate::RuntimeError;
use crate::backend::{open_backend, queue_spec};
use crate::depths::QueueDepths;
use crate::fleet::{OrchestratorFleet, forward_quarantine};
use crate::identity::{fingerprint, heartbeat_fields};
use crate::metrics::{orchestrator_registry, worker_registry};
use crate::readiness::{self, Watched};
use crate::settings::signing;
use crate::shutdown::CancellationToken;

/// Binds the HTTP port; the error names the setting to change.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, RuntimeError> {
    TcpListener::bind(addr).await.map_err(|source| RuntimeError::Listen { addr, source })
}

/// Runs the orchestrator for `definitions` until `shutdown` is cancelled.
pub async fn run_orchestrator(
    settings: Settings,
    definitions: Arc<Definitions>,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), RuntimeError> {
    let fleet = OrchestratorFleet::setup(&settings, &definitions)?;
    let opened = open_backend(&settings).await?;
    sqsaga_orchestrator::ensure_queues(opened.queue.as_ref(), &definitions, &queue_spec(&settings, "template")).await?;
    let fp = fingerprint(&settings, Vec::new());
    let probe = Probe::new();
    probe.set_info("service", serde_json::json!("orchestrator"));
    probe.set_info("fingerprint", serde_json::json!(fp.id));
    probe.register_loop("readiness", Duration::from_secs(30));
    let watched_queues = QueueDepths::queues(ORCHESTRATOR_QUEUE, &definitions.services());
    let orchestrator = Orchestrator::new(
        definitions,
        opened.queue.clone(),
        opened.store.clone(),
        Arc::new(SystemClock),
        OrchestratorOptions {
            signing: signing(&settings),
            pollers: settings.concurrency,
            wait: settings.wait_time,
            visibility: settings.visibility_timeout,
            retention: Some(settings.retention),
            max_in_flight: (settings.max_in_flight > 0).then_some(settings.max_in_flight),
            ..OrchestratorOptions::default()
        },
    )
    .with_fleet(fleet.monitor.clone());
    let depths = Arc::new(QueueDepths::default());
    let depth_loop = depths.spawn(opened.queue.clone(), watched_queues, probe.clone(), shutdown.clone());
    let registry = orchestrator_registry(&probe, &fp.id, &orchestrator, &fleet.monitor, opened.requests(), &depths);
    let mut app = router(probe.clone(), registry).merge(fleet.route());
    let admin = crate::admin::router(crate::admin::Admin {
        store: opened.store.clone(),
        queue: opened.queue.clone(),
        definitions: orchestrator.definitions(),
        fleet: fleet.json(),
        changes: orchestrator.changes(),
        signing: signing(&settings),
        tokens: crate::admin::Tokens::from_settings(&settings)?,
        shutdown: shutdown.clone(),
    });
    let http_is_loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let admin_http = match settings.admin_addr {
        Some(addr) => {
            let listener =
                TcpListener::bind(addr).await.map_err(|source| RuntimeError::ListenAdmin { addr, source })?;
            let (bound, task) = serve_on(listener, admin, shutdown.clone().cancelled_owned())?;
            tracing::info!(admin = %bound, "Admin API and console listening.");
            Some(task)
        }
        None if http_is_loopback => {
            app = app.merge(admin);
            None
        }
        None => {
            tracing::info!("Admin API not served: the HTTP port is not loopback; set SQSAGA_ADMIN_ADDR (and a token).");
            None
        }
    };
    let sqs_endpoint = crate::sqs_endpoint::serve(&settings, opened.queue.clone(), shutdown.clone()).await?;
    let (addr, http) = serve_on(listener, app, shutdown.clone().cancelled_owned())?;
    let fleet_loop = fleet.spawn(probe.clone(), shutdown.clone());
    tracing::info!(http = %addr, fingerprint = %fp.short(), backend = settings.backend.as_str(), "Orchestrator started.");
    let watched = Watched {
        queue: opened.queue.clone(),
        queue_name: ORCHESTRATOR_QUEUE.to_string(),
        store: Some(opened.store.clone()),
        participant: None,
    };
    let readiness = readiness::spawn(probe, watched, readiness::INTERVAL, shutdown.clone());
    orchestrator.run(shutdown.cancelled_owned()).await;
    let _ = readiness.await;
    let _ = fleet_loop.await;
    let _ = depth_loop.await;
    let _ = http.await;
    if let Some(task) = admin_http {
        let _ = task.await;
    }
    if let Some(endpoint) = sqs_endpoint {
        let _ = endpoint.await;
    }
    tracing::info!("Orchestrator exited cleanly.");
    Ok(())
}

/// Runs a worker of `settings.service` with `participant` until `shutdown`
/// is cancelled. `started_at` is when the process started (before hashing
/// its executable), so siblings started together report the same start.
///
/// A participant service's whole `main` (see `docs/participants.md` and
/// `examples/shipping`):
///
/// ```no_run
/// use std::sync::Arc;
/// use sqsaga_runtime::{Overrides, RuntimeError};
/// use sqsaga_worker::Participant;
///
/// # async fn main_() -> Result<(), RuntimeError> {
/// let started_at = sqsaga_core::clock::now_ms();
/// let overrides = Overrides { service: Some("shipping".into()), ..Overrides::default() };
/// let settings = sqsaga_runtime::resolve(&overrides)?; // SQSAGA_*, the config file, the flags
/// let shutdown = sqsaga_runtime::on_signals(); // SIGTERM or SIGINT: drain, then return
/// let participant = Participant::open(&settings.data_dir.join("shipping.db"), sqsaga_sqlite::Sync::Full)?;
/// // ... participant.register(...) for each command ...
/// let listener = sqsaga_runtime::bind(settings.http_addr).await?; // /healthz, /readyz, /metrics
/// sqsaga_runtime::run_worker(settings, Arc::new(participant), listener, shutdown, started_at).await
/// # }
/// ```
pub async fn run_worker(
    settings: Settings,
    participant: Arc<dyn AnyParticipant>,
    listener: TcpListener,
    shutdown: CancellationToken,
    started_at: Millis,
) -> Result<(), RuntimeError> {
    let Some(service) = settings.service.clone() else {
        return Err(RuntimeError::config("no service: set --service, SQSAGA_SERVICE or `service` in the config file"));
    };
    let opened = open_backend(&settings).await?;
    opened.queue.ensure(&queue_spec(&settings, &service)).await?;
    let fp = fingerprint(&settings, participant.contracts());
    let probe = Probe::new();
    probe.set_info("service", serde_json::json!(service));
    probe.set_info("instance", serde_json::json!(settings.instance_id));
    probe.set_info("fingerprint", serde_json::json!(fp.id));
    probe.register_loop("readiness", Duration::from_secs(30));
    let (host, parts) = heartbeat_fields(&fp);
    let options = WorkerOptions {
        concurrency: settings.concurrency,
        wait: settings.wait_time,
        visibility: settings.visibility_timeout,
        drain_timeout: settings.drain_timeout,
        fingerprint: fp.id.clone(),
        signing: signing(&settings),
        heartbeat_interval: Some(settings.heartbeat_interval),
        host,
        fingerprint_parts: parts,
        started_at: Some(started_at),
        ..WorkerOptions::new(&service, &settings.instance_id)
    };
    let worker = Worker::new(options, opened.queue.clone(), participant.clone());
    let quarantine = forward_quarantine(worker.quarantine(), probe.clone());
    let registry = worker_registry(&probe, &service, &fp.id, &worker, opened.requests());
    let (addr, http) = serve_on(listener, router(probe.clone(), registry), shutdown.clone().cancelled_owned())?;
    tracing::info!(service = %service, http = %addr, fingerprint = %fp.short(), "Worker started.");
    let watched = Watched {
        queue: opened.queue.clone(),
        queue_name: service.clone(),
        store: None,
        participant: Some(participant.clone()),
    };
    let readiness = readiness::spawn(probe, watched, readiness::INTERVAL, shutdown.clone());
    worker.run(shutdown.cancelled_owned()).await?;
    let _ = readiness.await;
    let _ = quarantine.await;
    let _ = http.await;
    tracing::info!(service = %service, "Worker exited cleanly.");
    Ok(())
}
