//! Slurm: an attempt placed on a cluster runs as a batch job.
//!
//! `sbatch --parsable` submits it (the items of a mapped step that start together go as one
//! job array), one poller asks `squeue` about every job this engine watches in one query,
//! backing off while nothing changes, and `scancel` stops a job. The job's script, its output
//! files and its exit status are written beside the attempt's other files, so the data folder
//! must be on a file system the cluster's nodes mount at the same path.
//!
//! Every job is named for its owner (a hash of the data folder), run, step, item and attempt,
//! so that a restarted engine finds the job an attempt left running and adopts it instead of
//! submitting it again ([`Adopt`]).

mod poller;
mod script;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::error::{ErrorKind, ExecError};
use crate::executor::{
    AttemptFiles, AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, ExecSpec, Executor, KillSignal,
    LogStream, wait_for_kill,
};
use crate::outputs::read_outputs_file;

pub use poller::{JobState, parse_array_tasks};
pub use script::{array_spec, job_name};
pub(crate) use script::{name_part, owner_hash};

/// Where and how an attempt runs on Slurm: the step's `slurm:` block, its resources and its
/// timeout, rendered.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlurmPlacement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    /// The job's time limit (`--time`, in whole minutes, rounded up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limit_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub constraint: Option<String>,
    /// `--gres` as given; when not set, `gpus` becomes `--gres=gpu:N`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gres: Option<String>,
    #[serde(default)]
    pub gpus: u32,
    /// `--cpus-per-task` (0 leaves it to the partition).
    #[serde(default)]
    pub cpus: u32,
    /// `--mem`, in bytes (0 leaves it to the partition).
    #[serde(default)]
    pub memory: u64,
    /// More `sbatch` options, passed as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<String>,
    /// The attempt that was running when an earlier engine stopped: its job is looked for
    /// and, when found, watched instead of submitting a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adopt: Option<Box<Adopt>>,
}

/// An earlier attempt of the same task whose job may still be running (or have finished
/// while no engine watched it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adopt {
    pub attempt: u32,
    pub files: AttemptFiles,
}

/// How this engine reaches Slurm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlurmConfig {
    /// Names this engine's jobs (the data folder), so that a restarted engine finds its own.
    pub owner: String,
    /// Where `sbatch`, `squeue`, `scontrol` and `scancel` are; on `PATH` when not set.
    pub bin_dir: Option<PathBuf>,
    /// The first wait between two polls after something changed.
    pub poll_min: Duration,
    /// The longest wait between two polls while nothing changes.
    pub poll_max: Duration,
    /// How long the submitter waits for more attempts of the same step before it submits:
    /// the items of a mapped step that start together become one job array.
    pub gather: Duration,
}

impl SlurmConfig {
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            bin_dir: std::env::var_os("SLUICE_SLURM_BIN").filter(|v| !v.is_empty()).map(PathBuf::from),
            poll_min: Duration::from_millis(100),
            poll_max: Duration::from_secs(1),
            gather: Duration::from_millis(20),
        }
    }

    /// A Slurm command by name: in `bin_dir`, else looked up on `PATH`.
    fn program(&self, name: &str) -> PathBuf {
        match &self.bin_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        }
    }

    fn command(&self, name: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.program(name));
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        cmd
    }
}

/// Runs the attempts placed on Slurm.
#[derive(Clone)]
pub struct SlurmExecutor {
    inner: Arc<Inner>,
}

struct Inner {
    config: SlurmConfig,
    poller: poller::Poller,
    submitter: OnceLock<mpsc::UnboundedSender<script::Submission>>,
    /// The owner's hash, as job names carry it.
    owner: String,
}

impl SlurmExecutor {
    pub fn new(config: SlurmConfig) -> Self {
        let owner = script::owner_hash(&config.owner);
        let poller = poller::Poller::new(config.clone());
        Self { inner: Arc::new(Inner { config, poller, submitter: OnceLock::new(), owner }) }
    }

    pub fn config(&self) -> &SlurmConfig {
        &self.inner.config
    }

    /// Cancels, by name, the jobs an attempt of a run may have left (its own job, and the
    /// array it may have gone in: the run is being cancelled, so every task of the array
    /// goes). Blocking: for a run no engine drives, cancelled from the command line.
    pub fn cancel_left(&self, run: u64, step: &str, item: u32, attempt: u32) -> Result<(), String> {
        for name in [
            job_name(&self.inner.owner, run, step, Some(item), attempt),
            job_name(&self.inner.owner, run, step, None, attempt),
        ] {
            let out = std::process::Command::new(self.inner.config.program("scancel"))
                .args(["--me", &format!("--name={name}")])
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| format!("cannot run scancel: {e}"))?;
            if !out.status.success() {
                return Err(format!("scancel failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        Ok(())
    }

    fn submitter(&self) -> mpsc::UnboundedSender<script::Submission> {
        self.inner
            .submitter
            .get_or_init(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(script::submit_loop(self.inner.config.clone(), rx));
                tx
            })
            .clone()
    }
}

impl Executor for SlurmExecutor {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    fn execute(
        &self,
        request: AttemptRequest,
        sink: Arc<dyn AttemptSink>,
        kill: watch::Receiver<Option<KillSignal>>,
    ) -> BoxFuture<AttemptOutcome> {
        let this = self.clone();
        Box::pin(async move { this.run(request, sink, kill).await })
    }
}

/// A job being watched: its id (`123`, or `123_4` for a task of an array) and the files of
/// the attempt it runs.
struct Job {
    id: String,
    files: AttemptFiles,
}

impl SlurmExecutor {
    async fn run(
        &self,
        request: AttemptRequest,
        sink: Arc<dyn AttemptSink>,
        mut kill: watch::Receiver<Option<KillSignal>>,
    ) -> AttemptOutcome {
        let Some(crate::executor::Placement::Slurm(placement)) = request.placement.clone() else {
            return AttemptOutcome::failed(ExecError::fatal("the attempt is not placed on Slurm"));
        };
        let ExecSpec::Process(spec) = &request.spec else {
            return AttemptOutcome::failed(ExecError::fatal(
                "only `process:` steps run on Slurm; this step's kind runs in the engine",
            ));
        };
        let argv = spec.argv.clone();
        let Some(program) = argv.first().cloned() else {
            return AttemptOutcome::failed(ExecError::fatal("the command is empty"));
        };
        if !request.workdir.is_dir() {
            return AttemptOutcome::failed(ExecError::fatal(format!(
                "the working folder {} does not exist (on a cluster it must be on a file system every node mounts)",
                request.workdir.display()
            )));
        }
        let job = match self.adopted(&request, &placement, &sink).await {
            Some(Ok(job)) => job,
            Some(Err(outcome)) => return *outcome,
            None => match self.submit(&request, &argv, &placement, &sink).await {
                Ok(job) => job,
                Err(e) => return AttemptOutcome::failed(e),
            },
        };
        self.watch(job, &program, sink, &mut kill).await
    }

    /// The job of the attempt an earlier engine left running, when there is one: watched from
    /// now on. One that already ended has its result taken from its exit status file.
    async fn adopted(
        &self,
        request: &AttemptRequest,
        placement: &SlurmPlacement,
        sink: &Arc<dyn AttemptSink>,
    ) -> Option<Result<Job, Box<AttemptOutcome>>> {
        let adopt = placement.adopt.as_ref()?;
        let id = &request.id;
        let single = job_name(&self.inner.owner, id.run, &id.step, Some(id.item), adopt.attempt);
        let array = job_name(&self.inner.owner, id.run, &id.step, None, adopt.attempt);
        match poller::find_job(&self.inner.config, &[&single, &array], id.item).await {
            Ok(Some(job)) => {
                let note = format!(
                    "sluice: Slurm job {job} of attempt {} was left running by an earlier engine; watching it instead of submitting again\n",
                    adopt.attempt
                );
                sink.log(LogStream::System, note.as_bytes());
                Some(Ok(Job { id: job, files: adopt.files.clone() }))
            }
            Ok(None) => match script::read_exit(&adopt.files) {
                Some(code) => {
                    let note = format!(
                        "sluice: the Slurm job of attempt {} ended while no engine watched it (exit code {code}); its result is taken\n",
                        adopt.attempt
                    );
                    sink.log(LogStream::System, note.as_bytes());
                    script::Tail::new(&adopt.files).pump(sink, true).await;
                    Some(Err(Box::new(finished(&adopt.files, code, "the job", None))))
                }
                None => {
                    let note = format!(
                        "sluice: no Slurm job of attempt {} is known and it left no exit status; submitting again\n",
                        adopt.attempt
                    );
                    sink.log(LogStream::System, note.as_bytes());
                    None
                }
            },
            Err(e) => {
                // Submitting again could run the step twice: fail this attempt (retryable)
                // so that the next one asks again.
                Some(Err(Box::new(AttemptOutcome::failed(ExecError::retryable(format!(
                    "cannot ask Slurm whether attempt {}'s job still runs: {e}",
                    adopt.attempt
                ))))))
            }
        }
    }

    async fn submit(
        &self,
        request: &AttemptRequest,
        argv: &[String],
        placement: &SlurmPlacement,
        sink: &Arc<dyn AttemptSink>,
    ) -> Result<Job, ExecError> {
        let prepared = script::prepare(&self.inner.owner, request, argv, placement)?;
        let (reply, answer) = oneshot::channel();
        self.submitter()
            .send(script::Submission { job: prepared, reply })
            .map_err(|_| ExecError::retryable("the Slurm submitter has stopped"))?;
        let submitted = answer
            .await
            .map_err(|_| ExecError::retryable("the Slurm submitter stopped before it answered"))??;
        let partition =
            placement.partition.as_deref().map(|p| format!(" on partition {p}")).unwrap_or_default();
        let note = match &submitted.array {
            Some((array, tasks)) => format!(
                "sluice: submitted to Slurm{partition} as task {} of job array {array} ({tasks} tasks)\n",
                request.id.item
            ),
            None => format!("sluice: submitted to Slurm{partition} as job {}\n", submitted.id),
        };
        sink.log(LogStream::System, note.as_bytes());
        Ok(Job { id: submitted.id, files: request.files.clone() })
    }

    /// Watches a job to its end, streaming its output files into the step's log; a kill
    /// cancels it with `scancel`.
    async fn watch(
        &self,
        job: Job,
        program: &str,
        sink: Arc<dyn AttemptSink>,
        kill: &mut watch::Receiver<Option<KillSignal>>,
    ) -> AttemptOutcome {
        let mut states = self.inner.poller.watch(&job.id);
        let mut tail = script::Tail::new(&job.files);
        let mut tick = tokio::time::interval(LOG_POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping: Option<tokio::time::Instant> = None;
        let mut warned = false;
        let state = loop {
            let state = states.borrow_and_update().clone();
            match &state {
                JobState::Ended { .. } | JobState::Gone => break state,
                JobState::Unreachable(why) if !warned => {
                    warned = true;
                    let note =
                        format!("sluice: cannot ask Slurm about job {}: {why}; still asking\n", job.id);
                    sink.log(LogStream::System, note.as_bytes());
                }
                _ => {}
            }
            // Only a job that runs writes output: a pending one's files are not read (a
            // thousand pending tasks would otherwise mean thousands of opens a second).
            let running = matches!(state, JobState::Running(_));
            let stop_at =
                stopping.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86_400));
            tokio::select! {
                changed = states.changed() => {
                    if changed.is_err() {
                        break JobState::Unreachable("the poller stopped".into());
                    }
                }
                grace = wait_for_kill(kill), if stopping.is_none() => {
                    let note = match poller::cancel(&self.inner.config, &job.id).await {
                        Ok(()) => format!("sluice: cancelled Slurm job {} (scancel)\n", job.id),
                        Err(e) => format!("sluice: scancel of Slurm job {} failed: {e}\n", job.id),
                    };
                    sink.log(LogStream::System, note.as_bytes());
                    stopping = Some(tokio::time::Instant::now() + grace + STOP_WAIT);
                    self.inner.poller.hurry();
                }
                _ = tick.tick(), if running => tail.pump(&sink, false).await,
                _ = tokio::time::sleep_until(stop_at), if stopping.is_some() => {
                    break JobState::Unreachable(format!("Slurm did not report job {} ended after scancel", job.id));
                }
            }
        };
        self.inner.poller.unwatch(&job.id);
        tail.pump(&sink, true).await;
        if stopping.is_some() {
            return AttemptOutcome {
                result: Err(ExecError::cancelled(format!(
                    "the step was stopped (Slurm job {} cancelled)",
                    job.id
                ))),
                outputs: Default::default(),
                exit_code: script::read_exit(&job.files),
            };
        }
        let what = format!("`{program}` (Slurm job {})", job.id);
        match state {
            JobState::Ended { state, exit } => {
                let mut code = script::read_exit(&job.files).or(exit);
                if code.is_none() && state == "FAILED" {
                    // The script ended before its command did (a folder it could not enter):
                    // Slurm's record has the code.
                    code = poller::exit_code(&self.inner.config, &job.id).await;
                }
                match state.as_str() {
                    "COMPLETED" => finished(&job.files, code.unwrap_or(0), &what, Some(&state)),
                    "FAILED" => match code {
                        Some(code) => finished(&job.files, code, &what, Some(&state)),
                        None => outcome_err(ExecError::retryable(format!("{what} failed")), None),
                    },
                    _ => outcome_err(ended_badly(&job.id, &state), code),
                }
            }
            JobState::Gone => match script::read_exit(&job.files) {
                Some(code) => finished(&job.files, code, &what, None),
                None => outcome_err(
                    ExecError::retryable(format!(
                        "Slurm no longer knows job {} and it left no exit status (it was lost with its node, or purged)",
                        job.id
                    )),
                    None,
                ),
            },
            JobState::Unreachable(why) => outcome_err(ExecError::retryable(why), None),
            JobState::Pending | JobState::Running(_) => outcome_err(
                ExecError::retryable(format!("stopped watching Slurm job {} before it ended", job.id)),
                None,
            ),
        }
    }
}

/// How often a running job's output files are read for new lines.
const LOG_POLL: Duration = Duration::from_millis(250);

/// How long after `scancel` (and the grace period) the engine waits for Slurm to say the job
/// ended.
const STOP_WAIT: Duration = Duration::from_secs(30);

fn outcome_err(error: ExecError, exit_code: Option<i32>) -> AttemptOutcome {
    AttemptOutcome { result: Err(error), outputs: Default::default(), exit_code }
}

/// An attempt whose command exited with `code`: its outputs when 0.
fn finished(files: &AttemptFiles, code: i32, what: &str, state: Option<&str>) -> AttemptOutcome {
    if code == 0 {
        return match read_outputs_file(&files.outputs_file) {
            Ok(outputs) => AttemptOutcome { result: Ok(()), outputs, exit_code: Some(0) },
            Err(e) => outcome_err(e, Some(0)),
        };
    }
    let state = state.map(|s| format!(", {s}")).unwrap_or_default();
    outcome_err(ExecError::retryable(format!("{what} exited with code {code}{state}")), Some(code))
}

/// A job Slurm ended other than by its command's exit: what it means for the attempt.
fn ended_badly(job: &str, state: &str) -> ExecError {
    let (kind, message) = match state {
        "TIMEOUT" => (ErrorKind::Timeout, format!("Slurm ended job {job} at its time limit (TIMEOUT)")),
        "OUT_OF_MEMORY" => (
            ErrorKind::Retryable,
            format!(
                "Slurm job {job} ran out of memory (OUT_OF_MEMORY); ask for more with `resources: {{memory: ...}}`"
            ),
        ),
        "NODE_FAIL" => (ErrorKind::Retryable, format!("the node running Slurm job {job} failed (NODE_FAIL)")),
        "PREEMPTED" => (ErrorKind::Retryable, format!("Slurm job {job} was preempted (PREEMPTED)")),
        "BOOT_FAIL" => {
            (ErrorKind::Retryable, format!("the node for Slurm job {job} failed to boot (BOOT_FAIL)"))
        }
        "CANCELLED" => (
            ErrorKind::Retryable,
            format!("Slurm job {job} was cancelled outside Sluice (scancel, or an administrator)"),
        ),
        "DEADLINE" => (ErrorKind::Timeout, format!("Slurm ended job {job} at its deadline (DEADLINE)")),
        other => (ErrorKind::Retryable, format!("Slurm ended job {job} as {other}")),
    };
    ExecError { kind, message }
}

/// What `sluice doctor` reports about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    pub version: String,
    /// (name, state, nodes, GRES such as `gpu:4` or `(null)`)
    pub partitions: Vec<(String, String, String, String)>,
}

/// Asks the cluster its version and partitions (`sinfo`); an error says why it cannot.
pub async fn cluster_info(config: &SlurmConfig) -> Result<ClusterInfo, String> {
    let version = poller::output(config, "sinfo", &["-V"]).await?;
    let version = version.split_whitespace().last().unwrap_or("unknown").to_string();
    let table = poller::output(config, "sinfo", &["-h", "-o", "%P|%a|%D|%G"]).await?;
    let partitions = table
        .lines()
        .filter_map(|l| {
            let mut f = l.split('|').map(str::trim);
            Some((f.next()?.to_string(), f.next()?.to_string(), f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect();
    Ok(ClusterInfo { version, partitions })
}
