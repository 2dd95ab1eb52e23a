//! The step cache end to end: a second run reuses what did not change (outputs and artifacts
//! restored, the step not run), a miss says what changed, `--no-cache` and `--refresh`, a
//! damaged entry, a ttl, bad `cache:` values, and the same through the server.

mod common;

use common::*;
use serde_json::Value;

/// `prep` reads a dataset and writes a table; `train` reads the table through its artifact
/// and a param; `fan` is mapped; `notify` is not cached. Each step appends its name to
/// `ran.log` beside the pipeline, so a test sees what really ran.
const PIPELINE: &str = r#"
name: cached
params:
  lr: {type: string, default: "0.01"}
defaults:
  cache: true
steps:
  prep:
    inputs: [data.csv]
    env: {MODE: fast}
    process:
      shell: |
        echo prep >> ran.log
        sort data.csv > "$SLUICE_RUN_DIR/table.csv"
        echo '{"rows": 3}' > "$SLUICE_OUTPUTS"
    outputs: [rows]
    artifacts: {table: table.csv}
  train:
    needs: [prep]
    process:
      shell: |
        echo train >> ran.log
        echo "lr={{ params.lr }} rows={{ steps.prep.outputs.rows }}" > "$SLUICE_RUN_DIR/model.txt"
        cat {{ steps.prep.artifacts.table.path }} >> "$SLUICE_RUN_DIR/model.txt"
    artifacts: {model: model.txt}
  fan:
    needs: [train]
    map: [a, b]
    process:
      shell: |
        echo "fan-$SLUICE_ITEM" >> ran.log
        printf '{"i": %s}' "$SLUICE_ITEM" > "$SLUICE_OUTPUTS"
  notify:
    needs: [fan]
    cache: false
    process:
      shell: "echo notify >> ran.log; cat \"$SLUICE_RUN_DIR/model.txt\""
"#;

fn setup(sb: &Sandbox) -> String {
    sb.write("data.csv", "c\nb\na\n");
    sb.write("cached.yaml", PIPELINE).display().to_string()
}

fn run(sb: &Sandbox, args: &[&str]) {
    let mut all = vec!["run", "-q"];
    all.extend_from_slice(args);
    let out = sb.sluice(&all);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
}

/// What ran since the last call (and empties the log), sorted: a mapped step's items run at
/// once, in any order.
fn ran(sb: &Sandbox) -> Vec<String> {
    let log = std::fs::read_to_string(sb.path("ran.log")).unwrap_or_default();
    let _ = std::fs::remove_file(sb.path("ran.log"));
    let mut steps: Vec<String> = log.lines().map(str::to_string).collect();
    steps.sort();
    steps
}

/// The steps, sorted as [`ran`] gives them.
fn sorted(steps: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = steps.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn explain(sb: &Sandbox, run: &str, step: &str) -> Value {
    let out = sb.sluice(&["cache", "explain", run, step, "--output", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["tasks"][0].clone()
}

fn changes(e: &Value) -> Vec<String> {
    e["changes"]
        .as_array()
        .map(|l| l.iter().map(|c| c.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

#[test]
fn a_second_run_reuses_every_cached_step_restoring_outputs_and_artifacts() {
    let sb = Sandbox::new();
    let spec = setup(&sb);
    run(&sb, &[&spec]);
    assert_eq!(ran(&sb), sorted(&["prep", "train", "fan-0", "fan-1", "notify"]));

    run(&sb, &[&spec]);
    // Only the step without `cache:` ran; the others' results came from run 1.
    assert_eq!(ran(&sb), sorted(&["notify"]));
    let show = sb.show("2");
    for id in ["prep", "train", "fan"] {
        let s = step(&show, id);
        assert_eq!(s["state"], "succeeded", "{s}");
        let cached = s["cached"].as_array().unwrap_or_else(|| panic!("{id} not cached: {s}"));
        assert_eq!(cached.len(), if id == "fan" { 2 } else { 1 }, "{s}");
        assert!(cached.iter().all(|c| c["run"] == 1), "{s}");
        assert!(s["attempts"].as_array().unwrap().iter().all(|a| a["outcome"] == "cached"), "{s}");
    }
    assert!(step(&show, "notify")["cached"].is_null());
    // Outputs are restored (the mapped step's per item), and so are the artifacts: notify read
    // the model from run 2's own folder.
    assert_eq!(step(&show, "prep")["outputs"]["rows"], 3);
    // Items are told apart by their index even when no template reads the item.
    assert_eq!(step(&show, "fan")["outputs"][1]["i"], 1);
    assert_eq!(step(&show, "fan")["outputs"][0]["i"], 0);
    let model = std::fs::read_to_string(sb.data().join("work/2/model.txt")).unwrap();
    assert_eq!(model, "lr=0.01 rows=3\na\nb\nc\n");
    let logs = text(&sb.sluice(&["logs", "2", "notify"]).stdout);
    assert!(logs.contains("lr=0.01 rows=3"), "{logs}");
    let logs = text(&sb.sluice(&["logs", "2", "train"]).stdout);
    assert!(logs.contains("step cache: reusing the result of run 1 (attempt 1)"), "{logs}");
    // The run's artifacts are listed for it too, with the same digests.
    let list: Value =
        serde_json::from_slice(&sb.sluice(&["artifacts", "--run", "2", "--output", "json"]).stdout).unwrap();
    let first: Value =
        serde_json::from_slice(&sb.sluice(&["artifacts", "--run", "1", "--output", "json"]).stdout).unwrap();
    let digests = |v: &Value| {
        let mut d: Vec<String> = v["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["digest"].as_str().unwrap().to_string())
            .collect();
        d.sort();
        d
    };
    assert_eq!(digests(&list), digests(&first));
    assert_eq!(digests(&list).len(), 2);

    // `show` says it in words.
    let shown = text(&sb.sluice(&["show", "2"]).stdout);
    assert!(
        shown.lines().any(|l| l.starts_with("train") && l.contains("cached") && l.contains("from run 1")),
        "{shown}"
    );

    let e = explain(&sb, "2", "train");
    assert_eq!(e["verdict"]["result"], "hit", "{e}");
    assert_eq!(e["verdict"]["from"]["run"], 1);
    assert_eq!(e["components"]["values"]["params.lr"], "0.01");
    assert_eq!(e["components"]["values"]["steps.prep.outputs.rows"], 3);
    assert!(e["components"]["artifacts"]["prep.table"].as_str().unwrap().starts_with("sha256:"));
}

#[test]
fn a_miss_says_what_changed_in_words() {
    let sb = Sandbox::new();
    let spec = setup(&sb);
    run(&sb, &[&spec]);
    ran(&sb);

    // A param: only the steps that read it run again.
    run(&sb, &["-p", "lr=0.1", &spec]);
    assert_eq!(ran(&sb), sorted(&["train", "fan-0", "fan-1", "notify"]));
    let e = explain(&sb, "2", "train");
    assert_eq!(e["verdict"]["result"], "miss", "{e}");
    assert_eq!(e["compared_with"]["run"], 1);
    let said = changes(&e);
    assert!(said.contains(&r#"param `lr` changed: "0.01" -> "0.1""#.to_string()), "{said:?}");
    // `fan` reads no param, but a step may read any file its upstream steps left in the run's
    // folder, so their artifacts are part of its key: train's model changed.
    let said = changes(&explain(&sb, "2", "fan"));
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with("upstream artifact `train.model` changed: sha256 "), "{said:?}");

    // The dataset: prep runs, and what reads its table.
    std::fs::write(sb.path("data.csv"), "d\nc\nb\na\n").unwrap();
    run(&sb, &["-p", "lr=0.1", &spec]);
    assert_eq!(ran(&sb), sorted(&["prep", "train", "fan-0", "fan-1", "notify"]));
    let e = explain(&sb, "3", "prep");
    let said = changes(&e);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].starts_with("input `$SPEC_DIR/data.csv` changed: sha256 "), "{said:?}");
    let e = explain(&sb, "3", "train");
    let said = changes(&e);
    assert!(said.iter().any(|c| c.starts_with("upstream artifact `prep.table` changed")), "{said:?}");

    // The environment, in the spec.
    let edited = PIPELINE.replace("MODE: fast", "MODE: slow");
    std::fs::write(sb.path("cached.yaml"), edited).unwrap();
    run(&sb, &["-p", "lr=0.1", &spec]);
    assert!(ran(&sb).contains(&"prep".to_string()));
    let said = changes(&explain(&sb, "4", "prep"));
    assert_eq!(said, ["env MODE changed: fast -> slow"]);

    // The text form lists the changes and the key's parts.
    let out = text(&sb.sluice(&["cache", "explain", "4", "prep"]).stdout);
    assert!(out.contains("what changed:\n  - env MODE changed: fast -> slow"), "{out}");
    assert!(out.contains("input     $SPEC_DIR/data.csv sha256:"), "{out}");
    // A step without `cache:` and a step that does not exist are clear errors.
    assert_clean_error(&sb.sluice(&["cache", "explain", "4", "notify"]), 2, "does not set `cache:`");
    assert_clean_error(&sb.sluice(&["cache", "explain", "4", "nope"]), 2, "step `nope`");
}

#[test]
fn no_cache_runs_everything_and_refresh_runs_one_step() {
    let sb = Sandbox::new();
    let spec = setup(&sb);
    run(&sb, &[&spec]);
    ran(&sb);
    run(&sb, &["--no-cache", &spec]);
    assert_eq!(ran(&sb), sorted(&["prep", "train", "fan-0", "fan-1", "notify"]));
    let e = explain(&sb, "2", "prep");
    assert_eq!(e["verdict"]["result"], "bypassed");
    assert!(e["summary"].as_str().unwrap().contains("--no-cache"));

    run(&sb, &["--refresh", "train", &spec]);
    assert_eq!(ran(&sb), sorted(&["train", "notify"]));
    // The refreshed result is the one reused next.
    run(&sb, &[&spec]);
    assert_eq!(ran(&sb), sorted(&["notify"]));
    assert_eq!(step(&sb.show("4"), "train")["cached"][0]["run"], 3);
    assert_eq!(step(&sb.show("4"), "prep")["cached"][0]["run"], 1);

    assert_clean_error(&sb.sluice(&["run", "--refresh", "nope", &spec]), 2, "no step `nope`");
}

#[test]
fn a_damaged_cached_artifact_is_dropped_and_the_step_runs_again() {
    let sb = Sandbox::new();
    let spec = setup(&sb);
    run(&sb, &[&spec]);
    ran(&sb);
    // Flip a byte of the stored table (the store keeps it read-only).
    let list: Value =
        serde_json::from_slice(&sb.sluice(&["artifacts", "--run", "1", "--output", "json"]).stdout).unwrap();
    let table = list["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "table").unwrap().clone();
    let hex = table["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap().to_string();
    let blob = sb.data().join("artifacts/sha256").join(&hex[..2]).join(&hex[2..]);
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    std::fs::write(&blob, "x\nb\nc\n").unwrap();

    run(&sb, &[&spec]);
    let now = ran(&sb);
    assert!(now.contains(&"prep".to_string()), "{now:?}");
    let e = explain(&sb, "2", "prep");
    assert_eq!(e["verdict"]["result"], "damaged", "{e}");
    assert!(e["verdict"]["why"].as_str().unwrap().contains("table"), "{e}");
    let logs = text(&sb.sluice(&["logs", "2", "prep"]).stdout);
    assert!(logs.contains("cannot be reused"), "{logs}");
    // The damaged file was moved aside, not deleted.
    let aside: Vec<_> = std::fs::read_dir(sb.data().join("artifacts/damaged")).unwrap().collect();
    assert_eq!(aside.len(), 1);
    // The new result is stored (and its table stored again, whole), and reused next.
    run(&sb, &[&spec]);
    assert_eq!(ran(&sb), sorted(&["notify"]));
    assert_eq!(std::fs::read_to_string(&blob).unwrap(), "a\nb\nc\n");
}

#[test]
fn a_result_older_than_the_ttl_is_not_reused() {
    let sb = Sandbox::new();
    sb.write("data.csv", "a\n");
    let spec = sb.write(
        "ttl.yaml",
        "name: ttl\nsteps:\n  a:\n    cache: {ttl: 1s}\n    process: {shell: 'echo a >> ran.log'}\n",
    );
    let spec = spec.to_str().unwrap();
    run(&sb, &[spec]);
    run(&sb, &[spec]);
    assert_eq!(ran(&sb), sorted(&["a"]));
    std::thread::sleep(std::time::Duration::from_millis(1300));
    run(&sb, &[spec]);
    assert_eq!(ran(&sb), sorted(&["a"]));
    let e = explain(&sb, "3", "a");
    assert_eq!(e["verdict"]["result"], "expired", "{e}");
    assert!(e["summary"].as_str().unwrap().contains("past the step's ttl of 1s"), "{e}");
}

#[test]
fn bad_cache_values_are_located_errors() {
    let sb = Sandbox::new();
    for (body, needle) in [
        ("cache: yes please", "`true`, `false`, or a map"),
        ("cache: {ttl: soon}", "is not a duration"),
        ("cache: {ttl: 1d, size: 3}", "unknown field `size`"),
    ] {
        let spec = sb.write(
            "bad.yaml",
            &format!("name: bad\nsteps:\n  a:\n    {body}\n    process: {{command: [\"true\"]}}\n"),
        );
        let out = sb.sluice(&["validate", spec.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{body}");
        let err = text(&out.stdout) + &text(&out.stderr);
        assert!(err.contains("bad.yaml:4:") && err.contains(needle), "{body}: {err}");
    }
}

#[test]
fn the_server_explains_and_takes_no_cache() {
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::write(dags.join("data.csv"), "b\na\n").unwrap();
    std::fs::write(dags.join("cached.yaml"), PIPELINE).unwrap();
    let server = Server::start(&sb, &dags, &[]);
    for body in ["{}", "{}", r#"{"no_cache": true}"#] {
        let (code, b) = server.post("/api/v1/pipelines/cached/runs", body);
        assert_eq!(code, 201, "{b}");
        let id = serde_json::from_str::<Value>(&b).unwrap()["run"]["id"].as_u64().unwrap();
        assert_eq!(server.wait_run(id)["state"], "succeeded");
    }
    let v = server.json("/api/v1/runs/2/steps/train/cache");
    assert_eq!(v["tasks"][0]["verdict"]["result"], "hit", "{v}");
    let v = server.json("/api/v1/runs/3/steps/train/cache");
    assert_eq!(v["tasks"][0]["verdict"]["result"], "bypassed", "{v}");
    let (code, _) = server.get("/api/v1/runs/2/steps/nope/cache");
    assert_eq!(code, 404);
    let (code, b) = server.post("/api/v1/pipelines/cached/runs", r#"{"refresh": ["nope"]}"#);
    assert_eq!(code, 400, "{b}");
    // gc through the server (it owns the folder): nothing is past 30 days.
    let (code, b) = server.post("/api/v1/gc", r#"{"dry_run": true}"#);
    assert_eq!(code, 200, "{b}");
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["gc"]["removed"].as_array().unwrap().len(), 0, "{v}");
    assert!(v["gc"]["kept"].as_u64().unwrap() >= 2, "{v}");
    let out = sb.sluice(&["gc", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("would remove 0 stored file(s)"), "{}", text(&out.stdout));
    // The CLI asks the server, which owns the folder.
    let out = sb.sluice(&["cache", "explain", "2", "prep"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("reused: run 1"), "{}", text(&out.stdout));
    drop(server);
}

#[test]
fn gc_removes_what_no_run_or_cache_entry_within_retention_uses() {
    let sb = Sandbox::new();
    let spec = setup(&sb);
    run(&sb, &[&spec]);
    run(&sb, &[&spec]);
    let gc = |args: &[&str]| -> Value {
        let mut all = vec!["gc", "--output", "json"];
        all.extend_from_slice(args);
        let out = sb.sluice(&all);
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["gc"].clone()
    };
    // Within 30 days everything is used.
    let r = gc(&[]);
    assert_eq!((r["removed"].as_array().unwrap().len(), r["kept"].as_u64()), (0, Some(2)), "{r}");
    // Nothing is kept for 0 s: a dry run lists both files and removes nothing.
    let r = gc(&["--keep", "0s", "--dry-run"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(r["cache_entries_removed"], 4, "{r}");
    let digest = r["removed"][0]["digest"].as_str().unwrap().to_string();
    assert!(sb.sluice(&["artifact", "show", &digest]).status.success());
    let r = gc(&["--keep", "0s"]);
    assert_eq!(r["removed"].as_array().unwrap().len(), 2, "{r}");
    // The records stay and say the content is gone; the cache no longer has the results.
    let out = sb.sluice(&["artifact", "show", &digest]);
    assert!(!out.status.success());
    ran(&sb);
    run(&sb, &[&spec]);
    assert_eq!(ran(&sb), sorted(&["prep", "train", "fan-0", "fan-1", "notify"]));
    let e = explain(&sb, "3", "prep");
    assert!(
        e["summary"].as_str().unwrap().contains("same key")
            && e["summary"].as_str().unwrap().contains("sluice gc"),
        "{e}"
    );
}

#[test]
fn secrets_never_reach_a_key_or_an_explanation_in_clear() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "s.yaml",
        "name: s\nparams:\n  token: {type: string, default: hunter2}\nsteps:\n  a:\n    cache: true\n    env: {API_TOKEN: \"{{ params.token }}\", DB_PASSWORD: swordfish}\n    process: {shell: 'echo a >> ran.log'}\n",
    );
    let spec = spec.to_str().unwrap();
    run(&sb, &[spec]);
    run(&sb, &["-p", "token=correct-horse", spec]);
    assert_eq!(ran(&sb), sorted(&["a", "a"]), "a new token is a new key");
    for args in [vec!["cache", "explain", "2", "a"], vec!["cache", "explain", "2", "a", "--output", "json"]] {
        let out = text(&sb.sluice(&args).stdout);
        for secret in ["hunter2", "correct-horse", "swordfish"] {
            assert!(!out.contains(secret), "{secret} in {out}");
        }
        assert!(out.contains("secret"), "{out}");
    }
    let said = changes(&explain(&sb, "2", "a"));
    assert!(said.iter().any(|c| c.contains("param `token` changed (it feeds a secret")), "{said:?}");
    // (The run record keeps its params, and the DAG version its text: secrets as such are the
    // security issue's; the cache adds no copy of them.)
    let key = std::fs::metadata(sb.data().join("cache.key")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
}

#[test]
fn a_step_that_runs_again_in_its_folder_never_writes_into_the_stored_file() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("out")).unwrap();
    let spec = sb.write(
        "w.yaml",
        "name: w\nparams:\n  v: {type: string, default: one}\nsteps:\n  a:\n    workdir: out\n    process: {shell: 'echo {{ params.v }} > model.txt'}\n    artifacts: {model: model.txt}\n",
    );
    let spec = spec.to_str().unwrap();
    run(&sb, &[spec]);
    run(&sb, &["-p", "v=two", spec]);
    let list: Value = serde_json::from_slice(&sb.sluice(&["artifacts", "--output", "json"]).stdout).unwrap();
    let digests: Vec<&str> =
        list["artifacts"].as_array().unwrap().iter().map(|a| a["digest"].as_str().unwrap()).collect();
    assert_eq!(digests.len(), 2);
    assert_ne!(digests[0], digests[1]);
    for d in digests {
        let out = sb.sluice(&["artifact", "show", d]);
        assert!(out.status.success(), "the stored file of {d} changed: {}", text(&out.stdout));
    }
    assert_eq!(std::fs::read_to_string(sb.path("out/model.txt")).unwrap(), "two\n");
}
