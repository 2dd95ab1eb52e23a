//! The process executor: runs argv in its own process group and streams its output. The
//! step ends when its process exits: what it left running is killed, in its group or out of
//! it ([`stragglers`]).

pub(crate) mod stragglers;

use std::sync::Arc;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::watch;

use crate::error::ExecError;
use crate::executor::{
    AttemptOutcome, AttemptRequest, AttemptSink, BoxFuture, ExecSpec, Executor, KillSignal, LogStream,
    wait_for_kill,
};
use crate::outputs::read_outputs_file;

/// Runs `process:` steps as local OS processes.
#[derive(Debug, Default)]
pub struct ProcessExecutor;

impl Executor for ProcessExecutor {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn execute(
        &self,
        request: AttemptRequest,
        sink: Arc<dyn AttemptSink>,
        kill: watch::Receiver<Option<KillSignal>>,
    ) -> BoxFuture<AttemptOutcome> {
        Box::pin(run(request, sink, kill))
    }
}

async fn run(
    request: AttemptRequest,
    sink: Arc<dyn AttemptSink>,
    mut kill: watch::Receiver<Option<KillSignal>>,
) -> AttemptOutcome {
    let ExecSpec::Process(spec) = &request.spec else {
        return AttemptOutcome::failed(ExecError::fatal("not a process step"));
    };
    let Some(program) = spec.argv.first() else {
        return AttemptOutcome::failed(ExecError::fatal("the command is empty"));
    };
    if !request.workdir.is_dir() {
        return AttemptOutcome::failed(ExecError::fatal(format!(
            "the working folder {} does not exist",
            request.workdir.display()
        )));
    }
    let tag = stragglers::new_tag();
    let mut cmd = Command::new(program);
    cmd.args(&spec.argv[1..])
        .envs(&request.env)
        .env("SLUICE_OUTPUTS", &request.files.outputs_file)
        .env("SLUICE_METRICS", &request.files.metrics_file)
        .env("SLUICE_RUN_DIR", &request.files.run_dir)
        .env("SLUICE_RUN_ID", request.id.run.to_string())
        .env("SLUICE_STEP", &request.id.step)
        .env("SLUICE_ITEM", request.id.item.to_string())
        .env("SLUICE_ATTEMPT", request.id.attempt.to_string())
        .env(stragglers::TAG_VAR, &tag)
        .current_dir(&request.workdir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0);
    let mut child = match stragglers::spawn(&mut cmd, &tag) {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return AttemptOutcome::failed(ExecError::fatal(format!(
                "command `{program}` was not found (is it on PATH?)"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return AttemptOutcome::failed(ExecError::fatal(format!(
                "command `{program}` is not executable: {e}"
            )));
        }
        Err(e) => {
            return AttemptOutcome::failed(ExecError::retryable(format!("cannot start `{program}`: {e}")));
        }
    };
    let pid = child.id().unwrap_or(0);
    if let Err(why) = sink.started(pid) {
        // Unrecorded, a crash of the engine would leave it running with nobody to stop it.
        signal_group(pid, Signal::SIGKILL);
        let _ = child.wait().await;
        stragglers::finished(pid);
        return AttemptOutcome::failed(ExecError::retryable(format!("`{program}` was stopped: {why}")));
    }
    let out = child.stdout.take().map(|s| tokio::spawn(pump(s, LogStream::Stdout, sink.clone())));
    let err = child.stderr.take().map(|s| tokio::spawn(pump(s, LogStream::Stderr, sink.clone())));

    let mut killed = false;
    let status = tokio::select! {
        status = child.wait() => status,
        grace = wait_for_kill(&mut kill) => {
            killed = true;
            signal_group(pid, Signal::SIGTERM);
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    sink.log(LogStream::System, format!("sluice: the step did not stop within {grace:?} of SIGTERM; sending SIGKILL\n").as_bytes());
                    signal_group(pid, Signal::SIGKILL);
                    child.wait().await
                }
            }
        }
    };
    stragglers::finished(pid);
    // Whatever the step left running dies with it, in its group or out of it, so that no
    // stray process outlives its attempt or holds the log pipes open.
    signal_group(pid, Signal::SIGKILL);
    for _ in 0..5 {
        if stragglers::sweep() == 0 {
            break;
        }
        // Let the killed die (and their children be re-parented), then reap and look again.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let deadline = tokio::time::Instant::now() + PIPE_GRACE;
    for task in [out, err].into_iter().flatten() {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            abort.abort();
            sink.log(
                LogStream::System,
                format!("sluice: a process that left the step still held its output open {PIPE_GRACE:?} after the step ended; the rest of its output is not kept\n").as_bytes(),
            );
        }
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => {
            return AttemptOutcome::failed(ExecError::retryable(format!("cannot wait for `{program}`: {e}")));
        }
    };
    if killed {
        return AttemptOutcome {
            result: Err(ExecError::cancelled("the step was stopped")),
            outputs: Default::default(),
            exit_code: status.code(),
        };
    }
    let exit_code = status.code();
    if status.success() {
        return match read_outputs_file(&request.files.outputs_file) {
            Ok(outputs) => AttemptOutcome { result: Ok(()), outputs, exit_code },
            Err(e) => AttemptOutcome { result: Err(e), outputs: Default::default(), exit_code },
        };
    }
    let message = match exit_code {
        Some(code) => format!("`{program}` exited with code {code}"),
        None => {
            use std::os::unix::process::ExitStatusExt;
            let sig = status.signal().and_then(|s| Signal::try_from(s).ok());
            match sig {
                Some(sig) => format!("`{program}` was killed by {sig}"),
                None => format!("`{program}` ended abnormally"),
            }
        }
    };
    AttemptOutcome { result: Err(ExecError::retryable(message)), outputs: Default::default(), exit_code }
}

/// How long the output of a step that has exited is still read: what its processes wrote
/// before they were stopped.
const PIPE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn pump(mut stream: impl AsyncRead + Unpin, which: LogStream, sink: Arc<dyn AttemptSink>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => sink.log(which, &buf[..n]),
        }
    }
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 0
    {
        // ESRCH (the group is already gone) is the common, expected case.
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// The start time of a process (clock ticks since boot, field 22 of `/proc/PID/stat`), used to
/// tell a process apart from a later one that reused its pid.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// Kills the process group an earlier engine started for an attempt, if that process still
/// exists (same pid and same start time). Returns whether it killed anything.
pub fn reap_process_group(pid: u32, start_time: u64) -> bool {
    if process_start_time(pid) == Some(start_time) {
        signal_group(pid, Signal::SIGKILL);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::{AttemptFiles, AttemptId, KillSwitch, ProcessSpec};
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    struct Capture {
        out: Mutex<Vec<(LogStream, Vec<u8>)>>,
        pid: Mutex<Option<u32>>,
        refuse_pid: bool,
    }
    impl AttemptSink for Capture {
        fn log(&self, stream: LogStream, chunk: &[u8]) {
            self.out.lock().unwrap().push((stream, chunk.to_vec()));
        }
        fn started(&self, pid: u32) -> Result<(), String> {
            *self.pid.lock().unwrap() = Some(pid);
            if self.refuse_pid { Err("cannot record the process".into()) } else { Ok(()) }
        }
    }
    impl Capture {
        fn text(&self, stream: LogStream) -> String {
            let out = self.out.lock().unwrap();
            out.iter()
                .filter(|(s, _)| *s == stream)
                .map(|(_, c)| String::from_utf8_lossy(c).into_owned())
                .collect()
        }
    }

    fn request(dir: &std::path::Path, argv: &[&str]) -> AttemptRequest {
        let mut r = AttemptRequest::new(
            AttemptId { run: 1, step: "s".into(), item: 0, attempt: 1 },
            ExecSpec::Process(ProcessSpec { argv: argv.iter().map(|s| s.to_string()).collect() }),
            AttemptFiles::at(dir.to_path_buf(), &dir.join("s.0.1"), false),
        );
        r.env = [("GREETING".to_string(), "hi".to_string())].into();
        r
    }

    async fn exec(req: AttemptRequest) -> (AttemptOutcome, Arc<Capture>) {
        let sink = Arc::new(Capture::default());
        let (_switch, rx) = KillSwitch::new();
        let outcome = ProcessExecutor.execute(req, sink.clone(), rx).await;
        (outcome, sink)
    }

    #[tokio::test]
    async fn success_streams_logs_and_reads_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let script =
            r#"echo "$GREETING from $SLUICE_STEP"; echo oops >&2; echo '{"n": 3}' > "$SLUICE_OUTPUTS""#;
        let (outcome, sink) = exec(request(dir.path(), &["sh", "-c", script])).await;
        assert_eq!(outcome.result, Ok(()));
        assert_eq!(outcome.exit_code, Some(0));
        assert_eq!(outcome.outputs["n"], 3);
        assert_eq!(sink.text(LogStream::Stdout), "hi from s\n");
        assert_eq!(sink.text(LogStream::Stderr), "oops\n");
        assert!(sink.pid.lock().unwrap().is_some());
    }

    #[tokio::test]
    async fn failures_are_classified() {
        let dir = tempfile::tempdir().unwrap();
        let (outcome, _) = exec(request(dir.path(), &["sh", "-c", "exit 3"])).await;
        let err = outcome.result.unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Retryable);
        assert!(err.message.contains("code 3"), "{}", err.message);

        let (outcome, _) = exec(request(dir.path(), &["definitely-not-a-command-xyz"])).await;
        let err = outcome.result.unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Fatal);
        assert!(err.message.contains("was not found"));

        let mut req = request(dir.path(), &["true"]);
        req.workdir = dir.path().join("missing");
        let err = exec(req).await.0.result.unwrap_err();
        assert!(err.message.contains("does not exist"));
    }

    #[tokio::test]
    async fn kill_stops_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child.pid");
        let script = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let sink = Arc::new(Capture::default());
        let (switch, rx) = KillSwitch::new();
        let task = tokio::spawn(ProcessExecutor.execute(
            request(dir.path(), &["sh", "-c", &script]),
            sink.clone(),
            rx,
        ));
        while !marker.exists() || std::fs::read_to_string(&marker).unwrap().trim().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let grandchild: u32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        switch.kill(Duration::from_secs(5));
        let outcome = task.await.unwrap();
        assert_eq!(outcome.result.unwrap_err().kind, crate::ErrorKind::Cancelled);
        // The background `sleep` was in the step's process group and is gone too (or a zombie
        // waiting for init). SIGKILL is delivered asynchronously: give it a moment.
        let mut state = String::new();
        for _ in 0..200 {
            state = std::fs::read_to_string(format!("/proc/{grandchild}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("grandchild still alive: {state}");
    }

    #[tokio::test]
    async fn a_process_that_leaves_the_group_dies_when_the_step_ends() {
        // Without the subreaper (this test binary did not opt in): found by its tag.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("straggler.pid");
        let script = format!("setsid sleep 30 & echo $! > {}; echo bye", marker.display());
        let started = std::time::Instant::now();
        let (outcome, sink) = exec(request(dir.path(), &["sh", "-c", &script])).await;
        assert_eq!(outcome.result, Ok(()));
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(sink.text(LogStream::Stdout), "bye\n");
        let pid: u32 = std::fs::read_to_string(&marker).unwrap().trim().parse().unwrap();
        for _ in 0..200 {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if state.is_empty() || state.contains(") Z") {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the straggler {pid} outlived its step");
    }

    #[tokio::test]
    async fn a_process_that_cannot_be_recorded_is_stopped_and_fails() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran-on");
        let script = format!("sleep 0.5; touch {}", marker.display());
        let sink = Arc::new(Capture { refuse_pid: true, ..Default::default() });
        let (_switch, rx) = KillSwitch::new();
        let outcome = ProcessExecutor.execute(request(dir.path(), &["sh", "-c", &script]), sink, rx).await;
        let err = outcome.result.unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::Retryable);
        assert!(err.message.contains("cannot record the process"), "{}", err.message);
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!marker.exists(), "the unrecorded process was stopped before it did its work");
    }

    #[test]
    fn start_time_of_self_is_readable() {
        assert!(process_start_time(std::process::id()).is_some());
        assert!(process_start_time(u32::MAX).is_none());
    }
}
