//! The driver: the thin layer around the pure scheduler core. It persists events (write-ahead,
//! group commit), applies them to each run's machine, and carries out the resulting actions:
//! admission, executors, timers and kills.

mod approval;
mod attempt;
pub(crate) mod builtin;
mod cache;
mod code;
mod compare;
mod control;
mod create;
mod gc;
mod models;
mod openlineage;
pub(crate) mod outbound;
mod provenance;
mod registry;
mod render;
mod replay;
mod report;
mod runloop;
mod sink;
mod tracking;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

pub use approval::{Decided, Decider};
pub use cache::{CacheExplanation, differences};
pub use compare::{RUN_ATTRIBUTES, RunSearch, lower_is_better};
pub use control::{Control, Fault, Notice};
pub use create::{Created, NewRun};
pub use gc::{GcItem, GcReport};
pub use openlineage::{LineageOptions, LineageTarget};
pub use registry::{Actor, NewVersion, Registry};
pub use replay::{Notes, Replayed};
pub use report::{AttemptEnd, AttemptReport, REPORT_VERSION, RunReport, StepReport, TaskReport, TaskStatus};
pub use sink::{MAX_LOG_BYTES, TAIL_BYTES};

use crate::clock::{Clock, SystemClock};
use crate::compile::{Diagnostic, Plan, compile_source};
use crate::scheduler::{Capacity, RunState};
use crate::store::{DagRecord, FORMAT_VERSION, RunRecord, Store, StoreError, Trigger};
use crate::syntax::Format;
use sluice_worker::{DockerConfig, ExecutorSet, WasmConfig};

/// Errors of the engine.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the stored DAG version of run {run} cannot be used: {detail}")]
    StoredDag { run: u64, detail: String },
    #[error("the code file {path}: {detail}")]
    Code { path: PathBuf, detail: String },
    #[error("{0}")]
    Invalid(String),
    /// What was asked for does not exist (a step of a run, a cache lookup).
    #[error("{0}")]
    NotFound(String),
    /// The actor may not do this (a protected alias).
    #[error("{0}")]
    Forbidden(String),
    /// The data folder's disk has less free space than the engine keeps in reserve.
    #[error("{0}")]
    LowSpace(String),
    /// The store refused a write while runs went on: the engine stopped every attempt.
    #[error(
        "the data folder {} cannot be written ({reason}), so the engine stopped every attempt and exited; {}",
        dir.display(),
        resume_hint(runs)
    )]
    Abandoned { reason: String, dir: PathBuf, runs: Vec<u64> },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

fn resume_hint(runs: &[u64]) -> String {
    if runs.is_empty() {
        return "no run was going".into();
    }
    let list: Vec<String> = runs.iter().map(u64::to_string).collect();
    format!(
        "free space there, then `sluice resume {}` carries on (or `sluice serve` resumes them)",
        list.join(" ")
    )
}

/// The free space a run needs on the data folder's disk to start, by default.
pub const MIN_FREE_BYTES: u64 = 64 * 1024 * 1024;

/// Settings of one engine process.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub data_dir: PathBuf,
    pub capacity: Capacity,
    /// How long a step may take to stop after SIGTERM before it is killed.
    pub grace: Duration,
    /// Testing hook: crash the engine at a chosen point (see [`Fault`]).
    pub fault: Option<Fault>,
    /// The Docker Engine for container steps; `DOCKER_HOST` when not set.
    pub docker_host: Option<String>,
    /// Where the engine reads the time (timers, run records, cooldown windows).
    pub clock: Arc<dyn Clock>,
    /// How much of an attempt's log is kept from its start; past it, the last MiB of each
    /// stream (see [`sink::TAIL_BYTES`]).
    pub max_log_bytes: u64,
    /// No run starts while the data folder's disk has less free than this.
    pub min_free_bytes: u64,
    /// Where OpenLineage events go, if anywhere.
    pub openlineage: Option<LineageOptions>,
    /// The instance's signing key (`--signing-key`); `<data dir>/keys/signing.key` when
    /// not set, made on first start.
    pub signing_key: Option<PathBuf>,
    /// The audit log's head is signed every this many entries (and at shutdown).
    pub audit_every: u64,
    /// The file outside the store that audit checkpoints are appended to;
    /// `<data dir>/audit/checkpoints.jsonl` when not set.
    pub audit_file: Option<PathBuf>,
    /// The data folder's encryption key file (`--encryption-key-file`,
    /// `SLUICE_ENCRYPTION_KEY_FILE`): step logs and artifacts are kept encrypted with it.
    pub encryption_key: Option<PathBuf>,
    /// Whether this engine may turn a folder's encryption on (it will write step logs:
    /// `run`, `serve`); read-only commands never do.
    pub may_encrypt: bool,
    /// `--slurm PARTITION`: every `process:` step runs on Slurm, in this partition unless
    /// its `slurm:` block names another.
    pub slurm: Option<String>,
}

impl EngineOptions {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            capacity: default_capacity(),
            grace: Duration::from_secs(10),
            fault: None,
            docker_host: None,
            clock: Arc::new(SystemClock),
            max_log_bytes: MAX_LOG_BYTES,
            min_free_bytes: MIN_FREE_BYTES,
            openlineage: None,
            // Every command on the folder signs and checks with the same key and file as
            // the engine that wrote it: the flags' environment variables reach them all.
            signing_key: std::env::var_os("SLUICE_SIGNING_KEY").filter(|v| !v.is_empty()).map(PathBuf::from),
            audit_every: AUDIT_EVERY,
            audit_file: std::env::var_os("SLUICE_AUDIT_FILE").filter(|v| !v.is_empty()).map(PathBuf::from),
            encryption_key: std::env::var_os("SLUICE_ENCRYPTION_KEY_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            may_encrypt: false,
            slurm: None,
        }
    }
}

/// Audit entries between two checkpoints, by default.
pub const AUDIT_EVERY: u64 = 1000;

/// Where a data folder's audit checkpoints are copied when no `--audit-file` says.
pub fn default_audit_file(data_dir: &std::path::Path) -> PathBuf {
    data_dir.join("audit").join("checkpoints.jsonl")
}

/// Pools sized for this machine: 4 cpu slots per core, all of its memory, one slot per GPU
/// the NVIDIA driver lists (and `CUDA_VISIBLE_DEVICES` allows).
pub fn default_capacity() -> Capacity {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    Capacity {
        slots: 64,
        cpu: (cores * 4).max(4),
        memory: total_memory().unwrap_or(u64::MAX / 2),
        gpu: sluice_worker::gpu_slots(),
    }
}

fn total_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// How many plans an engine keeps in memory (by DAG version) before it lets them go.
const MAX_CACHED_PLANS: usize = 64;

/// An engine over one data folder.
pub struct Engine {
    store: Store,
    opts: EngineOptions,
    executors: ExecutorSet,
    /// Plans by DAG version, so that a run started here is not compiled a second time.
    plans: std::sync::Mutex<std::collections::HashMap<String, Arc<Plan>>>,
    /// Code copies this process has seen in place, so that an attempt does not look at the
    /// file system again for each one (a wide DAG of plugins runs the same module 10,000 times).
    kept_code: std::sync::Mutex<std::collections::HashSet<PathBuf>>,
    /// The OpenLineage emitter, when events go somewhere.
    lineage: Option<Arc<openlineage::Emitter>>,
    /// The instance's signing key.
    key: Arc<crate::security::keys::SigningKey>,
    /// Where steps reach this engine's API (set by `serve` once it listens).
    pub(crate) api: std::sync::OnceLock<ApiAccess>,
    /// The tokens steps get for their tracking runs (in memory only).
    pub(crate) attempt_tokens: Arc<tracking::AttemptTokens>,
    /// Who runs rollouts for `rollout:` steps: `serve` sets it; without it (`sluice run`)
    /// such a step fails, saying it needs the server.
    pub(crate) rollout_host: Arc<std::sync::OnceLock<Arc<dyn builtin::RolloutHost>>>,
}

/// How a step reaches the engine's API: its address, and the certificate to trust when it
/// speaks TLS.
#[derive(Debug, Clone)]
pub struct ApiAccess {
    pub url: String,
    pub ca: Option<PathBuf>,
}

/// An engine going away signs the audit log's head (the shutdown checkpoint).
impl Drop for Engine {
    fn drop(&mut self) {
        let now = self.now_ms();
        if let Err(e) = self.store.checkpoint_audit(now) {
            tracing::error!(error = %e, "cannot checkpoint the audit log");
        }
    }
}

impl Engine {
    pub fn open(opts: EngineOptions) -> Result<Engine> {
        let store = Store::open(&opts.data_dir)?;
        if let Some(key) =
            crate::security::crypt::open_folder(store.dir(), opts.encryption_key.as_deref(), opts.may_encrypt)
                .map_err(EngineError::Invalid)?
        {
            store.set_data_key(key);
        }
        // With the folder's lock held nobody else places artifacts: what a killed placement
        // left in the store's temporary folder is garbage.
        crate::artifacts::Blobs::in_data_dir(store.dir()).sweep_temporary();
        // Containers are labelled with the data folder that owns them, so that a restarted
        // engine reaps its own leftovers and nobody else's.
        let mut docker = DockerConfig::from_env(store.dir().display().to_string());
        if let Some(host) = &opts.docker_host {
            docker.host = host.clone();
        }
        // Compiled plugins are cached next to the state, keyed by content and wasmtime version.
        let wasm = WasmConfig::in_data_dir(store.dir());
        let lineage = match &opts.openlineage {
            Some(o) => Some(Arc::new(openlineage::Emitter::start(o).map_err(EngineError::Invalid)?)),
            None => None,
        };
        let key = Arc::new(
            crate::security::keys::SigningKey::load_or_create(store.dir(), opts.signing_key.as_deref())
                .map_err(EngineError::Invalid)?,
        );
        store.set_signer(crate::store::Signer {
            key: key.clone(),
            every: opts.audit_every,
            file: opts.audit_file.clone().unwrap_or_else(|| default_audit_file(store.dir())),
        });
        let attempt_tokens = Arc::new(tracking::AttemptTokens::new().map_err(EngineError::Invalid)?);
        let mut engine = Engine {
            key,
            api: Default::default(),
            attempt_tokens,
            lineage,
            store,
            opts,
            executors: ExecutorSet::new(docker, wasm),
            plans: Default::default(),
            kept_code: Default::default(),
            rollout_host: Default::default(),
        };
        engine.executors = engine.with_builtins(engine.executors.clone());
        Ok(engine)
    }

    /// `executors` with the registry's steps, the engine's own work (they keep the engine's
    /// clock: made again when it changes).
    fn with_builtins(&self, executors: ExecutorSet) -> ExecutorSet {
        executors.with_builtin(Arc::new(builtin::Builtins::new(self.registry(), self.rollout_host.clone())))
    }

    pub fn executors(&self) -> &ExecutorSet {
        &self.executors
    }

    /// Replaces the executors (benchmarks and tests run the engine without real work).
    pub fn with_executors(mut self, executors: ExecutorSet) -> Self {
        self.executors = self.with_builtins(executors);
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn signing_key(&self) -> &Arc<crate::security::keys::SigningKey> {
        &self.key
    }

    /// Tells the engine where steps reach its API (once; `serve` calls it when it listens).
    pub fn set_api(&self, api: ApiAccess) {
        let _ = self.api.set(api);
    }

    /// The tracking run a presented attempt token stands for, while its attempt runs.
    pub fn attempt_token(&self, presented: &str) -> Result<Option<crate::tracking::TrackingRun>> {
        let Some(id) = self.attempt_tokens.check(presented) else { return Ok(None) };
        Ok(self.store.tracking_run(&id)?)
    }

    /// Appends `action` to the audit log, durable with the caller's next flush.
    pub fn audit(&self, action: crate::security::audit::Action) -> Result<u64> {
        Ok(self.store.audit(action, self.now_ms())?)
    }

    /// Replaces the clock (tests run the engine on paused tokio time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.opts.clock = clock;
        self.executors = self.with_builtins(self.executors.clone());
        self
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.opts.clock
    }

    /// The time now, in ms since the epoch, from the engine's clock.
    pub fn now_ms(&self) -> i64 {
        self.opts.clock.now_ms()
    }

    /// Records a new run of `plan` (its DAG version, run record and `Start` event), durably.
    pub fn create_run(&self, plan: &Arc<Plan>, params: Map<String, Value>, trigger: Trigger) -> Result<u64> {
        match self.create_run_with(plan, NewRun::new(params, trigger))? {
            Created::Run(id) | Created::Held { run: id } => Ok(id),
        }
    }

    /// Runs a previous engine process left running (it crashed or was killed).
    pub fn orphaned_runs(&self) -> Result<Vec<u64>> {
        let states = [RunState::Pending, RunState::Running, RunState::Interrupting];
        Ok(self.store.runs_in(&states)?.into_iter().map(|r| r.id).collect())
    }

    /// Runs stopped by a graceful shutdown, waiting for `sluice resume`.
    pub fn interrupted_runs(&self) -> Result<Vec<u64>> {
        Ok(self.store.runs_in(&[RunState::Interrupted])?.into_iter().map(|r| r.id).collect())
    }

    /// The plan of a stored run: the checked plan stored with the DAG version it started
    /// with. Nothing is read from the pipeline file or its code files. (A version stored
    /// before plans were, format 1, is compiled from its stored text once.)
    pub fn plan_of(&self, run: &RunRecord) -> Result<Arc<Plan>> {
        if let Some(plan) = self.plans.lock().unwrap_or_else(|p| p.into_inner()).get(&run.dag) {
            return Ok(plan.clone());
        }
        let dag = self.store.dag(&run.dag)?;
        let plan = match dag.plan {
            Some(stored) if stored.hash == dag.hash => Plan::from_stored(stored, dag.source),
            Some(stored) => {
                return Err(EngineError::StoredDag {
                    run: run.id,
                    detail: format!("its stored plan is of version {}, not {}", stored.hash, dag.hash),
                });
            }
            None => {
                let path = PathBuf::from(&dag.path);
                let base = path
                    .parent()
                    .map(Path::to_path_buf)
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or_else(|| ".".into());
                let mut plan =
                    compile_source(&path, &base, &dag.source, Format::from_path(&path)).map_err(|diags| {
                        EngineError::StoredDag {
                            run: run.id,
                            detail: format!(
                                "it was stored without its plan, and its text no longer compiles: {}",
                                diags.iter().map(Diagnostic::to_string).collect::<Vec<_>>().join("; ")
                            ),
                        }
                    })?;
                if plan.hash == dag.hash {
                    // Compiled to the same version (it runs no code files): keep the plan
                    // with the version from now on, as a version stored today is kept.
                    let upgraded = DagRecord { v: FORMAT_VERSION, plan: Some(plan.to_stored()), ..dag };
                    let kept = self.keep_code(&plan).and_then(|_| Ok(self.store.replace_dag(&upgraded)?));
                    if let Err(e) = kept {
                        tracing::warn!(run = run.id, error = %e, "cannot store the plan with an old DAG version; it is compiled again next time");
                    }
                } else {
                    // The version the run was created under, whatever the files hold now.
                    plan.hash = dag.hash;
                }
                plan
            }
        };
        let plan = Arc::new(plan);
        let mut plans = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        // A server shows runs of every version it ever stored: keep a bounded few in memory.
        if plans.len() >= MAX_CACHED_PLANS {
            plans.clear();
        }
        plans.insert(run.dag.clone(), plan.clone());
        Ok(plan)
    }
}

#[cfg(test)]
mod tests;
