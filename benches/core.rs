//! criterion benches of the engine's pure parts (spec compilation, the scheduler core), the
//! whole engine with a no-op executor, and the cost of a WASM plugin attempt.
//!
//! `cargo bench --bench core`

mod support;
use support as dags;

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sluice_engine::compile::{Plan, compile_source};
use sluice_engine::driver::{Engine, EngineOptions};
use sluice_engine::scheduler::{Action, Admission, Capacity, Event, Outcome, RunMachine, RunState};
use sluice_engine::syntax::Format;
use sluice_worker::{
    AttemptFiles, AttemptId, AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, DEFAULT_MAX_MEMORY,
    DockerConfig, ExecSpec, Executor, ExecutorSet, KillSignal, KillSwitch, LogStream, ProcessExecutor,
    ProcessSpec, WasmConfig, WasmExecutor, WasmSpec,
};

fn compile(text: &str) -> Plan {
    compile_source(Path::new("bench.yaml"), Path::new("."), text, Format::Yaml).expect("valid")
}

/// Drives a whole run through the core with instant, successful attempts: every event,
/// admission decision and action, but no I/O.
fn simulate(plan: &Plan, slots: u32) -> usize {
    let mut m = RunMachine::new(plan.core.clone(), 1);
    let mut adm = Admission::new(Capacity { slots, cpu: slots, memory: u64::MAX, gpu: 0 });
    let mut events = std::collections::VecDeque::from([Event::Start]);
    let mut applied = 0;
    while let Some(e) = events.pop_front() {
        applied += 1;
        for a in m.apply(&e, applied as i64) {
            match a {
                Action::Enqueue { step, item, priority, resources } => {
                    adm.enqueue(1, step, item, priority, resources)
                }
                Action::Release { step, item } => adm.release(1, step, item),
                Action::Execute { step, item, attempt } => events.push_back(Event::Finished {
                    step,
                    item,
                    attempt,
                    outcome: Outcome::Succeeded { outputs: Default::default(), artifacts: Vec::new() },
                }),
                _ => {}
            }
        }
        if events.is_empty() {
            for g in adm.poll() {
                events.push_back(Event::Admitted { step: g.step, item: g.item });
            }
        }
    }
    assert_eq!(m.state(), RunState::Succeeded);
    applied
}

fn benches(c: &mut Criterion) {
    let wide_text = dags::wide(10_000);
    let chain_text = dags::chain(40);

    let mut g = c.benchmark_group("compile");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("wide_10k_steps", |b| b.iter(|| black_box(compile(black_box(&wide_text)))));
    g.throughput(Throughput::Elements(40));
    g.bench_function("chain_40_steps", |b| b.iter(|| black_box(compile(black_box(&chain_text)))));
    g.finish();

    let wide = Arc::new(compile(&wide_text));
    let chain = Arc::new(compile(&chain_text));
    let mut g = c.benchmark_group("scheduler_core");
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("wide_10k_steps_64_slots", |b| {
        b.iter_batched(|| wide.clone(), |p| black_box(simulate(&p, 64)), BatchSize::SmallInput)
    });
    g.throughput(Throughput::Elements(40));
    g.bench_function("chain_40_steps", |b| {
        b.iter_batched(|| chain.clone(), |p| black_box(simulate(&p, 64)), BatchSize::SmallInput)
    });
    g.finish();

    // The whole engine (driver, sled event log with group commits, logs, attempt folders)
    // with an executor that does no work: the scheduler's overhead per step, state durable.
    let mut g = c.benchmark_group("engine_noop_executor");
    g.sample_size(10);
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("wide_10k_steps", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| drive(&wide, dir.path()),
            BatchSize::PerIteration,
        )
    });
    g.throughput(Throughput::Elements(40));
    g.bench_function("chain_40_steps", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| drive(&chain, dir.path()),
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

/// A sink that drops everything: the bench measures the executor, not the store.
struct Discard;

impl AttemptSink for Discard {
    fn log(&self, _: LogStream, _: &[u8]) {}
    fn started(&self, _: u32) -> Result<(), String> {
        Ok(())
    }
}

fn attempt(spec: ExecSpec, dir: &Path) -> AttemptRequest {
    AttemptRequest::new(
        AttemptId { run: 1, step: "s".into(), item: 0, attempt: 1 },
        spec,
        AttemptFiles::at(dir.to_path_buf(), &dir.join("s.0.1"), false),
    )
}

/// A cached plugin's instantiation, a whole plugin attempt, and a process attempt of `true`
/// as the baseline in the same run.
fn wasm(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/noop.wat");
    let wasm = WasmExecutor::new(WasmConfig { cache_dir: Some(dir.path().join("cache")) });
    wasm.prepare(&module).unwrap();
    let spec = ExecSpec::Wasm(WasmSpec {
        module: module.clone(),
        input: serde_json::json!({"config": {}, "params": {}, "step": "s"}),
        work_dir: dir.path().to_path_buf(),
        max_memory: DEFAULT_MAX_MEMORY,
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let run = |executor: &dyn Executor, spec: &ExecSpec| {
        let (_switch, rx) = KillSwitch::new();
        let outcome = rt.block_on(executor.execute(attempt(spec.clone(), dir.path()), Arc::new(Discard), rx));
        assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    };
    let mut g = c.benchmark_group("wasm");
    g.bench_function("instantiate_cached_module", |b| b.iter(|| wasm.instantiate(&module).unwrap()));
    g.bench_function("plugin_attempt_noop", |b| b.iter(|| run(&wasm, &spec)));
    let process = ExecSpec::Process(ProcessSpec { argv: vec!["true".into()] });
    g.bench_function("process_attempt_true", |b| b.iter(|| run(&ProcessExecutor, &process)));
    g.finish();
}

/// Succeeds at once, writing nothing.
struct Noop;

impl Executor for Noop {
    fn kind(&self) -> &'static str {
        "noop"
    }
    fn execute(
        &self,
        _: AttemptRequest,
        _: Arc<dyn AttemptSink>,
        _: tokio::sync::watch::Receiver<Option<KillSignal>>,
    ) -> BoxFuture<AttemptOutcome> {
        Box::pin(async { AttemptOutcome { result: Ok(()), outputs: Default::default(), exit_code: Some(0) } })
    }
}

fn drive(plan: &Arc<Plan>, data: &Path) {
    let mut opts = EngineOptions::new(data);
    opts.capacity.slots = 64;
    opts.capacity.cpu = 64;
    let executors = ExecutorSet::only(Arc::new(Noop), DockerConfig::from_env("bench"));
    let engine = Engine::open(opts).unwrap().with_executors(executors);
    let id = engine.create_run(plan, Default::default(), sluice_engine::store::Trigger::Manual).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let states = rt.block_on(engine.drive(&[id], None, tokio::sync::watch::channel(0).1)).unwrap();
    assert_eq!(states[&id], RunState::Succeeded);
}

criterion_group! {
    name = core;
    config = Criterion::default().sample_size(20);
    targets = benches, wasm
}
criterion_main!(core);
