//! `sluice runs`, `sluice show`, `sluice logs`: reading the store.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde_json::{Value, json};
use sluice_engine::driver::{Engine, EngineOptions};
use sluice_engine::scheduler::{Action, Event, Outcome, PrepareOutcome, TimerKind};

use super::{fmt_ms, fmt_time, parse_run_id};
use crate::Output;

fn open(data_dir: &Path) -> anyhow::Result<Engine> {
    anyhow::ensure!(
        data_dir.join("db").exists(),
        "no Sluice data in {} (run a pipeline first, or pass --data-dir)",
        data_dir.display()
    );
    Ok(Engine::open(EngineOptions::new(data_dir))?)
}

pub(crate) fn runs(data_dir: &Path, output: Output, limit: usize) -> anyhow::Result<ExitCode> {
    let engine = open(data_dir)?;
    let runs: Vec<_> = engine.store().runs()?.into_iter().take(limit).collect();
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs yet");
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<7} {:<24} {:<12} {:<20} {:>9}", "RUN", "PIPELINE", "STATE", "CREATED", "DURATION");
    for r in runs {
        let took = match (r.started_at, r.finished_at) {
            (Some(s), Some(f)) => fmt_ms(f - s),
            _ => "-".into(),
        };
        println!(
            "{:<7} {:<24} {:<12} {:<20} {:>9}",
            format!("r{}", r.id),
            r.pipeline,
            r.state.to_string(),
            fmt_time(r.created_at),
            took
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Default)]
struct StepFacts {
    first_start: Option<i64>,
    last_end: Option<i64>,
    successes: u32,
    error: Option<String>,
    outputs: Vec<(u32, Value)>,
}

pub(crate) fn show(data_dir: &Path, output: Output, run: &str) -> anyhow::Result<ExitCode> {
    let engine = open(data_dir)?;
    let id = parse_run_id(run)?;
    let mut facts: HashMap<u32, StepFacts> = HashMap::new();
    let replayed = engine.replay(id, |plan, e, accepted, actions| match &e.event {
        Event::Admitted { step, .. } => {
            facts.entry(*step).or_default().first_start.get_or_insert(e.at);
        }
        // Only results the run took into account; late results of stale attempts are not.
        Event::Finished { step, item, outcome, .. } if accepted => {
            let f = facts.entry(*step).or_default();
            f.last_end = Some(e.at);
            match outcome {
                Outcome::Succeeded { outputs } => {
                    f.successes += 1;
                    f.error = None;
                    f.outputs.push((*item, Value::Object(outputs.clone())));
                }
                Outcome::Failed { message, .. }
                | Outcome::TimedOut { message }
                | Outcome::Cancelled { message } => f.error = Some(message.clone()),
            }
        }
        Event::Timer { step, kind: TimerKind::Timeout, .. }
            if actions.iter().any(|a| matches!(a, Action::Kill { .. })) =>
        {
            let f = facts.entry(*step).or_default();
            f.last_end = Some(e.at);
            let limit = plan.core[*step as usize].timeout_ms.unwrap_or_default();
            f.error = Some(format!("timed out after {}", fmt_ms(limit as i64)));
        }
        Event::Prepared {
            step,
            outcome: PrepareOutcome::Error { message } | PrepareOutcome::Skip { reason: message },
        } => {
            facts.entry(*step).or_default().error = Some(message.clone());
        }
        Event::Rejected { step, reason, .. } => facts.entry(*step).or_default().error = Some(reason.clone()),
        _ => {}
    })?;
    let (record, plan, machine) = (replayed.record, replayed.plan, replayed.machine);
    let mut steps = Vec::new();
    for (ix, step_id) in plan.ids.iter().enumerate() {
        let ix = ix as u32;
        let tasks = machine.tasks(ix);
        let f = facts.remove(&ix).unwrap_or_default();
        let duration = match (f.first_start, f.last_end) {
            (Some(s), Some(e)) => Some(e - s),
            _ => None,
        };
        let outputs = if plan.steps[ix as usize].spec.map.is_some() {
            let mut o = f.outputs.clone();
            o.sort_by_key(|(i, _)| *i);
            Value::Array(o.into_iter().map(|(_, v)| v).collect())
        } else {
            f.outputs.last().map(|(_, v)| v.clone()).unwrap_or(Value::Null)
        };
        steps.push(json!({
            "id": step_id,
            "state": machine.step_state(ix),
            "attempts": tasks.iter().map(|t| t.attempts).sum::<u32>(),
            "items": tasks.len(),
            "tasks": tasks.iter().enumerate().map(|(i, t)| json!({"item": i, "attempts": t.attempts, "state": task_state(t.state)})).collect::<Vec<_>>(),
            "successes": f.successes,
            "started_at": f.first_start,
            "finished_at": f.last_end,
            "duration_ms": duration,
            "message": f.error,
            "outputs": outputs,
        }));
    }
    if output == Output::Json {
        let doc = json!({
            "run": id, "pipeline": record.pipeline, "version": record.dag, "state": machine.state(),
            "trigger": record.trigger, "params": record.params, "created_at": record.created_at,
            "started_at": record.started_at, "finished_at": record.finished_at, "events": replayed.events,
            "steps": steps,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    let took = match (record.started_at, record.finished_at) {
        (Some(s), Some(f)) => format!(" in {}", fmt_ms(f - s)),
        _ => String::new(),
    };
    println!("run r{id}  {}  {}{took}", record.pipeline, machine.state());
    println!(
        "version {}  trigger {}  created {}",
        &record.dag[..12.min(record.dag.len())],
        record.trigger,
        fmt_time(record.created_at)
    );
    if !record.params.is_empty() {
        println!("params {}", Value::Object(record.params.clone()));
    }
    println!();
    println!("{:<24} {:<16} {:>8} {:>9}  DETAIL", "STEP", "STATE", "ATTEMPTS", "DURATION");
    for s in steps {
        let items = s["items"].as_u64().unwrap_or(0);
        let attempts = if items > 1 {
            format!("{} ({} items)", s["attempts"], items)
        } else {
            s["attempts"].to_string()
        };
        let duration = s["duration_ms"].as_i64().map(fmt_ms).unwrap_or_else(|| "-".into());
        let detail = s["message"].as_str().map(str::to_string).unwrap_or_else(|| match &s["outputs"] {
            Value::Null => String::new(),
            Value::Object(o) if o.is_empty() => String::new(),
            o => format!("outputs {o}"),
        });
        println!(
            "{:<24} {:<16} {:>8} {:>9}  {}",
            s["id"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            attempts,
            duration,
            detail
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn logs(data_dir: &Path, run: &str, step: &str, attempt: Option<u32>) -> anyhow::Result<ExitCode> {
    let engine = open(data_dir)?;
    let id = parse_run_id(run)?;
    let record = engine.store().run(id)?;
    let plan = engine.plan_of(&record)?;
    let Some(ix) = plan.step_ix(step) else {
        anyhow::bail!(
            "run r{id} ({}) has no step `{step}`; its steps are {}",
            record.pipeline,
            plan.ids.join(", ")
        );
    };
    let chunks = engine.store().logs(id, ix)?;
    let chunks: Vec<_> = chunks.into_iter().filter(|c| attempt.is_none_or(|a| a == c.attempt)).collect();
    let several =
        chunks.iter().map(|c| (c.item, c.attempt)).collect::<std::collections::BTreeSet<_>>().len() > 1;
    let mut out = std::io::stdout().lock();
    let mut current = None;
    for c in chunks {
        if several && current != Some((c.item, c.attempt)) {
            current = Some((c.item, c.attempt));
            writeln!(out, "--- item {} attempt {} ---", c.item, c.attempt)?;
        }
        out.write_all(&c.data)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn task_state(state: sluice_engine::scheduler::TaskState) -> &'static str {
    use sluice_engine::scheduler::TaskState;
    match state {
        TaskState::Queued => "queued",
        TaskState::Running { .. } => "running",
        TaskState::Retrying { .. } => "retrying",
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::TimedOut => "timed_out",
        TaskState::Cancelled => "cancelled",
    }
}
