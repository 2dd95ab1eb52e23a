//! Rollouts under `sluice serve`: a canary's weight splits live traffic (sticky by a
//! header), survives a restart of the server with its routing unchanged, and hands the alias
//! over when resumed; a deliberately bad candidate fails its analysis of online accuracy and
//! is rolled back automatically, failing its `rollout:` step and starting the pipeline whose
//! `on:` waits for an aborted rollout.

mod common;

use common::*;
use serde_json::{Value, json};

fn dags(sb: &Sandbox) -> std::path::PathBuf {
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    for f in ["churn.yaml", "rollout.yaml", "on-abort.yaml"] {
        std::fs::copy(repo().join("tests/serving").join(f), dags.join(f)).unwrap();
    }
    dags
}

fn start_run(srv: &Server, pipeline: &str, params: Value) -> u64 {
    let (code, body) =
        srv.post(&format!("/api/v1/pipelines/{pipeline}/runs"), &json!({ "params": params }).to_string());
    assert_eq!(code, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["run"]["id"].as_u64().unwrap()
}

fn train(srv: &Server, params: Value) {
    let run = start_run(srv, "churn-model", params);
    let done = srv.wait_run(run);
    assert_eq!(done["state"], "succeeded", "{done:#}");
}

/// The version that served one request, routed by `user`.
fn served_by(srv: &Server, user: &str) -> u64 {
    let (code, body) = srv.request(
        "POST",
        "/api/v1/models/churn/predict",
        br#"{"rows": [[30, 60, 1]]}"#,
        &[("Content-Type", "application/json"), ("X-User", user)],
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["version"].as_u64().unwrap()
}

#[test]
fn a_canary_splits_traffic_survives_a_restart_and_hands_over() {
    let sb = Sandbox::new();
    let dags = dags(&sb);
    let mut srv = Server::start(&sb, &dags, &[]);
    train(&srv, json!({}));
    train(&srv, json!({"seed": 9, "alias": "candidate"}));

    let start = json!({
        "model": "churn", "version": 2, "alias": "production",
        "strategy": { "canary": { "steps": [{ "weight": 30 }, { "pause": {} }] } },
        "route_by": { "header": "X-User" },
    });
    let (code, body) = srv.post("/api/v1/rollouts", &start.to_string());
    assert_eq!(code, 201, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (r["rollout"]["status"].clone(), r["rollout"]["share"].clone()),
        (json!("paused"), json!(30)),
        "{r:#}"
    );
    // A second rollout of the same alias is refused while this one runs.
    let (code, body) = srv.post("/api/v1/rollouts", &start.to_string());
    assert_eq!(code, 409, "{body}");

    // 30% of users reach the candidate; each user always the same version.
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let before: Vec<u64> = users.iter().map(|u| served_by(&srv, u)).collect();
    let to_candidate = before.iter().filter(|v| **v == 2).count();
    assert!((60..=120).contains(&to_candidate), "{to_candidate} of 300 reached the candidate at 30%");
    assert!(before.iter().all(|v| *v == 1 || *v == 2));
    for (u, v) in users.iter().zip(&before).take(20) {
        assert_eq!(served_by(&srv, u), *v, "{u} moved between versions");
    }

    // A restart: the rollout is where it was, and so is every user's version.
    srv.stop();
    let srv = Server::start(&sb, &dags, &[]);
    let out = sb.sluice(&["--output", "json", "rollout", "status", "churn"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (status["rollout"]["status"].clone(), status["rollout"]["share"].clone()),
        (json!("paused"), json!(30))
    );
    let after: Vec<u64> = users.iter().map(|u| served_by(&srv, u)).collect();
    assert_eq!(before, after, "routing changed across the restart");

    // Resumed, the open pause ends and the candidate takes the alias.
    let out = sb.sluice(&["rollout", "resume", "churn"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("succeeded"), "{}", text(&out.stdout));
    assert_eq!(srv.json("/api/v1/models/churn")["aliases"]["production"], 2, "the alias moved");
    assert!(users.iter().take(30).all(|u| served_by(&srv, u) == 2));
    let out = sb.sluice(&["rollout", "list"]);
    assert!(
        text(&out.stdout).contains("churn@production") && text(&out.stdout).contains("succeeded"),
        "{}",
        text(&out.stdout)
    );
    // Its start and end are in the audit log.
    let audit = srv.json("/api/v1/audit?limit=200");
    let actions: Vec<&str> =
        audit["entries"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
    for a in ["rollout.start", "rollout.resume", "rollout.succeeded"] {
        assert!(actions.contains(&a), "no {a} in {actions:?}");
    }
}

/// The rule the training data follows (before its 10% noise).
fn truth(t: f64, s: f64, c: f64) -> &'static str {
    if (t < 18.0 && c > 4.0) || (t > 48.0 && s > 110.0) { "1" } else { "0" }
}

#[test]
fn a_bad_candidate_is_rolled_back_by_its_analysis() {
    let sb = Sandbox::new();
    let srv = Server::start(&sb, &dags(&sb), &[]);
    train(&srv, json!({}));
    // Trained on inverted labels: wrong nine times in ten.
    train(&srv, json!({"seed": 9, "alias": "candidate", "flip": 1}));
    let run = start_run(&srv, "churn-rollout", json!({"version": 2}));

    // Live traffic with ground truth, until the rollout ends.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut i = 0u64;
    loop {
        let r = srv.json(&format!("/api/v1/runs/{run}"));
        if ["succeeded", "failed"].contains(&r["state"].as_str().unwrap()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the rollout never ended: {r:#}");
        i += 1;
        let (t, s, c) = ((i * 7 % 72) as f64, (10 + i * 13 % 140) as f64, (i % 10) as f64);
        let (code, body) =
            srv.post("/api/v1/models/churn/predict", &json!({"rows": [[t, s, c]]}).to_string());
        if code != 200 {
            continue;
        }
        let p: Value = serde_json::from_str(&body).unwrap();
        let f = json!({"request_id": p["request_id"], "label": truth(t, s, c)});
        let (code, body) = srv.post("/api/v1/models/churn/feedback", &f.to_string());
        assert_eq!(code, 200, "{body}");
    }
    let r = srv.wait_run(run);
    assert_eq!(r["state"], "failed", "{r:#}");
    let logs = text(&sb.sluice(&["logs", &run.to_string(), "rollout"]).stdout);
    assert!(logs.contains("aborted") && logs.contains("accuracy="), "{logs}");

    // Rolled back: the alias never left version 1, nothing reaches the candidate.
    assert_eq!(srv.json("/api/v1/models/churn")["aliases"]["production"], 1);
    let rollout = &srv.json("/api/v1/rollouts/churn")["rollout"];
    assert_eq!(
        (rollout["status"].clone(), rollout["share"].clone()),
        (json!("aborted"), json!(0)),
        "{rollout:#}"
    );
    for _ in 0..20 {
        let (_, body) = srv.post("/api/v1/models/churn/predict", r#"{"rows": [[30, 60, 1]]}"#);
        assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["version"], 1);
    }

    // The abort was an event, and the pipeline waiting for it ran with its fields.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let alarm = loop {
        let runs = srv.json("/api/v1/runs?pipeline=churn-rollback-alarm");
        if let Some(r) = runs["runs"].as_array().and_then(|a| a.first()).cloned() {
            break r;
        }
        assert!(std::time::Instant::now() < deadline, "no run of the alarm pipeline");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let id = alarm["id"].as_u64().unwrap();
    let done = srv.wait_run(id);
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["trigger"], "event");
    let said = text(&sb.sluice(&["logs", &id.to_string(), "say"]).stdout);
    assert!(said.contains("rollout of version 2 aborted") && said.contains("accuracy"), "{said}");
}

#[test]
fn blue_green_previews_then_switches_at_once() {
    let sb = Sandbox::new();
    let srv = Server::start(&sb, &dags(&sb), &[]);
    train(&srv, json!({}));
    train(&srv, json!({"seed": 9, "alias": "candidate"}));
    let start = json!({
        "model": "churn", "version": 2,
        "strategy": { "blue_green": {
            "auto_promote": false,
            "post_promotion": { "metric": "error_rate", "max": 0.5, "interval": "1s" },
        } },
    });
    let (code, body) = srv.post("/api/v1/rollouts", &start.to_string());
    assert_eq!(code, 201, "{body}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["rollout"]["status"], "paused", "it waits for a person: {r:#}");
    // The candidate answers under `preview`; production traffic stays on the stable version.
    let (_, p) = srv.post("/api/v1/models/churn@preview/predict", r#"{"rows": [[30, 60, 1]]}"#);
    assert_eq!(serde_json::from_str::<Value>(&p).unwrap()["version"], 2, "{p}");
    assert_eq!(served_by(&srv, "someone"), 1);

    // Resumed: the alias switches at once, and the post-promotion analysis reads live traffic.
    let out = sb.sluice(&["rollout", "resume", "churn"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(srv.json("/api/v1/models/churn")["aliases"]["production"], 2);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        assert_eq!(served_by(&srv, "someone"), 2, "after the switch, all of it");
        let r = srv.json("/api/v1/rollouts/churn");
        if r["rollout"]["status"] == "succeeded" {
            let m = r["rollout"]["measurements"].as_array().unwrap();
            assert!(m.iter().any(|m| m["verdict"] == "successful"), "{r:#}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ended: {r:#}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
