//! `sluice run` and `sluice resume`: drive runs in the foreground.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use sluice_engine::driver::{Engine, EngineOptions, Fault};
use sluice_engine::scheduler::RunState;
use sluice_engine::syntax::ByteSize;
use tokio::sync::{mpsc, watch};

use super::{parse_run_id, progress};
use crate::Output;

/// Settings of the engine process.
#[derive(clap::Args)]
pub(crate) struct EngineArgs {
    /// The most attempts that may run at once, over every run.
    #[arg(long)]
    max_parallel: Option<u32>,
    /// The size of the cpu slot pool (default: 4 per core).
    #[arg(long)]
    cpu_slots: Option<u32>,
    /// The size of the memory pool, as `16Gi` (default: this machine's memory).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// The number of GPUs steps may ask for.
    #[arg(long)]
    gpus: Option<u32>,
    /// How long a stopping step gets after SIGTERM before SIGKILL.
    #[arg(long, value_parser = humantime_duration, default_value = "10s")]
    grace: Duration,
    /// The Docker Engine for container steps (default: DOCKER_HOST, else the local socket).
    #[arg(long)]
    docker_host: Option<String>,
    /// How much of an attempt's log is kept from its start, as `64Mi`; past it, the last MiB
    /// of each stream is kept, with a note of what was dropped.
    #[arg(long, value_parser = parse_size, default_value = "64Mi")]
    log_limit: u64,
    /// No run starts while the data folder's disk has less free than this, as `64Mi`.
    #[arg(long, value_parser = parse_size, default_value = "64Mi")]
    min_free_space: u64,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    ByteSize::parse(s)
}

pub(crate) fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration: {e}"))
}

pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The pipeline file (YAML or JSON).
    file: PathBuf,
    /// A parameter value, as NAME=VALUE (lists and objects as JSON).
    #[arg(long = "param", short = 'p', value_parser = parse_kv)]
    params: Vec<(String, String)>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(clap::Args)]
pub(crate) struct ResumeArgs {
    /// The runs to resume (default: every interrupted or orphaned run).
    runs: Vec<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

pub(crate) fn open(data_dir: &Path, args: &EngineArgs) -> anyhow::Result<Engine> {
    let mut opts = EngineOptions::new(data_dir);
    if let Some(n) = args.max_parallel {
        anyhow::ensure!(n > 0, "--max-parallel must be at least 1");
        opts.capacity.slots = n;
    }
    if let Some(n) = args.cpu_slots {
        opts.capacity.cpu = n;
    }
    if let Some(n) = args.memory {
        opts.capacity.memory = n;
    }
    if let Some(n) = args.gpus {
        opts.capacity.gpu = n;
    }
    opts.grace = args.grace;
    opts.max_log_bytes = args.log_limit;
    opts.min_free_bytes = args.min_free_space;
    opts.docker_host = args.docker_host.clone();
    if let Ok(fault) = std::env::var("SLUICE_FAULT") {
        opts.fault = Some(fault.parse::<Fault>().map_err(|e| anyhow::anyhow!("SLUICE_FAULT: {e}"))?);
    }
    Ok(Engine::open(opts)?)
}

/// A single-threaded runtime: the driver loop and the executors' I/O share one thread, which
/// saves cross-thread wake-ups at every step (the 40-step chain runs about 25% faster) and
/// costs no throughput, since the steps themselves are other processes.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Turns SIGINT/SIGTERM into stop requests: the first is graceful, the second immediate.
pub(crate) fn signals() -> anyhow::Result<watch::Receiver<u32>> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = watch::channel(0u32);
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("sluice: stopping; running steps get a grace period (signal again to stop now)");
            tx.send_modify(|n| *n += 1);
        }
    });
    Ok(rx)
}

async fn drive(
    engine: &Engine,
    runs: &[u64],
    total_steps: u64,
    quiet: bool,
) -> anyhow::Result<Vec<(u64, RunState)>> {
    let stop = signals()?;
    let states = if quiet {
        engine.drive(runs, None, stop).await
    } else {
        let (tx, rx) = mpsc::unbounded_channel();
        let view = tokio::spawn(progress::show(rx, total_steps));
        let states = engine.drive(runs, Some(tx), stop).await;
        let _ = view.await;
        states
    };
    let states = states?;
    Ok(runs.iter().map(|r| (*r, states.get(r).copied().unwrap_or(RunState::Pending))).collect())
}

fn exit_code(states: &[(u64, RunState)]) -> ExitCode {
    if states.iter().any(|(_, s)| *s == RunState::Interrupted) {
        ExitCode::from(130)
    } else if states.iter().all(|(_, s)| *s == RunState::Succeeded) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn report(engine: &Engine, output: Output, states: &[(u64, RunState)]) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for (id, state) in states {
        let rec = engine.store().run(*id)?;
        let took = match (rec.started_at, rec.finished_at) {
            (Some(s), Some(f)) => Some(f - s),
            _ => None,
        };
        if output == Output::Text {
            let took = took.map(|t| format!(" in {}", super::fmt_ms(t))).unwrap_or_default();
            println!("run {id} ({}) {state}{took}", rec.pipeline);
            if *state == RunState::Interrupted {
                println!("  resume it with: sluice resume {id}");
            }
        }
        rows.push(
            serde_json::json!({"run": id, "pipeline": rec.pipeline, "state": state, "duration_ms": took}),
        );
    }
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    }
    Ok(())
}

pub(crate) fn run(data_dir: &Path, output: Output, args: RunArgs) -> anyhow::Result<ExitCode> {
    let plan = super::spec::load(&args.file)?;
    let params =
        plan.spec.resolve_params(&args.params).map_err(|errs| anyhow::anyhow!("{}", errs.join("\n")))?;
    let engine = open(data_dir, &args.engine)?;
    let orphans = engine.orphaned_runs()?;
    let plan = std::sync::Arc::new(plan);
    let id = engine.create_run(&plan, params, sluice_engine::store::Trigger::Manual)?;
    let mut runs = vec![id];
    if !orphans.is_empty() {
        let list: Vec<String> = orphans.iter().map(|r| format!("{r}")).collect();
        eprintln!(
            "sluice: resuming {} run(s) an earlier engine left unfinished: {}",
            orphans.len(),
            list.join(", ")
        );
        runs.extend(orphans);
    }
    let total: u64 = runs.iter().filter_map(|r| engine.store().run(*r).ok()).map(|r| r.steps as u64).sum();
    if !args.engine.quiet && output == Output::Text {
        eprintln!("sluice: run {id} of {} (version {})", plan.name(), plan.short_hash());
    }
    let states =
        runtime()?.block_on(drive(&engine, &runs, total, args.engine.quiet || output == Output::Json))?;
    report(&engine, output, &states[..1])?;
    Ok(exit_code(&states[..1]))
}

pub(crate) fn resume(data_dir: &Path, output: Output, args: ResumeArgs) -> anyhow::Result<ExitCode> {
    let engine = open(data_dir, &args.engine)?;
    let runs: Vec<u64> = if args.runs.is_empty() {
        let mut r = engine.orphaned_runs()?;
        r.extend(engine.interrupted_runs()?);
        r.sort();
        r
    } else {
        let mut ids = Vec::new();
        for text in &args.runs {
            let id = parse_run_id(text)?;
            let rec = engine.store().run(id)?;
            anyhow::ensure!(
                !rec.state.is_terminal(),
                "run {id} already {}; there is nothing to resume",
                rec.state
            );
            ids.push(id);
        }
        ids
    };
    if runs.is_empty() {
        if output == Output::Json {
            println!("[]");
        } else {
            println!("nothing to resume: every run has finished");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let total: u64 = runs.iter().filter_map(|r| engine.store().run(*r).ok()).map(|r| r.steps as u64).sum();
    let states =
        runtime()?.block_on(drive(&engine, &runs, total, args.engine.quiet || output == Output::Json))?;
    report(&engine, output, &states)?;
    Ok(exit_code(&states))
}

pub(crate) fn cancel(data_dir: &Path, output: Output, runs: &[String]) -> anyhow::Result<ExitCode> {
    let engine = Engine::open(EngineOptions::new(data_dir))?;
    let mut ids = Vec::new();
    for text in runs {
        let id = parse_run_id(text)?;
        let rec = engine.store().run(id)?;
        anyhow::ensure!(
            !rec.state.is_terminal(),
            "run {id} already {}; there is nothing to cancel",
            rec.state
        );
        ids.push(id);
    }
    let states = runtime()?.block_on(engine.cancel_idle(&ids))?;
    let states: Vec<(u64, RunState)> = ids.iter().map(|r| (*r, states[r])).collect();
    report(&engine, output, &states)?;
    Ok(ExitCode::SUCCESS)
}
