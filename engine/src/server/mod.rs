//! `sluice serve`: the engine as a service. It loads the pipelines of a folder (and reloads
//! them when files change), fires their cron schedules, turns webhook events and
//! Alertmanager alerts into runs, drives every run with the core scheduler, and serves the
//! HTTP API (`api`).
//!
//! One process owns the data folder (sled's lock); command-line clients talk to it over
//! HTTP, finding its address in `<data dir>/server.json`.

pub mod api;
pub mod catalog;
mod http;
pub mod launcher;
mod monitor;
pub(crate) mod rollouts;
mod schedules;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc, watch};

use crate::compile::Plan;
use crate::driver::{Control, Created, Engine, EngineError, NewRun, Notice};
use crate::scheduler::RunState;
use crate::spec::Overlap;
use crate::store::{FORMAT_VERSION, InboxRecord, InboxStatus, StoreError};
use catalog::{Catalog, Loader};
use launcher::Launcher;

/// Requests to the event endpoints handled at once (beside the general limit).
const EVENT_SLOTS: usize = 64;

/// The file in the data folder that tells clients where the server listens.
pub const SERVER_FILE: &str = "server.json";

/// Settings of `sluice serve`.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The folder of pipeline files.
    pub dags: PathBuf,
    /// Where the API listens (default 127.0.0.1:8377; port 0 picks a free one).
    pub listen: SocketAddr,
    /// The largest request body accepted.
    pub body_limit: usize,
    /// The largest file MLflow's clients may upload through the artifact proxy.
    pub upload_limit: u64,
    /// Requests handled at once; more get 429.
    pub max_in_flight: usize,
    /// How often the DAG folder is scanned for changes.
    pub reload_every: Duration,
    /// Connections open at once, in all and from one client address; past either, a new
    /// connection is closed at once.
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// How long a client has to send a request's headers, and its body.
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// How long the listener stays open after shutdown begins, answering `/ready` with 503.
    pub drain_for: Duration,
    /// Host names the server answers to besides its addresses and `localhost`.
    pub allowed_hosts: Vec<String>,
    /// Failed authentications a client address may make in a minute; past them it gets 429
    /// until the minute is over.
    pub auth_failure_limit: u32,
    /// The certificate and key to serve HTTPS with; without them, plain HTTP on loopback.
    pub tls: Option<tls::TlsFiles>,
    /// Listen in plain HTTP on a non-loopback address all the same (something else encrypts).
    pub insecure: bool,
    /// Event sources that must sign their requests (HMAC-SHA256 of the body) instead of
    /// sending a token.
    pub webhook_keys: crate::security::webhook::WebhookKeys,
}

impl ServeOptions {
    pub fn new(dags: impl Into<PathBuf>) -> Self {
        ServeOptions {
            dags: dags.into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8377)),
            body_limit: 1 << 20,
            upload_limit: 4 << 30,
            max_in_flight: 1024,
            reload_every: Duration::from_secs(1),
            max_connections: 2048,
            max_connections_per_client: 256,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            drain_for: Duration::from_millis(500),
            allowed_hosts: Vec::new(),
            auth_failure_limit: 20,
            tls: None,
            insecure: false,
            webhook_keys: Default::default(),
        }
    }
}

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// What the server's tasks and handlers share.
pub(crate) struct Shared {
    pub engine: Arc<Engine>,
    pub opts: ServeOptions,
    pub catalog: RwLock<Arc<Catalog>>,
    pub launcher: Mutex<Launcher>,
    pub controls: mpsc::UnboundedSender<Control>,
    /// Run state changes, for clients that wait on a run.
    pub notices: broadcast::Sender<Notice>,
    /// Serializes the intake of events and keyed runs (dedup reads then writes).
    pub intake: Mutex<()>,
    pub draining: AtomicBool,
    /// Bumped when the catalog changes, so the schedule loop looks again.
    pub catalog_version: watch::Sender<u64>,
    pub in_flight: tokio::sync::Semaphore,
    /// The event endpoints' own slots, so that other traffic cannot crowd out alerts.
    pub events_in_flight: tokio::sync::Semaphore,
    /// Tells long requests (waits, log streams) to finish: the server is stopping.
    pub stopping: watch::Receiver<u32>,
    /// Failed authentications by client address.
    pub auth_failures: api::Failures,
    /// Served models and their records.
    pub serving: Arc<crate::serving::Serving>,
    /// Serializes changes to this server's rollouts (its loop and its requests).
    pub rollout_changes: Mutex<()>,
    /// The web UI's sessions (in memory: a restart logs everyone out).
    pub sessions: api::Sessions,
    /// DAG layouts the UI drew, by DAG version.
    pub layouts: api::Layouts,
    /// Event streams open at once (each holds one until it ends).
    pub streams: Arc<tokio::sync::Semaphore>,
}

/// Why a run could not be started.
#[derive(Debug)]
pub(crate) enum LaunchError {
    Draining,
    Engine(EngineError),
}

impl Shared {
    /// Records one of Sluice's own events (a rollout's end, drift a monitor found) in the
    /// inbox and starts what its `on:` entries match, as an event from outside would.
    pub(crate) fn announce(
        &self,
        source: &str,
        payload: &serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        api::internal_event(self, source, payload)
    }

    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn launcher(&self) -> std::sync::MutexGuard<'_, Launcher> {
        self.launcher.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a run of `plan` (durably) and hands it to the driver, after the pipeline's
    /// running runs when its schedule says `overlap: queue`. Blocking: sled flushes.
    pub(crate) fn launch(&self, plan: &Arc<Plan>, new: NewRun) -> Result<Created, LaunchError> {
        let queue = plan.spec.schedule.as_ref().is_some_and(|s| s.overlap == Overlap::Queue);
        self.launch_with(plan, new, queue)
    }

    /// [`Shared::launch`], saying whether the run waits for the pipeline's going runs.
    pub(crate) fn launch_with(
        &self,
        plan: &Arc<Plan>,
        new: NewRun,
        queue: bool,
    ) -> Result<Created, LaunchError> {
        if self.draining.load(Ordering::SeqCst) {
            return Err(LaunchError::Draining);
        }
        let created = self.engine.create_run_with(plan, new).map_err(LaunchError::Engine)?;
        if let Created::Run(id) = created {
            self.launcher().submit(plan.name(), id, queue);
        }
        Ok(created)
    }

    /// Stores what became of an event (not flushed: the caller flushes).
    pub(crate) fn record(
        &self,
        source: &str,
        status: InboxStatus,
        reason: String,
        runs: Vec<u64>,
        details: Vec<Value>,
        payload: Value,
    ) -> Result<u64, StoreError> {
        if status != InboxStatus::Received {
            api::count_event(self, source, status);
        }
        let mut rec = InboxRecord {
            v: FORMAT_VERSION,
            id: 0,
            source: source.to_string(),
            received_at: self.engine.now_ms(),
            status,
            reason,
            runs,
            details,
            payload,
        };
        self.engine.store().put_inbox(&mut rec)
    }
}

/// Runs the server until `shutdown` changes: the API stops taking requests, running runs
/// are interrupted (a second change kills their attempts at once) and the function returns
/// when they have stopped; the next server resumes them. `bound` learns the address.
pub async fn serve(
    engine: Engine,
    opts: ServeOptions,
    shutdown: watch::Receiver<u32>,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), ServerError> {
    tls::check_listen(opts.listen, opts.tls.is_some(), opts.insecure)?;
    let acceptor = opts.tls.as_ref().map(tls::acceptor).transpose()?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: opts.listen, source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: opts.listen, source })?;
    let engine = Arc::new(engine);
    first_admin_token(&engine)?;
    // Steps reach the API (MLflow's client in them) at a loopback address of the listener.
    let step_host = match addr.ip() {
        ip if ip.is_unspecified() && addr.is_ipv6() => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ip if ip.is_unspecified() => std::net::IpAddr::from([127, 0, 0, 1]),
        ip => ip,
    };
    let step_addr = SocketAddr::new(step_host, addr.port());
    engine.set_api(match &opts.tls {
        None => crate::driver::ApiAccess { url: format!("http://{step_addr}"), ca: None },
        Some(t) => crate::driver::ApiAccess {
            url: format!("https://{}", tls_host(step_addr)),
            ca: Some(t.cert.canonicalize().unwrap_or_else(|_| t.cert.clone())),
        },
    });
    let server_file = engine.store().dir().join(SERVER_FILE);
    // A local client trusts the certificate named here (a self-signed one included).
    let info = match &opts.tls {
        None => json!({ "v": 1, "url": format!("http://{addr}"), "pid": std::process::id() }),
        Some(t) => json!({
            "v": 1,
            "url": format!("https://{}", tls_host(addr)),
            "pid": std::process::id(),
            "tls_cert": t.cert.canonicalize().unwrap_or_else(|_| t.cert.clone()),
        }),
    };
    std::fs::write(&server_file, info.to_string())
        .map_err(|source| ServerError::Write { path: server_file.clone(), source })?;

    // The server stops when asked, or when the driver stops on its own (the store cannot be
    // written): `halt` is what every loop watches.
    let (halt_tx, halt) = watch::channel(0u32);
    let halt_tx = Arc::new(halt_tx);
    {
        let (tx, mut asked) = (halt_tx.clone(), shutdown.clone());
        tokio::spawn(async move {
            while asked.changed().await.is_ok() {
                tx.send_modify(|v| *v += 1);
            }
        });
    }
    let shutdown = halt;
    let mut loader = Loader::new(&opts.dags);
    let catalog = loader.scan().unwrap_or_default();
    crate::metrics::install();
    crate::metrics::pipelines(catalog.pipelines.len(), catalog.invalid.len());
    {
        // Histogram samples drain into their buckets between scrapes too.
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => crate::metrics::upkeep(),
                    _ = stop.changed() => break,
                }
            }
        });
    }
    let (controls, controls_rx) = mpsc::unbounded_channel();
    let (notice_tx, mut notice_rx) = mpsc::unbounded_channel();
    let (notices, _) = broadcast::channel(4096);
    let (catalog_version, _) = watch::channel(0u64);
    let shared = Arc::new(Shared {
        serving: Arc::new(crate::serving::Serving::new(engine.registry())),
        rollout_changes: Mutex::new(()),
        sessions: Default::default(),
        layouts: Default::default(),
        streams: Arc::new(tokio::sync::Semaphore::new(api::MAX_STREAMS)),
        engine: engine.clone(),
        in_flight: tokio::sync::Semaphore::new(opts.max_in_flight),
        events_in_flight: tokio::sync::Semaphore::new(EVENT_SLOTS),
        auth_failures: api::Failures::new(opts.auth_failure_limit, Duration::from_secs(60)),
        opts,
        catalog: RwLock::new(Arc::new(catalog)),
        launcher: Mutex::new(Launcher::new(controls.clone())),
        controls,
        notices,
        intake: Mutex::new(()),
        draining: AtomicBool::new(false),
        catalog_version,
        stopping: shutdown.clone(),
    });

    // Runs a previous server left: running ones resume at once, pending ones queue up.
    let mut resume = Vec::new();
    let mut pending = Vec::new();
    // From the index by state: a folder of 100,000 finished runs is not read for this.
    let waiting = [RunState::Running, RunState::Interrupting, RunState::Interrupted, RunState::Pending];
    for r in engine.store().runs_in(&waiting).map_err(EngineError::from)? {
        if r.state == RunState::Pending { pending.push(r) } else { resume.push(r) }
    }
    let resume_ids: Vec<u64> = resume.iter().map(|r| r.id).collect();
    {
        let cat = shared.catalog();
        let mut l = shared.launcher();
        for r in &resume {
            l.resumed(&r.pipeline, r.id);
        }
        for r in pending.iter().rev() {
            let queue = cat
                .pipelines
                .get(&r.pipeline)
                .and_then(|e| e.plan.spec.schedule.as_ref())
                .is_some_and(|s| s.overlap == Overlap::Queue);
            l.submit(&r.pipeline, r.id, queue);
        }
    }
    if !resume_ids.is_empty() || !pending.is_empty() {
        tracing::warn!(resumed = ?resume_ids, pending = pending.len(), "taking over runs an earlier server left");
    }

    // Rollouts before runs and requests: a resumed `rollout:` step finds its host, and the
    // first request after a restart is routed as before.
    let _ = engine.rollout_host.set(Arc::new(rollouts::Host(Arc::downgrade(&shared))));
    {
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || rollouts::restore(&s)).await;
    }
    // The driver: every run goes through it.
    let driver = {
        let engine = engine.clone();
        let stop = shutdown.clone();
        let halt = halt_tx.clone();
        tokio::spawn(async move {
            let driven = engine.serve(&resume_ids, Some(notice_tx), stop, controls_rx).await;
            if let Err(e) = &driven {
                tracing::error!(error = %e, "the driver stopped; the server stops too");
                halt.send_modify(|v| *v += 1);
            }
            driven
        })
    };
    // Run state changes: wake waiters, let the launcher start queued runs.
    let forward = {
        let shared = shared.clone();
        tokio::spawn(async move {
            while let Some(n) = notice_rx.recv().await {
                if let Notice::Run { run, state } = n
                    && (state.is_terminal() || state == RunState::Interrupted)
                {
                    shared.launcher().ended(run);
                }
                let _ = shared.notices.send(n);
            }
        })
    };
    let reload = tokio::spawn(reload_loop(shared.clone(), loader, shutdown.clone()));
    let schedules = tokio::spawn(schedules::run(shared.clone(), shutdown.clone()));
    let rolling = tokio::spawn(rollouts::run(shared.clone(), shutdown.clone()));
    let monitoring = tokio::spawn(monitor::run(shared.clone(), shutdown.clone()));

    if let Some(b) = bound {
        let _ = b.send(addr);
    }
    tracing::info!(%addr, dags = %shared.opts.dags.display(), "serving");
    let app = api::router(shared.clone());
    let draining = shared.clone();
    let limits = http::ConnLimits {
        max_connections: shared.opts.max_connections,
        max_per_client: shared.opts.max_connections_per_client,
        header_timeout: shared.opts.header_timeout,
    };
    http::serve(listener, app, acceptor, limits, shared.opts.drain_for, shutdown.clone(), move || {
        draining.draining.store(true, Ordering::SeqCst);
    })
    .await;
    shared.draining.store(true, Ordering::SeqCst);
    for (what, task) in [
        ("the DAG folder's reload", reload),
        ("the schedule loop", schedules),
        ("the rollout loop", rolling),
        ("the drift monitors", monitoring),
    ] {
        if let Err(e) = task.await {
            tracing::error!(error = %e, "{what} crashed");
        }
    }
    let driven = driver.await;
    forward.abort();
    if let Err(e) = std::fs::remove_file(&server_file) {
        tracing::warn!(file = %server_file.display(), error = %e, "cannot remove the server file; clients may look for this server until it is removed");
    }
    // The driver's own error comes first: a flush after the store failed fails too. The
    // audit log's head is signed at shutdown.
    let flushed = engine
        .store()
        .flush()
        .and_then(|()| engine.store().checkpoint_audit(engine.now_ms()))
        .map_err(EngineError::from);
    match driven {
        Ok(Ok(_)) => flushed.map_err(ServerError::from),
        Ok(Err(e)) => Err(ServerError::from(e)),
        Err(e) => Err(ServerError::Engine(EngineError::Invalid(format!("the driver crashed: {e}")))),
    }
}

/// The address a local client names in an https URL: `localhost` for a loopback or
/// unspecified address (what a certificate names), the address itself otherwise.
fn tls_host(addr: SocketAddr) -> String {
    if addr.ip().is_loopback() || addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// The file in the data folder that holds the first admin token (mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// On the first start of a data folder (no token at all), makes an admin token and leaves it
/// in `<data dir>/admin.token`, readable by its owner only.
fn first_admin_token(engine: &Engine) -> Result<(), ServerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if !engine.store().tokens().map_err(EngineError::from)?.is_empty() {
        return Ok(());
    }
    let path = engine.store().dir().join(ADMIN_TOKEN_FILE);
    let minted = api::admin::create(engine, "admin", crate::security::Role::Admin, None, "engine", None)
        .map_err(EngineError::Invalid)?;
    let _ = std::fs::remove_file(&path);
    let written =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).and_then(|mut f| {
            f.write_all(format!("{}\n", minted.token).as_bytes()).and_then(|()| f.sync_all())
        });
    written.map_err(|source| ServerError::Write { path: path.clone(), source })?;
    tracing::warn!(file = %path.display(), "made the first admin token; it is in {} (mode 0600): keep it secret, or make others with `sluice token create` and revoke it", path.display());
    Ok(())
}

/// Scans the DAG folder every `reload_every` and swaps the catalog when files changed.
async fn reload_loop(shared: Arc<Shared>, mut loader: Loader, mut shutdown: watch::Receiver<u32>) {
    let every = shared.opts.reload_every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        let Ok((back, scanned)) = tokio::task::spawn_blocking(move || {
            let scanned = loader.scan();
            (loader, scanned)
        })
        .await
        else {
            tracing::error!("the DAG folder scan crashed; pipelines are no longer reloaded");
            return;
        };
        loader = back;
        if let Some(catalog) = scanned {
            let after = json!({
                "pipelines": catalog.pipelines.keys().collect::<Vec<_>>(),
                "invalid": catalog.invalid.iter().map(|i| &i.file).collect::<Vec<_>>(),
            });
            let engine = shared.engine.clone();
            let folder = shared.opts.dags.display().to_string();
            let audited = tokio::task::spawn_blocking(move || {
                let action =
                    crate::security::audit::Action::new("engine", "dags.reload", format!("dags:{folder}"))
                        .after(after);
                engine.audit(action).and_then(|_| Ok(engine.store().flush()?))
            })
            .await;
            if !matches!(audited, Ok(Ok(()))) {
                tracing::error!("cannot record the DAG reload in the audit log");
            }
            crate::metrics::pipelines(catalog.pipelines.len(), catalog.invalid.len());
            *shared.catalog.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(catalog);
            shared.catalog_version.send_modify(|v| *v += 1);
        }
    }
}

/// A server's shared state without its HTTP side or driver, for tests of the loops.
#[cfg(test)]
pub(crate) fn test_shared(
    engine: Engine,
    dags: &std::path::Path,
    clock: Arc<dyn crate::clock::Clock>,
) -> (Arc<Shared>, mpsc::UnboundedReceiver<Control>, watch::Sender<u32>) {
    let (controls, controls_rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(0u32);
    let catalog = Loader::new(dags).scan().unwrap_or_default();
    let opts = ServeOptions::new(dags);
    let engine = engine.with_clock(clock);
    let shared = Arc::new(Shared {
        serving: Arc::new(crate::serving::Serving::new(engine.registry())),
        rollout_changes: Mutex::new(()),
        sessions: Default::default(),
        layouts: Default::default(),
        streams: Arc::new(tokio::sync::Semaphore::new(api::MAX_STREAMS)),
        engine: Arc::new(engine),
        in_flight: tokio::sync::Semaphore::new(opts.max_in_flight),
        events_in_flight: tokio::sync::Semaphore::new(EVENT_SLOTS),
        auth_failures: api::Failures::new(opts.auth_failure_limit, Duration::from_secs(60)),
        opts,
        catalog: RwLock::new(Arc::new(catalog)),
        launcher: Mutex::new(Launcher::new(controls.clone())),
        controls,
        notices: broadcast::channel(16).0,
        intake: Mutex::new(()),
        draining: AtomicBool::new(false),
        catalog_version: watch::channel(0).0,
        stopping: stop_rx,
    });
    (shared, controls_rx, stop_tx)
}
