//! The closed loop end to end, with a real Prometheus Alertmanager in the middle
//! (dags/example-closed-loop.yaml): a model is trained, registered, gated and canaried into
//! `production` under live traffic with feedback; the traffic shifts, the live monitor finds
//! the drift and posts an alert to Alertmanager, whose webhook comes back to Sluice and starts
//! a retrain on the fresh data, canaried in turn; a deliberately worse candidate fails its
//! analysis and is rolled back on its own. Everything on loopback; both servers stopped by pid.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// Live traffic from the simulated world: rows whose tenure and spend are moved by `shift`,
/// each answered with its ground truth as feedback. Runs until `stop`.
fn traffic(
    addr: String,
    token: String,
    shift: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut sent = 0u64;
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        while !stop.load(Ordering::Relaxed) {
            let (t, s, c) = (next() * 72.0, 10.0 + next() * 140.0, (next() * 10.0).floor());
            let truth = if (t < 18.0 && c > 4.0) || (t > 48.0 && s > 110.0) { "1" } else { "0" };
            let k = shift.load(Ordering::Relaxed) as f64;
            let body = json!({ "rows": [[t + k, s + k, c]] }).to_string();
            let auth = format!("Bearer {token}");
            let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
            let (code, answer) = http_with(&addr, "POST", "/api/v1/models/churn/predict", &body, &headers);
            if code == 200 {
                let p: Value = serde_json::from_str(&answer).unwrap();
                let f = json!({ "request_id": p["request_id"], "label": truth }).to_string();
                http_with(&addr, "POST", "/api/v1/models/churn/feedback", &f, &headers);
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(4));
        }
        sent
    })
}

fn wait_for_run(srv: &Server, pipeline: &str, nth: usize, what: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = srv.json(&format!("/api/v1/runs?pipeline={pipeline}"));
        let runs = v["runs"].as_array().unwrap();
        if runs.len() >= nth {
            // Newest first.
            let id = runs[runs.len() - nth]["id"].as_u64().unwrap();
            return srv.wait_run(id);
        }
        assert!(Instant::now() < deadline, "{what}: {v:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn production(srv: &Server) -> Value {
    srv.json("/api/v1/models/churn")["aliases"]["production"].clone()
}

#[test]
fn drift_alerts_through_alertmanager_retrain_and_a_bad_candidate_rolls_back() {
    let Some(alertmanager) =
        alertmanager_or_skip("drift_alerts_through_alertmanager_retrain_and_a_bad_candidate_rolls_back")
    else {
        return;
    };
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let am_port = free_port();
    let am_addr = format!("127.0.0.1:{am_port}");
    // The example, with drift reaching it through Alertmanager rather than directly.
    let example = std::fs::read_to_string(repo().join("dags/example-closed-loop.yaml")).unwrap();
    let through_alertmanager = example
        .replace(
            "  - drift: { model: churn, cooldown: 10m }",
            "  - alert: { name: SluiceModelDrift, labels: { model: churn }, cooldown: 10m }",
        )
        .replace(
            "    drift_share: 0.3\n",
            &format!("    drift_share: 0.3\n    alertmanager: http://{am_addr}\n"),
        );
    assert_ne!(example, through_alertmanager);
    assert!(through_alertmanager.contains("alertmanager: http://"));
    std::fs::write(dags.join("example-closed-loop.yaml"), through_alertmanager).unwrap();
    let srv = Server::start(&sb, &dags, &[]);

    let out = sb.sluice(&["token", "create", "alertmanager", "--role", "events"]);
    let token_file = sb.write("am.token", text(&out.stdout).trim());
    let config = format!(
        r#"
route:
  receiver: sluice
  group_by: [alertname, model]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: sluice
    webhook_configs:
      - url: http://{}/api/v1/events/alertmanager
        send_resolved: false
        http_config:
          authorization:
            type: Bearer
            credentials_file: {}
"#,
        srv.addr,
        token_file.display()
    );
    let _am = start_alertmanager(&sb, &alertmanager, &config, &am_addr);

    let shift = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let live = traffic(srv.addr.clone(), srv.token.clone(), shift.clone(), stop.clone());

    // 1. The first model: trained, gated, canaried into production (no version before it).
    let (code, body) = srv.post("/api/v1/pipelines/churn-closed-loop/runs", "{}");
    assert_eq!(code, 201, "{body}");
    let first = wait_for_run(&srv, "churn-closed-loop", 1, "the first run");
    assert_eq!(first["state"], "succeeded", "{first:#}");
    assert_eq!(production(&srv), 1);

    // 2. The world shifts: the warehouse's data and the live traffic alike.
    std::fs::write(dags.join("world.txt"), "30").unwrap();
    shift.store(30, Ordering::Relaxed);
    let second = wait_for_run(&srv, "churn-closed-loop", 2, "no retrain after the traffic shifted");
    assert_eq!(second["trigger"], "alert", "the retrain came through Alertmanager: {second:#}");
    assert!(second["params"]["drifted_columns"].as_str().unwrap().contains("tenure"), "{second:#}");
    assert_eq!(second["state"], "succeeded", "{second:#}");
    assert_eq!(production(&srv), 2, "the retrained version took production");
    let drift = srv.json("/api/v1/models/churn/drift");
    assert!(drift["drift"]["version"].is_u64(), "{drift:#}");
    let events = srv.json("/api/v1/events?source=alertmanager");
    assert!(!events["events"].as_array().unwrap().is_empty(), "{events:#}");

    // 3. A deliberately worse candidate: its analysis fails, production stays.
    let (code, body) =
        srv.post("/api/v1/pipelines/churn-closed-loop/runs", r#"{"params": {"flip": 1, "min_auc": 0}}"#);
    assert_eq!(code, 201, "{body}");
    let third = wait_for_run(&srv, "churn-closed-loop", 3, "the bad candidate's run");
    assert_eq!(third["state"], "failed", "{third:#}");
    assert_eq!(production(&srv), 2, "the bad candidate was rolled back");
    let r = srv.json("/api/v1/rollouts/churn")["rollout"].clone();
    assert_eq!(
        (r["candidate"].clone(), r["status"].clone(), r["share"].clone()),
        (json!(3), json!("aborted"), json!(0)),
        "{r:#}"
    );

    stop.store(true, Ordering::Relaxed);
    let sent = live.join().unwrap();
    assert!(sent > 200, "{sent} predictions with feedback");
}

/// The demo a person runs (dags/closed-loop-demo.sh) tells the loop as it happens: the first
/// model in, the retrain that drift started, the worse candidate rolled back.
#[test]
fn the_closed_loop_demo_runs_as_documented() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        panic!("the demo needs curl on PATH");
    }
    let out = std::process::Command::new("bash")
        .arg(repo().join("dags/closed-loop-demo.sh"))
        .env("SLUICE", bin())
        .env_remove("SLUICE_HOME")
        .output()
        .expect("run the demo");
    let said = text(&out.stdout);
    assert!(out.status.success(), "{said}{}", text(&out.stderr));
    for line in [
        "run 1: succeeded",
        "(started by the drift event): succeeded",
        "run 3: failed",
        "analysis at step 1 failed: accuracy=",
        "production  v1    v2  rollout:2",
    ] {
        assert!(said.contains(line), "the demo did not say `{line}`:\n{said}");
    }
}
