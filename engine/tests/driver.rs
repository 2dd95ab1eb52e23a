//! The driver on a real sled store and real processes, without the CLI.

use std::path::Path;

use sluice_engine::compile::compile_source;
use sluice_engine::driver::{Engine, EngineOptions, Notice};
use sluice_engine::scheduler::{RunState, StepState};
use sluice_engine::syntax::Format;

fn plan(text: &str) -> std::sync::Arc<sluice_engine::compile::Plan> {
    std::sync::Arc::new(
        compile_source(Path::new("t.yaml"), Path::new("."), text, Format::Yaml).expect("valid spec"),
    )
}

#[tokio::test]
async fn drives_a_run_when_nobody_can_ask_it_to_stop() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineOptions::new(dir.path())).unwrap();
    let p = plan(
        "name: t\nsteps:\n  a: { process: { command: [\"true\"] } }\n  b: { needs: [a], process: { command: [\"true\"] } }\n",
    );
    let id = engine.create_run(&p, Default::default(), sluice_engine::store::Trigger::Manual).unwrap();
    // The stop sender is gone at once: the driver must neither spin nor stop.
    let stop = tokio::sync::watch::channel(0u32).1;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let states = engine.drive(&[id], Some(tx), stop).await.unwrap();
    assert_eq!(states[&id], RunState::Succeeded);
    let mut seen = Vec::new();
    while let Ok(n) = rx.try_recv() {
        seen.push(n);
    }
    assert!(seen.contains(&Notice::Step {
        run: id,
        step: "b".into(),
        state: StepState::Succeeded,
        attempt: 1
    }));
    assert_eq!(seen.last(), Some(&Notice::Run { run: id, state: RunState::Succeeded }));
    // Everything is durable: a fresh engine sees the finished run.
    drop(engine);
    let engine = Engine::open(EngineOptions::new(dir.path())).unwrap();
    assert_eq!(engine.store().run(id).unwrap().state, RunState::Succeeded);
    assert!(engine.orphaned_runs().unwrap().is_empty());
}

#[tokio::test]
async fn a_stop_request_interrupts_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineOptions::new(dir.path())).unwrap();
    let p = plan("name: t\nsteps:\n  slow: { process: { shell: 'sleep 30 & wait' } }\n");
    let id = engine.create_run(&p, Default::default(), sluice_engine::store::Trigger::Manual).unwrap();
    let (stop_tx, stop) = tokio::sync::watch::channel(0u32);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let runs = [id];
    let driving = engine.drive(&runs, Some(tx), stop);
    let stopper = async {
        while let Some(n) = rx.recv().await {
            if matches!(n, Notice::Step { state: StepState::Running, .. }) {
                stop_tx.send_modify(|n| *n += 1);
            }
        }
    };
    let (states, ()) = tokio::join!(driving, stopper);
    assert_eq!(states.unwrap()[&id], RunState::Interrupted);
    assert_eq!(engine.interrupted_runs().unwrap(), vec![id]);
}

#[tokio::test]
async fn cancel_kills_running_attempts_and_cancels_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(EngineOptions::new(dir.path())).unwrap();
    let p = plan(
        "name: t\nsteps:\n  slow: { process: { shell: 'sleep 30 & wait' } }\n  after: { needs: [slow], process: { command: [\"true\"] } }\n",
    );
    let id = engine.create_run(&p, Default::default(), sluice_engine::store::Trigger::Manual).unwrap();
    let (_stop_tx, stop) = tokio::sync::watch::channel(0u32);
    let (ctl_tx, ctl) = tokio::sync::mpsc::unbounded_channel();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let runs = [id];
    let driving = engine.drive_with(&runs, Some(tx), stop, ctl);
    let canceller = async {
        while let Some(n) = rx.recv().await {
            if matches!(n, Notice::Step { state: StepState::Running, .. }) {
                ctl_tx.send(sluice_engine::driver::Control::Cancel(id)).unwrap();
            }
        }
    };
    let started = std::time::Instant::now();
    let (states, ()) = tokio::join!(driving, canceller);
    assert_eq!(states.unwrap()[&id], RunState::Cancelled);
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "the sleep was killed");
    let record = engine.store().run(id).unwrap();
    assert_eq!(record.state, RunState::Cancelled);
    assert!(engine.orphaned_runs().unwrap().is_empty() && engine.interrupted_runs().unwrap().is_empty());
}
