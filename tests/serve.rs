//! `sluice serve` end to end: the real binary, real sled, real HTTP on loopback, real step
//! processes. Every server is stopped by its test (SIGTERM, and SIGKILL if it hangs).

mod common;

use std::time::{Duration, Instant};

use common::{Sandbox, Server, text};
use serde_json::{Value, json};

const HELLO: &str = r#"
name: hello
params:
  who: {type: string, default: world}
  n: {type: integer, default: 1}
steps:
  greet: {process: {shell: "echo hello {{ params.who }} x{{ params.n }}"}}
"#;

const FLAKY: &str = r#"
name: flaky
steps:
  prep: {process: {shell: "echo prepared; echo '{\"rows\": 5}' > $SLUICE_OUTPUTS; echo x >> $SLUICE_RUN_DIR/../prep-count"}}
  train: {process: {shell: "test -f $SLUICE_RUN_DIR/../fixed || { echo not fixed; exit 1; }; echo rows={{ steps.prep.outputs.rows }}"}, needs: [prep]}
  report: {process: {command: ["echo", "reported"]}, needs: [train]}
"#;

const RETRAIN: &str = r#"
name: retrain
params:
  model: {type: string}
  feature: {type: string, default: none}
  psi: {type: number, default: 0}
on:
  - alert:
      name: FeatureDrift
      labels: {model: churn}
      cooldown: 1h
    params:
      psi: "{{ alert.annotations.psi }}"
  - webhook: {source: ci, match: {ref: refs/heads/main}}
    params: {model: "{{ event.model }}"}
steps:
  train: {process: {shell: "echo retrain {{ params.model }} {{ params.feature }} {{ params.psi }}"}}
"#;

fn dags(sb: &Sandbox, files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = sb.path("dags");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, body) in files {
        std::fs::write(dir.join(name), body).unwrap();
    }
    dir
}

fn body(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn alert(status: &str, fingerprint: &str, labels: Value) -> String {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"FeatureDrift\"}", "truncatedAlerts": 0,
        "status": status, "receiver": "sluice", "groupLabels": {"alertname": "FeatureDrift"},
        "commonLabels": labels, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
        "alerts": [{
            "status": status, "labels": labels, "annotations": {"psi": "0.42", "summary": "drift"},
            "startsAt": "2026-11-22T10:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://127.0.0.1:9090/graph", "fingerprint": fingerprint
        }]
    })
    .to_string()
}

#[test]
fn api_runs_pipelines_and_rejects_bad_input() {
    let sb = Sandbox::new();
    let dir =
        dags(&sb, &[("hello.yaml", HELLO), ("broken.yaml", "name: broken\nsteps: {a: {process: {}}}\n")]);
    let srv = Server::start(&sb, &dir, &["--body-limit", "4Ki"]);

    assert_eq!(srv.json("/api/v1/health")["status"], "ok");
    let list = srv.json("/api/v1/pipelines");
    assert_eq!(list["pipelines"].as_array().unwrap().len(), 1);
    assert_eq!(list["pipelines"][0]["name"], "hello");
    let invalid = &list["invalid"][0];
    assert!(invalid["file"].as_str().unwrap().ends_with("broken.yaml"), "{list}");
    assert!(invalid["errors"][0].as_str().unwrap().contains("broken.yaml:2"), "{list}");
    let api = srv.json("/api/v1/openapi.json");
    assert_eq!(api["openapi"], "3.1.0");
    assert!(api["paths"]["/api/v1/runs/{run}/retry"]["post"].is_object());
    assert!(api["components"]["schemas"]["StartRun"]["properties"]["params"].is_object());
    assert!(api["components"]["schemas"]["RunReport"]["properties"]["steps"].is_object());
    // Every reference between the schemas resolves inside the document.
    let text = api.to_string();
    for r in text.split("\"$ref\":\"#").skip(1) {
        let pointer = &r[..r.find('"').unwrap()];
        assert!(api.pointer(pointer).is_some(), "unresolved $ref #{pointer}");
    }

    // A run with typed params given as text and as JSON.
    let (code, b) = srv.post("/api/v1/pipelines/hello/runs", r#"{"params": {"who": "api", "n": "3"}}"#);
    assert_eq!(code, 201, "{b}");
    let run = body(&b)["run"]["id"].as_u64().unwrap();
    let done = srv.wait_run(run);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["params"]["n"], 3);
    assert_eq!(done["trigger"], "api");
    assert_eq!(done["steps"][0]["attempts"][0]["outcome"], "succeeded");
    let (code, log) = srv.get(&format!("/api/v1/runs/r{run}/steps/greet/logs"));
    assert_eq!((code, log.as_str()), (200, "hello api x3\n"));
    let (code, b) = srv.post("/api/v1/pipelines/hello/runs", "");
    assert_eq!(code, 201, "an empty body takes the defaults: {b}");

    // Filters.
    let runs = srv.json("/api/v1/runs?pipeline=hello&state=succeeded&limit=10");
    assert!(runs["runs"].as_array().unwrap().iter().any(|r| r["id"] == run));
    assert_eq!(srv.json("/api/v1/runs?pipeline=nothing")["runs"], json!([]));

    // Bad input: each a clear 4xx, nothing stored.
    let before = srv.json("/api/v1/runs?limit=1000")["runs"].as_array().unwrap().len();
    for (method, path, payload, code, needle) in [
        ("POST", "/api/v1/pipelines/hello/runs", r#"{"params": {"n": "three"}}"#, 400, "not a whole number"),
        ("POST", "/api/v1/pipelines/hello/runs", r#"{"params": {"n": [1]}}"#, 400, "must be of type integer"),
        ("POST", "/api/v1/pipelines/hello/runs", r#"{"params": {"zz": 1}}"#, 400, "no parameter `zz`"),
        ("POST", "/api/v1/pipelines/hello/runs", r#"{"params": "#, 400, "not valid JSON"),
        ("POST", "/api/v1/pipelines/hello/runs", r#"{"parms": {}}"#, 400, "unknown field `parms`"),
        ("POST", "/api/v1/pipelines/hello/runs", r#"[1,2]"#, 400, "expected a map"),
        ("POST", "/api/v1/pipelines/broken/runs", "{}", 404, "broken.yaml does not compile"),
        ("POST", "/api/v1/pipelines/nope/runs", "{}", 404, "no pipeline `nope` (the server runs: hello)"),
        ("GET", "/api/v1/runs/r999", "", 404, "no run 999"),
        ("GET", "/api/v1/runs/banana", "", 400, "not a run id"),
        ("GET", "/api/v1/runs?state=happy", "", 400, "not a RunState"),
        ("GET", "/api/v1/runs?colour=red", "", 400, "unknown field"),
        ("GET", &format!("/api/v1/runs/{run}/steps/nope/logs"), "", 404, "has no step `nope`"),
        ("POST", &format!("/api/v1/runs/{run}/cancel"), "", 409, "already ended"),
        ("POST", &format!("/api/v1/runs/{run}/retry"), r#"{"from": "zz"}"#, 404, "no step `zz`"),
        ("POST", &format!("/api/v1/runs/{run}/retry"), "{}", 400, "missing field `from`"),
        ("GET", "/api/v1/nothing/here", "", 404, "no API route"),
    ] {
        let (got, b) = srv.request(method, path, payload.as_bytes(), &[]);
        assert_eq!(got, code, "{method} {path}: {b}");
        let v = body(&b);
        assert!(v["error"]["message"].as_str().unwrap().contains(needle), "{method} {path}: {b}");
    }
    let big = format!(r#"{{"params": {{"who": "{}"}}}}"#, "x".repeat(8 * 1024));
    let (code, b) = srv.post("/api/v1/pipelines/hello/runs", &big);
    assert_eq!(code, 413, "{b}");
    assert_eq!(srv.json("/api/v1/runs?limit=1000")["runs"].as_array().unwrap().len(), before);
    // Garbage on the socket does not hurt the server.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
        let _ = s.write_all(b"\x00\x01 not http at all\r\n\r\n");
    }
    assert_eq!(srv.json("/api/v1/ready")["status"], "ready");
}

#[test]
fn cli_trigger_wait_status_retry_and_follow() {
    let sb = Sandbox::new();
    let dir = dags(&sb, &[("flaky.yaml", FLAKY), ("hello.yaml", HELLO)]);
    let srv = Server::start(&sb, &dir, &[]);

    let out = sb.sluice(&["trigger", "hello", "--param", "who=cli", "--wait"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("succeeded"), "{}", text(&out.stdout));

    let out = sb.sluice(&["trigger", "flaky", "--wait"]);
    assert_eq!(out.status.code(), Some(1), "a failed run fails the CI job: {}", text(&out.stdout));
    assert!(text(&out.stdout).contains("upstream_failed"), "{}", text(&out.stdout));
    let failed = srv.json("/api/v1/runs?pipeline=flaky")["runs"][0]["id"].as_u64().unwrap();

    let out = sb.sluice(&["status", &format!("r{failed}")]);
    assert!(
        text(&out.stdout).contains("not fixed") || text(&out.stdout).contains("exited with code 1"),
        "{}",
        text(&out.stdout)
    );

    // Fix what broke, retry from the failed step: `prep` is reused, not run again.
    std::fs::write(sb.data().join("work/fixed"), "").unwrap();
    let out = sb.sluice(&["retry", &format!("r{failed}"), "--from", "train", "--wait", "--output", "json"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    let v: Value = body(&text(&out.stdout));
    assert_eq!(v["trigger"], "retry");
    assert_eq!(v["cause"]["retry_of"], failed);
    assert_eq!(v["steps"][0]["reused_from"], failed);
    assert_eq!(v["steps"][0]["attempts"], json!([]));
    let retried = v["id"].as_u64().unwrap();
    let (_, log) = srv.get(&format!("/api/v1/runs/{retried}/steps/train/logs"));
    assert_eq!(log, "rows=5\n", "the reused outputs reach the steps after it");
    let prep_runs = std::fs::read_to_string(sb.data().join("work/prep-count")).unwrap();
    assert_eq!(prep_runs.lines().count(), 1, "prep ran once");

    // Logs followed while a step runs arrive before it ends, and the stream ends with the run.
    std::fs::write(
        dir.join("slow.yaml"),
        "name: slow\nsteps:\n  s: {process: {shell: \"for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done\"}}\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while srv.json("/api/v1/pipelines")["pipelines"].as_array().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "a new file is picked up without a restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, b) = srv.post("/api/v1/pipelines/slow/runs", "{}");
    let run = body(&b)["run"]["id"].as_u64().unwrap();
    let started = Instant::now();
    let (code, followed) = srv.get(&format!("/api/v1/runs/{run}/steps/s/logs?follow=true"));
    assert_eq!(code, 200);
    assert_eq!(followed.lines().collect::<Vec<_>>(), ["tick 1", "tick 2", "tick 3", "tick 4", "tick 5"]);
    assert!(started.elapsed() >= Duration::from_millis(500), "the stream stayed open while the step ran");
    assert_eq!(srv.json(&format!("/api/v1/runs/{run}"))["state"], "succeeded");
}

#[test]
fn alerts_and_webhooks_start_runs_once_and_are_recorded() {
    let sb = Sandbox::new();
    let dir = dags(&sb, &[("retrain.yaml", RETRAIN), ("hello.yaml", HELLO)]);
    let srv = Server::start(&sb, &dir, &[]);
    let labels =
        json!({"alertname": "FeatureDrift", "model": "churn", "feature": "tenure", "severity": "warning"});

    let (code, b) = srv.post("/api/v1/events/alertmanager", &alert("firing", "fp1", labels.clone()));
    assert_eq!(code, 202, "{b}");
    let v = body(&b);
    assert_eq!(v["status"], "matched", "{b}");
    let run = v["runs"][0].as_u64().unwrap();
    let done = srv.wait_run(run);
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["trigger"], "alert");
    assert_eq!(done["params"], json!({"model": "churn", "feature": "tenure", "psi": 0.42}));
    assert_eq!(done["cause"]["fingerprint"], "fp1");
    let (_, log) = srv.get(&format!("/api/v1/runs/{run}/steps/train/logs"));
    assert_eq!(log, "retrain churn tenure 0.42\n");

    // Repeats of the same alert within the cooldown: one run.
    for _ in 0..3 {
        let (code, b) = srv.post("/api/v1/events/alertmanager", &alert("firing", "fp1", labels.clone()));
        assert_eq!(code, 202);
        assert_eq!(body(&b)["status"], "deduplicated", "{b}");
    }
    // Resolved: no run. Another model: no match. Another fingerprint: a new run.
    let (_, b) = srv.post("/api/v1/events/alertmanager", &alert("resolved", "fp1", labels.clone()));
    assert_eq!(body(&b)["status"], "accepted", "{b}");
    let fraud = json!({"alertname": "FeatureDrift", "model": "fraud"});
    let (_, b) = srv.post("/api/v1/events/alertmanager", &alert("firing", "fp2", fraud));
    assert_eq!(body(&b)["details"][0]["outcome"], "unmatched", "{b}");
    let (_, b) = srv.post("/api/v1/events/alertmanager", &alert("firing", "fp3", labels.clone()));
    assert_eq!(body(&b)["status"], "matched", "{b}");
    // Malformed: rejected, stored, and nothing started.
    let (code, b) =
        srv.post("/api/v1/events/alertmanager", r#"{"version": "3", "status": "firing", "alerts": []}"#);
    assert_eq!(code, 400, "{b}");
    let (code, b) = srv.post("/api/v1/events/alertmanager", "{not json");
    assert_eq!(code, 400, "{b}");
    let (code, _) = srv.post("/api/v1/events/bad%20source", "{}");
    assert_eq!(code, 400);

    // A generic webhook, with an idempotency key.
    let push = r#"{"ref": "refs/heads/main", "model": "churn"}"#;
    let key = [("Idempotency-Key", "build-77")];
    let (code, b) = srv.request("POST", "/api/v1/events/ci", push.as_bytes(), &key);
    assert_eq!((code, body(&b)["status"].clone()), (202, json!("matched")), "{b}");
    let (_, b) = srv.request("POST", "/api/v1/events/ci", push.as_bytes(), &key);
    assert_eq!(body(&b)["status"], "deduplicated", "{b}");
    assert!(body(&b)["reason"].as_str().unwrap().contains("Idempotency-Key"), "{b}");
    let (_, b) = srv.post("/api/v1/events/ci", r#"{"ref": "refs/heads/dev", "model": "churn"}"#);
    assert_eq!(body(&b)["status"], "accepted", "{b}");
    // Matched, but the params do not fit: 422, said why.
    let (code, b) = srv.post("/api/v1/events/ci", r#"{"ref": "refs/heads/main"}"#);
    assert_eq!(code, 422, "{b}");
    assert!(body(&b)["reason"].as_str().unwrap().contains("event.model"), "{b}");

    // Every event is listed with what became of it.
    let events = srv.json("/api/v1/events?limit=100");
    let statuses: Vec<&str> =
        events["events"].as_array().unwrap().iter().rev().map(|e| e["status"].as_str().unwrap()).collect();
    assert_eq!(
        statuses,
        [
            "matched",
            "deduplicated",
            "deduplicated",
            "deduplicated",
            "accepted",
            "accepted",
            "matched",
            "rejected",
            "rejected",
            "matched",
            "deduplicated",
            "accepted",
            "rejected"
        ]
    );
    let alerts = srv.json("/api/v1/events?source=alertmanager&status=deduplicated");
    assert_eq!(alerts["events"].as_array().unwrap().len(), 3);
    let first = events["events"].as_array().unwrap().last().unwrap()["id"].as_u64().unwrap();
    assert_eq!(srv.json(&format!("/api/v1/events/{first}"))["event"]["runs"], json!([run]));
    let runs = srv.json("/api/v1/runs?pipeline=retrain")["runs"].as_array().unwrap().len();
    assert_eq!(runs, 3, "two alerts and one webhook started runs");
}

#[test]
fn sigterm_drains_and_a_restart_resumes() {
    let sb = Sandbox::new();
    let long = "name: long\nsteps:\n  a: {process: {shell: \"echo started > $SLUICE_RUN_DIR/../started-$SLUICE_ATTEMPT; sleep 3; echo done\"}}\n  b: {process: {command: [\"echo\", \"b\"]}, needs: [a]}\n";
    let dir = dags(&sb, &[("long.yaml", long), ("hello.yaml", HELLO)]);
    let mut srv = Server::start(&sb, &dir, &["--grace", "5s"]);
    let (_, b) = srv.post("/api/v1/pipelines/long/runs", "{}");
    let run = body(&b)["run"]["id"].as_u64().unwrap();
    // Also one to cancel.
    let (_, b) = srv.post("/api/v1/pipelines/long/runs", "{}");
    let doomed = body(&b)["run"]["id"].as_u64().unwrap();
    common::wait_for_file(&sb.data().join("work/started-1"), "the first attempt to start");
    let out = sb.sluice(&["cancel", &format!("r{doomed}")]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("cancelled"), "{}", text(&out.stdout));

    let st = srv.stop();
    assert!(st.success(), "SIGTERM drains and exits 0: {st:?}");
    assert!(!sb.data().join("server.json").exists());
    // The state is on disk: the run is interrupted, not lost.
    let local = sb.sluice(&["show", &format!("r{run}"), "--output", "json"]);
    let v = body(&text(&local.stdout));
    assert!(["interrupted", "succeeded"].contains(&v["state"].as_str().unwrap()), "{v}");

    let srv = Server::start(&sb, &dir, &[]);
    let done = srv.wait_run(run);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(srv.json(&format!("/api/v1/runs/{doomed}"))["state"], "cancelled");
}

#[test]
fn cron_schedules_fire_each_slot_once_across_restarts() {
    let sb = Sandbox::new();
    let tick = "name: tick\nschedule: {cron: \"* * * * * *\", overlap: allow, catchup: none}\nsteps:\n  t: {process: {command: [\"echo\", \"{{ run.cause.slot }}\"]}}\n";
    let dir = dags(&sb, &[("tick.yaml", tick)]);
    let mut srv = Server::start(&sb, &dir, &[]);
    let count =
        |srv: &Server| srv.json("/api/v1/runs?pipeline=tick&limit=1000")["runs"].as_array().unwrap().len();
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&srv) < 3 {
        assert!(Instant::now() < deadline, "the schedule fired");
        std::thread::sleep(Duration::from_millis(100));
    }
    srv.stop();
    let srv = Server::start(&sb, &dir, &[]);
    let before = count(&srv);
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(&srv) < before + 2 {
        assert!(Instant::now() < deadline, "the schedule fired after the restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    let runs = srv.json("/api/v1/runs?pipeline=tick&limit=1000");
    let mut slots: Vec<i64> =
        runs["runs"].as_array().unwrap().iter().map(|r| r["cause"]["slot_ms"].as_i64().unwrap()).collect();
    let n = slots.len();
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), n, "no slot ran twice");
    for r in runs["runs"].as_array().unwrap() {
        assert_eq!(r["trigger"], "cron");
        let late = r["created_at"].as_i64().unwrap() - r["cause"]["slot_ms"].as_i64().unwrap();
        assert!((0..5_000).contains(&late), "a run is created at its slot, not before: {r}");
    }
    // Backfill: slots of the past, and a repeat of them creates nothing.
    let out =
        sb.sluice(&["backfill", "tick", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T00:00:02Z"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).matches("started ").count(), 3, "{}", text(&out.stdout));
    let out =
        sb.sluice(&["backfill", "tick", "--from", "2026-01-01T00:00:00Z", "--to", "2026-01-01T00:00:02Z"]);
    assert_eq!(text(&out.stdout).matches("already ran as").count(), 3, "{}", text(&out.stdout));
    let bf = srv.json("/api/v1/runs?trigger=backfill");
    assert_eq!(bf["runs"].as_array().unwrap().len(), 3);
    assert_eq!(bf["runs"][2]["cause"]["slot"], "2026-01-01T00:00:00.000Z");
}

#[test]
fn a_flood_gets_429_and_the_server_recovers() {
    let sb = Sandbox::new();
    // Long enough that the waits still hold their slots on a loaded machine.
    let slow = "name: slow\nsteps:\n  a: {process: {command: [\"sleep\", \"4\"]}}\n";
    let dir = dags(&sb, &[("slow.yaml", slow)]);
    let srv = Server::start(&sb, &dir, &["--max-in-flight", "2"]);
    let (_, b) = srv.post("/api/v1/pipelines/slow/runs", "{}");
    let run = body(&b)["run"]["id"].as_u64().unwrap();
    // Two long waits hold both request slots; a third request is turned away at once.
    let waits: Vec<_> = (0..2)
        .map(|_| {
            let (addr, token) = (srv.addr.clone(), srv.token.clone());
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                // A wait that lands while the poll below holds the other slot is itself turned
                // away; it asks again, so that both slots end up held by waits.
                loop {
                    let mut s = std::net::TcpStream::connect(&addr).unwrap();
                    let req = format!("GET /api/v1/runs/{run}/wait?timeout_s=10 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n");
                    s.write_all(req.as_bytes()).unwrap();
                    let mut out = String::new();
                    let _ = s.read_to_string(&mut out);
                    if !out.starts_with("HTTP/1.1 429") {
                        return out;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(8);
    let (code, b) = loop {
        let (code, b) = srv.get("/api/v1/pipelines");
        if code == 429 || Instant::now() > deadline {
            break (code, b);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, 429, "{b}");
    assert!(body(&b)["error"]["message"].as_str().unwrap().contains("retry shortly"));
    // Health takes no slot: it answers while every slot is held.
    assert_eq!(srv.get("/api/v1/health").0, 200);
    assert_eq!(srv.get("/api/v1/ready").0, 200);
    for w in waits {
        let answer = w.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"done\":true"), "{answer}");
    }
    assert_eq!(srv.json("/api/v1/health")["status"], "ok");
    assert_eq!(srv.json(&format!("/api/v1/runs/{run}"))["state"], "succeeded");
}

#[test]
fn a_drift_alert_retrains_the_example_model() {
    let sb = Sandbox::new();
    let example = std::fs::read_to_string(common::repo().join("dags/example-drift-retrain.yaml")).unwrap();
    let dir = dags(&sb, &[("drift.yaml", &example)]);
    let srv = Server::start(&sb, &dir, &[]);
    let labels = json!({"alertname": "FeatureDrift", "model": "churn", "feature": "tenure"});
    let (code, b) = srv.post("/api/v1/events/alertmanager", &alert("firing", "drift-1", labels.clone()));
    assert_eq!(code, 202, "{b}");
    let run = body(&b)["runs"][0].as_u64().unwrap();
    let (_, b) = srv.post("/api/v1/events/alertmanager", &alert("firing", "drift-1", labels));
    assert_eq!(body(&b)["status"], "deduplicated");
    let done = srv.wait_run(run);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["params"]["feature"], "tenure");
    assert_eq!(done["params"]["psi"], 0.42);
    // The candidate is a new version of `churn`, tagged with the drift that caused it, and
    // `staging` points at it, moved by the alert's run.
    let v = srv.json("/api/v1/models/churn/versions/1?check=true");
    assert_eq!(
        v["version"]["tags"],
        json!({"trigger": "alert", "drifted_feature": "tenure", "psi": "0.42"}),
        "{v:#}"
    );
    assert_eq!(v["check"]["ok"], true);
    let h = srv.json("/api/v1/models/churn/history?alias=staging");
    assert_eq!(h["moves"][0]["to"], 1);
    assert_eq!(h["moves"][0]["cause"]["run"], run);
    assert!(
        h["moves"][0]["reason"].as_str().unwrap().contains("drift of tenure (PSI 0.42), trigger alert"),
        "{h}"
    );
}

/// `sluice show --output json` and `GET /api/v1/runs/{id}` are one document: through the
/// server while it owns the data folder, and read from the store once it has stopped.
#[test]
fn the_cli_and_the_api_show_the_same_run_document() {
    let sb = Sandbox::new();
    let dir = dags(&sb, &[("flaky.yaml", FLAKY)]);
    let mut srv = Server::start(&sb, &dir, &["--log-format", "json"]);
    let (_, b) = srv.post("/api/v1/pipelines/flaky/runs", "{}");
    let run = body(&b)["run"]["id"].as_u64().unwrap();
    srv.wait_run(run);
    let api = srv.json(&format!("/api/v1/runs/{run}"));
    assert_eq!(api["v"], 2);
    assert_eq!(api["state"], "failed");
    assert_eq!(api["steps"][0]["outputs"]["rows"], 5);
    assert_eq!(api["steps"][1]["attempts"][0]["outcome"], "failed");
    assert!(api["steps"][1]["message"].as_str().unwrap().contains("exited with code 1"), "{api:#}");
    assert_eq!(api["steps"][2]["state"], "upstream_failed");
    let through = sb.sluice(&["show", &format!("r{run}"), "--output", "json"]);
    assert!(through.status.success(), "{}", text(&through.stderr));
    assert_eq!(body(&text(&through.stdout)), api, "show asks the server that owns the folder");
    let status = sb.sluice(&["status", &format!("r{run}"), "--output", "json"]);
    assert_eq!(body(&text(&status.stdout)), api);
    // runs, logs and resume go through the server too (it holds the folder).
    let runs = sb.sluice(&["runs", "--output", "json"]);
    assert!(runs.status.success(), "{}", text(&runs.stderr));
    let listed = body(&text(&runs.stdout));
    assert_eq!(listed[0]["id"], run, "{listed}");
    assert_eq!(listed[0]["state"], "failed");
    let logs = sb.sluice(&["logs", &format!("r{run}"), "prep"]);
    assert!(logs.status.success(), "{}", text(&logs.stderr));
    let (_, api_log) = srv.get(&format!("/api/v1/runs/{run}/steps/prep/logs"));
    assert_eq!(text(&logs.stdout), api_log);
    common::assert_clean_error(&sb.sluice(&["logs", &format!("r{run}"), "nope"]), 2, "has no step `nope`");
    common::assert_clean_error(
        &sb.sluice(&["resume", &format!("r{run}")]),
        2,
        "already failed; there is nothing to resume",
    );
    let resumed = sb.sluice(&["resume"]);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(text(&resumed.stdout).contains("nothing to resume"), "{}", text(&resumed.stdout));
    assert!(srv.stop().success());
    // The server logged one structured line per request, with its route's template.
    let log = std::fs::read_to_string(sb.path("serve.log")).unwrap();
    let requests: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["target"] == "sluice::http")
        .collect();
    let one = requests
        .iter()
        .find(|l| l["fields"]["route"] == "/api/v1/runs/{run}")
        .unwrap_or_else(|| panic!("no request line for the run: {log}"));
    assert_eq!(one["fields"]["method"], "GET");
    assert_eq!(one["fields"]["status"], 200);
    assert!(one["fields"]["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(
        requests
            .iter()
            .any(|l| l["fields"]["route"] == "/api/v1/pipelines/{name}/runs" && l["fields"]["status"] == 201)
    );
    let local = sb.sluice(&["show", &format!("r{run}"), "--output", "json"]);
    assert!(local.status.success(), "{}", text(&local.stderr));
    assert_eq!(body(&text(&local.stdout)), api, "the store's replay gives the server's document");
}
