//! Hostile input, end to end: files, steps and clients that tried to exhaust memory, freeze
//! the engine or run shell code. Each test bounds itself (a memory limit, a deadline) so that a
//! regression fails fast instead of hanging CI.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `sluice ARGS` on the sandbox's data folder with at most `mem_mb` of address space and
/// `secs` of wall time (then SIGKILL); returns its output and whether it was killed.
fn bounded(sb: &Sandbox, args: &[&str], secs: u64, mem_mb: u64) -> (Output, bool) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {}; exec \"$@\"", mem_mb * 1024))
        .arg("sh")
        .arg(bin())
        .arg("--data-dir")
        .arg(sb.data())
        .args(args)
        .env_remove("SLUICE_FAULT")
        .env_remove("SLUICE_HOME")
        .env_remove("SLUICE_SERVER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start sluice");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut killed = false;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().expect("output"), killed)
}

/// The 482-byte file of the report: anchors that each repeat the previous one ten times.
fn alias_bomb() -> String {
    let mut text = String::from(
        "name: bomb\nsteps:\n  a:\n    process: {command: [\"true\"]}\nx0: &x0 [a,a,a,a,a,a,a,a,a,a]\n",
    );
    for i in 1..=8 {
        let p = format!("*x{}", i - 1);
        let ten = vec![p.as_str(); 10].join(",");
        text.push_str(&format!("x{i}: &x{i} [{ten}]\n"));
    }
    text
}

#[test]
fn an_alias_bomb_is_a_located_error_within_bounded_memory() {
    let sb = Sandbox::new();
    let spec = sb.write("bomb.yaml", &alias_bomb());
    let (out, killed) = bounded(&sb, &["validate", spec.to_str().unwrap()], 20, 1024);
    assert!(!killed, "validate ran for 20 s");
    let err = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bomb.yaml:10:"), "located at the alias that crossed the bound: {err}");
    assert!(err.contains("more than 1000000 values"), "{err}");
}

#[test]
fn an_alias_bomb_in_the_dags_folder_leaves_the_server_answering() {
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::write(dags.join("ok.yaml"), "name: ok\nsteps:\n  a:\n    process: {command: [\"true\"]}\n")
        .unwrap();
    std::fs::write(dags.join("bomb.yaml"), alias_bomb()).unwrap();
    let server = Server::start(&sb, &dags, &[]);
    let pipelines = server.json("/api/v1/pipelines");
    let text = pipelines.to_string();
    assert!(text.contains("more than 1000000 values"), "the bomb is listed with its error: {text}");
    assert!(text.contains("\"ok\""), "{text}");
    // The server stayed small: the catalog never held the expanded document.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.child.id())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    assert!(rss_kb < 400 * 1024, "peak resident memory {rss_kb} kB");
    assert_eq!(server.get("/api/v1/health").0, 200);
}

/// Whether process `pid` is gone (or a zombie about to be reaped).
fn gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.is_empty() || stat.contains(") Z")
}

#[test]
fn a_fifo_or_a_link_at_sluice_outputs_fails_the_step_at_once() {
    let sb = Sandbox::new();
    let secret = sb.write("secret.json", r#"{"token": "s3cret"}"#);
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let spec = sb.write(
        "p.yaml",
        &format!(
            "name: p\nsteps:\n  fifo:\n    timeout: 3s\n    retries: 0\n    process: {{shell: 'rm -f \"$SLUICE_OUTPUTS\"; mkfifo \"$SLUICE_OUTPUTS\"'}}\n  link:\n    retries: 0\n    process: {{shell: 'rm -f \"$SLUICE_OUTPUTS\"; ln -s {} \"$SLUICE_OUTPUTS\"'}}\n",
            secret.display()
        ),
    );
    let (out, killed) = bounded(&sb, &["run", "-q", "--output", "json", spec.to_str().unwrap()], 30, 4096);
    assert!(!killed, "the run froze: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = sb.show("1");
    let all = report.to_string();
    assert!(!all.contains("s3cret"), "the linked file's content never becomes outputs: {all}");
    let fifo = step(&report, "fifo");
    assert_eq!(fifo["state"], "failed", "{fifo}");
    assert!(fifo.to_string().contains("not a regular file"), "{fifo}");
    let link = step(&report, "link");
    assert!(link.to_string().contains("symbolic link"), "{link}");
}

#[test]
fn a_step_ends_when_its_process_exits_and_its_stragglers_die() {
    let sb = Sandbox::new();
    let pids = sb.path("pids");
    let spec = sb.write(
        "p.yaml",
        &format!(
            concat!(
                "name: p\nsteps:\n  s:\n    timeout: 20s\n    process:\n      shell: |\n",
                "        setsid sleep 307 &\n        echo $! >> {p}\n",
                "        setsid sh -c 'sleep 308 >/dev/null 2>&1 </dev/null' >/dev/null 2>&1 &\n        echo $! >> {p}\n",
                "        env -i setsid sleep 309 >/dev/null 2>&1 </dev/null &\n        echo $! >> {p}\n",
                "        echo done\n"
            ),
            p = pids.display()
        ),
    );
    let started = Instant::now();
    let (out, killed) = bounded(&sb, &["run", "-q", "--output", "json", spec.to_str().unwrap()], 15, 4096);
    assert!(!killed, "the run waited on its stragglers: {}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report = sb.show("1");
    assert_eq!(step(&report, "s")["state"], "succeeded", "the shell's exit code is the outcome");
    let pids: Vec<i32> =
        std::fs::read_to_string(&pids).unwrap().lines().map(|l| l.trim().parse().unwrap()).collect();
    assert_eq!(pids.len(), 3);
    for pid in pids {
        assert!(gone(pid), "straggler {pid} outlived its step");
    }
}

#[test]
fn parameters_reach_a_shell_script_as_text_not_code() {
    let sb = Sandbox::new();
    let pwned = sb.path("pwned");
    let spec = sb.write(
        "p.yaml",
        "name: p\nparams:\n  s: {type: string}\nsteps:\n  echo:\n    process: {shell: 'echo {{ params.s }} > \"$SLUICE_RUN_DIR/said\"'}\n  raw:\n    needs: [echo]\n    process: {shell: 'echo {{ \"raw-ok\" | raw }}'}\n",
    );
    let payload = format!("$(touch {}) `touch {}`; touch {} #", pwned.display(), pwned.display(), pwned.display());
    let out = sb.sluice(&["run", "-q", spec.to_str().unwrap(), "--param", &format!("s={payload}")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!pwned.exists(), "a parameter ran as shell code");
    let said = std::fs::read_to_string(sb.data().join("work/1/said")).unwrap();
    assert_eq!(said.trim_end(), payload, "the value arrives whole, as one word");
}

#[test]
fn an_event_field_reaches_a_shell_script_as_text_not_code() {
    let sb = Sandbox::new();
    let pwned = sb.path("pwned");
    let dir = sb.path("dags");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ci.yaml"),
        "name: ci\nparams:\n  commit: {type: string}\non:\n  - webhook: {source: ci}\n    params: {commit: \"{{ event.after }}\"}\nsteps:\n  build:\n    process: {shell: 'echo building {{ params.commit }}'}\n",
    )
    .unwrap();
    let server = Server::start(&sb, &dir, &[]);
    let body = serde_json::json!({ "after": format!("x; touch {} #", pwned.display()) }).to_string();
    let (code, answer) = server.post("/api/v1/events/ci", &body);
    assert_eq!(code, 202, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let run = answer["runs"][0]["run"].as_u64().or_else(|| answer["runs"][0].as_u64()).unwrap_or_else(|| panic!("{answer}"));
    let done = server.wait_run(run);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert!(!pwned.exists(), "an event field ran as shell code");
}

#[test]
fn the_longest_valid_step_id_runs_and_a_longer_one_is_refused() {
    let sb = Sandbox::new();
    let longest = format!("s{}", "x".repeat(127));
    let spec = sb.write(
        "p.yaml",
        &format!("name: p\nsteps:\n  {longest}:\n    map: [1, 2]\n    retries: 1\n    process: {{shell: 'echo {{{{ item }}}}; echo \"{{}}\" > \"$SLUICE_OUTPUTS\"'}}\n"),
    );
    let out = sb.sluice(&["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(step(&sb.show("1"), &longest)["state"], "succeeded");
    let spec = sb.write("q.yaml", &format!("name: q\nsteps:\n  {longest}x:\n    process: {{command: [\"true\"]}}\n"));
    let out = sb.sluice(&["validate", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("at most 128"), "{}", text(&out.stdout));
}
