//! Steps on a real Slurm cluster: `tests/slurm.sh` (called by `bash tests/run.sh`) starts a
//! one-node cluster of Debian's slurm-wlm with a private config and exports SLURM_CONF. Each
//! test skips, loudly, when no cluster answers; with SLUICE_REQUIRE_SLURM=1 (CI) it fails.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Sandbox, step, text, wait_for_file};

/// Whether the test cluster answers (`sinfo`); a loud skip when it does not.
fn cluster(test: &str) -> bool {
    let up = Command::new("sinfo")
        .args(["-h", "-o", "%a"])
        .output()
        .is_ok_and(|o| o.status.success() && text(&o.stdout).contains("up"));
    if up {
        return true;
    }
    if std::env::var("SLUICE_REQUIRE_SLURM").as_deref() == Ok("1") {
        panic!("{test}: SLUICE_REQUIRE_SLURM=1 but no Slurm cluster answers (`sinfo`; is SLURM_CONF set?)");
    }
    eprintln!(
        "\n*** SKIPPED {test}: no Slurm cluster answers (`sinfo`). `bash tests/run.sh` starts one (tests/slurm.sh). ***\n"
    );
    false
}

fn run(sb: &Sandbox, spec: &Path, extra: &[&str]) -> std::process::Output {
    sb.cmd().args(["run", "-q"]).arg(spec).args(extra).output().expect("run sluice")
}

fn logs(sb: &Sandbox, run: &str, step: &str) -> String {
    let out = sb.sluice(&["logs", run, step]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The Slurm state of a job, as `squeue --states=all` lists it (jobs stay listed for
/// MinJobAge after they end).
fn job_state(id: &str) -> String {
    let out = Command::new("squeue").args(["-h", "--states=all", "-j", id, "-o", "%T"]).output().unwrap();
    text(&out.stdout).trim().to_string()
}

/// The job ids a step's log says it was submitted as.
fn job_ids(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            l.split_once("submitted to Slurm")
                .and_then(|(_, rest)| rest.rsplit(" job ").next())
                .map(|id| id.split_whitespace().next().unwrap_or("").to_string())
        })
        .collect()
}

#[test]
fn a_chain_passes_outputs_and_a_mapped_step_is_one_job_array() {
    if !cluster("a_chain_passes_outputs_and_a_mapped_step_is_one_job_array") {
        return;
    }
    let sb = Sandbox::new();
    let spec = sb.write(
        "chain.yaml",
        r#"name: chain
defaults:
  slurm: {partition: debug, time: 5m}
steps:
  a:
    process: {shell: 'echo "a on Slurm job $SLURM_JOB_ID"; echo "{\"n\": 3}" > "$SLUICE_OUTPUTS"'}
    outputs: [n]
  b:
    needs: [a]
    map: [10, 20, 30, 40, 50]
    env: {SHARED: same, PER_ITEM: "v{{ item }}"}
    process: {shell: 'echo "item {{ item }} n={{ steps.a.outputs.n }} task=$SLURM_ARRAY_TASK_ID $SHARED $PER_ITEM"; echo to-stderr >&2'}
  c:
    needs: [b]
    process: {command: [sh, -c, 'echo "c in $SLURM_JOB_PARTITION"']}
"#,
    );
    let out = run(&sb, &spec, &[]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let a = logs(&sb, "1", "a");
    assert!(a.contains("submitted to Slurm on partition debug as job "), "{a}");
    assert!(a.contains("a on Slurm job "), "{a}");
    let b = logs(&sb, "1", "b");
    let arrays: std::collections::HashSet<String> =
        b.lines().filter_map(|l| l.split_once(" of job array ").map(|(_, r)| r.to_string())).collect();
    assert_eq!(arrays.len(), 1, "the five items went as one array: {b}");
    assert!(arrays.iter().next().unwrap().ends_with("(5 tasks)"), "{b}");
    for (i, v) in [10, 20, 30, 40, 50].iter().enumerate() {
        assert!(b.contains(&format!("item {v} n=3 task={i} same v{v}")), "{b}");
    }
    assert!(b.contains("to-stderr"), "stderr is streamed too: {b}");
    assert!(logs(&sb, "1", "c").contains("c in debug"));
    // Each job is named for its owner, run, step, item and attempt.
    let out = Command::new("squeue").args(["-h", "--states=all", "-o", "%j"]).output().unwrap();
    let names = text(&out.stdout);
    assert!(names.lines().any(|n| n.starts_with("sluice-") && n.ends_with("-r1-a.i0.a1")), "{names}");
    assert!(names.lines().any(|n| n.starts_with("sluice-") && n.ends_with("-r1-b.a1")), "{names}");
    // The job script holds paths and the per-item variable, not the shared one (it went
    // through sbatch's environment), and only its owner may read it.
    let script = std::fs::read_to_string(sb.data().join("attempts/1/b.2.1.slurm.sh")).unwrap();
    assert!(script.contains("export PER_ITEM=v30") && !script.contains("export SHARED"), "{script}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sb.data().join("attempts/1/b.2.1.slurm.sh")).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the script is private: {mode:o}");
}

#[test]
fn a_failing_job_is_retried_and_a_bad_partition_is_a_clear_error() {
    if !cluster("a_failing_job_is_retried_and_a_bad_partition_is_a_clear_error") {
        return;
    }
    let sb = Sandbox::new();
    let marker = sb.path("tried");
    let spec = sb.write(
        "flaky.yaml",
        &format!(
            r#"name: flaky
steps:
  flaky:
    retries: {{count: 2, delay: 100ms}}
    slurm: {{}}
    process: {{shell: 'if [ -e {m} ]; then echo second; else touch {m}; echo first; exit 3; fi'}}
"#,
            m = marker.display()
        ),
    );
    let out = run(&sb, &spec, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = sb.show("1");
    let attempts = step(&show, "flaky")["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 2, "{show}");
    let first = attempts[0]["message"].as_str().unwrap_or_default();
    assert!(first.contains("exited with code 3") && first.contains("Slurm job"), "{first}");

    // A partition the cluster does not have: the step fails at once, for good (no retry
    // helps), with sbatch's own words.
    let bad = sb.write(
        "bad.yaml",
        "name: bad\nsteps:\n  s:\n    retries: 3\n    slurm: {partition: nosuchpartition}\n    process: {command: [\"true\"]}\n",
    );
    let out = run(&sb, &bad, &[]);
    assert!(!out.status.success());
    let show = sb.show("2");
    let s = step(&show, "s");
    assert_eq!(s["attempts"].as_array().unwrap().len(), 1, "{show}");
    let message = s["attempts"][0]["message"].as_str().unwrap();
    assert!(message.contains("sbatch refused the job") && message.contains("partition"), "{message}");

    // No sbatch at all: a clear error naming it.
    let out = sb
        .cmd()
        .env("SLUICE_SLURM_BIN", sb.path("no-slurm-here"))
        .args(["run", "-q"])
        .arg(&bad)
        .args(["--slurm", "debug"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let show = sb.show("3");
    let message = step(&show, "s")["attempts"][0]["message"].as_str().unwrap().to_string();
    assert!(message.contains("`sbatch` was not found"), "{message}");
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn gpus_become_gres_and_take_no_local_gpu() {
    if !cluster("gpus_become_gres_and_take_no_local_gpu") {
        return;
    }
    let sb = Sandbox::new();
    // The engine has no GPU (`--gpus 0`): the step is not refused as a local misfit but sent
    // to Slurm with `--gres=gpu:2`, which this GPU-less cluster (no `GresTypes`) turns down
    // in its own words; the step fails at once, for good.
    let spec = sb.write(
        "gpu.yaml",
        "name: gpu\nsteps:\n  fit:\n    retries: 2\n    resources: {gpu: 2}\n    slurm: {}\n    process: {command: [\"true\"]}\n",
    );
    let out = run(&sb, &spec, &["--gpus", "0"]);
    assert!(!out.status.success());
    assert!(!text(&out.stderr).contains("can never start"), "{}", text(&out.stderr));
    let show = sb.show("1");
    let attempts = step(&show, "fit")["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 1, "{show}");
    let message = attempts[0]["message"].as_str().unwrap();
    assert!(message.contains("sbatch refused the job") && message.contains("generic resource"), "{message}");
}

#[test]
fn a_timeout_and_a_ctrl_c_cancel_the_job() {
    if !cluster("a_timeout_and_a_ctrl_c_cancel_the_job") {
        return;
    }
    let sb = Sandbox::new();
    let spec = sb.write(
        "slow.yaml",
        "name: slow\nsteps:\n  slow:\n    timeout: 2s\n    process: {command: [sleep, \"60\"]}\n",
    );
    let started = Instant::now();
    let out = run(&sb, &spec, &["--slurm", "debug"]);
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(40), "the timeout stopped it");
    let show = sb.show("1");
    assert_eq!(step(&show, "slow")["state"], "timed_out", "{show}");
    let log = logs(&sb, "1", "slow");
    let id = job_ids(&log).pop().expect("a job id in the log");
    assert!(log.contains(&format!("cancelled Slurm job {id} (scancel)")), "{log}");
    assert_eq!(job_state(&id), "CANCELLED");

    // Ctrl-C: the engine cancels the job it runs, then stops.
    let marker = sb.path("began");
    let spec = sb.write(
        "long.yaml",
        &format!(
            "name: long\nsteps:\n  long:\n    slurm: {{}}\n    process: {{shell: 'touch {}; sleep 60'}}\n",
            marker.display()
        ),
    );
    let child = sb
        .cmd()
        .args(["run", "-q"])
        .arg(&spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file_exists(&marker);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = logs(&sb, "2", "long");
    let id = job_ids(&log).pop().expect("a job id in the log");
    assert!(log.contains("(scancel)"), "{log}\n{}", text(&out.stderr));
    assert_eq!(job_state(&id), "CANCELLED");
}

fn wait_for_file_exists(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(Instant::now() < deadline, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `sluice run SPEC`, waits for its step to create `began`, and SIGKILLs the engine.
fn kill_engine_once_started(sb: &Sandbox, spec: &Path, began: &Path) {
    let mut child =
        sb.cmd().args(["run", "-q"]).arg(spec).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for_file_exists(began);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_killed_engine_adopts_its_running_job_and_takes_a_finished_ones_result() {
    if !cluster("a_killed_engine_adopts_its_running_job_and_takes_a_finished_ones_result") {
        return;
    }
    let sb = Sandbox::new();
    let count = sb.path("ran");
    let began = sb.path("began");
    let spec = sb.write(
        "long.yaml",
        &format!(
            r#"name: long
steps:
  work:
    slurm: {{}}
    outputs: [answer]
    process: {{shell: 'echo x >> {count}; touch {began}; sleep 4; echo "{{\"answer\": 42}}" > "$SLUICE_OUTPUTS"; echo finished'}}
  after:
    needs: [work]
    process: {{command: [echo, "got {{{{ steps.work.outputs.answer }}}}"]}}
"#,
            count = count.display(),
            began = began.display()
        ),
    );
    // SIGKILL while the job runs; resume while it still runs: adopted, not submitted again.
    kill_engine_once_started(&sb, &spec, &began);
    let out = sb.sluice(&["resume", "1"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let show = sb.show("1");
    assert_eq!(show["state"], "succeeded", "{show}");
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1, "the step ran once");
    let log = logs(&sb, "1", "work");
    assert!(
        log.contains("was left running by an earlier engine; watching it instead of submitting again"),
        "{log}"
    );
    assert!(log.contains("finished"), "{log}");
    assert!(logs(&sb, "1", "after").contains("got 42"));

    // SIGKILL, then the job ends while no engine runs: its result is taken on resume.
    std::fs::remove_file(&began).unwrap();
    std::fs::write(&count, "").unwrap();
    kill_engine_once_started(&sb, &spec, &began);
    let attempts = sb.data().join("attempts/2");
    let exit = std::fs::read_dir(&attempts)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".slurm.sh"))
        .map(|p| p.with_extension("exit"))
        .expect("the job's script");
    wait_for_file(&exit, "the job never ended");
    // The job is still in the controller's memory (COMPLETED, for MinJobAge): the resumed
    // engine adopts an ended job and takes its result (exit status file and outputs).
    let out = sb.sluice(&["resume", "2"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(sb.show("2")["state"], "succeeded");
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 1, "the step ran once");
    assert!(logs(&sb, "2", "after").contains("got 42"));

    // SIGKILL, then `sluice cancel` of the run no engine drives: its job is cancelled too.
    std::fs::remove_file(&began).unwrap();
    kill_engine_once_started(&sb, &spec, &began);
    let out = sb.sluice(&["cancel", "3"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(sb.show("3")["state"], "cancelled");
    let out = Command::new("squeue").args(["-h", "--states=all", "-o", "%j|%T"]).output().unwrap();
    let listing = text(&out.stdout);
    let state = listing
        .lines()
        .find_map(|l| {
            l.split_once('|').filter(|(n, _)| n.ends_with("-r3-work.i0.a1")).map(|(_, s)| s.to_string())
        })
        .unwrap_or_else(|| panic!("no job of run 3 in {listing}"));
    assert!(state == "CANCELLED" || state == "COMPLETING", "{listing}");
}

#[test]
fn a_job_cancelled_from_outside_fails_retryably_and_the_retry_succeeds() {
    if !cluster("a_job_cancelled_from_outside_fails_retryably_and_the_retry_succeeds") {
        return;
    }
    let sb = Sandbox::new();
    let began = sb.path("began");
    let spec = sb.write(
        "outside.yaml",
        &format!(
            "name: outside\nsteps:\n  s:\n    retries: {{count: 1, delay: 100ms}}\n    slurm: {{}}\n    process: {{shell: 'if [ -e {b} ]; then echo again; else touch {b}; sleep 60; fi'}}\n",
            b = began.display()
        ),
    );
    let child = sb
        .cmd()
        .args(["run", "-q"])
        .arg(&spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_file_exists(&began);
    // The job named for run 1, step s, item 0, attempt 1.
    let out = Command::new("squeue").args(["-h", "-o", "%i|%j"]).output().unwrap();
    let listing = text(&out.stdout);
    let id = listing
        .lines()
        .find_map(|l| {
            l.split_once('|').filter(|(_, n)| n.ends_with("-r1-s.i0.a1")).map(|(i, _)| i.to_string())
        })
        .unwrap_or_else(|| panic!("no job of the attempt in {listing}"));
    let sc = Command::new("scancel").arg(&id).status().unwrap();
    assert!(sc.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = sb.show("1");
    let attempts = step(&show, "s")["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 2, "{show}");
    let message = attempts[0]["message"].as_str().unwrap();
    assert!(message.contains("cancelled outside Sluice"), "{message}");
    assert!(logs(&sb, "1", "s").contains("again"));
}

#[test]
fn the_example_runs_on_the_cluster() {
    if !cluster("the_example_runs_on_the_cluster") {
        return;
    }
    let sb = Sandbox::new();
    let example = common::repo().join("dags/example-slurm.yaml");
    let out = run(&sb, &example, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let fit = logs(&sb, "1", "fit");
    assert!(fit.contains("fold 2 of 1000 rows, array task 2"), "{fit}");
    assert!(fit.contains("(3 tasks)"), "{fit}");
    assert!(logs(&sb, "1", "report").contains("fitted 3 folds"));
}

#[test]
fn slurm_blocks_are_checked() {
    // No cluster needed: `sluice check` reads the file only.
    let sb = Sandbox::new();
    let spec = sb.write(
        "bad.yaml",
        r#"name: bad
steps:
  w:
    wasm: {module: plugin.wasm}
    slurm: {partition: debug}
  p:
    slurm: {partition: "two words", extra: ["--job-name=mine", "exclusive"]}
    process: {command: ["true"]}
"#,
    );
    let out = sb.sluice(&["validate", spec.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = text(&out.stderr) + &text(&out.stdout);
    assert!(err.contains("only `process:` steps run on Slurm"), "{err}");
    assert!(err.contains("must be one word"), "{err}");
    assert!(err.contains("`--job-name` is set by Sluice itself"), "{err}");
    assert!(err.contains("`exclusive` is not an sbatch option"), "{err}");
    assert!(!err.contains("panicked"));
}
