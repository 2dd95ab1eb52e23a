//! criterion benches of the engine's pure parts: spec compilation and the scheduler core.
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
use sluice_engine::spec::source::Format;
use sluice_worker::{
    AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, DockerConfig, Executor, ExecutorSet, KillSignal,
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
                    outcome: Outcome::Succeeded { outputs: Default::default() },
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
    let id = engine.create_run(plan, Default::default(), "bench").unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let states = rt.block_on(engine.drive(&[id], None, tokio::sync::watch::channel(0).1)).unwrap();
    assert_eq!(states[&id], RunState::Succeeded);
}

criterion_group! {
    name = core;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(core);
