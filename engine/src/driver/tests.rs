//! The driver's own tests: time from the engine's clock, the attempt request of every kind as
//! a value, and runs whose DAG version was stored before plans were.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, json};
use sluice_worker::{AttemptFiles, AttemptRequest, ExecSpec};

use super::render::{RunView, request};
use super::{Created, Engine, EngineOptions, NewRun};
use crate::clock::TokioClock;
use crate::compile::{Plan, compile_source};
use crate::scheduler::{RunMachine, RunState};
use crate::store::{DagRecord, Trigger};
use crate::syntax::Format;

fn compile_in(dir: &Path, text: &str) -> Arc<Plan> {
    Arc::new(compile_source(&dir.join("p.yaml"), dir, text, Format::Yaml).expect("valid spec"))
}

#[tokio::test(start_paused = true)]
async fn run_times_and_cooldown_windows_come_from_the_engines_clock() {
    let tmp = tempfile::tempdir().unwrap();
    let base = 1_800_000_000_000;
    let engine = Engine::open(EngineOptions::new(tmp.path().join("data")))
        .unwrap()
        .with_clock(Arc::new(TokioClock::starting_at(base)));
    let plan = compile_in(tmp.path(), "name: p\nsteps:\n  a: {process: {command: [\"true\"]}}\n");
    let keyed = || {
        let mut new = NewRun::new(Map::new(), Trigger::Alert);
        new.key = Some(("alert:p:firing:fp".into(), Some(3_600_000)));
        new
    };
    let Created::Run(first) = engine.create_run_with(&plan, keyed()).unwrap() else { panic!("held") };
    assert_eq!(engine.store().run(first).unwrap().created_at, base);
    tokio::time::advance(Duration::from_secs(30 * 60)).await;
    assert_eq!(
        engine.create_run_with(&plan, keyed()).unwrap(),
        Created::Held { run: first },
        "inside the cooldown"
    );
    tokio::time::advance(Duration::from_secs(31 * 60)).await;
    let Created::Run(second) = engine.create_run_with(&plan, keyed()).unwrap() else { panic!("still held") };
    assert_eq!(engine.store().run(second).unwrap().created_at, base + 61 * 60 * 1000);
}

/// Every kind's request is one value: it serializes and comes back the same, and it names
/// the attempt's files rather than leaving them to conventions.
#[test]
fn every_kind_renders_a_request_that_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("data.csv"), "x,y\n1,0\n2,1\n").unwrap();
    std::fs::write(dir.join("p.wat"), "(module (memory (export \"memory\") 1) (func (export \"_start\")))")
        .unwrap();
    let plan = compile_in(
        dir,
        r#"
name: kinds
params: {tag: {type: string, default: v1}}
steps:
  shell: {process: {shell: "echo {{ params.tag }}"}, env: {MODE: "{{ params.tag }}"}}
  boxed: {container: {image: "busybox:{{ params.tag }}", command: [cat, /sluice/inputs/data.csv], inputs: [data.csv]}}
  plugin: {wasm: {module: p.wat, config: {tag: "{{ params.tag }}"}, inputs: [data.csv]}}
  fit: {train: {model: logistic, data: data.csv, label: y}}
"#,
    );
    let engine = Engine::open(EngineOptions::new(dir.join("data"))).unwrap();
    engine.keep_code(&plan).unwrap();
    let params: Map<_, _> = [("tag".to_string(), json!("v1"))].into_iter().collect();
    let outputs = HashMap::new();
    let machine = RunMachine::new(plan.core.clone(), 1);
    let view = RunView {
        id: 1,
        plan: &plan,
        params: &params,
        outputs: &outputs,
        artifacts: &HashMap::new(),
        data_dir: &dir.join("data"),
        blobs: engine.store().blobs(),
        machine: &machine,
        trigger: Trigger::Manual,
        cause: None,
        cache: &Default::default(),
    };
    let code = |p: &str| engine.code_copy(&plan, p);
    let run_dir = dir.join("data/work/1");
    let mut kinds = Vec::new();
    for (ix, id) in plan.ids.iter().enumerate() {
        let stem = dir.join("data/attempts/1").join(format!("{id}.0.1"));
        let folder = plan.steps[ix].kind.hooks().attempt_folder();
        let files = AttemptFiles::at(run_dir.clone(), &stem, folder);
        let (r, _) = request(&view, ix as u32, None, 1, files.clone(), &code).unwrap();
        assert_eq!(r.files, files);
        let back: AttemptRequest = serde_json::from_value(serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(back, r, "{id}");
        kinds.push(r);
    }
    let ExecSpec::Process(p) = &kinds[0].spec else { panic!("{:?}", kinds[0].spec) };
    assert_eq!(p.argv, ["sh", "-c", "echo v1"]);
    assert_eq!(kinds[0].env["MODE"], "v1");
    let ExecSpec::Container(c) = &kinds[1].spec else { panic!() };
    assert_eq!(c.image, "busybox:v1");
    assert_eq!(kinds[1].inputs[0].name, "data.csv");
    assert!(
        kinds[1].files.outputs_file.starts_with(&kinds[1].files.attempt_dir),
        "a container's outputs are in its folder"
    );
    let ExecSpec::Wasm(w) = &kinds[2].spec else { panic!() };
    assert_eq!(w.input["config"]["tag"], "v1");
    assert_eq!(w.input["inputs"]["data.csv"], "/inputs/data.csv");
    assert!(
        w.module.starts_with(dir.join("data/code")),
        "the plugin runs the run's copy: {}",
        w.module.display()
    );
    let ExecSpec::Train(t) = &kinds[3].spec else { panic!() };
    assert_eq!(t.output, run_dir.join("fit"));
}

/// A DAG version stored before plans were (format 1) still drives, shows and resumes its
/// runs: its stored text is compiled once.
#[tokio::test]
async fn a_run_whose_version_has_no_stored_plan_still_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let plan = compile_in(
        tmp.path(),
        "name: old\nsteps:\n  a: {process: {command: [\"true\"]}}\n  b: {process: {command: [\"true\"]}, needs: [a]}\n",
    );
    let id = {
        let engine = Engine::open(EngineOptions::new(tmp.path().join("data"))).unwrap();
        let id = engine.create_run(&plan, Map::new(), Trigger::Manual).unwrap();
        // Rewrite the version as format 1 wrote it.
        let mut dag: DagRecord = engine.store().dag(&plan.hash).unwrap();
        dag.v = 1;
        dag.plan = None;
        engine.store().replace_dag(&dag).unwrap();
        engine.store().flush().unwrap();
        id
    };
    let engine = Engine::open(EngineOptions::new(tmp.path().join("data"))).unwrap();
    let states = engine.drive(&[id], None, tokio::sync::watch::channel(0).1).await.unwrap();
    assert_eq!(states[&id], RunState::Succeeded);
    let report = engine.report(id).unwrap();
    assert_eq!(report.dag, plan.hash);
    assert_eq!(report.steps.len(), 2);
    // It compiled to the same version, so the version now keeps its plan.
    let dag = engine.store().dag(&plan.hash).unwrap();
    assert_eq!(dag.v, crate::store::FORMAT_VERSION);
    assert_eq!(dag.plan.map(|p| p.hash), Some(plan.hash.clone()));
}

#[test]
fn code_copies_taken_at_once_all_succeed_and_keep_the_file_name() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("p.wat"),
        "(module (memory (export \"memory\") 1) (func (export \"_start\")))",
    )
    .unwrap();
    let plan = compile_in(tmp.path(), "name: c\nsteps:\n  a: {wasm: {module: p.wat}}\n");
    let engine = Engine::open(EngineOptions::new(tmp.path().join("data"))).unwrap();
    std::thread::scope(|s| {
        let copies: Vec<_> = (0..8).map(|_| s.spawn(|| engine.code_copy(&plan, "p.wat"))).collect();
        for c in copies {
            let path = c.join().unwrap().unwrap();
            assert_eq!(path.file_name().unwrap(), "p.wat");
            assert!(std::fs::metadata(&path).unwrap().permissions().readonly());
        }
    });
    let left: Vec<_> = std::fs::read_dir(tmp.path().join("data/code").join(&plan.code[0].sha256))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["p.wat"], "no temporary file is left behind");
}
