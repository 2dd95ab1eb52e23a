//! The wasm executor: runs a step as a WASI preview 1 command module inside the engine
//! (wasmtime), sandboxed, with its input as JSON on stdin and its result as JSON on stdout.
//!
//! Modules are compiled once per content (wasmtime's on-disk cache, keyed by the module's
//! hash, the compiler settings and the wasmtime version) and kept in memory as
//! pre-instantiated templates (`InstancePre`), so that an attempt costs an instantiation from
//! the pooling allocator and nothing more. Plugins run on tokio's blocking threads, never on
//! the engine's own; an epoch ticker lets the engine stop them (timeout, cancel, shutdown).

mod capture;
mod check;
mod result;
mod runtime;
mod sandbox;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::watch;
use wasmtime::UpdateDeadline;
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use crate::error::ExecError;
use crate::executor::{
    AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, ExecSpec, Executor, InputFile, KillSignal,
    LogStream, wait_for_kill,
};
use capture::Capture;
pub use check::{ModuleReport, check_module};
use result::parse_result;
use runtime::{EPOCH_TICK, Runtime, human_bytes, new_store};
use sandbox::sandbox;

/// Where the sandbox's folders appear to a plugin.
pub const WASM_WORK_DIR: &str = "/work";
pub const WASM_INPUTS_DIR: &str = "/inputs";
/// The only import module a plugin may use.
pub const WASI_P1: &str = "wasi_snapshot_preview1";

/// A plugin's linear memory cap when its step sets none.
pub const DEFAULT_MAX_MEMORY: u64 = 256 * 1024 * 1024;
/// The largest cap a step may set: all a 32-bit memory can address.
pub const MAX_MEMORY_LIMIT: u64 = 4 * 1024 * 1024 * 1024;
/// The most a plugin may write to stdout (its result document).
pub const MAX_RESULT_BYTES: usize = 1024 * 1024;
/// The most a plugin may write to stderr (its log) in one attempt.
pub const MAX_STDERR_BYTES: usize = 64 * 1024 * 1024;

/// A `wasm:` step after templating. The attempt's input files (the request's `inputs`) are
/// seen read-only under [`WASM_INPUTS_DIR`], gathered in the request's `files.inputs_dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WasmSpec {
    /// The `.wasm` or `.wat` file.
    pub module: PathBuf,
    /// The document the plugin reads on stdin.
    pub input: Value,
    /// The host folder the plugin sees at [`WASM_WORK_DIR`], read-write.
    pub work_dir: PathBuf,
    /// The linear memory cap, in bytes.
    pub max_memory: u64,
}

/// Where compiled modules are cached on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WasmConfig {
    /// `None`: no disk cache (modules are compiled once per engine process).
    pub cache_dir: Option<PathBuf>,
}

impl WasmConfig {
    /// The cache of an engine's data folder: `<data dir>/cache/wasm`.
    pub fn in_data_dir(data_dir: &Path) -> Self {
        Self { cache_dir: Some(data_dir.join("cache").join("wasm")) }
    }
}

/// What `sluice doctor` reports about the WASM runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmInfo {
    pub wasmtime: String,
    pub pooling: bool,
    pub cache_dir: Option<PathBuf>,
}

/// Runs `wasm:` steps. Cheap to clone; the runtime starts on the first attempt.
#[derive(Clone)]
pub struct WasmExecutor {
    config: WasmConfig,
    runtime: Arc<OnceLock<Result<Arc<Runtime>, ExecError>>>,
}

impl WasmExecutor {
    pub fn new(config: WasmConfig) -> Self {
        Self { config, runtime: Arc::new(OnceLock::new()) }
    }

    fn runtime(&self) -> Result<Arc<Runtime>, ExecError> {
        self.runtime.get_or_init(|| Runtime::new(&self.config).map(Arc::new)).clone()
    }

    /// The runtime's version and settings, or why it cannot start.
    pub fn probe(&self) -> Result<WasmInfo, ExecError> {
        let rt = self.runtime()?;
        Ok(WasmInfo {
            wasmtime: wasmtime_version().to_string(),
            pooling: rt.pooling,
            cache_dir: rt.cache_dir.clone(),
        })
    }

    /// Compiles (or loads from the caches) and pre-instantiates a module.
    pub fn prepare(&self, module: &Path) -> Result<(), ExecError> {
        self.runtime()?.load(module).map(|_| ())
    }

    /// Instantiates a prepared module without running it: what an attempt pays before the
    /// plugin's own code runs. For benchmarks.
    pub fn instantiate(&self, module: &Path) -> Result<(), ExecError> {
        let rt = self.runtime()?;
        let pre = rt.load(module)?;
        let mut store = new_store(&rt.engine, WasiCtxBuilder::new().build_p1(), DEFAULT_MAX_MEMORY);
        pre.instantiate(&mut store).map(|_| ()).map_err(|e| ExecError::retryable(format!("{e:#}")))
    }
}

/// The version of wasmtime this build embeds (wasmtime does not export it; a test checks
/// this against Cargo.lock).
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}

impl Executor for WasmExecutor {
    fn kind(&self) -> &'static str {
        "wasm"
    }

    fn execute(
        &self,
        request: AttemptRequest,
        sink: Arc<dyn AttemptSink>,
        kill: watch::Receiver<Option<KillSignal>>,
    ) -> BoxFuture<AttemptOutcome> {
        let this = self.clone();
        Box::pin(async move { this.run(request, sink, kill).await })
    }
}

impl WasmExecutor {
    async fn run(
        &self,
        request: AttemptRequest,
        sink: Arc<dyn AttemptSink>,
        mut kill: watch::Receiver<Option<KillSignal>>,
    ) -> AttemptOutcome {
        let AttemptRequest { spec: ExecSpec::Wasm(spec), env, inputs, files, .. } = request else {
            return AttemptOutcome::failed(ExecError::fatal("not a wasm step"));
        };
        let inputs = Inputs { files: inputs, dir: files.inputs_dir };
        let rt = match self.runtime() {
            Ok(rt) => rt,
            Err(e) => return AttemptOutcome::failed(e),
        };
        let permit = tokio::select! {
            permit = rt.slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return AttemptOutcome::failed(ExecError::retryable("the wasm runtime is shutting down")),
            },
            _ = wait_for_kill(&mut kill) => return AttemptOutcome::failed(ExecError::cancelled("the step was stopped before it started")),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let job = {
            let (rt, stop, sink) = (rt.clone(), stop.clone(), sink.clone());
            tokio::task::spawn_blocking(move || {
                let outcome = run_plugin(&rt, &spec, &env, &inputs, &sink, &stop);
                drop(permit);
                outcome
            })
        };
        tokio::pin!(job);
        let joined = tokio::select! {
            joined = &mut job => joined,
            grace = wait_for_kill(&mut kill) => {
                stop.store(true, Ordering::Relaxed);
                // The plugin traps at its next epoch check; one blocked in a host call (a long
                // sleep) is left to finish on its own thread after the grace period.
                match tokio::time::timeout(grace.max(EPOCH_TICK * 4), &mut job).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        sink.log(LogStream::System, b"sluice: the plugin is blocked in a host call; abandoning it\n");
                        return AttemptOutcome::failed(ExecError::cancelled("the step was stopped"));
                    }
                }
            }
        };
        match joined {
            Ok(outcome) => outcome,
            Err(e) => AttemptOutcome::failed(ExecError::retryable(format!("the wasm executor crashed: {e}"))),
        }
    }
}

/// The files a plugin reads, and the folder they are gathered in.
struct Inputs {
    files: Vec<InputFile>,
    dir: PathBuf,
}

/// One attempt, on a blocking thread.
fn run_plugin(
    rt: &Runtime,
    spec: &WasmSpec,
    env: &BTreeMap<String, String>,
    inputs: &Inputs,
    sink: &Arc<dyn AttemptSink>,
    stop: &Arc<AtomicBool>,
) -> AttemptOutcome {
    let pre = match rt.load(&spec.module) {
        Ok(pre) => pre,
        Err(e) => return AttemptOutcome::failed(e),
    };
    let stdout = Capture::buffer(MAX_RESULT_BYTES);
    let stderr = Capture::log(sink.clone(), MAX_STDERR_BYTES);
    let inputs_linked = !inputs.files.is_empty();
    let wasi = match sandbox(spec, env, inputs, &stdout, &stderr) {
        Ok(wasi) => wasi,
        Err(e) => return AttemptOutcome::failed(e),
    };
    let mut store = new_store(&rt.engine, wasi, spec.max_memory);
    let stopper = stop.clone();
    store.epoch_deadline_callback(move |_| {
        Ok(if stopper.load(Ordering::Relaxed) {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Continue(1)
        })
    });
    let ran = pre.instantiate(&mut store).and_then(|instance| {
        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
        start.call(&mut store, ())
    });
    if inputs_linked {
        let _ = std::fs::remove_dir_all(&inputs.dir);
    }
    let exit_code = match &ran {
        Ok(()) => 0,
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(exit) => exit.0,
            None => {
                let err = if stop.load(Ordering::Relaxed) {
                    ExecError::cancelled("the step was stopped")
                } else if let Some(asked) = store.data().limits.refused {
                    ExecError::fatal(format!(
                        "the plugin ran out of memory: it asked for {} of linear memory, over its limit of {} (`wasm.max_memory`)",
                        human_bytes(asked),
                        human_bytes(spec.max_memory)
                    ))
                } else if let Some(over) = stdout.overflow().or(stderr.overflow()) {
                    ExecError::fatal(over)
                } else if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
                    ExecError::retryable(format!("the plugin crashed: {trap}"))
                } else {
                    ExecError::retryable(format!("the plugin failed: {}", root_message(e)))
                };
                return AttemptOutcome::failed(err);
            }
        },
    };
    if exit_code != 0 {
        return AttemptOutcome {
            result: Err(ExecError::retryable(format!("the plugin exited with code {exit_code}"))),
            outputs: Map::new(),
            exit_code: Some(exit_code),
        };
    }
    match parse_result(&stdout.take(), sink.as_ref()) {
        Ok(outputs) => AttemptOutcome { result: Ok(()), outputs, exit_code: Some(0) },
        Err(e) => AttemptOutcome { result: Err(e), outputs: Map::new(), exit_code: Some(0) },
    }
}

fn root_message(e: &wasmtime::Error) -> String {
    e.root_cause().to_string()
}

#[cfg(test)]
mod tests;
