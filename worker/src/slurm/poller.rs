//! Watching jobs: one task asks `squeue` about every job this engine watches in one query,
//! waits longer between polls while nothing changes, and tells each attempt when its job's
//! state changes. A job `squeue` no longer lists is asked about once with `scontrol`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use super::SlurmConfig;

/// What the poller knows of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Pending,
    /// Running, or in one of Slurm's states between running and ended (`COMPLETING`,
    /// `SUSPENDED`, ...), named.
    Running(String),
    /// Ended, with Slurm's state (`COMPLETED`, `FAILED`, `TIMEOUT`, ...) and, when `scontrol`
    /// said, the exit code.
    Ended {
        state: String,
        exit: Option<i32>,
    },
    /// Slurm no longer knows the job (purged from the controller's memory, or never there).
    Gone,
    /// The last poll could not reach Slurm, and why.
    Unreachable(String),
}

/// Slurm's job states that mean the job has ended.
const ENDED: &[&str] = &[
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "PREEMPTED",
    "SPECIAL_EXIT",
    "REVOKED",
];

fn state_of(word: &str) -> JobState {
    // `scontrol` may add a reason (`CANCELLED by 0`); the first word is the state.
    let word = word.split_whitespace().next().unwrap_or(word);
    if word == "PENDING" || word == "CONFIGURING" || word == "REQUEUED" {
        JobState::Pending
    } else if ENDED.contains(&word) {
        JobState::Ended { state: word.to_string(), exit: None }
    } else {
        JobState::Running(word.to_string())
    }
}

/// The tasks of a pending job array as `squeue` writes them: `[0-3,7%2]` gives 0, 1, 2, 3, 7.
pub fn parse_array_tasks(text: &str) -> HashSet<u32> {
    let inner = text.trim_start_matches('[').trim_end_matches(']');
    let inner = inner.split('%').next().unwrap_or("");
    let mut out = HashSet::new();
    for part in inner.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let (a, b) = (a.split(':').next().unwrap_or(a), b.split(':').next().unwrap_or(b));
        if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>())
            && b >= a
            && b - a < 1_000_000
        {
            out.extend(a..=b);
        }
    }
    out
}

/// One `squeue` answer: each job's state by id, and the pending tasks of each array.
#[derive(Debug, Default)]
struct Queue {
    jobs: HashMap<String, String>,
    pending: HashMap<String, HashSet<u32>>,
}

impl Queue {
    fn parse(text: &str) -> Self {
        let mut q = Queue::default();
        for line in text.lines() {
            let Some((id, state)) = line.trim().split_once('|') else { continue };
            match id.split_once("_[") {
                Some((array, tasks)) => {
                    q.pending.entry(array.to_string()).or_default().extend(parse_array_tasks(tasks));
                }
                None => {
                    q.jobs.insert(id.to_string(), state.trim().to_string());
                }
            }
        }
        q
    }

    fn state(&self, id: &str) -> Option<JobState> {
        if let Some(word) = self.jobs.get(id) {
            return Some(state_of(word));
        }
        let (array, task) = id.split_once('_')?;
        let task: u32 = task.parse().ok()?;
        self.pending.get(array).filter(|t| t.contains(&task)).map(|_| JobState::Pending)
    }
}

struct Entry {
    tx: watch::Sender<JobState>,
    /// Polls in a row that did not list the job.
    missing: u32,
}

struct Shared {
    config: SlurmConfig,
    jobs: Mutex<HashMap<String, Entry>>,
    wake: Notify,
}

/// The one poller of an executor.
pub(crate) struct Poller {
    shared: Arc<Shared>,
    started: OnceLock<()>,
}

impl Poller {
    pub(crate) fn new(config: SlurmConfig) -> Self {
        Self {
            shared: Arc::new(Shared { config, jobs: Mutex::new(HashMap::new()), wake: Notify::new() }),
            started: OnceLock::new(),
        }
    }

    /// Starts watching a job; its states arrive on the receiver.
    pub(crate) fn watch(&self, id: &str) -> watch::Receiver<JobState> {
        self.started.get_or_init(|| {
            tokio::spawn(run(self.shared.clone()));
        });
        let rx = {
            let mut jobs = self.shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
            let entry = jobs
                .entry(id.to_string())
                .or_insert_with(|| Entry { tx: watch::channel(JobState::Pending).0, missing: 0 });
            entry.tx.subscribe()
        };
        self.hurry();
        rx
    }

    pub(crate) fn unwatch(&self, id: &str) {
        self.shared.jobs.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    /// Polls soon (a job was submitted or cancelled).
    pub(crate) fn hurry(&self) {
        self.shared.wake.notify_one();
    }
}

async fn run(shared: Arc<Shared>) {
    let (min, max) = (shared.config.poll_min, shared.config.poll_max.max(shared.config.poll_min));
    let mut wait = min;
    loop {
        let watched = shared.jobs.lock().unwrap_or_else(|p| p.into_inner()).len();
        if watched == 0 {
            shared.wake.notified().await;
            wait = min;
            continue;
        }
        // Many jobs change often; with many watched the shortest wait grows, so that polling
        // stays cheap (one poll a second at 1,000 jobs with the defaults).
        let floor = (min * (1 + watched as u32 / 100)).min(max);
        tokio::select! {
            _ = tokio::time::sleep(wait.max(floor)) => {}
            _ = shared.wake.notified() => {}
        }
        let changed = poll(&shared).await;
        wait = if changed { floor } else { (wait.max(floor) * 3 / 2).min(max) };
    }
}

/// One poll: `squeue` for every job of this user, then `scontrol` for watched jobs it no
/// longer lists. Returns whether any watched job changed.
async fn poll(shared: &Shared) -> bool {
    let answer = output(&shared.config, "squeue", &["-h", "--me", "--states=all", "-o", "%i|%T"]).await;
    let queue = match answer {
        Ok(text) => Queue::parse(&text),
        Err(why) => {
            let jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
            for e in jobs.values() {
                e.tx.send_if_modified(|s| {
                    let new = JobState::Unreachable(why.clone());
                    let changed = *s != new;
                    *s = new;
                    changed
                });
            }
            return false;
        }
    };
    let mut ask = Vec::new();
    let mut changed = false;
    {
        let mut jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
        for (id, e) in jobs.iter_mut() {
            match queue.state(id) {
                Some(state) => {
                    e.missing = 0;
                    changed |= set(&e.tx, state);
                }
                None => {
                    e.missing += 1;
                    // Once is a job between two lists (an array's task being split off).
                    if e.missing >= 2 {
                        ask.push(id.clone());
                    }
                }
            }
        }
    }
    for id in ask {
        let state = match output(&shared.config, "scontrol", &["-o", "show", "job", &id]).await {
            Ok(text) => scontrol_state(&text).unwrap_or(JobState::Gone),
            Err(why) if why.contains("Invalid job id") => JobState::Gone,
            Err(why) => JobState::Unreachable(why),
        };
        let jobs = shared.jobs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = jobs.get(&id) {
            changed |= set(&e.tx, state);
        }
    }
    changed
}

fn set(tx: &watch::Sender<JobState>, state: JobState) -> bool {
    tx.send_if_modified(|s| {
        let changed = *s != state;
        *s = state;
        changed
    })
}

/// A job's state and exit code from `scontrol -o show job`.
fn scontrol_state(text: &str) -> Option<JobState> {
    let line = text.lines().next()?;
    let field = |name: &str| {
        line.split_whitespace().find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
    };
    let state = state_of(field("JobState")?);
    let exit = field("ExitCode").and_then(|c| c.split(':').next()).and_then(|c| c.parse().ok());
    Some(match state {
        JobState::Ended { state, .. } => JobState::Ended { state, exit },
        other => other,
    })
}

/// A job's exit code from Slurm's record, when it still has one.
pub(crate) async fn exit_code(config: &SlurmConfig, id: &str) -> Option<i32> {
    let text = output(config, "scontrol", &["-o", "show", "job", id]).await.ok()?;
    match scontrol_state(&text)? {
        JobState::Ended { exit, .. } => exit,
        _ => None,
    }
}

/// Runs a Slurm command; its standard output, or a sentence saying why not.
pub(crate) async fn output(config: &SlurmConfig, program: &str, args: &[&str]) -> Result<String, String> {
    let run = config.command(program).args(args).output();
    let out = match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "`{program}` was not found on PATH: install Slurm's client commands (or set SLUICE_SLURM_BIN)"
            ));
        }
        Ok(Err(e)) => return Err(format!("cannot run {program}: {e}")),
        Err(_) => return Err(format!("{program} did not answer within {COMMAND_TIMEOUT:?}")),
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(format!("{program} failed: {}", if err.is_empty() { "no reason given" } else { &err }));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The longest one Slurm command may take (a controller that does not answer).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The job with one of `names` that runs `item`: a job of its own (`123`) or the task of an
/// array (`123_4`, running or still pending in the array).
pub(crate) async fn find_job(
    config: &SlurmConfig,
    names: &[&str],
    item: u32,
) -> Result<Option<String>, String> {
    let names = format!("--name={}", names.join(","));
    let text = output(config, "squeue", &["-h", "--me", "--states=all", &names, "-o", "%i|%T"]).await?;
    let queue = Queue::parse(&text);
    let task = |array: &str| format!("{array}_{item}");
    if let Some(id) = queue.jobs.keys().find(|id| !id.contains('_')) {
        return Ok(Some(id.clone()));
    }
    if let Some(id) =
        queue.jobs.keys().find(|id| id.split_once('_').is_some_and(|(_, t)| t == item.to_string()))
    {
        return Ok(Some(id.clone()));
    }
    Ok(queue.pending.iter().find(|(_, tasks)| tasks.contains(&item)).map(|(array, _)| task(array)))
}

/// `scancel` a job (or an array's task).
pub(crate) async fn cancel(config: &SlurmConfig, id: &str) -> Result<(), String> {
    output(config, "scancel", &[id]).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_give_jobs_tasks_and_pending_arrays() {
        let q =
            Queue::parse("12|RUNNING\n13_0|COMPLETED\n13_[1-3,7%2]|PENDING\n14|COMPLETING\n15|CANCELLED\n");
        assert_eq!(q.state("12"), Some(JobState::Running("RUNNING".into())));
        assert_eq!(q.state("13_0"), Some(JobState::Ended { state: "COMPLETED".into(), exit: None }));
        assert_eq!(q.state("13_2"), Some(JobState::Pending));
        assert_eq!(q.state("13_7"), Some(JobState::Pending));
        assert_eq!(q.state("13_5"), None);
        assert_eq!(q.state("14"), Some(JobState::Running("COMPLETING".into())));
        assert!(matches!(q.state("15"), Some(JobState::Ended { state, .. }) if state == "CANCELLED"));
    }

    #[test]
    fn scontrol_gives_the_state_and_exit_code() {
        let line = "JobId=1 JobName=x UserId=root(0) JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 RunTime=00:00:00";
        assert_eq!(scontrol_state(line), Some(JobState::Ended { state: "FAILED".into(), exit: Some(3) }));
    }

    #[test]
    fn array_task_lists_with_throttles_and_steps() {
        let t = parse_array_tasks("[0-2,5%4]");
        assert_eq!(t.len(), 4);
        assert!(t.contains(&5));
        assert!(parse_array_tasks("[garbage]").is_empty());
    }
}
