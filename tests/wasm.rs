//! WASM plugin steps end to end: the real `sluice` binary, real wasmtime, real sled files.

mod common;

use common::*;
use serde_json::Value;

fn plugin(name: &str) -> String {
    repo().join("tests/plugins").join(name).display().to_string()
}

#[test]
fn hostile_plugins_fail_alone_and_lose_nothing() {
    let sb = Sandbox::new();
    // A folder with a way out: a symlink to /etc/passwd, for the escape plugin's `/work`.
    let jail = sb.path("jail");
    std::fs::create_dir(&jail).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", jail.join("passwd-link")).unwrap();
    std::fs::write(sb.path("secret.txt"), "root:x:0:0:the secret").unwrap();
    std::fs::write(sb.path("data.csv"), "a\n1\n").unwrap();
    let spec = sb.write(
        "hostile.yaml",
        &format!(
            r#"
name: hostile
steps:
  before:
    process: {{ command: ["true"] }}
  loops:
    needs: [before]
    wasm: {{ module: "{loop_}" }}
    timeout: 1s
  grows:
    needs: [before]
    wasm: {{ module: "{grow}", max_memory: 4Mi }}
  floods:
    needs: [before]
    wasm: {{ module: "{flood}" }}
  babbles:
    needs: [before]
    wasm: {{ module: "{nonjson}" }}
  crashes:
    needs: [before]
    wasm: {{ module: "{crash}" }}
    retries: {{ count: 1, delay: 10ms }}
  escapes:
    needs: [before]
    workdir: jail
    wasm: {{ module: "{escape}", inputs: [data.csv] }}
  sibling:
    needs: [before]
    process: {{ shell: "echo still here" }}
  after:
    needs: [loops, grows, floods, babbles, crashes, escapes, sibling]
    trigger_rule: all_done
    process: {{ command: ["true"] }}
"#,
            loop_ = plugin("loop.wat"),
            grow = plugin("grow.wat"),
            flood = plugin("flood.wat"),
            nonjson = plugin("nonjson.wat"),
            crash = plugin("crash.wat"),
            escape = plugin("escape.wat"),
        ),
    );
    let started = std::time::Instant::now();
    let out = sb.sluice(&["run", spec.to_str().unwrap(), "-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "took {:?}", started.elapsed());
    let show = sb.show("1");
    let state = |id: &str| step(&show, id)["state"].as_str().unwrap().to_string();
    let message = |id: &str| step(&show, id)["message"].as_str().unwrap_or_default().to_string();
    assert_eq!(state("loops"), "timed_out", "{show:#}");
    assert_eq!(state("grows"), "failed");
    assert!(message("grows").contains("ran out of memory"), "{}", message("grows"));
    assert_eq!(state("floods"), "failed");
    assert!(message("floods").contains("more than 1Mi to stdout"), "{}", message("floods"));
    assert_eq!(state("babbles"), "failed");
    assert!(message("babbles").contains("not a result document"), "{}", message("babbles"));
    assert_eq!(state("crashes"), "failed");
    assert_eq!(attempts(step(&show, "crashes")), 2, "a crash is retried");
    assert_eq!(state("escapes"), "succeeded", "{}", message("escapes"));
    let outputs = &step(&show, "escapes")["outputs"];
    for key in ["relative", "absolute", "symlink", "inputs_parent"] {
        assert_ne!(outputs[key], "000", "{key}: a file outside the sandbox opened: {outputs}");
    }
    assert_eq!(state("sibling"), "succeeded");
    assert_eq!(state("after"), "succeeded");
    let logs = text(&sb.sluice(&["logs", "r1", "escapes"]).stdout);
    assert!(!logs.contains("root:"), "leaked into the log: {logs}");
    assert!(text(&sb.sluice(&["logs", "r1", "sibling"]).stdout).contains("still here"));

    // Nothing stored was lost: the data folder opens and runs go on.
    let ok = sb.write(
        "ok.yaml",
        &format!("name: ok\nsteps:\n  echo:\n    wasm: {{ module: \"{}\" }}\n", plugin("noop.wat")),
    );
    let out = sb.sluice(&["run", ok.to_str().unwrap(), "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let runs = sb.sluice(&["runs", "--output", "json"]);
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
    assert_eq!(sb.show("2")["state"], "succeeded");
}

#[test]
fn plugins_get_params_upstream_outputs_items_and_templated_config() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "echo.yaml",
        &format!(
            r#"
name: echo
params:
  threshold: {{ type: number, default: 0.5 }}
steps:
  first:
    process: {{ shell: 'echo "{{\"rows\": 7}}" > "$SLUICE_OUTPUTS"' }}
    outputs: [rows]
  each:
    needs: [first]
    map: [north, south]
    env: {{ ONLY: "this" }}
    wasm:
      module: "{echo}"
      config: {{ region: "{{{{ item }}}}", limit: "{{{{ params.threshold }}}}", nested: [1, {{ x: "{{{{ steps.first.outputs.rows }}}}" }}] }}
"#,
            echo = plugin("echo.wat")
        ),
    );
    let out = sb.sluice(&["run", spec.to_str().unwrap(), "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = sb.show("1");
    let each = step(&show, "each")["outputs"].as_array().unwrap().clone();
    assert_eq!(each.len(), 2);
    for (out, region) in each.iter().zip(["north", "south"]) {
        let input = &out["input"];
        assert_eq!(
            input["config"],
            serde_json::json!({"region": region, "limit": "0.5", "nested": [1, {"x": "7"}]})
        );
        assert_eq!(input["params"]["threshold"], 0.5);
        assert_eq!(input["upstream"]["first"]["rows"], 7);
        assert_eq!(input["item"], region);
        assert_eq!(input["step"], "each");
        assert_eq!(input["work_dir"], "/work");
        assert_eq!(input["run"]["id"], 1);
        // The first key is `config`: hand-written plugins rely on it.
        assert_eq!(input.as_object().unwrap().keys().next().unwrap(), "config");
        assert_eq!(out["env_count"], 1, "the plugin sees the step's env only");
    }
    let logs = text(&sb.sluice(&["logs", "r1", "each"]).stdout);
    assert_eq!(logs.matches("hello from the plugin").count(), 2, "{logs}");
}

#[test]
fn ctrl_c_stops_a_running_plugin() {
    let sb = Sandbox::new();
    let marker = sb.data().join("started");
    let spec = sb.write(
        "spin.yaml",
        &format!(
            "name: spin\nsteps:\n  mark:\n    process: {{ shell: 'echo go > {}' }}\n  spin:\n    needs: [mark]\n    wasm: {{ module: \"{}\" }}\n",
            marker.display(),
            plugin("loop.wat")
        ),
    );
    let started = std::time::Instant::now();
    let out = sb.interrupt_run(&spec, "started");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "took {:?}", started.elapsed());
    let show = sb.show("1");
    assert_eq!(show["state"], "interrupted", "{show:#}");
}

#[test]
fn plugin_check_reports_each_file() {
    let sb = Sandbox::new();
    let truncated = sb.path("truncated.wasm");
    std::fs::write(&truncated, b"\0asm\x01\0\0\0\x01\x05\x01\x60").unwrap();
    let readme = repo().join("README.md");
    let good = repo().join("plugins/csv-profile.wat");
    let out = sb.sluice(&["plugin", "check", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("ok (WASI preview 1 command"), "{}", text(&out.stdout));

    let mut cmd = sb.cmd();
    cmd.args(["plugin", "check", "--output", "json"])
        .arg(&good)
        .arg(&truncated)
        .arg(&readme)
        .arg(plugin("reactor.wat"));
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report[0]["valid"], true);
    assert!(report[0]["imports"].as_array().unwrap().iter().any(|i| i == "path_open"));
    assert!(report[1]["error"].as_str().unwrap().contains("not a valid WebAssembly module"), "{report}");
    assert!(report[2]["error"].as_str().unwrap().contains("not valid WebAssembly text"), "{report}");
    assert!(report[3]["error"].as_str().unwrap().contains("reactor"), "{report}");
}

#[test]
fn a_missing_module_is_a_validation_error() {
    let sb = Sandbox::new();
    let spec = sb.write("bad.yaml", "name: bad\nsteps:\n  s:\n    wasm: { module: nowhere.wasm }\n");
    let out = sb.sluice(&["validate", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("bad.yaml:4:21: step `s`: the module `nowhere.wasm` does not exist"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains("does not exist"));
}

#[test]
fn the_validator_rejects_bad_data_with_a_report() {
    if !plugins_or_skip("the_validator_rejects_bad_data_with_a_report") {
        return;
    }
    let sb = Sandbox::new();
    std::fs::write(
        sb.path("people.csv"),
        "id,age,country\n1,34,NL\n2,-3,NL\n3,,DE\nx,51,FR\n5,40,US\n6,29,NL,extra\n",
    )
    .unwrap();
    let validate = repo().join("plugins/build/csv-validate.wasm");
    let transform = repo().join("plugins/build/feature-transform.wasm");
    let spec = sb.write(
        "people.yaml",
        &format!(
            r#"
name: people
steps:
  check:
    wasm:
      module: "{validate}"
      inputs: [people.csv]
      config:
        file: /inputs/people.csv
        columns:
          id: {{ type: integer }}
          age: {{ type: integer, min: 0, max: 120, max_null_rate: 0.1 }}
          country: {{ type: string, allowed: [NL, DE, FR] }}
  features:
    needs: [check]
    wasm:
      module: "{transform}"
      inputs: [people.csv]
      config: {{ file: /inputs/people.csv, output: f.csv, standardize: [age] }}
"#,
            validate = validate.display(),
            transform = transform.display()
        ),
    );
    let out = sb.sluice(&["run", spec.to_str().unwrap(), "-q"]);
    assert_eq!(out.status.code(), Some(1));
    let show = sb.show("1");
    let check = step(&show, "check");
    assert_eq!(check["state"], "failed");
    assert_eq!(attempts(check), 1, "a data failure is not retried");
    let message = check["message"].as_str().unwrap();
    assert!(message.contains("reported a failure") && message.contains("see the step log"), "{message}");
    assert_eq!(step(&show, "features")["state"], "upstream_failed");
    let log = text(&sb.sluice(&["logs", "r1", "check"]).stdout);
    for want in [
        "6 rows, 3 columns, 5 violations",
        "1 rows have a different number of fields",
        "column `id`: 1 values are not integers (first: line 5, `x`)",
        "column `age`: 1 values are outside [0, 120] (first: line 3, `-3`)",
        "column `country`: 1 values are not among the allowed ones (first: line 6, `US`)",
        "column `age`: 1 of 6 values are null",
    ] {
        assert!(log.contains(want), "missing `{want}` in:\n{log}");
    }
}

#[test]
fn a_plugin_lost_with_a_killed_engine_runs_again_on_resume() {
    let sb = Sandbox::new();
    let marker = sb.data().join("started");
    let spec = sb.write(
        "lost.yaml",
        &format!(
            "name: lost\nsteps:\n  mark:\n    process: {{ shell: 'echo go > {}' }}\n  spin:\n    needs: [mark]\n    timeout: 2s\n    wasm: {{ module: \"{}\" }}\n",
            marker.display(),
            plugin("loop.wat")
        ),
    );
    let mut child = sb.cmd().args(["run", "-q"]).arg(&spec).spawn().unwrap();
    wait_for_file(&marker, "the first step never ran");
    std::thread::sleep(std::time::Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL, mid-plugin
    child.wait().unwrap();
    let out = sb.sluice(&["resume", "-q"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let show = sb.show("1");
    assert_eq!(attempts(step(&show, "mark")), 1, "a completed step does not run again");
    assert_eq!(attempts(step(&show, "spin")), 2, "the lost attempt runs again as attempt 2: {show:#}");
    assert_eq!(step(&show, "spin")["state"], "timed_out");

    // And `sluice doctor` says the runtime is there.
    let doctor: Value = serde_json::from_slice(&sb.sluice(&["doctor", "--output", "json"]).stdout).unwrap();
    assert_eq!(doctor["wasm"]["ok"], true, "{doctor}");
    assert_eq!(doctor["wasm"]["wasmtime"], sluice_worker::wasmtime_version());
}

/// A run keeps the plan it was created with and its own copy of its module: with the module
/// deleted and the pipeline file rewritten, `show`, `logs` and `resume` of the run still work,
/// and the resumed plugin is the module as it was.
#[test]
fn a_run_keeps_its_plan_and_module_when_the_files_change() {
    let sb = Sandbox::new();
    let module = sb.path("echo.wat");
    std::fs::copy(plugin("echo.wat"), &module).unwrap();
    let spec = sb.write(
        "kept.yaml",
        "name: kept\nsteps:\n  first:\n    process: { shell: 'echo attempt $SLUICE_ATTEMPT; if [ $SLUICE_ATTEMPT = 1 ]; then echo go > $SLUICE_RUN_DIR/../../started; sleep 30; fi' }\n  plugin:\n    needs: [first]\n    wasm: { module: echo.wat, config: { answer: 7 } }\n",
    );
    let out = sb.interrupt_run(&spec, "started");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out.stderr));
    std::fs::remove_file(&module).unwrap();
    std::fs::write(&spec, "name: kept\nsteps: { only: { process: { command: [\"false\"] } } }\n").unwrap();

    let show = sb.show("1");
    assert_eq!(show["state"], "interrupted", "{show:#}");
    assert_eq!(show["steps"].as_array().unwrap().len(), 2, "the run's own steps, not the file's");
    let logs = sb.sluice(&["logs", "r1", "first"]);
    assert!(logs.status.success() && text(&logs.stdout).contains("attempt 1"), "{}", text(&logs.stderr));

    let out = sb.sluice(&["resume", "-q", "r1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = sb.show("1");
    assert_eq!(show["state"], "succeeded", "{show:#}");
    assert_eq!(step(&show, "plugin")["outputs"]["input"]["config"]["answer"], 7);
    // A new run compiles the file as it is now: another DAG version.
    assert_clean_error(&sb.sluice(&["run", "-q", spec.to_str().unwrap()]), 1, "");
    let v2 = sb.show("2");
    assert_ne!(v2["dag"], show["dag"]);
}
