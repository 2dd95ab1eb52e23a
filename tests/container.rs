//! Container steps on a real Docker Engine (tests/docker.sh starts a private one).
//! Without an engine these tests skip loudly; with SLUICE_REQUIRE_DOCKER=1 they fail instead.

mod common;

use common::*;
use std::time::{Duration, Instant};

fn image_spec(body: &str) -> String {
    body.replace("IMAGE", TEST_IMAGE)
}

#[test]
fn container_steps_run_stream_logs_and_pass_outputs() {
    if !docker_or_skip("container_steps_run_stream_logs_and_pass_outputs") {
        return;
    }
    let sb = Sandbox::new();
    sb.write("input.csv", "a,b\n1,2\n3,4\n");
    let spec = sb.write(
        "c.yaml",
        &image_spec(
            r#"
name: containers
steps:
  count:
    env: { GREETING: hello }
    container:
      image: IMAGE
      inputs: [input.csv]
      command:
        - sh
        - -c
        - |
          echo "$GREETING from $SLUICE_STEP attempt $SLUICE_ATTEMPT"
          for i in $(seq 1 200); do echo "line $i"; done
          echo "{\"rows\": $(wc -l < /sluice/inputs/input.csv)}" > "$SLUICE_OUTPUTS"
          echo shared > shared.txt
          pwd
    outputs: [rows]
  next:
    needs: [count]
    container:
      image: IMAGE
      command: [sh, -c, 'cat /sluice/run/shared.txt; echo "rows={{ steps.count.outputs.rows }}"; cat /sluice/inputs/input.csv 2>&1 | head -1']
"#,
        ),
    );
    let out = sb.sluice(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = sb.show("1");
    assert_eq!(step(&show, "count")["outputs"]["rows"], 3);
    let logs = text(&sb.sluice(&["logs", "1", "count"]).stdout);
    assert!(logs.starts_with("hello from count attempt 1\n"), "{logs}");
    let lines: Vec<&str> = logs.lines().filter(|l| l.starts_with("line ")).collect();
    let want: Vec<String> = (1..=200).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, want, "stdout arrives whole and in order");
    assert!(logs.trim_end().ends_with("/sluice/run"), "the default workdir is the run folder: {logs}");
    let next = text(&sb.sluice(&["logs", "1", "next"]).stdout);
    assert!(next.contains("shared\nrows=3\n"), "{next}");
    assert!(next.contains("No such file"), "inputs are mounted only for the steps that declare them: {next}");
    assert!(sb.leftover_containers().is_empty(), "containers are removed: {:?}", sb.leftover_containers());
}

#[test]
fn failures_timeouts_missing_images_and_unreachable_engines() {
    if !docker_or_skip("failures_timeouts_missing_images_and_unreachable_engines") {
        return;
    }
    let sb = Sandbox::new();
    let spec = sb.write(
        "f.yaml",
        &image_spec(
            r#"
name: failing-containers
steps:
  exit3:
    retries: { count: 1, delay: 10ms }
    container: { image: IMAGE, command: [sh, -c, 'echo trying; exit 3'] }
  slow:
    timeout: 1s
    container: { image: IMAGE, command: [sleep, "60"] }
  missing:
    container: { image: "no-such/image:9", pull: never }
  unpullable:
    container: { image: "no-such/image:9" }
  bad_outputs:
    container: { image: IMAGE, command: [sh, -c, 'echo "[1]" > "$SLUICE_OUTPUTS"'] }
"#,
        ),
    );
    let started = Instant::now();
    let out = sb.sluice(&["run", spec.to_str().unwrap(), "--grace", "5s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(30), "the timeout stopped `sleep 60`");
    let show = sb.show("1");
    let exit3 = step(&show, "exit3");
    assert_eq!(exit3["state"], "failed");
    assert_eq!(attempts(exit3), 2);
    assert!(exit3["message"].as_str().unwrap().contains("exited with code 3"), "{exit3}");
    assert_eq!(step(&show, "slow")["state"], "timed_out");
    let missing = step(&show, "missing")["message"].as_str().unwrap().to_string();
    assert!(missing.contains("not on the Docker engine") && missing.contains("never"), "{missing}");
    let unpullable = step(&show, "unpullable")["message"].as_str().unwrap().to_string();
    assert!(unpullable.contains("cannot pull image `no-such/image:9`"), "{unpullable}");
    assert!(step(&show, "bad_outputs")["message"].as_str().unwrap().contains("JSON object"));
    assert!(sb.leftover_containers().is_empty(), "{:?}", sb.leftover_containers());

    // No engine at all: a clear error, not a hang or a panic.
    let sb = Sandbox::new();
    let one = sb.write("one.yaml", &image_spec("name: one\nsteps:\n  a: { container: { image: IMAGE } }\n"));
    let out = sb.sluice(&["run", one.to_str().unwrap(), "--docker-host", "unix:///nonexistent/docker.sock"]);
    assert_eq!(out.status.code(), Some(1));
    let msg = step(&sb.show("1"), "a")["message"].as_str().unwrap().to_string();
    assert!(msg.contains("no Docker engine answers at unix:///nonexistent/docker.sock"), "{msg}");
}

#[test]
fn interrupt_stops_the_container_and_resume_finishes() {
    if !docker_or_skip("interrupt_stops_the_container_and_resume_finishes") {
        return;
    }
    let sb = Sandbox::new();
    let spec = sb.write(
        "i.yaml",
        &image_spec(
            r#"
name: interruptible
steps:
  work:
    container:
      image: IMAGE
      command: [sh, -c, 'echo up > /sluice/run/up.$SLUICE_ATTEMPT; [ "$SLUICE_ATTEMPT" -gt 1 ] && exit 0; trap "echo got TERM; exit 1" TERM; sleep 60 & wait']
  after: { needs: [work], container: { image: IMAGE, command: ["true"] } }
"#,
        ),
    );
    let out = sb.interrupt_run(&spec, "work/1/up.1");
    assert_eq!(out.status.code(), Some(130));
    assert!(
        text(&sb.sluice(&["logs", "1", "work"]).stdout).contains("got TERM"),
        "SIGTERM reached the command"
    );
    assert!(sb.leftover_containers().is_empty(), "{:?}", sb.leftover_containers());
    let out = sb.sluice(&["resume", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = sb.show("1");
    assert_eq!(show["state"], "succeeded");
    assert_eq!(attempts(step(&show, "work")), 2);
}

#[test]
fn a_killed_engine_leaves_a_container_that_the_next_one_reaps_and_retries() {
    if !docker_or_skip("a_killed_engine_leaves_a_container_that_the_next_one_reaps_and_retries") {
        return;
    }
    let sb = Sandbox::new();
    let spec = sb.write(
        "k.yaml",
        &image_spec(
            r#"
name: killed
steps:
  long:
    container:
      image: IMAGE
      command: [sh, -c, 'echo up > /sluice/run/up.$SLUICE_ATTEMPT; [ "$SLUICE_ATTEMPT" -gt 1 ] && exit 0; sleep 60']
"#,
        ),
    );
    let mut child = sb.cmd().args(["run", "-q", spec.to_str().unwrap()]).spawn().unwrap();
    wait_for_file(&sb.data().join("work/1/up.1"), "the container never started");
    child.kill().unwrap(); // SIGKILL: the container is left running
    child.wait().unwrap();
    let left = sb.leftover_containers();
    assert!(
        left.len() == 1 && left[0].ends_with("-r1-long-0-1"),
        "the container outlives the engine: {left:?}"
    );
    let out = sb.sluice(&["resume", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(sb.leftover_containers().is_empty(), "the orphan was reaped: {:?}", sb.leftover_containers());
    let show = sb.show("1");
    assert_eq!(show["state"], "succeeded");
    assert_eq!(attempts(step(&show, "long")), 2, "the lost attempt ran again");
}

#[test]
fn logs_stream_while_running_and_cancel_stops_and_removes_the_container() {
    if !docker_or_skip("logs_stream_while_running_and_cancel_stops_and_removes_the_container") {
        return;
    }
    use sluice_engine::driver::{Control, Engine, EngineOptions, Notice};
    use sluice_engine::scheduler::{RunState, StepState};
    let sb = Sandbox::new();
    let spec = sb.write(
        "c.yaml",
        &image_spec("name: c\nsteps:\n  long: { container: { image: IMAGE, command: [sh, -c, 'echo ready; sleep 60'] } }\n"),
    );
    let plan = std::sync::Arc::new(sluice_engine::compile::compile_file(&spec).unwrap());
    let engine = Engine::open(EngineOptions::new(sb.data())).unwrap();
    let id = engine.create_run(&plan, Default::default(), sluice_engine::store::Trigger::Manual).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let started = Instant::now();
    let state = rt.block_on(async {
        let (_stop_tx, stop) = tokio::sync::watch::channel(0u32);
        let (ctl_tx, ctl) = tokio::sync::mpsc::unbounded_channel();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let runs = [id];
        let driving = engine.drive_with(&runs, Some(tx), stop, ctl);
        let canceller = async {
            while let Some(n) = rx.recv().await {
                if matches!(n, Notice::Step { state: StepState::Running, .. }) {
                    // The log streams while the container runs: `ready` arrives long before
                    // the container ends.
                    let deadline = Instant::now() + Duration::from_secs(20);
                    loop {
                        let logs = engine.store().logs(id, 0).unwrap();
                        if logs.iter().any(|c| String::from_utf8_lossy(&c.data).contains("ready")) {
                            break;
                        }
                        assert!(Instant::now() < deadline, "no log while the container runs");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    ctl_tx.send(Control::Cancel(id)).unwrap();
                }
            }
        };
        let (states, ()) = tokio::join!(driving, canceller);
        states.unwrap()[&id]
    });
    assert_eq!(state, RunState::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(sb.leftover_containers().is_empty(), "{:?}", sb.leftover_containers());
}

/// Runs the docker CLI against the test engine (DOCKER_HOST), for setting up images.
fn docker(args: &[&str]) -> String {
    let out = std::process::Command::new("docker").args(args).output().expect("docker CLI");
    assert!(out.status.success(), "docker {args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn a_cached_container_step_is_keyed_by_its_image_id_not_its_tag() {
    if !docker_or_skip("a_cached_container_step_is_keyed_by_its_image_id_not_its_tag") {
        return;
    }
    let tag = format!("sluice-test/cache-{}:1", std::process::id());
    docker(&["tag", TEST_IMAGE, &tag]);
    let sb = Sandbox::new();
    let spec = sb.write(
        "c.yaml",
        &format!(
            r#"
name: cached-container
steps:
  make:
    cache: true
    container:
      image: {tag}
      pull: never
      command: [sh, -c, 'echo made > /sluice/run/out.txt; echo ran']
    artifacts: {{out: out.txt}}
"#
        ),
    );
    let spec = spec.to_str().unwrap();
    for _ in 0..2 {
        let out = sb.sluice(&["run", "-q", spec]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let show = sb.show("2");
    assert_eq!(step(&show, "make")["cached"][0]["run"], 1, "{show}");
    assert_eq!(std::fs::read_to_string(sb.data().join("work/2/out.txt")).unwrap(), "made\n");
    let explain = |run: &str| -> serde_json::Value {
        let out = sb.sluice(&["cache", "explain", run, "make", "--output", "json"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["tasks"][0].clone()
    };
    let id = docker(&["image", "inspect", "--format", "{{.Id}}", &tag]);
    assert_eq!(explain("2")["components"]["image"], id.trim());

    // The same tag, another image: the step runs again, and explain says why.
    let name = format!("sluice-cache-{}", std::process::id());
    docker(&["create", "--name", &name, "--network", "none", TEST_IMAGE, "true"]);
    docker(&["commit", "--change", "ENV CACHE_TEST=2", &name, &tag]);
    docker(&["rm", &name]);
    let out = sb.sluice(&["run", "-q", spec]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(step(&sb.show("3"), "make")["cached"].is_null());
    let e = explain("3");
    let said: Vec<&str> = e["changes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].starts_with(&format!("image `{tag}` now resolves to another image: sha256 ")),
        "{said:?}"
    );
    docker(&["rmi", &tag]);
}

#[test]
fn a_container_step_sees_upstream_artifacts_read_only_in_its_inputs() {
    if !docker_or_skip("a_container_step_sees_upstream_artifacts_read_only_in_its_inputs") {
        return;
    }
    let sb = Sandbox::new();
    let spec = sb.write(
        "m.yaml",
        &image_spec(
            r#"
name: mounted
steps:
  make:
    process: {shell: 'echo "weights" > "$SLUICE_RUN_DIR/model.bin"'}
    artifacts: {model: model.bin}
  use:
    needs: [make]
    container:
      image: IMAGE
      command:
        - sh
        - -c
        - |
          echo "path={{ steps.make.artifacts.model.path }}"
          cat {{ steps.make.artifacts.model.path }}
          if echo x >> {{ steps.make.artifacts.model.path }}; then echo WRITABLE; else echo read-only; fi
"#,
        ),
    );
    let out = sb.sluice(&["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = text(&sb.sluice(&["logs", "1", "use"]).stdout);
    assert!(logs.contains("path=/sluice/inputs/"), "{logs}");
    assert!(logs.contains("-model.bin\n"), "{logs}");
    assert!(logs.contains("weights\n"), "{logs}");
    assert!(logs.contains("read-only") && !logs.contains("WRITABLE"), "{logs}");

    // In an encrypted folder the container sees the same plaintext, from a copy that is gone
    // once the step ends (the store keeps only the encrypted file).
    let enc = Sandbox::new();
    let key = enc.path("k.key");
    assert!(enc.sluice(&["key", "generate", key.to_str().unwrap()]).status.success());
    let with = |args: &[&str]| enc.cmd().env("SLUICE_ENCRYPTION_KEY_FILE", &key).args(args).output().unwrap();
    let out = with(&["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = text(&with(&["logs", "1", "use"]).stdout);
    assert!(logs.contains("weights\n") && logs.contains("read-only"), "{logs}");
    let open = common::files_under(&enc.data().join("artifacts/open"));
    assert!(open.is_empty(), "the plaintext copy is removed: {open:?}");
}
