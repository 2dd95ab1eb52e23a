//! The wasmtime runtime: one engine with a pooling allocator and an epoch ticker, the WASI
//! linker, per-attempt stores with a memory cap, and compiled modules cached by path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::Semaphore;
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig,
    ResourceLimiter, Store,
};
use wasmtime_wasi::p1::WasiP1Ctx;

use super::check::check_shape;
use super::{MAX_MEMORY_LIMIT, WasmConfig};
use crate::error::ExecError;

/// How often the epoch ticks: the longest a plugin runs on after the engine asks it to stop.
pub(super) const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Instances the pooling allocator keeps slots for: the most plugins running at once.
const POOL_SLOTS: u32 = 128;
/// How much of a freed memory or table slot is reset in place instead of decommitted.
const KEEP_RESIDENT: usize = 1024 * 1024;

/// A lock whose holder panicked is still good here: the maps it guards hold whole entries
/// (an `Arc` is inserted or not), so a panic elsewhere must not fail every later attempt.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Per-store state: the WASI context and the memory limiter.
pub(super) struct State {
    pub(super) wasi: WasiP1Ctx,
    pub(super) limits: Limits,
}

pub(super) struct Limits {
    pub(super) max_memory: u64,
    /// The size a refused growth asked for.
    pub(super) refused: Option<u64>,
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

pub(super) fn human_bytes(n: u64) -> String {
    const MI: u64 = 1024 * 1024;
    if n >= MI && n.is_multiple_of(MI) { format!("{}Mi", n / MI) } else { format!("{n} bytes") }
}

/// A compiled module, remembered by path until the file changes.
pub(super) struct Loaded {
    len: u64,
    modified: Option<SystemTime>,
    pre: Result<InstancePre<State>, ExecError>,
}

pub(super) struct Runtime {
    pub(super) engine: Engine,
    linker: Linker<State>,
    pub(super) pooling: bool,
    pub(super) cache_dir: Option<PathBuf>,
    pub(super) by_path: Mutex<HashMap<PathBuf, Arc<Loaded>>>,
    pub(super) compiling: Mutex<()>,
    /// How many times a module was compiled (or read from the disk cache).
    pub(super) compilations: AtomicUsize,
    /// One permit per pool slot: an attempt waits for a slot instead of failing.
    pub(super) slots: Arc<Semaphore>,
    ticking: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl Runtime {
    pub(super) fn new(config: &WasmConfig) -> Result<Self, ExecError> {
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
    pub(super) fn load(&self, path: &Path) -> Result<InstancePre<State>, ExecError> {
        let meta = std::fs::metadata(path)
            .map_err(|e| ExecError::fatal(format!("cannot read the module {}: {e}", path.display())))?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        let cached = |this: &Self| {
            let map = lock(&this.by_path);
            map.get(path).filter(|hit| hit.len == len && hit.modified == modified).map(|hit| hit.pre.clone())
        };
        if let Some(pre) = cached(self) {
            return pre;
        }
        // One compilation at a time: the attempts of a wide DAG all miss at once, and should
        // wait for the first one's module rather than compile it a hundred times.
        let _compiling = lock(&self.compiling);
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
        lock(&self.by_path).insert(path.to_path_buf(), Arc::new(Loaded { len, modified, pre: pre.clone() }));
        pre
    }
}

/// A linker that offers a plugin WASI preview 1 and nothing else.
pub(super) fn wasi_linker(engine: &Engine) -> Result<Linker<State>, ExecError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut State| &mut s.wasi)
        .map_err(|e| ExecError::fatal(format!("cannot link WASI: {e:#}")))?;
    Ok(linker)
}

/// A store for one attempt: its WASI context, its memory cap, an epoch deadline one tick
/// ahead (the caller decides what a tick does).
pub(super) fn new_store(engine: &Engine, wasi: WasiP1Ctx, max_memory: u64) -> Store<State> {
    let mut store = Store::new(engine, State { wasi, limits: Limits { max_memory, refused: None } });
    store.limiter(|s| &mut s.limits);
    store.set_epoch_deadline(1);
    store
}

/// Reads and compiles a module file: WebAssembly binary, or text (`.wat`).
pub(super) fn compile(engine: &Engine, path: &Path) -> Result<Module, ExecError> {
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
