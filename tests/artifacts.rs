//! Artifacts end to end: declared files stored by content, read downstream through templates,
//! listed and copied out by the CLI and the API, and every way a declaration can be wrong or a
//! stored file damaged.

mod common;

use std::os::unix::fs::MetadataExt;

use common::*;

/// A producer writing a model and two reports into the run's folder, and a consumer that reads
/// the model through its artifact path and digest.
const PIPELINE: &str = r#"
name: arts
steps:
  make:
    workdir: "{{ run.id }}"
    process:
      shell: |
        mkdir -p reports
        printf 'weights-%s' "$CONTENT" > model.bin
        echo '<p>a</p>' > reports/a.html
        echo '<p>b</p>' > reports/b.html
    env: {CONTENT: "v1"}
    artifacts:
      model: model.bin
      report: "reports/*.html"
  use:
    needs: [make]
    process:
      shell: |
        echo "digest={{ steps.make.artifacts.model.digest }} size={{ steps.make.artifacts.model.size }} reports={{ steps.make.artifacts.report | length }}"
        cat {{ steps.make.artifacts.model.path }} > "$SLUICE_RUN_DIR/seen"
"#;

fn setup(sb: &Sandbox) -> std::path::PathBuf {
    // The producer's workdir is `<sandbox>/<run id>`, relative to the pipeline file.
    for id in 1..=3 {
        std::fs::create_dir_all(sb.path(&id.to_string())).unwrap();
    }
    sb.write("arts.yaml", PIPELINE)
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn declared_files_are_stored_by_content_and_read_downstream() {
    let sb = Sandbox::new();
    let spec = setup(&sb);
    let out = sb.sluice(&["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let list = json(&sb.sluice(&["artifacts", "--run", "1", "--output", "json"]));
    let arts = list["artifacts"].as_array().unwrap();
    assert_eq!(arts.len(), 3, "{list}");
    let model = arts.iter().find(|a| a["name"] == "model").unwrap();
    assert_eq!(model["size"], 10);
    assert_eq!(model["step"], "make");
    assert_eq!(model["file"], "model.bin");
    assert_eq!(model["media_type"], "application/octet-stream");
    let digest = model["digest"].as_str().unwrap().to_string();
    let reports: Vec<_> = arts.iter().filter(|a| a["name"] == "report").map(|a| a["file"].clone()).collect();
    assert_eq!(reports, ["reports/b.html", "reports/a.html"], "newest first, both matched");
    assert_eq!(arts.iter().find(|a| a["file"] == "reports/a.html").unwrap()["media_type"], "text/html");

    // The store holds the file once, read-only, linked (same file system: no second copy).
    let hex = digest.strip_prefix("sha256:").unwrap();
    let stored = sb.data().join("artifacts/sha256").join(&hex[..2]).join(&hex[2..]);
    let meta = std::fs::metadata(&stored).unwrap();
    assert!(meta.permissions().readonly());
    assert_eq!(meta.ino(), std::fs::metadata(sb.path("1/model.bin")).unwrap().ino());

    // Downstream templates saw path, digest, size and the glob's list.
    let logs = sb.sluice(&["logs", "1", "use"]);
    let log = text(&logs.stdout);
    assert!(log.contains(&format!("digest={digest} size=10 reports=2")), "{log}");
    assert_eq!(std::fs::read_to_string(sb.data().join("work/1/seen")).unwrap(), "weights-v1");
    let make_log = text(&sb.sluice(&["logs", "1", "make"]).stdout);
    assert!(
        make_log.contains(&format!("artifact `model` (model.bin) stored as {digest} (10 bytes)")),
        "{make_log}"
    );

    // show, by a digest prefix, names who produced it; get copies it out, checked.
    let show = json(&sb.sluice(&["artifact", "show", &hex[..12], "--output", "json"]));
    assert_eq!(show["digest"], digest.as_str());
    assert_eq!(show["check"]["ok"], true);
    assert_eq!(show["produced_by"][0]["run"], 1);
    let out_file = sb.path("copy.bin");
    let got = sb.sluice(&["artifact", "get", &digest, "-o", out_file.to_str().unwrap()]);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(std::fs::read(&out_file).unwrap(), b"weights-v1");

    // The same content from a second run is stored once: two records, one file.
    let out = sb.sluice(&["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = json(&sb.sluice(&["artifact", "show", &digest, "--output", "json"]));
    let runs: Vec<_> = show["produced_by"].as_array().unwrap().iter().map(|p| p["run"].clone()).collect();
    assert_eq!(runs, [1, 2]);
    let files = walk(&sb.data().join("artifacts/sha256"));
    assert_eq!(files, 3, "model and two reports, each once");
}

fn walk(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        n += if e.file_type().unwrap().is_dir() { walk(&e.path()) } else { 1 };
    }
    n
}

#[test]
fn a_damaged_artifact_is_never_used() {
    let sb = Sandbox::new();
    let spec = setup(&sb);
    assert!(sb.sluice(&["run", "-q", spec.to_str().unwrap()]).status.success());
    let list = json(&sb.sluice(&["artifacts", "--step", "make", "--output", "json"]));
    let digest =
        list["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "model").unwrap()["digest"]
            .as_str()
            .unwrap()
            .to_string();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let stored = sb.data().join("artifacts/sha256").join(&hex[..2]).join(&hex[2..]);
    // A bit flips in the stored file (through its other name: the two are one file).
    let mut perms = std::fs::metadata(&stored).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&stored, perms).unwrap();
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[0] ^= 0x01;
    std::fs::write(&stored, &bytes).unwrap();

    let out = sb.sluice(&["artifact", "show", &digest]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("DAMAGED"), "{}", text(&out.stdout));
    let out_file = sb.path("copy.bin");
    let got = sb.sluice(&["artifact", "get", &digest, "-o", out_file.to_str().unwrap()]);
    assert_clean_error(&got, 2, "is damaged");
    assert!(!out_file.exists(), "nothing is written from a damaged artifact");

    // Through the API: the document says so, the content is refused.
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let mut server = Server::start(&sb, &dags, &[]);
    let doc = server.json(&format!("/api/v1/artifacts/{digest}"));
    assert_eq!(doc["check"]["ok"], false, "{doc}");
    let (code, body) = server.get(&format!("/api/v1/artifacts/{digest}/content"));
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("damaged"), "{body}");
    let (code, body) = server.get("/api/v1/artifacts/sha256:nothex");
    assert_eq!(code, 400, "{body}");
    // While the server owns the folder, the CLI asks it.
    let got = sb.sluice(&["artifact", "get", &digest, "-o", out_file.to_str().unwrap()]);
    assert_clean_error(&got, 2, "damaged");
    let listed = json(&sb.sluice(&["artifacts", "--output", "json"]));
    assert_eq!(listed["artifacts"].as_array().unwrap().len(), 3);
    server.stop();
}

#[test]
fn the_api_serves_checked_content() {
    let sb = Sandbox::new();
    let spec = setup(&sb);
    assert!(sb.sluice(&["run", "-q", spec.to_str().unwrap()]).status.success());
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let mut server = Server::start(&sb, &dags, &[]);
    let list = server.json("/api/v1/artifacts?run=1&step=make");
    let model = list["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == "model").unwrap().clone();
    let digest = model["digest"].as_str().unwrap();
    let (code, body) = server.get(&format!("/api/v1/artifacts/{digest}/content"));
    assert_eq!((code, body.as_str()), (200, "weights-v1"));
    let out_file = sb.path("via-server.bin");
    let got = sb.sluice(&["artifact", "get", digest, "-o", out_file.to_str().unwrap()]);
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(std::fs::read(&out_file).unwrap(), b"weights-v1");
    let (code, _) = server
        .get("/api/v1/artifacts/sha256:0000000000000000000000000000000000000000000000000000000000000000");
    assert_eq!(code, 404);
    let (code, _) = server.get("/api/v1/artifacts?limit=0");
    assert_eq!(code, 400);
    server.stop();
}

#[test]
fn a_missing_or_escaping_artifact_fails_the_step_for_good() {
    let sb = Sandbox::new();
    std::fs::write(sb.path("secret"), "not yours").unwrap();
    let spec = sb.write(
        "bad.yaml",
        r#"
name: bad
steps:
  missing:
    retries: 3
    process: {shell: "true"}
    workdir: "."
    artifacts: {model: never-written.bin}
  escape:
    retries: 3
    workdir: "w"
    process: {shell: "ln -sf ../secret stolen"}
    artifacts: {loot: stolen}
"#,
    );
    std::fs::create_dir_all(sb.path("w")).unwrap();
    let out = sb.sluice(&["run", "-q", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let show = sb.show("1");
    let missing = step(&show, "missing");
    assert_eq!(attempts(missing), 1, "a fatal failure is not retried: {missing}");
    let message = missing["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("declares artifact `model` (never-written.bin) but did not write it"),
        "{message}"
    );
    let escape = step(&show, "escape");
    assert_eq!(attempts(escape), 1);
    let message = escape["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("artifact `loot`") && message.contains("leads out of the step's work folder"),
        "{message}"
    );
    assert!(!sb.data().join("artifacts/sha256").exists(), "nothing was stored");
}

#[test]
fn declarations_are_checked_before_anything_runs() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "bad.yaml",
        r#"name: bad
steps:
  a:
    process: {shell: "true"}
    artifacts:
      up: ../outside.bin
      abs: /etc/passwd
      "bad name": x
  t:
    train: {model: logistic, data: d.csv, label: y}
    artifacts: {model: other.bin}
  b:
    needs: [a, t]
    process: {shell: "echo {{ steps.a.artifacts.nope.path }} {{ steps.t.artifacts.model.digest }}"}
"#,
    );
    let out = sb.sluice(&["validate", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let err = text(&out.stdout);
    for needle in [
        "bad.yaml:6:11: step `a`: artifact `up` `../outside.bin` leads out of the step's work folder",
        "bad.yaml:7:12: step `a`: artifact `abs` `/etc/passwd` is absolute",
        "artifact name `bad name` must start with a letter",
        "step `t`: artifact `model` is declared by the step's kind itself",
        "the template reads `steps.a.artifacts.nope`, but `a` declares only `up`, `abs`, `bad name`",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }
    assert!(!err.contains("steps.t.artifacts.model"), "a train step's model is declared by its kind: {err}");
}

const LINEAGE: &str = r#"
name: chain
params: {lr: {type: string, default: "0.1"}}
steps:
  prep:
    inputs: ["raw/*.csv", "lookup"]
    process:
      shell: cat raw/*.csv lookup/* > "$SLUICE_RUN_DIR/features.csv"
    artifacts: {features: features.csv}
  fit:
    needs: [prep]
    process:
      shell: |
        { cat {{ steps.prep.artifacts.features.path }}; echo {{ params.lr }}; } > "$SLUICE_RUN_DIR/model.bin"
    artifacts: {model: model.bin}
"#;

fn digest_of(sb: &Sandbox, run: &str, name: &str) -> String {
    let list = json(&sb.sluice(&["artifacts", "--run", run, "--output", "json"]));
    list["artifacts"].as_array().unwrap().iter().find(|a| a["name"] == name).unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn lineage_walks_from_a_model_to_its_raw_files_and_back() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.path("raw")).unwrap();
    std::fs::create_dir_all(sb.path("lookup")).unwrap();
    std::fs::write(sb.path("raw/a.csv"), "x,y\n1,2\n").unwrap();
    std::fs::write(sb.path("raw/b.csv"), "3,4\n").unwrap();
    std::fs::write(sb.path("lookup/codes.txt"), "k=v\n").unwrap();
    // Written a minute ago: the hash index keeps only files that have settled (a file written
    // within the last 2 s is hashed again next time, since a same-size rewrite could hide).
    for f in ["raw/a.csv", "raw/b.csv", "lookup/codes.txt"] {
        let st = std::process::Command::new("touch").args(["-d", "1 minute ago"]).arg(sb.path(f)).status();
        assert!(st.unwrap().success());
    }
    let spec = sb.write("chain.yaml", LINEAGE);
    let spec = spec.to_str().unwrap();
    assert!(sb.sluice(&["run", "-q", spec]).status.success());
    let model = digest_of(&sb, "1", "model");

    // Upstream: the model, the fit attempt, the features, prep, and the three raw inputs
    // (two files of the glob, one folder) with the run's DAG version and params.
    let up = json(&sb.sluice(&["lineage", &model, "--output", "json"]));
    let nodes = up["nodes"].as_array().unwrap();
    let datasets: Vec<&str> =
        nodes.iter().filter(|n| n["kind"] == "dataset").map(|n| n["path"].as_str().unwrap()).collect();
    assert_eq!(datasets.len(), 3, "{up}");
    assert!(
        datasets.iter().any(|p| p.ends_with("raw/a.csv")) && datasets.iter().any(|p| p.ends_with("/lookup")),
        "{datasets:?}"
    );
    let steps: Vec<&str> =
        nodes.iter().filter(|n| n["kind"] == "attempt").map(|n| n["step"].as_str().unwrap()).collect();
    assert_eq!(steps, ["fit", "prep"]);
    assert_eq!(up["runs"]["1"]["params"]["lr"], "0.1");
    assert_eq!(up["edges"].as_array().unwrap().len(), 6, "{up}");
    // --depth 1 stops at the attempt that made it and what it read.
    let near = json(&sb.sluice(&["lineage", &model, "--depth", "1", "--output", "json"]));
    assert_eq!(near["nodes"].as_array().unwrap().iter().filter(|n| n["kind"] == "attempt").count(), 1);
    let text_tree = text(&sb.sluice(&["lineage", &model[..20]]).stdout);
    assert!(text_tree.contains("made by:") && text_tree.contains("raw/b.csv"), "{text_tree}");
    let dot = text(&sb.sluice(&["lineage", &model, "--format", "dot"]).stdout);
    assert!(dot.starts_with("digraph lineage {") && dot.contains("shape=cylinder"), "{dot}");

    // A second run with the same data: the index spares re-reading it; a changed file is read.
    std::fs::write(sb.path("raw/b.csv"), "5,6\n").unwrap();
    assert!(sb.sluice(&["run", "-q", spec, "--param", "lr=0.2"]).status.success());
    let log = text(&sb.sluice(&["logs", "2", "prep"]).stdout);
    assert!(log.contains("2 of 3 input files unchanged since they were last hashed"), "{log}");

    // Downstream from a raw file's version: both runs read a.csv; each made its features.
    let a_csv = up["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["path"].as_str().is_some_and(|p| p.ends_with("raw/a.csv")))
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let down = json(&sb.sluice(&["lineage", &a_csv, "--downstream", "--output", "json"]));
    let runs: Vec<u64> = down["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == "attempt" && n["step"] == "fit")
        .map(|n| n["run"].as_u64().unwrap())
        .collect();
    assert_eq!(runs, [1, 2], "{down}");

    // From a step of a run, and through the API.
    let from_step = json(&sb.sluice(&["lineage", "2/fit", "--output", "json"]));
    assert!(from_step["nodes"].as_array().unwrap().iter().any(|n| n["kind"] == "dataset"));
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let mut server = Server::start(&sb, &dags, &[]);
    let api = server.json(&format!("/api/v1/lineage/{model}"));
    assert_eq!(api["nodes"], up["nodes"]);
    let api = server.json("/api/v1/runs/2/steps/fit/lineage?direction=downstream");
    assert!(api["nodes"].as_array().unwrap().iter().any(|n| n["kind"] == "artifact"), "{api}");
    let (code, _) = server.get(&format!("/api/v1/lineage/{model}?direction=sideways"));
    assert_eq!(code, 400);
    let through = json(&sb.sluice(&["lineage", &model, "--output", "json"]));
    assert_eq!(through["nodes"], up["nodes"], "the CLI asks the server while it owns the folder");
    server.stop();
}

#[test]
fn a_missing_input_fails_the_step_before_it_runs() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "in.yaml",
        "name: in\nsteps:\n  a:\n    retries: 2\n    inputs: [nowhere.csv]\n    process: {shell: \"touch $SLUICE_RUN_DIR/ran\"}\n",
    );
    let out = sb.sluice(&["run", "-q", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let show = sb.show("1");
    let a = step(&show, "a");
    assert_eq!(attempts(a), 1, "{a}");
    assert!(a["message"].as_str().unwrap().contains("input `nowhere.csv` does not exist"), "{a}");
    assert!(!sb.data().join("work/1/ran").exists(), "the step did not run");
}
