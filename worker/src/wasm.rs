//! The wasm executor: runs a step as a WASI preview 1 command module inside the engine
//! (wasmtime), sandboxed, with its input as JSON on stdin and its result as JSON on stdout.
//!
//! Modules are compiled once per content (wasmtime's on-disk cache, keyed by the module's
//! hash, the compiler settings and the wasmtime version) and kept in memory as
//! pre-instantiated templates (`InstancePre`), so that an attempt costs an instantiation from
//! the pooling allocator and nothing more. Plugins run on tokio's blocking threads, never on
//! the engine's own; an epoch ticker lets the engine stop them (timeout, cancel, shutdown).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};
use tokio::sync::{Semaphore, watch};
use wasmtime::{
    Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Module,
    PoolingAllocationConfig, ResourceLimiter, Store, UpdateDeadline,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::error::ExecError;
use crate::executor::{
    AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, ExecSpec, Executor, KillSignal, LogStream,
    wait_for_kill,
};

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

/// How often the epoch ticks: the longest a plugin runs on after the engine asks it to stop.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Instances the pooling allocator keeps slots for: the most plugins running at once.
const POOL_SLOTS: u32 = 128;
/// How much of a freed memory or table slot is reset in place instead of decommitted.
const KEEP_RESIDENT: usize = 1024 * 1024;

/// A host file a plugin may read, and its name under [`WASM_INPUTS_DIR`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmInput {
    pub source: PathBuf,
    pub name: String,
}

/// A `wasm:` step after templating.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmSpec {
    /// The `.wasm` or `.wat` file.
    pub module: PathBuf,
    /// The document the plugin reads on stdin.
    pub input: Value,
    /// The host folder the plugin sees at [`WASM_WORK_DIR`], read-write.
    pub work_dir: PathBuf,
    /// Declared input files, seen read-only under [`WASM_INPUTS_DIR`].
    pub inputs: Vec<WasmInput>,
    /// Where the executor may put the inputs folder of this attempt (hard links, or copies).
    pub inputs_dir: PathBuf,
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

/// What `sluice plugin check` found in a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleReport {
    /// The WASI functions it imports.
    pub imports: Vec<String>,
    /// Its memory's initial size, in bytes.
    pub initial_memory: u64,
}

/// Per-store state: the WASI context and the memory limiter.
struct State {
    wasi: WasiP1Ctx,
    limits: Limits,
}

struct Limits {
    max_memory: u64,
    /// The size a refused growth asked for.
    refused: Option<u64>,
}

const MAX_TABLE_ELEMENTS: usize = 1 << 20;

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.max_memory {
            self.refused = Some(desired as u64);
            return Err(wasmtime::format_err!(
                "the plugin asked for {} of linear memory, over its limit of {} (`wasm.max_memory`)",
                human_bytes(desired as u64),
                human_bytes(self.max_memory)
            ));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

fn human_bytes(n: u64) -> String {
    const MI: u64 = 1024 * 1024;
    if n >= MI && n.is_multiple_of(MI) { format!("{}Mi", n / MI) } else { format!("{n} bytes") }
}

/// A compiled module, remembered by path until the file changes.
struct Loaded {
    len: u64,
    modified: Option<SystemTime>,
    pre: Result<InstancePre<State>, ExecError>,
}

struct Runtime {
    engine: Engine,
    linker: Linker<State>,
    pooling: bool,
    cache_dir: Option<PathBuf>,
    by_path: Mutex<HashMap<PathBuf, Arc<Loaded>>>,
    compiling: Mutex<()>,
    /// How many times a module was compiled (or read from the disk cache).
    compilations: AtomicUsize,
    /// One permit per pool slot: an attempt waits for a slot instead of failing.
    slots: Arc<Semaphore>,
    ticking: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl Runtime {
    fn new(config: &WasmConfig) -> Result<Self, ExecError> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true);
        if let Some(dir) = &config.cache_dir {
            let mut cc = wasmtime::CacheConfig::new();
            cc.with_directory(dir);
            match wasmtime::Cache::new(cc) {
                Ok(cache) => {
                    cfg.cache(Some(cache));
                }
                Err(e) => tracing::warn!(error = %e, dir = %dir.display(), "no disk cache for wasm modules"),
            }
        }
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(POOL_SLOTS)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .max_memory_size(MAX_MEMORY_LIMIT as usize)
            // Reset a freed slot's first pages with memset rather than madvise: madvise in a
            // threaded process costs a TLB shootdown on every core, and a profile of 10,000
            // small plugins spent a sixth of its time there.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .decommit_batch_size(16);
        let mut pooled = cfg.clone();
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // The pool reserves address space up front; where that is refused (a low `ulimit -v`),
        // instances are allocated on demand instead.
        let (engine, pooling) = match Engine::new(&pooled) {
            Ok(engine) => (engine, true),
            Err(e) => {
                tracing::warn!(error = %e, "no pooling allocator for wasm; allocating on demand");
                let engine = Engine::new(&cfg)
                    .map_err(|e| ExecError::fatal(format!("cannot start the wasm runtime: {e:#}")))?;
                (engine, false)
            }
        };
        let linker = wasi_linker(&engine)?;
        let ticking = Arc::new(AtomicBool::new(true));
        let ticker = (engine.clone(), ticking.clone());
        std::thread::Builder::new()
            .name("sluice-wasm-epoch".into())
            .spawn(move || {
                while ticker.1.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.0.increment_epoch();
                }
            })
            .map_err(|e| ExecError::fatal(format!("cannot start the wasm epoch thread: {e}")))?;
        Ok(Self {
            engine,
            linker,
            pooling,
            cache_dir: config.cache_dir.clone(),
            by_path: Mutex::new(HashMap::new()),
            compiling: Mutex::new(()),
            compilations: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(POOL_SLOTS as usize)),
            ticking,
        })
    }

    /// The module's template, compiled (or read from the disk cache) on first use and again
    /// whenever the file changes.
    fn load(&self, path: &Path) -> Result<InstancePre<State>, ExecError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| ExecError::fatal(format!("cannot read the module {}: {e}", path.display())))?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        let cached = |this: &Self| {
            let map = this.by_path.lock().expect("module cache");
            map.get(path).filter(|hit| hit.len == len && hit.modified == modified).map(|hit| hit.pre.clone())
        };
        if let Some(pre) = cached(self) {
            return pre;
        }
        // One compilation at a time: the attempts of a wide DAG all miss at once, and should
        // wait for the first one's module rather than compile it a hundred times.
        let _compiling = self.compiling.lock().expect("compile lock");
        if let Some(pre) = cached(self) {
            return pre;
        }
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let pre = compile(&self.engine, path).and_then(|module| {
            check_shape(&module).map_err(|e| ExecError::fatal(format!("{}: {e}", path.display())))?;
            self.linker
                .instantiate_pre(&module)
                .map_err(|e| ExecError::fatal(format!("{}: {e:#}", path.display())))
        });
        self.by_path
            .lock()
            .expect("module cache")
            .insert(path.to_path_buf(), Arc::new(Loaded { len, modified, pre: pre.clone() }));
        pre
    }
}

/// A linker that offers a plugin WASI preview 1 and nothing else.
fn wasi_linker(engine: &Engine) -> Result<Linker<State>, ExecError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
        .map_err(|e| ExecError::fatal(format!("cannot link WASI: {e:#}")))?;
    Ok(linker)
}

/// A store for one attempt: its WASI context, its memory cap, an epoch deadline one tick
/// ahead (the caller decides what a tick does).
fn new_store(engine: &Engine, wasi: WasiP1Ctx, max_memory: u64) -> Store<State> {
    let mut store = Store::new(engine, State { wasi, limits: Limits { max_memory, refused: None } });
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(1);
    store
}

/// Reads and compiles a module file: WebAssembly binary, or text (`.wat`).
fn compile(engine: &Engine, path: &Path) -> Result<Module, ExecError> {
    let bytes = std::fs::read(path)
        .map_err(|e| ExecError::fatal(format!("cannot read the module {}: {e}", path.display())))?;
    let shown = path.display();
    if bytes.starts_with(b"\0asm") {
        return Module::from_binary(engine, &bytes)
            .map_err(|e| ExecError::fatal(format!("{shown} is not a valid WebAssembly module: {e:#}")));
    }
    if path.extension().is_some_and(|e| e == "wasm") {
        return Err(ExecError::fatal(format!(
            "{shown} is not a WebAssembly binary: it does not start with the `\\0asm` header"
        )));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| {
        ExecError::fatal(format!("{shown} is neither a WebAssembly binary nor WebAssembly text (.wat)"))
    })?;
    Module::new(engine, text)
        .map_err(|e| ExecError::fatal(format!("{shown} is not valid WebAssembly text: {e:#}")))
}

/// What a plugin module must look like: a WASI preview 1 command that imports nothing else.
fn check_shape(module: &Module) -> Result<ModuleReport, String> {
    let mut imports = Vec::new();
    for import in module.imports() {
        if import.module() != WASI_P1 {
            return Err(format!(
                "it imports `{}::{}`, but a plugin may import only WASI preview 1 (`{WASI_P1}`)",
                import.module(),
                import.name()
            ));
        }
        if !matches!(import.ty(), ExternType::Func(_)) {
            return Err(format!("it imports `{WASI_P1}::{}`, which is not a function", import.name()));
        }
        imports.push(import.name().to_string());
    }
    let mut start = false;
    let mut initial_memory = None;
    let mut reactor = false;
    for export in module.exports() {
        match (export.name(), export.ty()) {
            ("_start", ExternType::Func(f)) => {
                if f.params().len() != 0 || f.results().len() != 0 {
                    return Err(
                        "it exports `_start` with parameters or results; it must take and give nothing"
                            .into(),
                    );
                }
                start = true;
            }
            ("_start", _) => return Err("it exports `_start`, but not as a function".into()),
            ("memory", ExternType::Memory(m)) => initial_memory = Some(m.minimum() * 65536),
            ("_initialize", ExternType::Func(_)) => reactor = true,
            _ => {}
        }
    }
    if !start {
        return Err(if reactor {
            "it is a WASI reactor (it exports `_initialize`); a plugin must be a command that exports `_start`"
                .into()
        } else {
            "it does not export `_start`; a plugin must be a WASI command".into()
        });
    }
    let Some(initial_memory) = initial_memory else {
        return Err("it does not export its memory as `memory`, which WASI needs".into());
    };
    Ok(ModuleReport { imports, initial_memory })
}

/// Checks that a file is a plugin Sluice can run: valid WebAssembly (binary or text), a WASI
/// preview 1 command (exports `_start` and `memory`), importing only WASI functions that exist.
pub fn check_module(path: &Path) -> Result<ModuleReport, ExecError> {
    let engine = Engine::default();
    let module = compile(&engine, path)?;
    let report = check_shape(&module).map_err(|e| ExecError::fatal(format!("{}: {e}", path.display())))?;
    wasi_linker(&engine)?
        .instantiate_pre(&module)
        .map_err(|e| ExecError::fatal(format!("{}: {e:#}", path.display())))?;
    if report.initial_memory > DEFAULT_MAX_MEMORY {
        return Err(ExecError::fatal(format!(
            "{}: its memory starts at {}, over the default limit of {}; its steps must raise `wasm.max_memory`",
            path.display(),
            human_bytes(report.initial_memory),
            human_bytes(DEFAULT_MAX_MEMORY)
        )));
    }
    Ok(report)
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
        let ExecSpec::Wasm(spec) = request.spec else {
            return AttemptOutcome::failed(ExecError::fatal("not a wasm step"));
        };
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
            let (rt, stop, sink, env) = (rt.clone(), stop.clone(), sink.clone(), request.env);
            tokio::task::spawn_blocking(move || {
                let outcome = run_plugin(&rt, &spec, &env, &sink, &stop);
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

/// One attempt, on a blocking thread.
fn run_plugin(
    rt: &Runtime,
    spec: &WasmSpec,
    env: &BTreeMap<String, String>,
    sink: &Arc<dyn AttemptSink>,
    stop: &Arc<AtomicBool>,
) -> AttemptOutcome {
    let pre = match rt.load(&spec.module) {
        Ok(pre) => pre,
        Err(e) => return AttemptOutcome::failed(e),
    };
    let stdout = Capture::buffer(MAX_RESULT_BYTES);
    let stderr = Capture::log(sink.clone(), MAX_STDERR_BYTES);
    let inputs_linked = !spec.inputs.is_empty();
    let wasi = match sandbox(spec, env, &stdout, &stderr) {
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
        let _ = std::fs::remove_dir_all(&spec.inputs_dir);
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

/// The plugin's WASI context: its stdin document, its two output streams, the step's env,
/// and its folders. Nothing else: no network, no other files, no host environment.
fn sandbox(
    spec: &WasmSpec,
    env: &BTreeMap<String, String>,
    stdout: &Capture,
    stderr: &Capture,
) -> Result<WasiP1Ctx, ExecError> {
    let input = serde_json::to_vec(&spec.input)
        .map_err(|e| ExecError::fatal(format!("cannot encode the input: {e}")))?;
    let mut b = WasiCtxBuilder::new();
    // Plugins already run on blocking threads: file calls need no extra hop.
    b.allow_blocking_current_thread(true);
    b.stdin(MemoryInputPipe::new(input));
    b.stdout(stdout.clone());
    b.stderr(stderr.clone());
    let name = spec.module.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    b.arg(name);
    for (k, v) in env {
        b.env(k, v);
    }
    b.preopened_dir(&spec.work_dir, WASM_WORK_DIR, FsPerms::ReadWrite).map_err(|e| {
        ExecError::fatal(format!("cannot open the work folder {}: {e:#}", spec.work_dir.display()))
    })?;
    if !spec.inputs.is_empty() {
        link_inputs(spec)?;
        b.preopened_dir(&spec.inputs_dir, WASM_INPUTS_DIR, FsPerms::ReadOnly).map_err(|e| {
            ExecError::fatal(format!("cannot open the inputs folder {}: {e:#}", spec.inputs_dir.display()))
        })?;
    }
    Ok(b.build_p1())
}

/// Puts the declared inputs, and nothing else, in a folder of their own: hard links where the
/// filesystem allows, copies elsewhere.
fn link_inputs(spec: &WasmSpec) -> Result<(), ExecError> {
    let dir = &spec.inputs_dir;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)
        .map_err(|e| ExecError::fatal(format!("cannot create the inputs folder {}: {e}", dir.display())))?;
    for input in &spec.inputs {
        let target = dir.join(&input.name);
        if std::fs::hard_link(&input.source, &target).is_err() {
            std::fs::copy(&input.source, &target).map_err(|e| {
                ExecError::fatal(format!("cannot give the plugin its input {}: {e}", input.source.display()))
            })?;
        }
    }
    Ok(())
}

/// The result document a plugin writes to stdout.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginResult {
    #[serde(default)]
    outputs: Map<String, Value>,
    #[serde(default)]
    metrics: Option<Map<String, Value>>,
    #[serde(default)]
    status: Option<PluginStatus>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum PluginStatus {
    Ok,
    Failed,
}

/// The step's outputs from the plugin's stdout. Empty stdout: no outputs.
fn parse_result(stdout: &[u8], sink: &dyn AttemptSink) -> Result<Map<String, Value>, ExecError> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    let result: PluginResult = serde_json::from_slice(stdout).map_err(|e| {
        let shown = String::from_utf8_lossy(&stdout[..stdout.len().min(200)]).into_owned();
        ExecError::fatal(format!(
            "the plugin's stdout is not a result document ({e}); it must be one JSON object with \
             `outputs`, `metrics`, `status`, `message`; it began with: {shown:?}"
        ))
    })?;
    if let Some(message) = &result.message {
        sink.log(LogStream::System, format!("sluice: plugin says: {message}\n").as_bytes());
    }
    let mut outputs = result.outputs;
    if let Some(metrics) = result.metrics {
        let shown = serde_json::to_string(&metrics).unwrap_or_default();
        sink.log(LogStream::System, format!("sluice: metrics {shown}\n").as_bytes());
        outputs.insert("metrics".into(), Value::Object(metrics));
    }
    if result.status == Some(PluginStatus::Failed) {
        let message = result.message.unwrap_or_else(|| "no message".into());
        return Err(ExecError::fatal(format!("the plugin reported a failure: {message}")));
    }
    Ok(outputs)
}

/// One of a plugin's output streams: a bounded buffer (stdout) or the step log (stderr).
/// Writing past the bound traps the plugin.
#[derive(Clone)]
struct Capture {
    inner: Arc<CaptureInner>,
}

struct CaptureInner {
    name: &'static str,
    limit: usize,
    written: AtomicUsize,
    overflowed: AtomicBool,
    target: CaptureTarget,
}

enum CaptureTarget {
    Buffer(Mutex<Vec<u8>>),
    Log(Arc<dyn AttemptSink>),
}

impl Capture {
    fn buffer(limit: usize) -> Self {
        Self::new("stdout", limit, CaptureTarget::Buffer(Mutex::new(Vec::new())))
    }

    fn log(sink: Arc<dyn AttemptSink>, limit: usize) -> Self {
        Self::new("stderr", limit, CaptureTarget::Log(sink))
    }

    fn new(name: &'static str, limit: usize, target: CaptureTarget) -> Self {
        Self {
            inner: Arc::new(CaptureInner {
                name,
                limit,
                written: AtomicUsize::new(0),
                overflowed: AtomicBool::new(false),
                target,
            }),
        }
    }

    fn write(&self, bytes: &[u8]) -> Result<(), String> {
        let before = self.inner.written.fetch_add(bytes.len(), Ordering::Relaxed);
        if before + bytes.len() > self.inner.limit {
            self.inner.overflowed.store(true, Ordering::Relaxed);
            return Err(self.overflow_message());
        }
        match &self.inner.target {
            CaptureTarget::Buffer(buf) => buf.lock().expect("capture").extend_from_slice(bytes),
            CaptureTarget::Log(sink) => sink.log(LogStream::Stderr, bytes),
        }
        Ok(())
    }

    fn overflow_message(&self) -> String {
        format!(
            "the plugin wrote more than {} to {}; the limit keeps a runaway plugin from filling the disk",
            human_bytes(self.inner.limit as u64),
            self.inner.name
        )
    }

    fn overflow(&self) -> Option<String> {
        self.inner.overflowed.load(Ordering::Relaxed).then(|| self.overflow_message())
    }

    /// What was written to a buffer, taken out of it.
    fn take(&self) -> Vec<u8> {
        match &self.inner.target {
            CaptureTarget::Buffer(buf) => std::mem::take(&mut *buf.lock().expect("capture")),
            CaptureTarget::Log(_) => Vec::new(),
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for Capture {
    async fn ready(&mut self) {}
}

impl wasmtime_wasi::p2::OutputStream for Capture {
    fn write(&mut self, bytes: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        Capture::write(self, &bytes).map_err(|m| wasmtime_wasi::p2::StreamError::trap(&m))
    }
    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Capture::write(&self, buf).map(|_| buf.len()).map_err(std::io::Error::other))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[path = "wasm_tests.rs"]
mod tests;
