//! The executor trait and the request/outcome types shared by every executor.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;

use crate::container::{ContainerExecutor, ContainerSpec, DockerConfig};
use crate::error::ExecError;
use crate::process::ProcessExecutor;
use crate::train::{TrainExecutor, TrainSpec};
use crate::wasm::{WasmConfig, WasmExecutor, WasmSpec};

/// The fence of an attempt: every result names the attempt it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptId {
    pub run: u64,
    pub step: String,
    pub item: u32,
    pub attempt: u32,
}

/// A `process:` step after templating: what to exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessSpec {
    /// argv; `argv[0]` is looked up on `PATH`.
    pub argv: Vec<String>,
}

/// The executor-specific part of an attempt. Adding an executor adds a variant here, an
/// implementation of [`Executor`] and a field in the engine's step spec.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecSpec {
    Process(ProcessSpec),
    Container(ContainerSpec),
    Wasm(WasmSpec),
    Train(TrainSpec),
}

/// Everything an executor needs to carry out one attempt.
#[derive(Debug, Clone)]
pub struct AttemptRequest {
    pub id: AttemptId,
    pub spec: ExecSpec,
    /// Variables added to the engine's own environment.
    pub env: BTreeMap<String, String>,
    pub workdir: PathBuf,
    /// Where the step may write a JSON object of outputs (`SLUICE_OUTPUTS`).
    pub outputs_file: PathBuf,
}

/// Which stream a log chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
    /// Lines the engine itself writes into the step log.
    System,
}

/// Where an executor reports what happens while an attempt runs.
pub trait AttemptSink: Send + Sync {
    /// A chunk of output, in the order it was read from its stream.
    fn log(&self, stream: LogStream, chunk: &[u8]);
    /// The attempt's OS process started (its process group id equals `pid`).
    fn started(&self, pid: u32);
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
    every: Option<Arc<dyn Executor>>,
}

impl ExecutorSet {
    pub fn new(docker: DockerConfig, wasm: WasmConfig) -> Self {
        Self {
            process: Arc::new(ProcessExecutor),
            container: ContainerExecutor::new(docker),
            wasm: WasmExecutor::new(wasm),
            train: TrainExecutor,
            every: None,
        }
    }

    /// A set where `executor` carries out every attempt, whatever its spec: for benchmarks
    /// that measure the engine without the cost of the work itself, and for tests.
    pub fn only(executor: Arc<dyn Executor>, docker: DockerConfig) -> Self {
        Self { every: Some(executor), ..Self::new(docker, WasmConfig::default()) }
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
