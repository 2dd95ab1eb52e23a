//! The executor trait and the request/outcome types shared by every executor.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use crate::container::{ContainerExecutor, ContainerSpec, DockerConfig};
use crate::error::ExecError;
use crate::process::ProcessExecutor;
use crate::slurm::{SlurmConfig, SlurmExecutor, SlurmPlacement};
use crate::train::{TrainExecutor, TrainSpec};
use crate::wasm::{WasmConfig, WasmExecutor, WasmSpec};

/// The fence of an attempt: every result names the attempt it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptId {
    pub run: u64,
    pub step: String,
    pub item: u32,
    pub attempt: u32,
}

/// A `process:` step after templating: what to exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// argv; `argv[0]` is looked up on `PATH`.
    pub argv: Vec<String>,
}

/// The executor-specific part of an attempt, rendered from its step kind. Adding an executor
/// adds a variant here and an implementation of [`Executor`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExecSpec {
    Process(ProcessSpec),
    Container(ContainerSpec),
    Wasm(WasmSpec),
    Train(TrainSpec),
    Builtin(BuiltinSpec),
}

/// A step the engine carries out itself (the registry's `register:`, `gate:`, `promote:`):
/// the operation and its rendered arguments. The worker only passes it to the executor the
/// engine installed ([`ExecutorSet::with_builtin`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuiltinSpec {
    pub op: String,
    pub args: Value,
}

/// A host file an attempt reads, and the name it is seen under (`/sluice/inputs/<name>` in a
/// container, `/inputs/<name>` in a plugin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    pub source: PathBuf,
    pub name: String,
}

/// Where an attempt's files are on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptFiles {
    /// The folder the steps of a run share (`SLUICE_RUN_DIR`; `/sluice/run` in a container).
    pub run_dir: PathBuf,
    /// The attempt's own folder. Only executors that need one make it (a container mounts
    /// it at `/sluice/attempt`); the others keep their files beside it.
    pub attempt_dir: PathBuf,
    /// Where the step may write a JSON object of outputs (`SLUICE_OUTPUTS`).
    pub outputs_file: PathBuf,
    /// Where a sandbox gathers the attempt's input files (hard links or copies).
    pub inputs_dir: PathBuf,
    /// Where the step may append metrics, one JSON object a line (`SLUICE_METRICS`); the
    /// engine reads it as it grows.
    #[serde(default)]
    pub metrics_file: PathBuf,
}

impl AttemptFiles {
    /// The files of the attempt `stem` (a path without extension): the folder `<stem>`, and
    /// `<stem>.outputs.json`, `<stem>.metrics.jsonl` and `<stem>.inputs` beside it; with
    /// `in_folder`, the outputs and metrics files are in `<stem>/` instead (an executor that
    /// mounts the folder).
    pub fn at(run_dir: PathBuf, stem: &Path, in_folder: bool) -> Self {
        let beside = |suffix: &str| {
            let mut name = stem.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        let outputs_file = if in_folder { stem.join("outputs.json") } else { beside(".outputs.json") };
        let metrics_file = if in_folder { stem.join("metrics.jsonl") } else { beside(".metrics.jsonl") };
        AttemptFiles {
            run_dir,
            attempt_dir: stem.to_path_buf(),
            outputs_file,
            inputs_dir: beside(".inputs"),
            metrics_file,
        }
    }
}

/// Where an attempt runs when not on the engine's machine. Not part of the step cache's key:
/// where a result was made does not change it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum Placement {
    /// As a batch job on a Slurm cluster.
    Slurm(SlurmPlacement),
}

/// The version of [`AttemptRequest`] this build writes.
pub const ATTEMPT_REQUEST_VERSION: u32 = 1;

fn v1() -> u32 {
    1
}

/// Everything an executor needs to carry out one attempt, as one value: it can be stored,
/// hashed (a step cache key) and sent to a remote worker. Nothing else travels with it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRequest {
    #[serde(default = "v1")]
    pub v: u32,
    pub id: AttemptId,
    /// The kind-specific request, rendered.
    pub spec: ExecSpec,
    /// The step's variables, added to the engine's own environment (a plugin sees only
    /// these); each executor adds Sluice's own (`SLUICE_OUTPUTS`, `SLUICE_RUN_DIR`, ...).
    pub env: BTreeMap<String, String>,
    /// Where a process runs: the step's `workdir`, else the pipeline file's folder.
    pub workdir: PathBuf,
    /// The files the step declares it reads (`inputs:`), each by the name it is seen under.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputFile>,
    pub files: AttemptFiles,
    /// Where it runs: on the engine's machine when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
}

/// Shows the env's names only: its values may hold the pipeline's secrets.
impl std::fmt::Debug for AttemptRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptRequest")
            .field("v", &self.v)
            .field("id", &self.id)
            .field("spec", &self.spec)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("workdir", &self.workdir)
            .field("inputs", &self.inputs)
            .field("files", &self.files)
            .field("placement", &self.placement)
            .finish()
    }
}

impl AttemptRequest {
    /// A request with no env and no inputs, run in the run's folder.
    pub fn new(id: AttemptId, spec: ExecSpec, files: AttemptFiles) -> Self {
        AttemptRequest {
            v: ATTEMPT_REQUEST_VERSION,
            id,
            spec,
            env: BTreeMap::new(),
            workdir: files.run_dir.clone(),
            inputs: Vec::new(),
            files,
            placement: None,
        }
    }
}

/// Which stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines the engine itself writes into the step log.
    System,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::System => "the engine's notes",
        }
    }
}

/// Where an executor reports what happens while an attempt runs.
pub trait AttemptSink: Send + Sync {
    /// A chunk of output, in the order it was read from its stream.
    fn log(&self, stream: LogStream, chunk: &[u8]);
    /// The attempt's OS process started (its process group id equals `pid`). An error says
    /// the process could not be recorded, so that a crashed engine could not find and stop it:
    /// the executor stops it and fails the attempt (retryable) with that sentence.
    fn started(&self, pid: u32) -> Result<(), String>;
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub result: Result<(), ExecError>,
    /// The JSON object the step wrote as its outputs (empty when it wrote none).
    pub outputs: serde_json::Map<String, Value>,
    pub exit_code: Option<i32>,
}

impl AttemptOutcome {
    /// An attempt that failed before it produced anything.
    pub fn failed(error: ExecError) -> Self {
        Self { result: Err(error), outputs: Default::default(), exit_code: None }
    }
}

/// A request to stop a running attempt: terminate, then kill after `grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KillSignal {
    pub grace: Duration,
}

/// The engine's side of a kill request; the executor watches the other side.
#[derive(Debug)]
pub struct KillSwitch {
    tx: watch::Sender<Option<KillSignal>>,
}

impl KillSwitch {
    pub fn new() -> (Self, watch::Receiver<Option<KillSignal>>) {
        let (tx, rx) = watch::channel(None);
        (Self { tx }, rx)
    }
    pub fn kill(&self, grace: Duration) {
        let _ = self.tx.send(Some(KillSignal { grace }));
    }
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One kind of executor. Implementations run the work and report its outcome; retries,
/// timeouts and tracing are the engine's job.
pub trait Executor: Send + Sync + 'static {
    fn kind(&self) -> &'static str;
    fn execute(
        &self,
        request: AttemptRequest,
        sink: Arc<dyn AttemptSink>,
        kill: watch::Receiver<Option<KillSignal>>,
    ) -> BoxFuture<AttemptOutcome>;
}

/// The executors this engine can dispatch to, one per [`ExecSpec`] variant.
#[derive(Clone)]
pub struct ExecutorSet {
    process: Arc<ProcessExecutor>,
    container: ContainerExecutor,
    wasm: WasmExecutor,
    train: TrainExecutor,
    slurm: SlurmExecutor,
    builtin: Arc<dyn Executor>,
    every: Option<Arc<dyn Executor>>,
}

/// Built-in steps with no engine to carry them out.
struct NoBuiltin;

impl Executor for NoBuiltin {
    fn kind(&self) -> &'static str {
        "builtin"
    }

    fn execute(
        &self,
        _: AttemptRequest,
        _: Arc<dyn AttemptSink>,
        _: watch::Receiver<Option<KillSignal>>,
    ) -> BoxFuture<AttemptOutcome> {
        Box::pin(async {
            AttemptOutcome::failed(ExecError::fatal("this engine has no executor for built-in steps"))
        })
    }
}

impl ExecutorSet {
    pub fn new(docker: DockerConfig, wasm: WasmConfig) -> Self {
        let slurm = SlurmExecutor::new(SlurmConfig::new(docker.owner.clone()));
        Self {
            slurm,
            process: Arc::new(ProcessExecutor),
            container: ContainerExecutor::new(docker),
            wasm: WasmExecutor::new(wasm),
            train: TrainExecutor,
            builtin: Arc::new(NoBuiltin),
            every: None,
        }
    }

    /// The executor of built-in steps (the engine's own).
    pub fn with_builtin(mut self, executor: Arc<dyn Executor>) -> Self {
        self.builtin = executor;
        self
    }

    /// A set where `executor` carries out every attempt, whatever its spec: for benchmarks
    /// that measure the engine without the cost of the work itself, and for tests.
    pub fn only(executor: Arc<dyn Executor>, docker: DockerConfig) -> Self {
        Self { every: Some(executor), ..Self::new(docker, WasmConfig::default()) }
    }

    /// The executor of Slurm placements (its settings).
    pub fn with_slurm(mut self, config: SlurmConfig) -> Self {
        self.slurm = SlurmExecutor::new(config);
        self
    }

    /// The executor of a request: its placement's, else its kind's.
    pub fn for_request(&self, request: &AttemptRequest) -> &dyn Executor {
        match (&self.every, &request.placement) {
            (None, Some(Placement::Slurm(_))) => &self.slurm,
            _ => self.for_spec(&request.spec),
        }
    }

    pub fn slurm(&self) -> &SlurmExecutor {
        &self.slurm
    }

    pub fn for_spec(&self, spec: &ExecSpec) -> &dyn Executor {
        if let Some(every) = &self.every {
            return every.as_ref();
        }
        match spec {
            ExecSpec::Process(_) => self.process.as_ref(),
            ExecSpec::Container(_) => &self.container,
            ExecSpec::Wasm(_) => &self.wasm,
            ExecSpec::Train(_) => &self.train,
            ExecSpec::Builtin(_) => self.builtin.as_ref(),
        }
    }

    pub fn container(&self) -> &ContainerExecutor {
        &self.container
    }

    pub fn wasm(&self) -> &WasmExecutor {
        &self.wasm
    }
}

/// Resolves when the engine asks for a kill, with the grace period it gives.
pub(crate) async fn wait_for_kill(kill: &mut watch::Receiver<Option<KillSignal>>) -> Duration {
    loop {
        if let Some(signal) = *kill.borrow_and_update() {
            return signal.grace;
        }
        if kill.changed().await.is_err() {
            // The engine dropped its switch: nobody can ask for a kill any more.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request as version 1 writes it keeps decoding: the cache key and remote workers
    /// read stored requests.
    #[test]
    fn decodes_version_1_requests() {
        let r: AttemptRequest = serde_json::from_str(
            r#"{"v":1,"id":{"run":3,"step":"s","item":0,"attempt":2},
                "spec":{"kind":"process","argv":["echo","hi"]},
                "env":{"A":"1"},"workdir":"/w",
                "inputs":[{"source":"/data/x.csv","name":"x.csv"}],
                "files":{"run_dir":"/d/work/3","attempt_dir":"/d/attempts/3/s.0.2",
                         "outputs_file":"/d/attempts/3/s.0.2.outputs.json","inputs_dir":"/d/attempts/3/s.0.2.inputs"}}"#,
        )
        .unwrap();
        assert_eq!(r.spec, ExecSpec::Process(ProcessSpec { argv: vec!["echo".into(), "hi".into()] }));
        assert_eq!(r.inputs[0].name, "x.csv");
        assert_eq!(r.files.run_dir, PathBuf::from("/d/work/3"));
        let again: AttemptRequest = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(again, r);
    }

    #[test]
    fn attempt_files_sit_beside_or_inside_the_attempt_folder() {
        let beside = AttemptFiles::at("/run".into(), Path::new("/a/s.0.1"), false);
        assert_eq!(beside.outputs_file, PathBuf::from("/a/s.0.1.outputs.json"));
        assert_eq!(beside.inputs_dir, PathBuf::from("/a/s.0.1.inputs"));
        let inside = AttemptFiles::at("/run".into(), Path::new("/a/s.0.1"), true);
        assert_eq!(inside.outputs_file, PathBuf::from("/a/s.0.1/outputs.json"));
        assert_eq!(inside.attempt_dir, PathBuf::from("/a/s.0.1"));
    }
}
