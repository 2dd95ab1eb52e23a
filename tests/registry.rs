//! The registry's steps end to end under `sluice serve`: `register:` makes a signed version
//! from the better of two trained models, `gate:` checks it against thresholds and against
//! `production`, `approval:` waits (durably, holding no slot) for a person who is not the
//! run's starter, `promote:` moves the alias (a protected one only after a passed gate and an
//! approval in the run), every move is kept with its run, gate and approval; a rejection or a
//! failed gate stops the run for good; a decision taken on a folder no server holds lets
//! `sluice resume` go on.

mod common;

use common::*;
use serde_json::{Value, json};

/// The registry example (and the data it reads) in a folder of the sandbox.
fn dags(sb: &Sandbox) -> std::path::PathBuf {
    let dags = sb.path("dags");
    std::fs::create_dir_all(dags.join("data")).unwrap();
    std::fs::copy(repo().join("dags/example-registry.yaml"), dags.join("example-registry.yaml")).unwrap();
    std::fs::copy(
        repo().join("dags/data/breast_cancer_wisconsin.csv"),
        dags.join("data/breast_cancer_wisconsin.csv"),
    )
    .unwrap();
    dags
}

fn token(sb: &Sandbox, name: &str, role: &str) -> String {
    let out = sb.sluice(&["token", "create", name, "--role", role]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).lines().find(|l| l.starts_with("sluice_")).unwrap().to_string()
}

fn start(srv: &Server, params: Value) -> u64 {
    let (code, body) =
        srv.post("/api/v1/pipelines/example-registry/runs", &json!({ "params": params }).to_string());
    assert_eq!(code, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["run"]["id"].as_u64().unwrap()
}

/// Waits until the run's step is in `state` (or the run ended).
fn until_step(srv: &Server, run: u64, step: &str, state: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = srv.json(&format!("/api/v1/runs/{run}"));
        let s = r["steps"].as_array().unwrap().iter().find(|s| s["id"] == step).unwrap().clone();
        if s["state"] == state {
            return r;
        }
        let ended = ["succeeded", "failed", "cancelled"].contains(&r["state"].as_str().unwrap());
        assert!(!ended && std::time::Instant::now() < deadline, "step {step} never became {state}: {r:#}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn decide(srv: &Server, who: &str, run: u64, step: &str, verb: &str, comment: &str) -> (u16, String) {
    let body = json!({ "comment": comment }).to_string();
    let (code, _, answer) = srv.request_as(
        Some(who),
        "POST",
        &format!("/api/v1/runs/{run}/steps/{step}/{verb}"),
        body.as_bytes(),
        &[("Content-Type", "application/json")],
    );
    (code, answer)
}

fn step<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["steps"].as_array().unwrap().iter().find(|s| s["id"] == id).unwrap()
}

#[test]
fn register_gate_approve_promote_under_the_registrys_rules() {
    let sb = Sandbox::new();
    let srv = Server::start(&sb, &dags(&sb), &[]);
    let approver = token(&sb, "alice", "approver");
    let editor = token(&sb, "ed", "editor");

    // Run 1: trained, registered, gated, then waiting for a person, holding no slot.
    let run = start(&srv, json!({}));
    let r = until_step(&srv, run, "approve", "waiting");
    assert_eq!(r["state"], "running");
    assert_eq!(step(&r, "register")["outputs"]["version"], 1, "{r:#}");
    assert_eq!(step(&r, "gate")["outputs"]["passed"], true);
    assert!(step(&r, "approve")["tasks"][0]["decide_by"].as_i64().is_some(), "{r:#}");
    assert_eq!(step(&r, "promote")["state"], "pending");
    // The one who started it may not approve it; an editor may not either; not twice.
    let (code, body) = decide(&srv, &srv.token, run, "approve", "approve", "mine");
    assert_eq!(code, 403, "four eyes: {body}");
    assert!(body.contains("four eyes"), "{body}");
    assert_eq!(decide(&srv, &editor, run, "approve", "approve", "").0, 403);
    assert_eq!(decide(&srv, &approver, run, "gate", "approve", "").0, 422, "not an approval step");
    let (code, body) = decide(&srv, &approver, run, "approve", "approve", "metrics look right");
    assert_eq!(code, 200, "{body}");
    assert_eq!(decide(&srv, &approver, run, "approve", "approve", "again").0, 422, "decided already");
    let done = srv.wait_run(run);
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(step(&done, "approve")["outputs"]["approved_by"], "token:alice");
    assert_eq!(step(&done, "promote")["outputs"]["version"], 1);
    let model = srv.json("/api/v1/models/breast-cancer");
    assert_eq!(model["aliases"]["production"], 1, "{model:#}");
    // The version: from the better model's attempt, its files, metrics, schema; it checks.
    let v = srv.json("/api/v1/models/breast-cancer/versions/1?check=true");
    assert_eq!(v["check"]["ok"], true, "{v:#}");
    assert_eq!(v["check"]["checked"], json!(["files", "registration", "provenance"]));
    let files: Vec<&String> = v["version"]["files"].as_object().unwrap().keys().collect();
    assert_eq!(files.len(), 2, "model and metadata: {v:#}");
    assert_eq!(v["version"]["input_schema"].as_array().unwrap().len(), 30, "the 30 features");
    assert!(v["version"]["metrics"]["auc"].as_f64().unwrap() > 0.95);
    assert_eq!(v["version"]["params"]["epochs"], "30", "the trainer's hyperparameters");
    assert_eq!(v["version"]["tags"]["dataset"], "breast_cancer_wisconsin");
    // The train steps' metrics per epoch are the run's series.
    let m = srv.json(&format!("/api/v1/runs/{run}/metrics?step=mlp"));
    let auc_points = m["metrics"].as_array().unwrap().iter().filter(|p| p["key"] == "auc").count();
    assert_eq!(auc_points, 30, "one AUC per epoch");

    // Production protected from now on: run 2 is rejected (the run fails, the alias stays).
    let (code, body) = srv.request(
        "POST",
        "/api/v1/models/breast-cancer/aliases/production/protect",
        br#"{"protected": true}"#,
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 200, "{body}");
    let run2 = start(&srv, json!({}));
    until_step(&srv, run2, "approve", "waiting");
    assert_eq!(decide(&srv, &approver, run2, "approve", "reject", "not this week").0, 200);
    let done = srv.wait_run(run2);
    assert_eq!(done["state"], "failed");
    assert!(
        step(&done, "approve")["message"]
            .as_str()
            .unwrap()
            .contains("rejected by token:alice: not this week")
    );
    assert_eq!(step(&done, "promote")["state"], "upstream_failed");
    assert_eq!(srv.json("/api/v1/models/breast-cancer")["aliases"]["production"], 1);

    // Run 3: approved, so its promote step may move the protected alias.
    let run3 = start(&srv, json!({}));
    until_step(&srv, run3, "approve", "waiting");
    assert_eq!(decide(&srv, &approver, run3, "approve", "approve", "ship").0, 200);
    assert_eq!(srv.wait_run(run3)["state"], "succeeded");
    let h = srv.json("/api/v1/models/breast-cancer/history?alias=production");
    let last = h["moves"].as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["from"].as_u64(), last["to"].as_u64()), (Some(1), Some(3)), "{h:#}");
    assert_eq!(
        last["cause"],
        json!({ "run": run3, "step": "promote", "gate": "gate", "approval": "approve" })
    );
    assert_eq!(last["actor"], format!("pipeline:example-registry#{run3}.promote"));
    assert!(last["reason"].as_str().unwrap().contains("approved by token:alice"), "{last}");

    // A gate that fails stops the run for good (no retry), its report the message.
    let run4 = start(&srv, json!({ "min_auc": 1.01 }));
    let done = srv.wait_run(run4);
    assert_eq!(done["state"], "failed");
    let gate = step(&done, "gate");
    assert_eq!(gate["attempts"].as_array().unwrap().len(), 1, "{gate:#}");
    assert!(gate["message"].as_str().unwrap().contains("< min 1.01"), "{gate:#}");
    assert_eq!(step(&done, "approve")["state"], "upstream_failed");

    // Audited: registrations, the decisions and the moves.
    let audit = srv.json("/api/v1/audit");
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    for a in ["model.register", "approval.approve", "approval.reject", "model.alias", "model.protect"] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
}

#[test]
fn a_decision_on_a_folder_no_server_holds_lets_resume_go_on() {
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::write(
        dags.join("wait.yaml"),
        "name: wait\nsteps:\n  make:\n    process: {shell: 'echo made'}\n  ok:\n    needs: [make]\n    approval: {timeout: 1h}\n  after:\n    needs: [ok]\n    process: {shell: 'echo after {{ steps.ok.outputs.approved_by }}'}\n",
    )
    .unwrap();
    let mut srv = Server::start(&sb, &dags, &[]);
    let (code, body) = srv.post("/api/v1/pipelines/wait/runs", "{}");
    assert_eq!(code, 201, "{body}");
    until_step(&srv, 1, "ok", "waiting");
    // The server stops: the run is interrupted while it waits.
    assert!(srv.stop().success());
    assert_eq!(sb.show("1")["state"], "interrupted");
    // The folder's owner decides (the run was started by the admin token, not by them).
    let out = sb.sluice(&["approve", "1", "ok", "--comment", "fine"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("sluice resume 1"), "{}", text(&out.stderr));
    assert_clean_error(
        &sb.sluice(&["approve", "1", "ok"]),
        2,
        "not waiting for a decision (it is succeeded)",
    );
    let out = sb.sluice(&["resume", "1", "-q"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let show = sb.show("1");
    assert_eq!(show["state"], "succeeded", "{show:#}");
    let logs = text(&sb.sluice(&["logs", "1", "after"]).stdout);
    assert!(logs.contains("after local:"), "{logs}");
}

#[test]
fn a_promote_step_cannot_move_a_protected_alias_without_a_gate_and_an_approval() {
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::write(
        dags.join("quick.yaml"),
        r#"name: quick
steps:
  make:
    process: {shell: 'echo weights > "$SLUICE_RUN_DIR/m.bin"; echo "{\"key\": \"auc\", \"value\": 0.9}" >> "$SLUICE_METRICS"'}
    artifacts: {model: m.bin}
  register:
    needs: [make]
    register: {model: quick}
  promote:
    needs: [register]
    promote: {alias: production}
"#,
    )
    .unwrap();
    std::fs::write(
        dags.join("gated.yaml"),
        r#"name: gated
steps:
  make:
    process: {shell: 'echo w > "$SLUICE_RUN_DIR/m.bin"; echo "{\"key\": \"auc\", \"value\": 0.9}" >> "$SLUICE_METRICS"'}
    artifacts: {model: m.bin}
  register:
    needs: [make]
    register: {model: gated}
  gate:
    needs: [register]
    retries: 3
    gate: {checks: [{metric: f1, min: 0.5}]}
"#,
    )
    .unwrap();
    let srv = Server::start(&sb, &dags, &[]);
    // A gate on a metric the version does not have: a clear error, no retry.
    let (code, _) = srv.post("/api/v1/pipelines/gated/runs", "{}");
    assert_eq!(code, 201);
    let done = srv.wait_run(1);
    let gate = step(&done, "gate");
    assert_eq!(done["state"], "failed");
    assert!(
        gate["message"].as_str().unwrap().contains("gated version 1 has no metric `f1` (it has: auc)"),
        "{gate:#}"
    );
    assert_eq!(gate["attempts"].as_array().unwrap().len(), 1, "not retried: {gate:#}");
    let (code, _) = srv.post("/api/v1/pipelines/quick/runs", "{}");
    assert_eq!(code, 201);
    assert_eq!(srv.wait_run(2)["state"], "succeeded", "unprotected: a promote step moves it");
    let v = srv.json("/api/v1/models/quick/versions/1");
    assert_eq!(v["version"]["metrics"]["auc"], 0.9, "the producing attempt's metrics: {v:#}");
    let (code, _) = srv.request(
        "POST",
        "/api/v1/models/quick/aliases/production/protect",
        br#"{"protected": true}"#,
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 200);
    srv.post("/api/v1/pipelines/quick/runs", "{}");
    let done = srv.wait_run(3);
    assert_eq!(done["state"], "failed");
    let message = step(&done, "promote")["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("protected")
            && message.contains("no gate passed")
            && message.contains("no approval"),
        "{message}"
    );
    assert_eq!(srv.json("/api/v1/models/quick")["aliases"]["production"], 1);
    // A retry from `promote` reuses the run's registered version: no new one is made.
    let (code, body) = srv.post("/api/v1/runs/3/retry", r#"{"from": "promote"}"#);
    assert_eq!(code, 201, "{body}");
    srv.wait_run(4);
    assert_eq!(srv.json("/api/v1/models/quick")["model"]["last_version"], 2);
}

#[test]
fn nobody_deciding_in_time_times_the_approval_out() {
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::write(
        dags.join("late.yaml"),
        "name: late\nsteps:\n  ok:\n    approval: {timeout: 1s}\n  after:\n    needs: [ok]\n    process: {shell: 'true'}\n",
    )
    .unwrap();
    let srv = Server::start(&sb, &dags, &[]);
    let (code, _) = srv.post("/api/v1/pipelines/late/runs", "{}");
    assert_eq!(code, 201);
    let done = srv.wait_run(1);
    assert_eq!(done["state"], "failed", "{done:#}");
    assert_eq!(step(&done, "ok")["state"], "timed_out");
    assert_eq!(step(&done, "after")["state"], "upstream_failed");
    let approver = token(&sb, "late-alice", "approver");
    let (code, body) = decide(&srv, &approver, 1, "ok", "approve", "too late");
    assert_eq!(code, 422, "{body}");
}
