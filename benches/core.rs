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
                    outcome: Outcome::succeeded(Default::default()),
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

/// A digest for the bench's records: distinct per (run, step, n).
fn digest_of(run: u64, step: u32, n: u32) -> String {
    format!("sha256:{:056x}{step:04x}{n:04x}", run)
}

/// The step cache and lineage with 100,000 records each: a lookup is one index read, a
/// lineage query a few prefix scans, never a scan of all records.
fn store_100k(c: &mut Criterion) {
    use sluice_engine::scheduler::Produced;
    use sluice_engine::store::{
        CACHE_FORMAT, CacheEntry, ConsumedArtifact, ConsumedRecord, Direction, KeyDoc, Origin, ProducedBy,
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineOptions::new(dir.path().join("data"))).unwrap();
    let store = engine.store();
    let doc = |i: u64| KeyDoc {
        format: CACHE_FORMAT,
        kind: "process".into(),
        request: serde_json::json!({"argv": ["python", "train.py", "--seed", i.to_string()]}),
        env: Default::default(),
        workdir: "$SPEC_DIR".into(),
        code: Default::default(),
        datasets: [("$SPEC_DIR/data.csv".to_string(), digest_of(i, 0, 0))].into_iter().collect(),
        artifacts: Default::default(),
        values: Default::default(),
        image: None,
        outputs: vec![],
        declares: vec![],
        pipeline: "p".into(),
        step: format!("s{}", i % 40),
        item: None,
    };
    // Under `cargo test` (no `--bench`), a small store: the bench only shows it still works.
    let full = std::env::args().any(|a| a == "--bench");
    let (entries, runs) = if full { (100_000u64, 10_000u64) } else { (2_000, 200) };
    let mut keys = Vec::new();
    for i in 0..entries {
        let d = doc(i);
        let key = d.key();
        let entry = CacheEntry {
            v: 1,
            key: key.clone(),
            doc: d,
            pipeline: "p".into(),
            step: format!("s{}", i % 40),
            run: i / 40 + 1,
            item: 0,
            attempt: 1,
            at: 0,
            outputs: Default::default(),
            artifacts: vec![],
            run_dirs: vec![],
        };
        store.put_cache_entry(&entry).unwrap();
        if i % 97 == 0 {
            keys.push(key);
        }
    }
    // 100,000 artifacts: 10,000 runs of a 5-step chain, each step making 2 and reading the
    // step before's.
    for run in 1..=runs {
        for step in 0..5u32 {
            let made: Vec<Produced> = (0..2)
                .map(|n| Produced {
                    name: format!("a{n}"),
                    file: format!("a{n}.bin"),
                    digest: digest_of(run, step, n),
                    size: 1,
                    media_type: "application/octet-stream".into(),
                })
                .collect();
            let id = format!("s{step}");
            let by = ProducedBy { run, pipeline: "p", step_ix: step, step: &id, item: 0, attempt: 1, at: 0 };
            store.put_artifacts(by, &made).unwrap();
            let read = if step == 0 {
                vec![]
            } else {
                (0..2)
                    .map(|n| ConsumedArtifact {
                        digest: digest_of(run, step - 1, n),
                        step: format!("s{}", step - 1),
                        name: format!("a{n}"),
                    })
                    .collect()
            };
            let record = ConsumedRecord {
                v: 1,
                run,
                pipeline: "p".into(),
                step: id.clone(),
                step_ix: step,
                item: 0,
                attempt: 1,
                at: 0,
                datasets: vec![],
                artifacts: read,
            };
            store.put_consumed(step, &record).unwrap();
        }
    }
    store.flush().unwrap();
    assert_eq!(store.cache_len() as u64, entries);
    let mut g = c.benchmark_group("store_100k");
    let mut i = 0;
    g.bench_function("cache_lookup_hit", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(store.cache_entry(&keys[i]).unwrap().expect("an entry"))
        })
    });
    let missing = doc(1_000_000).key();
    g.bench_function("cache_lookup_miss", |b| b.iter(|| black_box(store.cache_entry(&missing).unwrap())));
    let last = digest_of(runs / 2, 4, 0);
    g.bench_function("lineage_upstream_5_steps", |b| {
        b.iter(|| {
            let l = store.lineage(&Origin::Digest(last.clone()), Direction::Upstream, 20).unwrap();
            assert!(l.nodes.len() >= 9, "{}", l.nodes.len());
            black_box(l)
        })
    });
    let first = digest_of(runs / 2, 0, 0);
    g.bench_function("lineage_downstream_5_steps", |b| {
        b.iter(|| {
            black_box(store.lineage(&Origin::Digest(first.clone()), Direction::Downstream, 20).unwrap())
        })
    });
    g.finish();
}

/// SHA-256 of 64 MiB in memory: the `sha2` crate (what artifacts are hashed with) against
/// `ring` (BoringSSL's assembly) as the peer, in the same run; then `hash_file` of a 256 MiB
/// page-cached file, reads included.
fn hashing(c: &mut Criterion) {
    use sha2::Digest;
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sha2_crate_64mib", |b| b.iter(|| black_box(sha2::Sha256::digest(&data))));
    g.bench_function("ring_64mib", |b| {
        b.iter(|| black_box(ring::digest::digest(&ring::digest::SHA256, &data)))
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("blob");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&file).unwrap();
        for _ in 0..4 {
            f.write_all(&data).unwrap();
        }
    }
    g.throughput(Throughput::Bytes(4 * data.len() as u64));
    g.sample_size(10);
    g.bench_function("hash_file_256mib", |b| {
        b.iter(|| black_box(sluice_engine::artifacts::hash_file(&file).unwrap()))
    });
    g.finish();
}

/// What security costs a request and an audit: authorization (the presented bearer token's
/// record read by its id, its hash compared in constant time, its role checked) against a
/// store of 1,000 tokens, next to the bare read of the same record; and `audit verify` of
/// 1,000,000 entries (every entry decoded and hashed, the chain and the checkpoint checked).
fn security(c: &mut Criterion) {
    use sluice_engine::security::audit::Action as Audited;
    use sluice_engine::security::{Permission, Role, tokens};
    let full = std::env::args().any(|a| a == "--bench");
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineOptions::new(dir.path().join("data"))).unwrap();
    let store = engine.store();
    let mut presented = Vec::new();
    for i in 0..1_000 {
        let m = tokens::mint(&format!("bench-{i}"), Role::Runner, None, "bench", 0).unwrap();
        store.put_token(&m.record).unwrap();
        presented.push(m.token);
    }
    store.flush().unwrap();
    let token = presented[500].clone();
    let id = tokens::id_of(&token).unwrap().to_string();
    // The same id with another secret: found, and refused by the hash comparison.
    let forged = format!("{}{}", &token[..token.len() - 4], "AAAA");
    let mut g = c.benchmark_group("security");
    g.bench_function("authorize_bearer_1k_tokens", |b| {
        b.iter(|| {
            let record = store.authenticate(black_box(&token), 1).unwrap().unwrap();
            assert!(record.role.allows(Permission::Run));
        })
    });
    g.bench_function("refuse_forged_bearer", |b| {
        b.iter(|| assert!(store.authenticate(black_box(&forged), 1).unwrap().is_err()))
    });
    g.bench_function("baseline_token_record_read", |b| {
        b.iter(|| black_box(store.token(black_box(&id)).unwrap().unwrap()))
    });

    // Under `cargo test` (no `--bench`), a short log: the bench only shows it still works.
    let entries: u64 = if full { 1_000_000 } else { 2_000 };
    for i in 0..entries {
        let action = Audited::new("token:bench", "run.start", format!("run:{i}"))
            .after(serde_json::json!({"pipeline": "train", "trigger": "api"}))
            .request(Some("0123456789abcdef"));
        store.audit(action, 1_796_000_000_000 + i as i64).unwrap();
        if i % 100_000 == 99_999 {
            store.flush().unwrap();
        }
    }
    store.checkpoint_audit(1_796_000_000_000 + entries as i64).unwrap();
    let public = engine.signing_key().public().to_vec();
    g.sample_size(10);
    g.throughput(Throughput::Elements(entries));
    g.bench_function(format!("audit_verify_{entries}_entries"), |b| {
        b.iter(|| {
            let v = store.verify_audit(&public, None).unwrap();
            assert!(v.problem.is_none() && v.entries == entries && v.covered_to == entries, "{v:?}");
        })
    });
    g.finish();
}

/// What encrypting an artifact would add to registering it: sha256 and XChaCha20-Poly1305 in
/// 64 KiB STREAM chunks in one pass (`DataKey::encrypt` hashing what it sees), next to sha256
/// alone over the same bytes, in memory.
fn encryption(c: &mut Criterion) {
    use sha2::Digest;
    let full = std::env::args().any(|a| a == "--bench");
    let size: u32 = if full { 64 << 20 } else { 1 << 20 };
    let data: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let key = sluice_engine::security::crypt::DataKey::from_bytes(&[7; 32]);
    let mut g = c.benchmark_group("encryption");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    g.bench_function("sha256_alone", |b| b.iter(|| black_box(sha2::Sha256::digest(&data))));
    let mut out = Vec::with_capacity(data.len() + data.len() / 1024 + 64);
    g.bench_function("sha256_and_encrypt", |b| {
        b.iter(|| {
            out.clear();
            let mut h = sha2::Sha256::new();
            key.encrypt(data.as_slice(), &mut out, |chunk| h.update(chunk)).unwrap();
            black_box(h.finalize())
        })
    });
    // Sealed once here too: a filter (`cargo bench -- registry`) may have skipped the bench above.
    out.clear();
    key.encrypt(data.as_slice(), &mut out, |_| {}).unwrap();
    let sealed = out.clone();
    let mut back = Vec::with_capacity(data.len());
    g.bench_function("decrypt", |b| {
        b.iter(|| {
            back.clear();
            key.decrypt(sealed.as_slice(), &mut back).unwrap();
        })
    });
    back.clear();
    key.decrypt(sealed.as_slice(), &mut back).unwrap();
    assert_eq!(back, data);
    g.finish();
}

/// The registry and tracking in the store: resolving `NAME@ALIAS` to its version (100 models
/// of 20 versions each), appending a batch of 1,000 metric points, reading a 10,000-point
/// history.
fn registry(c: &mut Criterion) {
    use sluice_engine::driver::{Actor, NewVersion};
    use sluice_engine::registry::{Cause, VersionFile};
    use sluice_engine::tracking::{Lifecycle, Metric, RunStatus, TrackingRun};
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineOptions::new(dir.path().join("data"))).unwrap();
    let store = engine.store();
    let file = dir.path().join("model.bin");
    std::fs::write(&file, b"weights").unwrap();
    let placed = store.blobs().place(&file).unwrap();
    let registry = engine.registry();
    let actor = Actor::new("bench", true, None);
    // Under `cargo test` (no `--bench`), a few: the bench only shows it still works.
    let (models, versions) = if std::env::args().any(|a| a == "--bench") { (100, 20) } else { (43, 8) };
    for m in 0..models {
        for _ in 0..versions {
            let new = NewVersion {
                name: format!("model-{m}"),
                files: [(
                    "model.bin".to_string(),
                    VersionFile { digest: placed.digest.clone(), size: placed.size },
                )]
                .into(),
                source: "bench".into(),
                create_model: true,
                ..NewVersion::default()
            };
            registry.register_version(new, &actor, None).unwrap();
        }
        registry
            .move_alias(&format!("model-{m}"), "production", Some(7), &actor, "", Cause::default())
            .unwrap();
    }
    let run = TrackingRun {
        v: 1,
        id: "0123456789abcdef0123456789abcdef".into(),
        experiment: 0,
        name: "bench".into(),
        user: "bench".into(),
        status: RunStatus::Running,
        start: 0,
        end: None,
        lifecycle: Lifecycle::Active,
        artifact_uri: String::new(),
        params: Default::default(),
        tags: Default::default(),
        metrics: Default::default(),
        task: None,
    };
    store.create_tracking_run(&run).unwrap();
    let batch: Vec<Metric> =
        (0..1000).map(|i| Metric { key: "loss".into(), value: i as f64, step: i, timestamp: 1 }).collect();
    for _ in 0..10 {
        store.log_metrics(&run.id, &batch).unwrap();
    }
    store.flush().unwrap();
    let mut g = c.benchmark_group("registry");
    g.bench_function("resolve_alias_100_models", |b| {
        b.iter(|| {
            let v = store.alias(black_box("model-42"), black_box("production")).unwrap().unwrap();
            black_box(store.model_version(black_box("model-42"), v).unwrap().unwrap())
        })
    });
    g.throughput(Throughput::Elements(1000));
    g.bench_function("log_metrics_batch_1000", |b| {
        b.iter(|| store.log_metrics(&run.id, black_box(&batch)).unwrap())
    });
    g.throughput(Throughput::Elements(10_000));
    let probe = TrackingRun { id: "fedcba9876543210fedcba9876543210".into(), ..run.clone() };
    store.create_tracking_run(&probe).unwrap();
    for _ in 0..10 {
        store.log_metrics(&probe.id, &batch).unwrap();
    }
    g.bench_function("metric_history_10000", |b| {
        b.iter(|| assert_eq!(store.metric_history(black_box(&probe.id), Some("loss")).unwrap().len(), 10_000))
    });
    g.finish();
}

/// What a rollout adds to a request: finding the model's routing and picking a side, sticky
/// by a key or drawn, against resolving the alias from the store (what a request costs
/// without a rollout).
fn routing(c: &mut Criterion) {
    use sluice_engine::serving::{Route, Serving, Target};
    let tmp = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineOptions::new(tmp.path().join("data"))).unwrap();
    let serving = Serving::new(engine.registry());
    serving.set_route(
        "churn",
        Some(Route {
            rollout: 1,
            alias: "production".into(),
            stable: Some(1),
            candidate: 2,
            share: 10,
            by: None,
        }),
    );
    let mut g = c.benchmark_group("routing");
    g.bench_function("rollout_route_by_key", |b| {
        b.iter(|| {
            serving.resolve_keyed(black_box("churn"), &Target::Model, Some(black_box("customer-42"))).unwrap()
        })
    });
    g.bench_function("rollout_route_drawn", |b| {
        b.iter(|| serving.resolve_keyed(black_box("churn"), &Target::Model, None).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = core;
    config = Criterion::default().sample_size(20);
    targets = benches, wasm, store_100k, hashing, security, encryption, registry, routing
}
criterion_main!(core);
