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
    /// Run every `process:` step as a batch job on Slurm, in this partition unless its
    /// `slurm:` block names another (`sbatch`, `squeue` and `scancel` on PATH; the data
    /// folder on a file system the cluster's nodes mount).
    #[arg(long, value_name = "PARTITION", env = "SLUICE_SLURM")]
    slurm: Option<String>,
    /// How much of an attempt's log is kept from its start, as `64Mi`; past it, the last MiB
    /// of each stream is kept, with a note of what was dropped.
    #[arg(long, value_parser = parse_size, default_value = "64Mi")]
    log_limit: u64,
    /// No run starts while the data folder's disk has less free than this, as `64Mi`.
    #[arg(long, value_parser = parse_size, default_value = "64Mi")]
    min_free_space: u64,
    /// Send OpenLineage run events (START, COMPLETE, FAIL per run and per task) to this HTTP
    /// endpoint (a URL without a path gets `/api/v1/lineage`); never blocks a run.
    #[arg(long, value_name = "URL", conflicts_with = "openlineage_file")]
    openlineage_url: Option<String>,
    /// Append OpenLineage run events to this file, one JSON object per line.
    #[arg(long, value_name = "PATH")]
    openlineage_file: Option<PathBuf>,
    /// The namespace of Sluice's jobs in OpenLineage events.
    #[arg(long, value_name = "NAME", default_value = "sluice")]
    openlineage_namespace: String,
    /// The instance's ed25519 signing key (PKCS#8 PEM, mode 0600), which signs audit
    /// checkpoints and provenance (default: <data dir>/keys/signing.key, made on first start).
    #[arg(long, value_name = "FILE", env = "SLUICE_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
    /// The data folder's encryption key (64 hex digits, mode 0600; `sluice key generate`):
    /// step logs and artifacts are kept encrypted with it. A folder once opened with a key
    /// needs it from then on, for every command.
    #[arg(long, value_name = "FILE", env = "SLUICE_ENCRYPTION_KEY_FILE")]
    encryption_key_file: Option<PathBuf>,
    /// Sign the audit log's head every this many entries (and at shutdown).
    #[arg(long, value_name = "N", default_value_t = sluice_engine::driver::AUDIT_EVERY)]
    audit_every: u64,
    /// Also append the audit checkpoints to this file, outside the store, where truncating
    /// the log cannot reach it (default: <data dir>/audit/checkpoints.jsonl).
    #[arg(long, value_name = "PATH", env = "SLUICE_AUDIT_FILE")]
    audit_file: Option<PathBuf>,
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
    /// Reuse no cached result and store none: every step runs.
    #[arg(long)]
    no_cache: bool,
    /// Run this step even if the cache holds its result, and store its new one (repeat for
    /// several).
    #[arg(long, value_name = "STEP", conflicts_with = "no_cache")]
    refresh: Vec<String>,
    /// A tag of the run, as KEY=VALUE (searched as `tags.KEY`; repeat for several).
    #[arg(long = "tag", value_parser = parse_kv)]
    tags: Vec<(String, String)>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// Checks `--tag` values: MLflow's key rule.
pub(crate) fn tags_of(
    tags: &[(String, String)],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    for (k, v) in tags {
        sluice_engine::tracking::check_key("tag", k).map_err(|e| anyhow::anyhow!("--tag {k}: {e}"))?;
        sluice_engine::tracking::check_text("tag", k, v, sluice_engine::tracking::MAX_TAG_VALUE)
            .map_err(|e| anyhow::anyhow!("--tag {k}: {e}"))?;
    }
    Ok(tags.iter().cloned().collect())
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
    if let Some(p) = &args.slurm {
        anyhow::ensure!(
            !p.trim().is_empty() && !p.chars().any(char::is_whitespace),
            "--slurm takes a partition name (one word), not {p:?}"
        );
        opts.slurm = Some(p.clone());
    }
    let target = match (&args.openlineage_url, &args.openlineage_file) {
        (Some(url), _) => Some(sluice_engine::driver::LineageTarget::Http(url.clone())),
        (None, Some(file)) => Some(sluice_engine::driver::LineageTarget::File(file.clone())),
        (None, None) => None,
    };
    opts.openlineage = target.map(|target| sluice_engine::driver::LineageOptions {
        target,
        namespace: args.openlineage_namespace.clone(),
    });
    opts.signing_key = args.signing_key.clone();
    opts.encryption_key = args.encryption_key_file.clone();
    opts.may_encrypt = true;
    opts.audit_every = args.audit_every;
    opts.audit_file = args.audit_file.clone();
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
    for step in &args.refresh {
        anyhow::ensure!(plan.index.contains_key(step), "--refresh {step}: the pipeline has no step `{step}`");
    }
    let mut new = sluice_engine::driver::NewRun::new(params, sluice_engine::store::Trigger::Manual);
    new.cache = sluice_engine::store::RunCache { off: args.no_cache, refresh: args.refresh.clone() };
    new.tags = tags_of(&args.tags)?;
    let id = match engine.create_run_with(&plan, new)? {
        sluice_engine::driver::Created::Run(id) => id,
        sluice_engine::driver::Created::Held { run } => anyhow::bail!("run {run} holds this run's key"),
    };
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

pub(crate) fn resume(
    data_dir: &Path,
    server: Option<&str>,
    output: Output,
    args: ResumeArgs,
) -> anyhow::Result<ExitCode> {
    let engine = match open(data_dir, &args.engine) {
        Err(e) if super::inspect::locked(&e) && super::client::server_url(data_dir, server).is_some() => {
            return super::client::resume(data_dir, server, output, &args.runs);
        }
        other => other?,
    };
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
    for id in &runs {
        let action = sluice_engine::security::audit::Action::new(
            sluice_engine::security::local_actor(),
            "run.resume",
            format!("run:{id}"),
        );
        engine.audit(action)?;
    }
    engine.store().flush()?;
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
    for id in &ids {
        let action = sluice_engine::security::audit::Action::new(
            sluice_engine::security::local_actor(),
            "run.cancel",
            format!("run:{id}"),
        );
        engine.audit(action)?;
    }
    let states = runtime()?.block_on(engine.cancel_idle(&ids))?;
    let states: Vec<(u64, RunState)> = ids.iter().map(|r| (*r, states[r])).collect();
    report(&engine, output, &states)?;
    Ok(ExitCode::SUCCESS)
}
