//! End-to-end tests of the `sluice` CLI on real sled files and real processes.

mod common;

use common::*;
use std::time::{Duration, Instant};

#[test]
fn the_demo_pipeline_runs_and_is_inspectable() {
    let sb = Sandbox::new();
    let demo = repo().join("dags/demo.yaml");
    let out = sb.sluice(&["run", demo.to_str().unwrap()]);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("run 1 (churn-demo) succeeded"));
    let show = sb.show("r1");
    assert_eq!(show["state"], "succeeded");
    for s in show["steps"].as_array().unwrap() {
        assert_eq!(s["state"], "succeeded", "{s}");
    }
    let features = step(&show, "features");
    assert_eq!(features["items"], 4);
    assert_eq!(features["outputs"].as_array().unwrap().len(), 4);
    assert_eq!(features["outputs"][1]["region"], "south");
    let train = step(&show, "train");
    assert!(train["outputs"]["accuracy"].as_f64().unwrap() > 0.5);

    let logs = sb.sluice(&["logs", "r1", "report"]);
    assert!(text(&logs.stdout).contains("regions: north, south, east, west"), "{}", text(&logs.stdout));
    let runs = sb.sluice(&["runs", "--output", "json"]);
    let runs: serde_json::Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs[0]["id"], 1);
    assert_eq!(runs[0]["state"], "succeeded");
    let human = sb.sluice(&["show", "1"]);
    assert!(text(&human.stdout).contains("features"), "{}", text(&human.stdout));
}

#[test]
fn params_override_defaults_and_bad_params_are_refused() {
    let sb = Sandbox::new();
    let demo = repo().join("dags/demo.yaml");
    let d = demo.to_str().unwrap();
    let out =
        sb.sluice(&["run", d, "--param", "regions=[\"north\"]", "-p", "rows=300", "-p", "min_accuracy=1.1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = sb.show("r1");
    assert_eq!(step(&show, "features")["items"], 1);
    assert_eq!(step(&show, "gate")["state"], "skipped", "accuracy can never reach 1.1");
    assert_eq!(step(&show, "report")["state"], "succeeded");
    assert_clean_error(&sb.sluice(&["run", d, "-p", "rows=many"]), 2, "`many` is not a whole number");
    assert_clean_error(&sb.sluice(&["run", d, "-p", "colour=red"]), 2, "no parameter `colour`");
    assert_clean_error(&sb.sluice(&["run", d, "-p", "rows"]), 2, "NAME=VALUE");
}

#[test]
fn failures_retries_timeouts_and_trigger_rules() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "fail.yaml",
        r#"
name: failing
steps:
  flaky:
    retries: { count: 2, delay: 50ms }
    process:
      shell: 'n=$(cat "$SLUICE_RUN_DIR/n" 2>/dev/null || echo 0); echo $((n+1)) > "$SLUICE_RUN_DIR/n"; echo try $n; [ $n -ge 2 ]'
  slow:
    timeout: 300ms
    process: { shell: 'echo $$ > "$SLUICE_RUN_DIR/slow.pid"; sleep 30 & wait' }
  after_slow: { needs: [slow], process: { command: ["true"] } }
  on_failure: { needs: [slow], trigger_rule: one_failed, process: { command: [echo, handled] } }
  bad_outputs: { process: { shell: 'echo nope > "$SLUICE_OUTPUTS"' } }
  missing_output: { outputs: [model], process: { command: ["true"] } }
  missing_cmd: { process: { command: [no-such-binary-xyz] } }
"#,
    );
    let started = Instant::now();
    let out = sb.sluice(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "a failed run exits 1: {}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(20), "the timeout stopped `sleep 30`");
    let show = sb.show("r1");
    assert_eq!(show["state"], "failed");
    assert_eq!(step(&show, "flaky")["state"], "succeeded");
    assert_eq!(attempts(step(&show, "flaky")), 3);
    assert_eq!(step(&show, "slow")["state"], "timed_out");
    assert_eq!(step(&show, "after_slow")["state"], "upstream_failed");
    assert_eq!(step(&show, "on_failure")["state"], "succeeded");
    assert!(step(&show, "bad_outputs")["message"].as_str().unwrap().contains("invalid JSON"));
    assert!(step(&show, "missing_output")["message"].as_str().unwrap().contains("declares output `model`"));
    assert!(step(&show, "missing_cmd")["message"].as_str().unwrap().contains("was not found"));
    assert_eq!(attempts(step(&show, "missing_cmd")), 1, "a fatal error is not retried");
    let logs = text(&sb.sluice(&["logs", "r1", "flaky"]).stdout);
    assert!(logs.contains("attempt 1") && logs.contains("try 0") && logs.contains("try 2"), "{logs}");
    let one = text(&sb.sluice(&["logs", "r1", "flaky", "--attempt", "2"]).stdout);
    assert!(one.contains("try 1") && !one.contains("try 0"), "{one}");
    // The timed-out step's whole process group is gone, background `sleep` included.
    let pid: i32 =
        std::fs::read_to_string(sb.data().join("work/1/slow.pid")).unwrap().trim().parse().unwrap();
    assert!(
        live_group_members(pid).is_empty(),
        "process group {pid} survived: {:?}",
        live_group_members(pid)
    );
}

#[test]
fn when_and_map_over_upstream_outputs() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "map.yaml",
        r#"
name: fan
params:
  mode: { type: string, default: fast }
steps:
  list:
    process: { shell: 'echo "{\"files\": [\"a.csv\", \"b.csv\", \"c.csv\"]}" > "$SLUICE_OUTPUTS"' }
    outputs: [files]
  each:
    needs: [list]
    map: "{{ steps.list.outputs.files }}"
    process: { shell: 'echo "{\"name\": \"{{ item }}\", \"n\": {{ run.id }}}" > "$SLUICE_OUTPUTS"' }
  join:
    needs: [each]
    process: { command: [echo, "{{ steps.each.outputs | map(attribute='name') | join('+') }}"] }
  slow_path:
    needs: [join]
    when: params.mode == 'thorough'
    process: { command: ["true"] }
  after_slow:
    needs: [slow_path]
    process: { command: ["true"] }
"#,
    );
    let out = sb.sluice(&["run", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = sb.show("1");
    assert_eq!(step(&show, "each")["items"], 3);
    assert_eq!(text(&sb.sluice(&["logs", "1", "join"]).stdout), "a.csv+b.csv+c.csv\n");
    assert_eq!(step(&show, "slow_path")["state"], "skipped");
    assert_eq!(step(&show, "after_slow")["state"], "skipped", "skips propagate");
    assert_eq!(show["state"], "succeeded");
}

#[test]
fn validate_reports_every_corpus_error_with_its_location() {
    let dir = repo().join("tests/specs/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e != "expected"))
        .collect();
    files.sort();
    let sb = Sandbox::new();
    let mut cmd = sb.cmd();
    cmd.arg("validate").args(&files);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    for f in &files {
        let expected = std::fs::read_to_string(f.with_extension("expected")).unwrap();
        for line in expected.lines().filter(|l| !l.is_empty()) {
            let want = format!("{}:{line}", f.display());
            assert!(stdout.lines().any(|l| l == want), "missing `{want}` in:\n{stdout}");
        }
    }
    assert!(text(&out.stderr).contains(&format!("{} of {} files are invalid", files.len(), files.len())));
    // JSON for scripts.
    let mut cmd = sb.cmd();
    cmd.args(["validate", "--output", "json"]).arg(&files[0]);
    let json: serde_json::Value = serde_json::from_slice(&cmd.output().unwrap().stdout).unwrap();
    assert_eq!(json[0]["valid"], false);
    assert!(json[0]["errors"][0]["line"].as_u64().unwrap() > 0);
}

#[test]
fn every_example_in_dags_is_valid() {
    let mut files: Vec<_> = std::fs::read_dir(repo().join("dags"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "dags/ should hold the demo and the feature examples");
    // Pipelines with C plugins need them built first.
    let needs_build = |f: &std::path::PathBuf| std::fs::read_to_string(f).unwrap().contains("plugins/build/");
    if files.iter().any(needs_build) && !plugins_or_skip("the examples with C plugins") {
        files.retain(|f| !needs_build(f));
    }
    let sb = Sandbox::new();
    let mut cmd = sb.cmd();
    cmd.arg("validate").args(&files);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stdout));
    // Each example runs as it is and ends as its `# expect:` line says.
    for f in files.iter().filter(|f| f.file_name().unwrap().to_string_lossy().starts_with("example-")) {
        let source = std::fs::read_to_string(f).unwrap();
        if source.contains("container:") && !docker_or_skip(&format!("running {}", f.display())) {
            continue;
        }
        let expect = source.lines().find_map(|l| l.strip_prefix("# expect: ")).unwrap_or("succeeded");
        if expect == "waiting" {
            // It waits for a person (an approval): tests/registry.rs runs it under a server
            // and decides.
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let runner = std::fs::read_to_string(repo().join("tests/registry.rs")).unwrap();
            assert!(
                runner.contains(&format!("dags/{name}")),
                "{name} waits for a decision; tests/registry.rs should run it"
            );
            continue;
        }
        if expect == "slurm" {
            // It runs on a Slurm cluster: tests/slurm.rs runs it on the test cluster.
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let runner = std::fs::read_to_string(repo().join("tests/slurm.rs")).unwrap();
            assert!(
                runner.contains(&format!("dags/{name}")),
                "{name} needs Slurm; tests/slurm.rs should run it"
            );
            continue;
        }
        if expect == "served" {
            // It rolls out to live traffic, which only `sluice serve` has: tests/closed_loop.rs
            // runs it under a server.
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            let runner = std::fs::read_to_string(repo().join("tests/closed_loop.rs")).unwrap();
            assert!(
                runner.contains(&format!("dags/{name}")),
                "{name} needs a server; tests/closed_loop.rs should run it"
            );
            continue;
        }
        let sb = Sandbox::new();
        let out = sb.sluice(&["run", f.to_str().unwrap(), "-q"]);
        assert!(out.status.code() == Some(0) || out.status.code() == Some(1), "{}", text(&out.stderr));
        let show = sb.show("1");
        assert_eq!(show["state"], expect, "{}: {show:#}", f.display());
    }
}

#[test]
fn graph_schema_and_bad_input() {
    let sb = Sandbox::new();
    let demo = repo().join("dags/demo.yaml");
    let dot = text(&sb.sluice(&["graph", demo.to_str().unwrap()]).stdout);
    assert!(dot.starts_with("digraph \"churn-demo\""), "{dot}");
    assert!(dot.contains("\"generate\" -> \"validate\";"), "{dot}");
    assert!(dot.contains("\"gate\" -> \"report\" [label=\"all_done\"];"), "{dot}");
    let mermaid = text(&sb.sluice(&["graph", "--mermaid", demo.to_str().unwrap()]).stdout);
    assert!(mermaid.starts_with("flowchart LR") && mermaid.contains("s0 --> s1"), "{mermaid}");

    let schema: serde_json::Value = serde_json::from_slice(&sb.sluice(&["schema"]).stdout).unwrap();
    assert!(schema["properties"]["steps"].is_object(), "{schema}");
    assert!(schema["$defs"]["Step"]["properties"]["process"].is_object());

    assert_clean_error(&sb.sluice(&["run", "/no/such/file.yaml"]), 2, "cannot read the file");
    assert_clean_error(
        &sb.sluice(&["graph", repo().join("tests/specs/invalid/cycle.yaml").to_str().unwrap()]),
        2,
        "cycle",
    );
    assert_clean_error(&sb.sluice(&["show", "r1"]), 2, "no Sluice data");
    sb.sluice(&["run", demo.to_str().unwrap(), "-q"]);
    assert_clean_error(&sb.sluice(&["show", "r99"]), 2, "no run 99");
    assert_clean_error(&sb.sluice(&["show", "yesterday"]), 2, "is not a run id");
    assert_clean_error(&sb.sluice(&["logs", "r1", "nope"]), 2, "has no step `nope`");
    assert_clean_error(&sb.sluice(&["resume", "r1"]), 2, "already succeeded");
    let gpu = sb.write(
        "gpu.yaml",
        "name: g\nsteps:\n  t: { resources: { gpu: 1 }, process: { command: [\"true\"] } }\n",
    );
    assert_clean_error(
        &sb.sluice(&["run", "--gpus", "0", gpu.to_str().unwrap()]),
        2,
        "asks for 1 GPUs but the pool has 0",
    );
}

#[test]
fn a_second_engine_on_the_same_data_folder_is_refused() {
    let sb = Sandbox::new();
    let spec = sb.write("slow.yaml", "name: s\nsteps:\n  a: { process: { command: [sleep, \"2\"] } }\n");
    let mut first = sb
        .cmd()
        .args(["run", spec.to_str().unwrap(), "-q"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sb.data().join("db").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_clean_error(&sb.sluice(&["run", spec.to_str().unwrap()]), 2, "in use by another sluice process");
    assert!(first.wait().unwrap().success());
}

#[test]
fn sigterm_interrupts_gracefully_and_resume_finishes() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "long.yaml",
        r#"
name: long
steps:
  a: { process: { command: ["true"] } }
  b:
    needs: [a]
    process:
      shell: |
        echo started > "$SLUICE_RUN_DIR/b.$SLUICE_ATTEMPT"
        [ "$SLUICE_ATTEMPT" -gt 1 ] && exit 0
        trap "echo got TERM; exit 1" TERM
        sleep 30 & wait
  c: { needs: [b], process: { command: ["true"] } }
"#,
    );
    let out = sb.interrupt_run(&spec, "work/1/b.1");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sluice resume 1"));
    let show = sb.show("1");
    assert_eq!(show["state"], "interrupted");
    assert_eq!(step(&show, "a")["state"], "succeeded");
    assert!(text(&sb.sluice(&["logs", "1", "b"]).stdout).contains("got TERM"));
    // Resume: b runs again as attempt 2 (which finishes at once); a does not run again.
    let out = sb.sluice(&["resume", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = sb.show("1");
    assert_eq!(show["state"], "succeeded");
    assert_eq!(attempts(step(&show, "a")), 1);
    assert_eq!(attempts(step(&show, "b")), 2);
    assert_eq!(step(&show, "c")["state"], "succeeded");
    assert_eq!(text(&sb.sluice(&["resume"]).stdout), "nothing to resume: every run has finished\n");
    assert_clean_error(&sb.sluice(&["cancel", "r1"]), 2, "already succeeded");
}

#[test]
fn an_interrupted_run_can_be_cancelled_instead_of_resumed() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "two.yaml",
        "name: two\nsteps:\n  a: { process: { shell: 'echo up > \"$SLUICE_RUN_DIR/a\"; sleep 30 & wait' } }\n  b: { needs: [a], process: { command: [\"true\"] } }\n",
    );
    assert_eq!(sb.interrupt_run(&spec, "work/1/a").status.code(), Some(130));
    let out = sb.sluice(&["cancel", "r1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("run 1 (two) cancelled"), "{}", text(&out.stdout));
    let show = sb.show("1");
    assert_eq!(show["state"], "cancelled");
    assert_eq!(step(&show, "a")["state"], "cancelled");
    assert_eq!(step(&show, "b")["state"], "cancelled");
    assert_eq!(text(&sb.sluice(&["resume"]).stdout), "nothing to resume: every run has finished\n");
}

/// Logs go to stderr as JSON lines, each event inside its run's and attempt's spans; stdout
/// keeps only the command's own output.
#[test]
fn logs_are_structured_and_carry_run_and_attempt_fields() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "logged.yaml",
        "name: logged\nsteps:\n  a: {process: {command: [\"true\"]}}\n  b: {process: {shell: \"exit 3\"}, needs: [a]}\n",
    );
    let out = sb
        .cmd()
        .args(["run", "--output", "json", "--log-level", "sluice_engine=debug", "--log-format", "json"])
        .arg(&spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("stdout is the run's JSON only");
    assert_eq!(report[0]["state"], "failed");
    let lines: Vec<serde_json::Value> = text(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let failed = lines
        .iter()
        .find(|l| l["fields"]["message"] == "attempt failed")
        .unwrap_or_else(|| panic!("no attempt failure logged: {lines:#?}"));
    let spans = failed["spans"].as_array().unwrap();
    assert_eq!(spans[0]["name"], "run");
    assert_eq!(spans[0]["pipeline"], "logged");
    let attempt = &spans[1];
    assert_eq!(attempt["name"], "attempt");
    assert_eq!((attempt["run"].as_u64(), attempt["step"].as_str()), (Some(1), Some("b")));
    assert_eq!((attempt["item"].as_u64(), attempt["attempt"].as_u64()), (Some(0), Some(1)));
    assert_eq!(attempt["kind"], "process");
    assert!(lines.iter().any(|l| l["fields"]["message"] == "the run is failed" && l["span"]["run"] == 1));
    // A bad filter is a clean error.
    assert_clean_error(&sb.sluice(&["--log-level", "=[", "runs"]), 2, "--log-level");
}

fn python_with_jsonschema(test: &str) -> Option<String> {
    python_with("jsonschema", test)
}

#[test]
fn every_shipped_example_validates_against_the_generated_schema() {
    let Some(python) = python_with_jsonschema("every_shipped_example_validates_against_the_generated_schema")
    else {
        return;
    };
    let sb = Sandbox::new();
    let out = sb.sluice(&["schema"]);
    assert!(out.status.success());
    let schema = sb.path("schema.json");
    std::fs::write(&schema, &out.stdout).unwrap();
    let mut docs = Vec::new();
    let mut examples: Vec<_> = std::fs::read_dir(repo().join("dags"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "json"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 10, "{examples:?}");
    for example in &examples {
        // Read as Sluice reads it (YAML 1.2: `on:` is a key, not `true`).
        let text = std::fs::read_to_string(example).unwrap();
        let format = sluice_engine::syntax::Format::from_path(example);
        let (value, _, _) = sluice_engine::syntax::source::parse(&text, format).unwrap();
        let doc = sb.path(&format!("{}.json", example.file_name().unwrap().to_string_lossy()));
        std::fs::write(&doc, value.to_string()).unwrap();
        docs.push(doc);
    }
    let out = std::process::Command::new(python)
        .arg(repo().join("tests/check_schema.py"))
        .arg(&schema)
        .args(&docs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("{n} of {n} documents valid", n = examples.len())));
}

#[test]
fn a_reader_that_goes_away_ends_a_listing_quietly() {
    let sb = Sandbox::new();
    let spec = sb.write("p.yaml", "name: p\nsteps:\n  a:\n    process: { command: [\"true\"] }\n");
    for _ in 0..3 {
        assert!(sb.sluice(&["run", "-q", spec.to_str().unwrap()]).status.success());
    }
    for args in [&["runs"][..], &["show", "1"][..]] {
        let mut child = sb
            .cmd()
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command prints (`sluice runs | head -0`).
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = text(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(matches!(out.status.code(), Some(0) | Some(141)), "{args:?}: {:?} {err}", out.status);
    }
}
