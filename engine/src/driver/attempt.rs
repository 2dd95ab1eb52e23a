//! Carrying out one attempt: its files, its request (rendered from the run's state), the
//! executor in a task of its own, and its result turned into the [`Done`] the run loop feeds
//! to the run's machine.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use sluice_worker::{
    AttemptFiles, AttemptOutcome, AttemptSink, ErrorKind, ExecError, ExecutorSet, KillSwitch, LogStream,
};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::Engine;
use super::cache;
use super::openlineage::{self, LineageState, TaskLineage};
use super::provenance::Provenance;
use super::render::{self, ArtifactPlan, RunView};
use super::sink::StoreSink;
use super::tracking::AttemptTracking;
use crate::artifacts::{self, Blobs, DatasetVersion};
use crate::compile::Plan;
use crate::scheduler::{Outcome, Produced, StepIx};
use crate::security::secrets::Redactor;
use crate::store::{AttemptKey, CacheEntry};
use crate::tracking::RunStatus;

/// How an attempt ended, for the run loop.
pub(super) struct Done {
    pub(super) run: u64,
    pub(super) step: StepIx,
    pub(super) item: u32,
    pub(super) attempt: u32,
    pub(super) outcome: Outcome,
    /// The step cache's entry for this result, stored with it.
    pub(super) cache: Option<CacheEntry>,
}

/// What an attempt's task did: ran its executor (with what to store in the cache if it
/// succeeds), or took its result from the cache.
enum Ran {
    /// With the dataset versions it read, and its tracking (once its executor started).
    Executed(AttemptOutcome, Option<Box<cache::ToStore>>, Vec<DatasetVersion>, Option<Box<AttemptTracking>>),
    Reused(Outcome),
}

/// What a started attempt leaves with the run loop: how to stop it, and its log.
pub(super) type Running = (KillSwitch, Arc<StoreSink>);

/// The run's folder of attempt files.
fn attempts_dir(data_dir: &Path, run: u64) -> PathBuf {
    data_dir.join("attempts").join(run.to_string())
}

/// Where an attempt's files go: `<step>.<item>.<attempt>.*` in the run's attempts folder.
/// Plain files, not a folder per attempt (unless its kind mounts one): a mkdir per attempt
/// was the largest cost of the engine's own work per step (ext4 inode allocation).
fn stem(data_dir: &Path, run: u64, plan: &Plan, step: StepIx, item: u32, attempt: u32) -> PathBuf {
    attempts_dir(data_dir, run).join(format!("{}.{item}.{attempt}", plan.id(step)))
}

/// Where an attempt records its OS process (for a restarted engine to stop it).
pub(super) fn process_file(
    data_dir: &Path,
    run: u64,
    plan: &Plan,
    step: StepIx,
    item: u32,
    attempt: u32,
) -> PathBuf {
    with_suffix(&stem(data_dir, run, plan, step, item, attempt), ".process.json")
}

/// Makes the run's shared folder and its attempts folder, once per run (`made` remembers).
pub(super) fn run_folders(data_dir: &Path, run: u64, made: &mut bool) -> Result<(), String> {
    if *made {
        return Ok(());
    }
    std::fs::create_dir_all(data_dir.join("work").join(run.to_string()))
        .and_then(|_| std::fs::create_dir_all(attempts_dir(data_dir, run)))
        .map_err(|e| format!("cannot create the attempt folders under {}: {e}", data_dir.display()))?;
    *made = true;
    Ok(())
}

/// One attempt to start.
pub(super) struct Start<'a> {
    pub(super) engine: &'a Engine,
    pub(super) executors: &'a ExecutorSet,
    pub(super) results: &'a mpsc::UnboundedSender<Done>,
    pub(super) view: RunView<'a>,
    pub(super) item: Option<&'a Value>,
    /// The run's span: the attempt's is its child.
    pub(super) span: &'a tracing::Span,
    /// Whether the run's folders are there.
    pub(super) folders: Result<(), String>,
    /// A Slurm attempt of this task an earlier engine left running.
    pub(super) adopt: Option<u32>,
}

/// Whether a step runs on Slurm: it has a `slurm:` block (its own or its pipeline's
/// defaults), or the engine has `--slurm PARTITION` and its kind can.
pub(super) fn on_slurm(engine: &Engine, plan: &Plan, step: StepIx) -> bool {
    let ps = &plan.steps[step as usize];
    ps.spec.slurm.is_some() || (engine.opts.slurm.is_some() && ps.kind.hooks().runs_on_slurm())
}

/// The `slurm:` settings of a step, when it runs on Slurm ([`on_slurm`]), with the engine's
/// partition when it names none.
pub(super) fn slurm_block(engine: &Engine, plan: &Plan, step: StepIx) -> Option<crate::spec::SlurmBlock> {
    let ps = &plan.steps[step as usize];
    let default = engine.opts.slurm.as_ref();
    match &ps.spec.slurm {
        Some(block) => {
            let mut block = block.clone();
            block.partition = block.partition.or_else(|| default.cloned());
            Some(block)
        }
        None if ps.kind.hooks().runs_on_slurm() => {
            default.map(|p| crate::spec::SlurmBlock { partition: Some(p.clone()), ..Default::default() })
        }
        None => None,
    }
}

/// Whether an attempt was given to Slurm (its job script was written): so is the next
/// attempt of a task whose engine stopped, whatever this engine's `--slurm`.
pub(super) fn went_to_slurm(
    data_dir: &Path,
    run: u64,
    plan: &Plan,
    step: StepIx,
    item: u32,
    attempt: u32,
) -> bool {
    with_suffix(&stem(data_dir, run, plan, step, item, attempt), ".slurm.sh").exists()
}

/// Where an attempt runs: on Slurm with its block, resources and timeout, or here.
fn placement(
    engine: &Engine,
    plan: &Plan,
    step: StepIx,
    adopt: Option<sluice_worker::Adopt>,
) -> Option<sluice_worker::Placement> {
    let block = match slurm_block(engine, plan, step) {
        Some(block) => block,
        // Adopting a job an engine started with `--slurm` when this one was not.
        None if adopt.is_some() => crate::spec::SlurmBlock::default(),
        None => return None,
    };
    let core = &plan.core[step as usize];
    let time_limit_s =
        block.time.map(|t| t.0.as_secs().max(1)).or(core.timeout_ms.map(|ms| ms.div_ceil(1000)));
    Some(sluice_worker::Placement::Slurm(sluice_worker::SlurmPlacement {
        partition: block.partition,
        time_limit_s,
        account: block.account,
        qos: block.qos,
        constraint: block.constraint,
        gres: block.gres,
        gpus: core.resources.gpu,
        cpus: core.resources.cpu,
        memory: core.resources.memory,
        extra: block.extra,
        adopt: adopt.map(Box::new),
    }))
}

/// Starts attempt `attempt` of `step`/`item`: renders its request and hands it to its
/// executor in a task of its own, whose result arrives on `results`. An attempt that cannot
/// start reports its failure there at once and returns `None`.
pub(super) fn start(s: Start<'_>, step: StepIx, item: u32, attempt: u32) -> Option<Running> {
    let (run, plan) = (s.view.id, s.view.plan);
    let store = s.engine.store().clone();
    let data_dir = store.dir().to_path_buf();
    let stem = stem(&data_dir, run, plan, step, item, attempt);
    let ps = &plan.steps[step as usize];
    let files = AttemptFiles::at(
        data_dir.join("work").join(run.to_string()),
        &stem,
        ps.kind.hooks().attempt_folder(),
    );
    let code = |path: &str| s.engine.code_copy(plan, path);
    let request = s
        .folders
        .and_then(|_| render::request(&s.view, step, s.item.map(|v| (item, v)), attempt, files, &code));
    let span = tracing::info_span!(
        parent: s.span,
        "attempt",
        run,
        pipeline = plan.name(),
        step = plan.id(step),
        item,
        attempt,
        kind = ps.kind.key()
    );
    let cache_store = store.clone();
    let redact = request.as_ref().map(|(_, c)| c.redact.clone()).unwrap_or_default();
    let sink = Arc::new(
        StoreSink::with_limit(
            store,
            AttemptKey { run, step, item, attempt },
            with_suffix(&stem, ".process.json"),
            s.engine.opts.max_log_bytes,
        )
        .redacting(redact.clone()),
    );
    let (mut request, mut collect) = match request {
        Ok(r) => r,
        Err(message) => {
            let _in = span.enter();
            tracing::warn!(error = %message, "cannot start the attempt");
            sink.log(LogStream::System, format!("sluice: {message}\n").as_bytes());
            let outcome = Outcome::Failed { retryable: false, message };
            let _ = s.results.send(Done { run, step, item, attempt, outcome, cache: None });
            return None;
        }
    };
    let adopt = s.adopt.map(|lost| sluice_worker::Adopt {
        attempt: lost,
        files: AttemptFiles::at(
            request.files.run_dir.clone(),
            &self::stem(&data_dir, run, plan, step, item, lost),
            ps.kind.hooks().attempt_folder(),
        ),
    });
    request.placement = placement(s.engine, plan, step, adopt);
    let probe = cache::Probe::plan(&s.view, step, s.item.map(|v| (item, v)), &request, &collect);
    let mut inputs = std::mem::take(&mut collect.inputs);
    if probe.is_some() {
        // The files the kind reads enter the key by content (and the lineage with it).
        inputs.extend(cache::Probe::kind_files(&request, &data_dir));
    }
    let reads = Reads {
        store: s.engine.store().clone(),
        step_ix: step,
        pipeline: plan.name().to_string(),
        inputs,
        base: collect.base.clone(),
        consumed: std::mem::take(&mut collect.consumed),
        at: s.engine.now_ms(),
        id: (run, plan.id(step).to_string(), item, attempt),
    };
    let lineage = s.engine.lineage().map(|emitter| {
        Arc::new(TaskLineage {
            emitter: emitter.clone(),
            run_id: openlineage::task_run_id(&data_dir, run, plan.id(step), item, attempt),
            parent: (openlineage::dag_run_id(&data_dir, run), plan.name().to_string()),
            job: format!("{}.{}", plan.name(), plan.id(step)),
            data_dir: data_dir.clone(),
            inputs: Default::default(),
        })
    });
    let (start_lineage, end_lineage) = (lineage.clone(), lineage);
    let upstream: Vec<String> = match &start_lineage {
        Some(_) => reads.consumed.iter().map(|c| c.digest.clone()).collect(),
        None => Vec::new(),
    };
    let outputs_at = (collect.folder.clone(), collect.declared.clone());
    let blobs = s.engine.store().blobs();
    let task = crate::tracking::TaskRef {
        run,
        pipeline: plan.name().to_string(),
        step: plan.id(step).to_string(),
        step_ix: step,
        item,
        attempt,
    };
    let tracking_store = s.engine.store().clone();
    let metrics_file = request.files.metrics_file.clone();
    let api = s.engine.api.get().cloned();
    let attempt_tokens = s.engine.attempt_tokens.clone();
    let (open, open_blobs) = (std::mem::take(&mut collect.open), blobs.clone());
    // The step's own outputs file is removed once its outputs are stored when they may hold
    // a secret (masked in the store) or the folder is encrypted (the file would not be).
    let outputs_file = (!redact.is_empty() || s.engine.store().encrypted())
        .then(|| (request.files.outputs_file.clone(), request.files.metrics_file.clone()));
    // Only an attempt that declares artifacts has provenance to sign.
    let provenance = (!collect.declared.is_empty())
        .then(|| Provenance::of(s.engine, &s.view, (step, item, attempt), &request.spec, &reads.consumed));
    let (switch, kill_rx) = KillSwitch::new();
    let declared = ps.spec.outputs.clone();
    let executors = s.executors.clone();
    let results = s.results.clone();
    let clock = s.engine.clock().clone();
    let fault = s.engine.opts.fault;
    let source = (plan.name().to_string(), plan.id(step).to_string());
    let task_clock = clock.clone();
    let (attempt_sink, log) = (sink.clone(), sink.clone());
    let work = tokio::spawn(
        async move {
            let mut datasets = Vec::new();
            if reads.any() {
                let sink = attempt_sink.clone();
                match tokio::task::spawn_blocking(move || reads.record(sink.as_ref())).await {
                    Ok(Ok(read)) => datasets = read,
                    Ok(Err((true, message))) => {
                        return Ran::Executed(
                            AttemptOutcome::failed(ExecError::retryable(message)),
                            None,
                            datasets,
                            None,
                        );
                    }
                    Ok(Err((false, message))) => {
                        return Ran::Executed(
                            AttemptOutcome::failed(ExecError::fatal(message)),
                            None,
                            datasets,
                            None,
                        );
                    }
                    Err(e) => {
                        let message = format!("hashing the step's inputs crashed: {e}");
                        return Ran::Executed(
                            AttemptOutcome::failed(ExecError::retryable(message)),
                            None,
                            datasets,
                            None,
                        );
                    }
                }
            }
            if let Some(l) = &start_lineage {
                let mut inputs: Vec<serde_json::Value> =
                    datasets.iter().map(|d| openlineage::file_dataset(&d.path, &d.digest)).collect();
                inputs.extend(upstream.iter().map(|d| l.artifact(d)));
                if let Ok(mut kept) = l.inputs.lock() {
                    *kept = inputs;
                }
                l.send(LineageState::Start, task_clock.now_ms(), Vec::new(), None);
            }
            let mut keep = None;
            if let Some(probe) = probe {
                let store = cache_store;
                match cache::lookup(
                    probe,
                    &datasets,
                    &store,
                    &executors,
                    attempt_sink.as_ref(),
                    task_clock.now_ms(),
                )
                .await
                {
                    cache::Looked::Hit(outcome) => return Ran::Reused(outcome),
                    cache::Looked::Run(to_store) => keep = to_store,
                }
            }
            // Upstream artifacts of an encrypted folder, decrypted for the attempt while it
            // runs (removed when it ends).
            let mut _opened = Vec::new();
            if !open.is_empty() {
                let opening = move || {
                    open.iter()
                        .map(|(digest, file)| {
                            open_blobs.open(digest, file).map_err(|e| {
                                let message = format!("cannot read upstream artifact {digest} ({file}): {e}");
                                if e.is_damaged() {
                                    ExecError::fatal(message)
                                } else {
                                    ExecError::retryable(message)
                                }
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                };
                match tokio::task::spawn_blocking(opening).await {
                    Ok(Ok(leases)) => _opened = leases,
                    Ok(Err(e)) => return Ran::Executed(AttemptOutcome::failed(e), None, datasets, None),
                    Err(e) => {
                        let message = format!("decrypting the step's upstream artifacts crashed: {e}");
                        return Ran::Executed(
                            AttemptOutcome::failed(ExecError::retryable(message)),
                            None,
                            datasets,
                            None,
                        );
                    }
                }
            }
            unlink_stored(&outputs_at.0, &outputs_at.1);
            tracing::debug!("the attempt starts");
            let mut request = request;
            let log = attempt_sink.clone();
            let mut tracking = AttemptTracking::start(
                tracking_store,
                attempt_tokens,
                task,
                metrics_file,
                task_clock.now_ms(),
                log.as_ref(),
            );
            if let (Some(id), Some(token), Some(api)) = (&tracking.run_id, tracking.token(), &api) {
                tracking_env(&mut request, id, api, token);
            }
            let executor = executors.for_request(&request);
            let execution = executor.execute(request, attempt_sink, kill_rx);
            tokio::pin!(execution);
            // The metrics file is read as it grows while the step runs, and once more at its end.
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(METRICS_POLL_MS));
            let outcome = loop {
                tokio::select! {
                    outcome = &mut execution => break outcome,
                    _ = tick.tick() => tracking.poll(log.as_ref(), task_clock.now_ms(), false),
                }
            };
            tracking.poll(log.as_ref(), task_clock.now_ms(), true);
            Ran::Executed(outcome, keep, datasets, Some(Box::new(tracking)))
        }
        .instrument(span.clone()),
    );
    let executors = s.executors.clone();
    tokio::spawn(
        async move {
            let (result, keep, datasets, tracking) = match work.await {
                Ok(Ran::Executed(result, keep, datasets, tracking)) => (result, keep, datasets, tracking),
                Ok(Ran::Reused(outcome)) => {
                    log.finish();
                    tracing::debug!("attempt reused a cached result");
                    if let Some(l) = &end_lineage {
                        lineage_end(l, &outcome, clock.now_ms());
                    }
                    let _ = results.send(Done { run, step, item, attempt, outcome, cache: None });
                    return;
                }
                // An executor that panics loses its attempt, never the run: report it failed.
                Err(e) => (
                    AttemptOutcome::failed(ExecError::retryable(format!("the executor crashed: {e}"))),
                    None,
                    Vec::new(),
                    None,
                ),
            };
            log.finish();
            let mut outcome = outcome(result, &declared);
            if let Some((file, metrics)) = &outputs_file {
                let _ = std::fs::remove_file(file);
                let _ = std::fs::remove_file(metrics);
            }
            // Metrics a kind reports as outputs (a WASM plugin's).
            if let (Outcome::Succeeded { outputs, .. }, Some(t)) = (&outcome, &tracking) {
                t.record(&super::tracking::reported(outputs, clock.now_ms()), log.as_ref());
            }
            if matches!(outcome, Outcome::Succeeded { .. }) && !collect.declared.is_empty() {
                let blobs = blobs.clone();
                let watch = super::control::placement_watch(fault);
                let kept =
                    tokio::task::spawn_blocking(move || keep_artifacts(&blobs, &collect, &watch)).await;
                match kept {
                    Ok(Ok(list)) => {
                        for a in &list {
                            let line = format!(
                                "sluice: artifact `{}` ({}) stored as {} ({} bytes)\n",
                                a.name, a.file, a.digest, a.size
                            );
                            log.log(LogStream::System, line.as_bytes());
                        }
                        let signed = match provenance {
                            Some(p) => p.sign(&list, &datasets, &executors, clock.now_ms()).await,
                            None => Ok(()),
                        };
                        match signed {
                            Ok(()) => {
                                if let Outcome::Succeeded { artifacts, .. } = &mut outcome {
                                    *artifacts = list;
                                }
                            }
                            Err(message) => outcome = Outcome::Failed { retryable: true, message },
                        }
                    }
                    Ok(Err((retryable, message))) => outcome = Outcome::Failed { retryable, message },
                    Err(e) => {
                        let message = format!("storing the step's artifacts crashed: {e}");
                        outcome = Outcome::Failed { retryable: true, message };
                    }
                }
            }
            // Masked once everything is known: its outputs, its artifacts' file names (a glob
            // matches what the step chose to name them), and any message, before it is logged.
            if !redact.is_empty() {
                mask_outcome(&redact, &mut outcome);
            }
            match &outcome {
                Outcome::Succeeded { .. } => tracing::debug!("attempt succeeded"),
                Outcome::Failed { message, retryable } => {
                    tracing::info!(error = %message, retryable, "attempt failed");
                    log.log(LogStream::System, format!("sluice: {message}\n").as_bytes());
                }
                Outcome::TimedOut { message } => tracing::info!(error = %message, "attempt timed out"),
                Outcome::Cancelled { message } => tracing::info!(error = %message, "attempt stopped"),
            }
            let mut cache = None;
            if let (Some(keep), Outcome::Succeeded { .. }) = (keep, &outcome) {
                let keep = match keep.image {
                    Some(_) => cache::resolve_late(*keep, &executors).await,
                    None => Some(*keep),
                };
                let from = (source.0.as_str(), source.1.as_str(), run, item, attempt);
                cache = keep.and_then(|k| cache::entry(k, &outcome, clock.now_ms(), from));
            }
            if let Some(l) = &end_lineage {
                lineage_end(l, &outcome, clock.now_ms());
            }
            if let Some(t) = &tracking {
                t.finish(tracking_status(&outcome), clock.now_ms());
            }
            let _ = results.send(Done { run, step, item, attempt, outcome, cache });
        }
        .instrument(span),
    );
    Some((switch, sink))
}

/// Unlinks what sits at the attempt's declared artifact paths when it is the store's copy (a
/// read-only file with other links: an earlier attempt's result, or a cache hit's restore), so
/// that the step writes a new file instead of failing on, or writing into, the stored one.
fn unlink_stored(folder: &Path, declared: &[(String, String)]) {
    use std::os::unix::fs::MetadataExt;
    for (_, path) in declared.iter().filter(|(_, p)| !artifacts::is_glob(p)) {
        let at = folder.join(path);
        if let Ok(meta) = std::fs::symlink_metadata(&at)
            && meta.is_file()
            && meta.nlink() > 1
            && meta.permissions().readonly()
        {
            let _ = std::fs::remove_file(&at);
        }
    }
}

/// An attempt's end in OpenLineage: COMPLETE with what it made, FAIL, or ABORT.
fn lineage_end(l: &TaskLineage, outcome: &Outcome, at: i64) {
    match outcome {
        Outcome::Succeeded { artifacts, .. } => {
            let outputs = artifacts.iter().map(|a| l.artifact(&a.digest)).collect();
            l.send(LineageState::Complete, at, outputs, None);
        }
        Outcome::Failed { message, .. } | Outcome::TimedOut { message } => {
            l.send(LineageState::Fail, at, Vec::new(), Some(message))
        }
        Outcome::Cancelled { message } => l.send(LineageState::Abort, at, Vec::new(), Some(message)),
    }
}

/// Masks the pipeline's secrets in an outcome: its outputs and its message.
fn mask_outcome(redact: &Redactor, outcome: &mut Outcome) {
    match outcome {
        Outcome::Succeeded { outputs, artifacts, .. } => {
            let mut value = Value::Object(std::mem::take(outputs));
            redact.json(&mut value);
            if let Value::Object(map) = value {
                *outputs = map;
            }
            for a in artifacts {
                a.file = redact.text(&a.file);
            }
        }
        Outcome::Failed { message, .. } | Outcome::TimedOut { message } | Outcome::Cancelled { message } => {
            *message = redact.text(message)
        }
    }
}

/// How an executor's outcome counts for the run: its error classified, its declared outputs
/// checked.
fn outcome(result: AttemptOutcome, declared: &[String]) -> Outcome {
    match result.result {
        Ok(()) => match declared.iter().find(|d| !result.outputs.contains_key(*d)) {
            Some(missing) => Outcome::Failed {
                retryable: false,
                message: format!(
                    "the step declares output `{missing}` but did not write it to SLUICE_OUTPUTS"
                ),
            },
            None => Outcome::succeeded(result.outputs),
        },
        Err(e) => match e.kind {
            ErrorKind::Retryable => Outcome::Failed { retryable: true, message: e.message },
            ErrorKind::Fatal => Outcome::Failed { retryable: false, message: e.message },
            ErrorKind::Timeout => Outcome::TimedOut { message: e.message },
            ErrorKind::Cancelled => Outcome::Cancelled { message: e.message },
        },
    }
}

/// What an attempt reads, to record when it starts: its `inputs:` (hashed then) and its
/// upstream steps' artifacts.
struct Reads {
    store: crate::store::Store,
    step_ix: StepIx,
    pipeline: String,
    inputs: Vec<String>,
    base: PathBuf,
    consumed: Vec<crate::store::ConsumedArtifact>,
    at: i64,
    /// (run, step, item, attempt)
    id: (u64, String, u32, u32),
}

impl Reads {
    fn any(&self) -> bool {
        !self.inputs.is_empty() || !self.consumed.is_empty()
    }

    /// Hashes the inputs (a missing one fails the attempt for good) and records the reads.
    fn record(self, log: &dyn AttemptSink) -> Result<Vec<DatasetVersion>, (bool, String)> {
        let (datasets, stats) =
            artifacts::hash_inputs(&self.base, &self.inputs, &self.store).map_err(|m| (false, m))?;
        for d in &datasets {
            let files = if d.files == 1 { String::new() } else { format!(", {} files", d.files) };
            let line = format!("sluice: input {} is {} ({} bytes{files})\n", d.path, d.digest, d.size);
            log.log(LogStream::System, line.as_bytes());
        }
        if stats.indexed > 0 {
            let total = stats.indexed + stats.hashed;
            let line = format!(
                "sluice: {} of {total} input files unchanged since they were last hashed (not read again)\n",
                stats.indexed
            );
            log.log(LogStream::System, line.as_bytes());
        }
        let (run, step, item, attempt) = self.id;
        let record = crate::store::ConsumedRecord {
            v: crate::store::FORMAT_VERSION,
            run,
            pipeline: self.pipeline,
            step,
            step_ix: self.step_ix,
            item,
            attempt,
            at: self.at,
            datasets,
            artifacts: self.consumed,
        };
        self.store
            .put_consumed(self.step_ix, &record)
            .map_err(|e| (true, format!("cannot record the step's inputs: {e}")))?;
        Ok(record.datasets)
    }
}

/// Finds the files an attempt declared and places them in the artifact store. A declared file
/// that is missing or leads out of the work folder fails the step for good; a store that
/// cannot take it, for this attempt.
fn keep_artifacts(
    blobs: &Blobs,
    plan: &ArtifactPlan,
    watch: &dyn Fn(artifacts::Stage),
) -> Result<Vec<Produced>, (bool, String)> {
    let found = artifacts::resolve(&plan.folder, &plan.declared).map_err(|m| (false, m))?;
    found
        .into_iter()
        .map(|d| {
            let placed = blobs
                .place_watched(&d.path, watch)
                .map_err(|e| (true, format!("cannot store artifact `{}` ({}): {e}", d.name, d.file)))?;
            Ok(Produced {
                media_type: artifacts::media_type(&d.file),
                name: d.name,
                file: d.file,
                digest: placed.digest,
                size: placed.size,
            })
        })
        .collect()
}

/// How often a running step's metrics file is read.
const METRICS_POLL_MS: u64 = 250;

/// A tracking run's status for an attempt's outcome.
fn tracking_status(outcome: &Outcome) -> RunStatus {
    match outcome {
        Outcome::Succeeded { .. } => RunStatus::Finished,
        Outcome::Failed { .. } | Outcome::TimedOut { .. } => RunStatus::Failed,
        Outcome::Cancelled { .. } => RunStatus::Killed,
    }
}

/// What a process or container step needs to reach its tracking run with MLflow's client,
/// while a server owns the folder: the server's address, the run's id and a token that stands
/// while the attempt runs.
fn tracking_env(
    request: &mut sluice_worker::AttemptRequest,
    id: &str,
    api: &super::ApiAccess,
    token: String,
) {
    use sluice_worker::ExecSpec;
    if !matches!(request.spec, ExecSpec::Process(_) | ExecSpec::Container(_)) {
        return;
    }
    request.env.insert("MLFLOW_RUN_ID".into(), id.to_string());
    request.env.insert("MLFLOW_TRACKING_URI".into(), api.url.clone());
    request.env.insert("MLFLOW_TRACKING_TOKEN".into(), token);
    if let Some(ca) = &api.ca {
        request.env.insert("MLFLOW_TRACKING_SERVER_CERT_PATH".into(), ca.display().to_string());
    }
}

fn with_suffix(stem: &Path, suffix: &str) -> PathBuf {
    let mut name = stem.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
