//! MLflow's own client (`mlflow-skinny` from PyPI) against `sluice serve`: the fluent API and
//! `MlflowClient` log params, metrics, batches and tags, search with MLflow's filter grammar and
//! read histories; errors arrive as the exceptions MLflow's users expect; a step's own `mlflow`
//! calls attach to its tracking run through `MLFLOW_RUN_ID`.

mod common;

use common::*;
use serde_json::{Value, json};

/// Runs a script of tests/mlflow/ with MLflow's client pointed at the server.
fn client(python: &str, srv: &Server, script: &str, token: &str) -> (bool, String) {
    let out = std::process::Command::new(python)
        .arg(repo().join("tests/mlflow").join(script))
        .env("URI", srv.url())
        .env("MLFLOW_TRACKING_URI", srv.url())
        .env("MLFLOW_TRACKING_TOKEN", token)
        .env("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        .env("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
        .env("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        .env("MLFLOW_DISABLE_TELEMETRY", "true")
        .env("DO_NOT_TRACK", "true")
        .env("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        .output()
        .expect("run python");
    (out.status.success(), format!("{}{}", text(&out.stdout), text(&out.stderr)))
}

fn line<'a>(out: &'a str, tag: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(tag)).unwrap_or_else(|| panic!("no {tag} line in:\n{out}"))
}

#[test]
fn mlflows_client_tracks_runs_against_sluice() {
    let Some(python) = python_with("mlflow", "mlflows_client_tracks_runs_against_sluice") else { return };
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let srv = Server::start(&sb, &dags, &[]);
    let (ok, out) = client(&python, &srv, "tracking.py", &srv.token);
    assert!(ok, "{out}");
    let run = line(&out, "RUN ").trim_start_matches("RUN ").to_string();
    assert_eq!(run.len(), 32, "{out}");
    assert_eq!(line(&out, "STATUS"), "STATUS FINISHED 0.2 0.01 fraud");
    assert_eq!(line(&out, "HIST"), "HIST [1.0, 0.5, 0.333, 0.25, 0.2] [0, 1, 2, 3, 4]");
    assert_eq!(line(&out, "FOUND"), format!("FOUND ['{run}']"), "the filter picks the first run only");
    assert_eq!(line(&out, "ORDER"), "ORDER ['second', 'first']");
    assert_eq!(line(&out, "PARAM"), "PARAM INVALID_PARAMETER_VALUE", "a param never changes");
    assert_eq!(line(&out, "MISSING"), "MISSING RESOURCE_DOES_NOT_EXIST");
    assert_eq!(
        line(&out, "BADFILTER"),
        "BADFILTER INVALID_PARAMETER_VALUE True",
        "the filter error names its column"
    );
    assert_eq!(line(&out, "EXP"), "EXP None", "get_experiment_by_name of a missing one is None");

    // The same through Sluice's API, and a viewer may read but not log.
    let v = srv.json(&format!("/api/2.0/mlflow/runs/get?run_id={run}"));
    assert_eq!(v["run"]["info"]["status"], "FINISHED", "{v}");
    let viewer = text(&sb.sluice(&["token", "create", "look", "--role", "viewer"]).stdout).trim().to_string();
    let viewer = viewer.lines().find(|l| l.starts_with("sluice_")).unwrap_or(&viewer).to_string();
    let body = format!(r#"{{"run_id": "{run}", "key": "x", "value": 1, "timestamp": 1, "step": 0}}"#);
    let (code, _, answer) = srv.request_as(
        Some(&viewer),
        "POST",
        "/api/2.0/mlflow/runs/log-metric",
        body.as_bytes(),
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 403, "{answer}");
    let e: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(e["error_code"], "PERMISSION_DENIED", "MLflow's error shape: {answer}");
    let (code, _, answer) = srv.request_as(None, "GET", "/api/2.0/mlflow/experiments/search", b"", &[]);
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("\"error_code\":\"UNAUTHENTICATED\""), "{answer}");
    let (code, answer) = srv.get("/api/2.0/mlflow/no-such-thing");
    assert_eq!(code, 404);
    assert!(answer.contains("ENDPOINT_NOT_FOUND"), "{answer}");
}

#[test]
fn a_steps_mlflow_calls_attach_to_its_tracking_run() {
    let Some(python) = python_with("mlflow", "a_steps_mlflow_calls_attach_to_its_tracking_run") else {
        return;
    };
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let script = repo().join("tests/mlflow/step.py");
    std::fs::write(
        dags.join("fit.yaml"),
        format!(
            r#"name: fit
steps:
  train:
    process:
      command: [{python}, {script}]
    env: {{MLFLOW_HTTP_REQUEST_MAX_RETRIES: "0", MLFLOW_DISABLE_TELEMETRY: "true", MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT: "true", TOKEN_FILE: {seen}}}
"#,
            script = script.display(),
            seen = sb.path("token-seen").display()
        ),
    )
    .unwrap();
    let srv = Server::start(&sb, &dags, &[]);
    let (code, body) = srv.post("/api/v1/pipelines/fit/runs", "{}");
    assert_eq!(code, 201, "{body}");
    let run = serde_json::from_str::<serde_json::Value>(&body).unwrap()["run"]["id"].as_u64().unwrap();
    let done = srv.wait_run(run);
    let logs = srv.get(&format!("/api/v1/runs/{run}/steps/train/logs")).1;
    assert_eq!(done["state"], "succeeded", "{done}\n{logs}");
    // The step's points are the run's metrics, with the step's name on them.
    let m = srv.json(&format!("/api/v1/runs/{run}/metrics"));
    let keys: Vec<(&str, &str, f64)> = m["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["task"].as_str().unwrap(), p["key"].as_str().unwrap(), p["value"].as_f64().unwrap()))
        .collect();
    assert_eq!(keys, [("train", "auc", 0.93), ("train", "loss", 0.5), ("train", "loss", 0.25)], "{m}");
    // Its tracking run: in the pipeline's experiment, named after the step, with the step's
    // param and tags, ended by the step's client; its token no longer stands.
    let exp = srv.json("/api/2.0/mlflow/experiments/get-by-name?experiment_name=fit");
    let id = exp["experiment"]["experiment_id"].as_str().unwrap().to_string();
    let found = srv.request(
        "POST",
        "/api/2.0/mlflow/runs/search",
        format!(
            r#"{{"experiment_ids": ["{id}"], "filter": "tags.`sluice.run` = '{run}' and params.seed = '7'"}}"#
        )
        .as_bytes(),
        &[("Content-Type", "application/json")],
    );
    let found: serde_json::Value = serde_json::from_str(&found.1).unwrap();
    let runs = found["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{found}");
    assert_eq!(runs[0]["info"]["run_name"], "train");
    assert_eq!(runs[0]["info"]["status"], "FINISHED");
    let said = text(&std::fs::read(sb.path("token-seen")).unwrap_or_default());
    assert!(said.starts_with("sluice_attempt_"), "the step had an attempt token: {said}");
    let (code, _, _) =
        srv.request_as(Some(said.trim()), "GET", "/api/2.0/mlflow/experiments/search", b"", &[]);
    assert_eq!(code, 401, "an attempt's token stands only while it runs");
}

#[test]
fn mlflows_registry_calls_work_under_sluices_rules() {
    let Some(python) = python_with("mlflow", "mlflows_registry_calls_work_under_sluices_rules") else {
        return;
    };
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let srv = Server::start(&sb, &dags, &[]);
    let (ok, out) = client(&python, &srv, "registry.py", &srv.token);
    assert!(ok, "{out}");
    assert_eq!(line(&out, "VERSIONS"), "VERSIONS ['1', '2']");
    assert_eq!(line(&out, "LISTED"), "LISTED ['model/MLmodel', 'model/empty.txt', 'model/model.pkl']");
    assert_eq!(line(&out, "ALIAS"), "ALIAS 2 True READY");
    assert_eq!(
        line(&out, "SAME"),
        "SAME True ['MLmodel', 'empty.txt', 'model.pkl']",
        "models:/churn@production reads back"
    );
    assert_eq!(line(&out, "MODELS"), "MODELS ['churn']");
    assert_eq!(line(&out, "SEARCH"), "SEARCH ['2', '1']");
    assert_eq!(line(&out, "RM"), "RM churn {'production': '2'}");
    assert_eq!(line(&out, "NOVERSION"), "NOVERSION RESOURCE_DOES_NOT_EXIST");
    assert_eq!(line(&out, "NOALIAS"), "NOALIAS INVALID_PARAMETER_VALUE");
    assert_eq!(line(&out, "EXISTS"), "EXISTS RESOURCE_ALREADY_EXISTS");
    assert_eq!(line(&out, "NOFILES"), "NOFILES INVALID_PARAMETER_VALUE");
    assert_eq!(line(&out, "TAGS"), "TAGS [('team', 'risk')] [('validated', 'yes')]");

    // The version's record: its files, metrics and params from its run, MLmodel's schema.
    let v = srv.json("/api/v1/models/churn/versions/2?check=true");
    assert_eq!(v["check"]["ok"], true, "{v}");
    assert_eq!(v["version"]["metrics"]["auc"], 0.95);
    assert_eq!(v["version"]["params"]["lr"], "0.01");
    assert_eq!(v["version"]["input_schema"][0], serde_json::json!({"name": "age", "type": "long"}));
    assert_eq!(v["version"]["files"].as_object().unwrap().len(), 3);

    let json = |body: &str| (body.as_bytes().to_vec(), [("Content-Type", "application/json")]);
    let as_role = |role: &str| {
        let out = sb.sluice(&["token", "create", &format!("t-{role}"), "--role", role]);
        text(&out.stdout).lines().find(|l| l.starts_with("sluice_")).unwrap().to_string()
    };
    let (editor, approver) = (as_role("editor"), as_role("approver"));
    // A protected alias: an editor may not move it, an approver may; the editor may move others.
    let (code, body) = srv.request(
        "POST",
        "/api/v1/models/churn/aliases/production/protect",
        br#"{"protected": true}"#,
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 200, "{body}");
    let (b, h) = json(r#"{"version": 1, "reason": "try"}"#);
    let (code, _, body) =
        srv.request_as(Some(&editor), "POST", "/api/v1/models/churn/aliases/production", &b, &h);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("protected"), "{body}");
    let (code, _, body) =
        srv.request_as(Some(&editor), "POST", "/api/v1/models/churn/aliases/staging", &b, &h);
    assert_eq!(code, 200, "{body}");
    let (b, h) = json(r#"{"version": 1, "reason": "v2 regressed"}"#);
    let (code, _, body) =
        srv.request_as(Some(&approver), "POST", "/api/v1/models/churn/aliases/production", &b, &h);
    assert_eq!(code, 200, "{body}");
    // One command back: production returns to version 2; an editor cannot roll it back.
    let (code, _, body) =
        srv.request_as(Some(&editor), "POST", "/api/v1/models/churn/aliases/production/rollback", b"{}", &h);
    assert_eq!(code, 403, "{body}");
    let (code, _, body) = srv.request_as(
        Some(&approver),
        "POST",
        "/api/v1/models/churn/aliases/production/rollback",
        br#"{"reason": "undo"}"#,
        &h,
    );
    assert_eq!(code, 200, "{body}");
    let moved: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((moved["move"]["from"].as_u64(), moved["move"]["to"].as_u64()), (Some(1), Some(2)), "{moved}");
    // Every move is kept: who, from, to, why.
    let h = srv.json("/api/v1/models/churn/history?alias=production");
    let moves: Vec<(Option<u64>, Option<u64>, String)> = h["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["from"].as_u64(), m["to"].as_u64(), m["actor"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        moves,
        [
            (None, Some(1), "token:admin".into()),
            (Some(1), Some(2), "token:admin".into()),
            (Some(2), Some(1), "token:t-approver".into()),
            (Some(1), Some(2), "token:t-approver".into()),
        ],
        "{h}"
    );
    assert_eq!(h["moves"][3]["rollback"], true);
    assert_eq!(h["moves"][2]["reason"], "v2 regressed");
    let audit = srv.json("/api/v1/audit?action=model");
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(
        actions.contains(&"model.rollback")
            && actions.contains(&"model.protect")
            && actions.contains(&"model.register"),
        "{actions:?}"
    );

    // Bad input: a missing version, a reserved alias, a model that does not exist.
    let (b, h) = json(r#"{"version": 9}"#);
    assert_eq!(srv.request("POST", "/api/v1/models/churn/aliases/staging", &b, &h).0, 404);
    assert_eq!(srv.request("POST", "/api/v1/models/churn/aliases/latest", &b, &h).0, 422);
    assert_eq!(srv.request("POST", "/api/v1/models/nope/aliases/staging", &b, &h).0, 404);

    // A version whose stored file was tampered with no longer checks, and no alias moves to it.
    let digest = v["version"]["files"]["model.pkl"]["digest"].as_str().unwrap().to_string();
    let hex = digest.trim_start_matches("sha256:");
    let blob = sb.data().join("artifacts/sha256").join(&hex[..2]).join(&hex[2..]);
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[3] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    let (b, h) = json(r#"{"version": 2}"#);
    let (code, body) = srv.request("POST", "/api/v1/models/churn/aliases/canary", &b, &h);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("does not match its digest"), "{body}");
    let shown = sb.sluice(&["model", "show", "churn", "--version", "2"]);
    assert_eq!(shown.status.code(), Some(1), "{}", text(&shown.stdout));
    assert!(text(&shown.stdout).contains("check     FAILED"), "{}", text(&shown.stdout));
}

#[test]
fn writers_keep_to_what_they_own() {
    let Some(python) = python_with("mlflow", "writers_keep_to_what_they_own") else { return };
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::write(dags.join("first.yaml"), "name: first\nsteps:\n  a:\n    process: {shell: 'true'}\n")
        .unwrap();
    let srv = Server::start(&sb, &dags, &[]);
    let (code, _) = srv.post("/api/v1/pipelines/first/runs", "{}");
    assert_eq!(code, 201);
    srv.wait_run(1);
    let exp = srv.json("/api/2.0/mlflow/experiments/get-by-name?experiment_name=first");
    let exp_id = exp["experiment"]["experiment_id"].as_str().unwrap().to_string();
    let search = |filter: &str| {
        let body = json!({"experiment_ids": [exp_id], "filter": filter}).to_string();
        let (code, answer) = srv.request(
            "POST",
            "/api/2.0/mlflow/runs/search",
            body.as_bytes(),
            &[("Content-Type", "application/json")],
        );
        (code, answer)
    };
    let (_, answer) = search("");
    let step_run = serde_json::from_str::<Value>(&answer).unwrap()["runs"][0]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let post = |path: &str, body: Value| {
        let (code, answer) =
            srv.request("POST", path, body.to_string().as_bytes(), &[("Content-Type", "application/json")]);
        (code, answer)
    };
    // Nobody but the step itself writes to a step's tracking run (its metrics feed gates).
    let (code, answer) = post(
        "/api/2.0/mlflow/runs/log-metric",
        json!({"run_id": step_run, "key": "auc", "value": 1.0, "timestamp": 1}),
    );
    assert_eq!(code, 403, "{answer}");
    assert!(answer.contains("PERMISSION_DENIED") && answer.contains("only that step writes"), "{answer}");
    // A pipeline's experiment is not deleted or renamed.
    let (code, answer) = post("/api/2.0/mlflow/experiments/delete", json!({"experiment_id": exp_id}));
    assert_eq!(code, 403, "{answer}");
    // A filter nested too deep is refused, and the server lives on.
    let (code, answer) = search(&format!("{}metrics.a > 1{}", "(".repeat(10_000), ")".repeat(10_000)));
    assert_eq!(code, 400, "{answer}");
    assert_eq!(srv.get("/api/v1/health").0, 200);
    // The artifact proxy: `registry/` is not for uploads; a path keeps its first content.
    let put = |path: &str, bytes: &[u8]| {
        srv.request(
            "PUT",
            &format!("/api/2.0/mlflow-artifacts/artifacts/{path}"),
            bytes,
            &[("Content-Type", "text/plain")],
        )
    };
    assert_eq!(put("registry/churn/1/model.pkl", b"evil").0, 403);
    let (code, answer) = post("/api/2.0/mlflow/runs/create", json!({"experiment_id": exp_id}));
    assert_eq!(code, 200, "{answer}");
    let mine = serde_json::from_str::<Value>(&answer).unwrap()["run"]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let file = format!("{exp_id}/{mine}/artifacts/model/weights.bin");
    assert_eq!(put(&file, b"first").0, 200);
    assert_eq!(put(&file, b"first").0, 200, "the same bytes again");
    let (code, answer) = put(&file, b"second");
    assert_eq!(code, 400, "{answer}");
    assert!(answer.contains("RESOURCE_ALREADY_EXISTS"), "{answer}");
    assert_eq!(
        put(&format!("{exp_id}/{step_run}/artifacts/x.bin"), b"x").0,
        403,
        "a step's folder is the step's"
    );

    // A step's own token: its own run, yes; another's, Sluice's API, alias moves, no.
    let probe = sb.path("probe.json");
    std::fs::write(
        dags.join("probe.yaml"),
        format!(
            "name: probe\nsteps:\n  p:\n    process: {{command: [{python}, {script}, {step_run}]}}\n    env: {{PROBE_FILE: {probe}}}\n",
            script = repo().join("tests/mlflow/scoped.py").display(),
            probe = probe.display()
        ),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let run = loop {
        let (code, body) = srv.post("/api/v1/pipelines/probe/runs", "{}");
        if code == 201 {
            break serde_json::from_str::<Value>(&body).unwrap()["run"]["id"].as_u64().unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "the server did not load probe.yaml: {body}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let done = srv.wait_run(run);
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let seen: Value = serde_json::from_str(&std::fs::read_to_string(&probe).unwrap()).unwrap();
    assert_eq!(
        seen,
        json!({"own_metric": 200, "other_metric": 403, "sluice_api": 403, "alias": 403, "registry_upload": 403}),
        "what a step's token may do"
    );
}
