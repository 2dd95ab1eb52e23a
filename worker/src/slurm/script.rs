//! Submitting: the batch script of each attempt, the gathering of a mapped step's items into
//! one job array, `sbatch` itself, and the files a job leaves (its output and exit status).

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::{SlurmConfig, SlurmPlacement};
use crate::error::ExecError;
use crate::executor::{AttemptFiles, AttemptRequest, AttemptSink, LogStream};
use crate::outputs::open_step_file;

/// The owner's hash as names carry it: FNV-1a of the data folder, stable across builds and
/// platforms (unlike std's hasher), 8 hex digits.
pub(crate) fn owner_hash(owner: &str) -> String {
    let h =
        owner.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{:08x}", h as u32)
}

/// A step id as a name part: letters, digits, `-` and `_` (others become `_`).
pub(crate) fn name_part(step: &str) -> String {
    step.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

/// The job name of an attempt: `sluice-<owner>-r<run>-<step>.i<item>.a<attempt>` for a job of
/// its own, `sluice-<owner>-r<run>-<step>.a<attempt>` for a job array (its tasks are the
/// items). A step id has no `.`, so the two never meet.
pub fn job_name(owner: &str, run: u64, step: &str, item: Option<u32>, attempt: u32) -> String {
    let step = name_part(step);
    match item {
        Some(item) => format!("sluice-{owner}-r{run}-{step}.i{item}.a{attempt}"),
        None => format!("sluice-{owner}-r{run}-{step}.a{attempt}"),
    }
}

/// `--array` for a set of items: runs of consecutive numbers as ranges (`0-999`, `0-3,7`).
pub fn array_spec(items: &[u32]) -> String {
    let mut sorted = items.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

fn beside(files: &AttemptFiles, suffix: &str) -> PathBuf {
    let mut name = files.attempt_dir.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn script_path(files: &AttemptFiles) -> PathBuf {
    beside(files, ".slurm.sh")
}

fn exit_path(files: &AttemptFiles) -> PathBuf {
    beside(files, ".slurm.exit")
}

/// The exit code the job's script recorded, once its command has ended. The step could
/// have put anything at that path: it is opened as the outputs file is (no link, no FIFO)
/// and read for a few bytes only.
pub(crate) fn read_exit(files: &AttemptFiles) -> Option<i32> {
    let mut text = String::new();
    open_step_file(&exit_path(files)).ok()?.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// One attempt ready to submit.
pub(crate) struct Prepared {
    /// Attempts with the same group go in one job array.
    group: String,
    run: u64,
    step: String,
    item: u32,
    attempt: u32,
    owner: String,
    argv: Vec<String>,
    workdir: PathBuf,
    files: AttemptFiles,
    /// The step's variables (passed through `sbatch`'s environment when every task of an
    /// array has the same value, else written into the task's script).
    env: BTreeMap<String, String>,
    /// Sluice's own variables (paths and ids: written into the script).
    own: Vec<(&'static str, String)>,
    /// The `sbatch` options of the placement.
    options: Vec<String>,
}

/// What `sbatch` answered: the job id to watch (`123`, or `123_4` for an array's task), and
/// the array's id and size when it went in one.
pub(crate) struct Submitted {
    pub(crate) id: String,
    pub(crate) array: Option<(String, usize)>,
}

pub(crate) struct Submission {
    pub(crate) job: Prepared,
    pub(crate) reply: oneshot::Sender<Result<Submitted, ExecError>>,
}

/// The `sbatch` options a placement asks for (all but the name, array and script).
fn options(p: &SlurmPlacement) -> Vec<String> {
    let mut o = Vec::new();
    let mut opt = |name: &str, value: &Option<String>| {
        if let Some(v) = value {
            o.push(format!("--{name}={v}"));
        }
    };
    opt("partition", &p.partition);
    opt("account", &p.account);
    opt("qos", &p.qos);
    opt("constraint", &p.constraint);
    match (&p.gres, p.gpus) {
        (Some(g), _) => o.push(format!("--gres={g}")),
        (None, n) if n > 0 => o.push(format!("--gres=gpu:{n}")),
        _ => {}
    }
    if let Some(s) = p.time_limit_s {
        o.push(format!("--time={}", s.div_ceil(60).max(1)));
    }
    if p.cpus > 0 {
        o.push(format!("--cpus-per-task={}", p.cpus));
    }
    if p.memory > 0 {
        o.push(format!("--mem={}M", p.memory.div_ceil(1024 * 1024)));
    }
    o.extend(p.extra.iter().cloned());
    o
}

/// An attempt of a `process:` step (`argv`, its command) ready to submit.
pub(crate) fn prepare(
    owner: &str,
    r: &AttemptRequest,
    argv: &[String],
    p: &SlurmPlacement,
) -> Result<Prepared, ExecError> {
    if let Some(bad) = r.env.keys().find(|k| !is_shell_name(k)) {
        return Err(ExecError::fatal(format!(
            "environment variable `{bad}` cannot be passed to a Slurm job (a name is letters, digits and `_`)"
        )));
    }
    let options = options(p);
    // The job starts in its own folder on another machine: every path it is given is
    // absolute (a relative data folder, `.sluice`, is the default).
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let files = AttemptFiles {
        run_dir: absolute(&r.files.run_dir),
        attempt_dir: absolute(&r.files.attempt_dir),
        outputs_file: absolute(&r.files.outputs_file),
        inputs_dir: absolute(&r.files.inputs_dir),
        metrics_file: absolute(&r.files.metrics_file),
    };
    let own = vec![
        ("SLUICE_OUTPUTS", files.outputs_file.display().to_string()),
        ("SLUICE_METRICS", files.metrics_file.display().to_string()),
        ("SLUICE_RUN_DIR", files.run_dir.display().to_string()),
        ("SLUICE_RUN_ID", r.id.run.to_string()),
        ("SLUICE_STEP", r.id.step.clone()),
        ("SLUICE_ITEM", r.id.item.to_string()),
        ("SLUICE_ATTEMPT", r.id.attempt.to_string()),
    ];
    let group = format!(
        "{}\u{0}{}\u{0}{}\u{0}{}\u{0}{}",
        r.id.run,
        r.id.step,
        r.id.attempt,
        absolute(&r.workdir).display(),
        options.join("\u{1}")
    );
    Ok(Prepared {
        group,
        run: r.id.run,
        step: r.id.step.clone(),
        item: r.id.item,
        attempt: r.id.attempt,
        owner: owner.to_string(),
        argv: argv.to_vec(),
        workdir: absolute(&r.workdir),
        files,
        env: r.env.clone(),
        own,
        options,
    })
}

fn is_shell_name(k: &str) -> bool {
    let mut c = k.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn quote(text: &str) -> Result<String, ExecError> {
    shlex::try_quote(text)
        .map(|q| q.into_owned())
        .map_err(|_| ExecError::fatal("a value passed to a Slurm job holds a NUL byte"))
}

fn quote_path(p: &Path) -> Result<String, ExecError> {
    quote(&p.display().to_string())
}

/// Writes an attempt's batch script: its output into its own files, Sluice's variables (and
/// `env`, the step's variables that differ between an array's tasks), the command in its
/// working folder, and the command's exit code into `<attempt>.slurm.exit` when it ends.
fn write_script(job: &Prepared, env: &BTreeMap<&String, &String>) -> Result<PathBuf, ExecError> {
    use std::fmt::Write as _;
    let f = &job.files;
    let exit = exit_path(f);
    let mut tmp = exit.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut s = String::from("#!/bin/sh\n");
    let _ = writeln!(
        s,
        "# Written by Sluice: run {}, step {}, item {}, attempt {}.",
        job.run,
        name_part(&job.step),
        job.item,
        job.attempt
    );
    let _ = writeln!(
        s,
        "exec >>{} 2>>{}",
        quote_path(&beside(f, ".slurm.out"))?,
        quote_path(&beside(f, ".slurm.err"))?
    );
    for (k, v) in &job.own {
        let _ = writeln!(s, "export {k}={}", quote(v)?);
    }
    for (k, v) in env {
        let _ = writeln!(s, "export {k}={}", quote(v)?);
    }
    let _ = writeln!(s, "cd {} || exit 111", quote_path(&job.workdir)?);
    let argv = job.argv.iter().map(|a| quote(a)).collect::<Result<Vec<_>, _>>()?;
    let _ = writeln!(s, "{}", argv.join(" "));
    let _ = writeln!(s, "code=$?");
    let _ = writeln!(
        s,
        "printf '%s\\n' \"$code\" >{tmp} && mv -f {tmp} {exit}",
        tmp = quote_path(&tmp)?,
        exit = quote_path(&exit)?
    );
    let _ = writeln!(s, "exit \"$code\"");
    let path = script_path(f);
    write_private(&path, &s)?;
    let _ = std::fs::remove_file(&exit);
    Ok(path)
}

/// Writes a file only its owner may read (a script may hold the step's variables).
fn write_private(path: &Path, text: &str) -> Result<(), ExecError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o700)
        .open(path)
        .and_then(|mut file| file.write_all(text.as_bytes()))
        .map_err(|e| ExecError::retryable(format!("cannot write the job script {}: {e}", path.display())))
}

/// The longest the submitter gathers attempts before it submits.
const GATHER_MAX: Duration = Duration::from_millis(500);

/// Takes submissions; those that arrive together (each within `config.gather` of the last)
/// and share a group are submitted as one job array.
pub(crate) async fn submit_loop(config: SlurmConfig, mut rx: mpsc::UnboundedReceiver<Submission>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let started = tokio::time::Instant::now();
        while started.elapsed() < GATHER_MAX {
            match tokio::time::timeout(config.gather, rx.recv()).await {
                Ok(Some(s)) => batch.push(s),
                _ => break,
            }
        }
        let mut groups: Vec<Vec<Submission>> = Vec::new();
        for s in batch {
            match groups.iter_mut().find(|g| g[0].job.group == s.job.group) {
                Some(g) => g.push(s),
                None => groups.push(vec![s]),
            }
        }
        for group in groups {
            submit_group(&config, group).await;
        }
    }
}

async fn submit_group(config: &SlurmConfig, group: Vec<Submission>) {
    let (jobs, replies): (Vec<Prepared>, Vec<_>) = group.into_iter().map(|s| (s.job, s.reply)).unzip();
    let items: Vec<u32> = jobs.iter().map(|j| j.item).collect();
    let result = match tokio::task::spawn_blocking(move || write_scripts(jobs)).await {
        Ok(Ok(plan)) => sbatch(config, &plan).await.map(|id| (id, plan.array)),
        Ok(Err(e)) => Err(e),
        Err(e) => Err(ExecError::retryable(format!("writing the job scripts crashed: {e}"))),
    };
    let size = items.len();
    for (item, reply) in items.into_iter().zip(replies) {
        let answer = match &result {
            Ok((id, true)) => Ok(Submitted { id: format!("{id}_{item}"), array: Some((id.clone(), size)) }),
            Ok((id, false)) => Ok(Submitted { id: id.clone(), array: None }),
            Err(e) => Err(e.clone()),
        };
        let _ = reply.send(answer);
    }
}

/// What one `sbatch` is given.
struct Plan {
    args: Vec<String>,
    env: Vec<(String, String)>,
    array: bool,
}

/// The scripts of a group, and its `sbatch` arguments: one job, or a job array whose script
/// runs the task's own.
fn write_scripts(jobs: Vec<Prepared>) -> Result<Plan, ExecError> {
    let first = &jobs[0];
    // The variables every task has with the same value ride in sbatch's environment.
    let common: Vec<(String, String)> = first
        .env
        .iter()
        .filter(|(k, v)| jobs.iter().all(|j| j.env.get(*k) == Some(v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut args = vec!["--parsable".to_string()];
    args.extend(first.options.iter().cloned());
    args.push(format!("--chdir={}", first.workdir.display()));
    args.push("--output=/dev/null".into());
    args.push("--error=/dev/null".into());
    let array = jobs.len() > 1;
    let mut cases = String::new();
    for j in &jobs {
        let own: BTreeMap<&String, &String> =
            j.env.iter().filter(|(k, v)| !common.iter().any(|(ck, cv)| ck == *k && cv == *v)).collect();
        let path = write_script(j, &own)?;
        if array {
            cases.push_str(&format!("  {}) exec /bin/sh {} ;;\n", j.item, quote_path(&path)?));
        }
    }
    let script = if array {
        let items: Vec<u32> = jobs.iter().map(|j| j.item).collect();
        args.push(format!("--array={}", array_spec(&items)));
        args.push(format!(
            "--job-name={}",
            job_name(&first.owner, first.run, &first.step, None, first.attempt)
        ));
        let path = beside(&first.files, ".slurm.array.sh");
        let text = format!(
            "#!/bin/sh\n# Written by Sluice: the tasks of a job array, by item.\ncase \"$SLURM_ARRAY_TASK_ID\" in\n{cases}  *) echo \"sluice: no task $SLURM_ARRAY_TASK_ID in this array\" >&2; exit 112 ;;\nesac\n"
        );
        write_private(&path, &text)?;
        path
    } else {
        args.push(format!(
            "--job-name={}",
            job_name(&first.owner, first.run, &first.step, Some(first.item), first.attempt)
        ));
        script_path(&first.files)
    };
    args.push(script.display().to_string());
    Ok(Plan { args, env: common, array })
}

/// Runs `sbatch`; its answer is the job id (`--parsable`: `id` or `id;cluster`).
async fn sbatch(config: &SlurmConfig, plan: &Plan) -> Result<String, ExecError> {
    let mut cmd = config.command("sbatch");
    cmd.args(&plan.args).envs(plan.env.iter().map(|(k, v)| (k, v)));
    let out = match cmd.output().await {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ExecError::fatal(
                "`sbatch` was not found on PATH: install Slurm's client commands on this machine (or set SLUICE_SLURM_BIN to their folder)",
            ));
        }
        Err(e) => return Err(ExecError::retryable(format!("cannot run sbatch: {e}"))),
    };
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        let message = format!(
            "sbatch refused the job: {}",
            if stderr.is_empty() { "no reason given" } else { &stderr }
        );
        return Err(if transient(&stderr) {
            ExecError::retryable(message)
        } else {
            ExecError::fatal(message)
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let id = text.trim().split(';').next().unwrap_or("").trim().to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(ExecError::retryable(format!(
            "sbatch gave no job id (it said `{}` {stderr})",
            text.trim()
        )));
    }
    Ok(id)
}

/// Whether sbatch's complaint is about the controller being out of reach (worth trying again)
/// rather than about the job (a partition that does not exist, a bad option).
pub(crate) fn transient(stderr: &str) -> bool {
    let s = stderr.to_ascii_lowercase();
    ["unable to contact", "timed out", "temporarily", "try again", "connection refused", "zero bytes"]
        .iter()
        .any(|p| s.contains(p))
}

/// Reads what a job has added to its output files since the last read.
#[derive(Clone)]
pub(crate) struct Tail {
    streams: [(PathBuf, u64, LogStream); 2],
}

/// The most read from one stream per pump, so that one flood does not hold the task.
const PUMP_MAX: u64 = 4 * 1024 * 1024;

impl Tail {
    pub(crate) fn new(files: &AttemptFiles) -> Self {
        Self {
            streams: [
                (beside(files, ".slurm.out"), 0, LogStream::Stdout),
                (beside(files, ".slurm.err"), 0, LogStream::Stderr),
            ],
        }
    }

    /// Logs what the job added to its files since the last pump: up to [`PUMP_MAX`] a
    /// stream, or everything when `to_end` (the job has ended). On the blocking pool: the
    /// files are on a shared file system, which may be slow to answer.
    pub(crate) async fn pump(&mut self, sink: &Arc<dyn AttemptSink>, to_end: bool) {
        let (mut tail, sink) = (self.clone(), sink.clone());
        if let Ok(read) = tokio::task::spawn_blocking(move || {
            tail.read(sink.as_ref(), to_end);
            tail
        })
        .await
        {
            *self = read;
        }
    }

    fn read(&mut self, sink: &dyn AttemptSink, to_end: bool) {
        for (path, offset, stream) in &mut self.streams {
            // The step writes these files: opened without following a link or waiting on a
            // FIFO, as its outputs file is.
            let Ok(mut file) = open_step_file(path) else { continue };
            if file.seek(SeekFrom::Start(*offset)).is_err() {
                continue;
            }
            loop {
                let mut buf = Vec::new();
                match (&mut file).take(PUMP_MAX).read_to_end(&mut buf) {
                    Ok(n) if n > 0 => {
                        *offset += n as u64;
                        sink.log(*stream, &buf);
                    }
                    _ => break,
                }
                if !to_end {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_are_written_as_ranges() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[7, 0, 1, 2, 3, 9, 10]), "0-3,7,9-10");
        assert_eq!(array_spec(&[5]), "5");
    }

    #[test]
    fn names_of_jobs_and_arrays_never_meet() {
        let one = job_name("0a1b2c3d", 4, "train model", Some(2), 1);
        assert_eq!(one, "sluice-0a1b2c3d-r4-train_model.i2.a1");
        let array = job_name("0a1b2c3d", 4, "train model", None, 1);
        assert_eq!(array, "sluice-0a1b2c3d-r4-train_model.a1");
        assert_ne!(job_name("o", 1, "x.i1", None, 1), job_name("o", 1, "x", Some(1), 1));
    }

    #[test]
    fn resources_and_the_timeout_become_sbatch_options() {
        let p = SlurmPlacement {
            partition: Some("gpu".into()),
            time_limit_s: Some(90),
            gpus: 2,
            cpus: 4,
            memory: 3 * 1024 * 1024 * 1024 + 1,
            extra: vec!["--exclusive".into()],
            ..Default::default()
        };
        assert_eq!(
            options(&p),
            [
                "--partition=gpu",
                "--gres=gpu:2",
                "--time=2",
                "--cpus-per-task=4",
                "--mem=3073M",
                "--exclusive"
            ]
        );
        let given = SlurmPlacement { gres: Some("gpu:a100:1".into()), gpus: 2, ..Default::default() };
        assert_eq!(options(&given), ["--gres=gpu:a100:1"], "a gres of its own wins");
    }

    #[test]
    fn a_controller_out_of_reach_is_worth_a_retry_a_bad_partition_is_not() {
        assert!(transient(
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"
        ));
        assert!(!transient("sbatch: error: Batch job submission failed: Invalid partition name specified"));
    }
}
