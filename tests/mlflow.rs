//! MLflow's own client (`mlflow-skinny` from PyPI) against `sluice serve`: the fluent API and
//! `MlflowClient` log params, metrics, batches and tags, search with MLflow's filter grammar and
//! read histories; errors arrive as the exceptions MLflow's users expect; a step's own `mlflow`
//! calls attach to its tracking run through `MLFLOW_RUN_ID`.

mod common;

use common::*;

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
