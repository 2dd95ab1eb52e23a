//! A real Alertmanager (Debian's prometheus-alertmanager) notifying `sluice serve`: it sends
//! the token of the `events` role from its `http_config.authorization.credentials_file`, and
//! its firing alert starts the pipeline that waits for it; a receiver with a wrong token is
//! refused (401) and starts nothing. Everything on loopback; both processes stopped by pid.

mod common;

use common::*;
use std::time::{Duration, Instant};

const PIPELINE: &str = r#"
name: on-alert
params:
  which: { type: string, default: none }
on:
  - alert: { name: SluiceTestAlert }
steps:
  react:
    process: { command: ["true"] }
"#;

#[test]
fn alertmanager_sends_its_bearer_token_and_a_wrong_one_is_refused() {
    let Some(alertmanager) =
        alertmanager_or_skip("alertmanager_sends_its_bearer_token_and_a_wrong_one_is_refused")
    else {
        return;
    };
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::write(dags.join("on-alert.yaml"), PIPELINE).unwrap();
    let srv = Server::start(&sb, &dags, &[]);

    let out = sb.sluice(&["token", "create", "alertmanager", "--role", "events"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token_file = sb.write("am.token", text(&out.stdout).trim());
    let url = format!("http://{}/api/v1/events/alertmanager", srv.addr);
    let config = format!(
        r#"
route:
  receiver: good
  group_by: [which]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - matchers: ['which="bad"']
      receiver: bad
receivers:
  - name: good
    webhook_configs:
      - url: {url}
        send_resolved: false
        http_config:
          authorization:
            type: Bearer
            credentials_file: {token}
  - name: bad
    webhook_configs:
      - url: {url}
        send_resolved: false
        http_config:
          authorization:
            type: Bearer
            credentials: sluice_this-is-not-a-token
"#,
        token = token_file.display()
    );
    let port = free_port();
    let am_addr = format!("127.0.0.1:{port}");
    let _am = start_alertmanager(&sb, &alertmanager, &config, &am_addr);

    let alerts = r#"[
      {"labels": {"alertname": "SluiceTestAlert", "which": "good"}, "annotations": {"summary": "from the test"}},
      {"labels": {"alertname": "SluiceTestAlert", "which": "bad"}}
    ]"#;
    let (code, body) = http(&am_addr, "POST", "/api/v2/alerts", alerts);
    assert_eq!(code, 200, "{body}");

    // The good receiver's notification starts one run, with the alert's label as its param.
    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let v = srv.json("/api/v1/runs?pipeline=on-alert");
        if !v["runs"].as_array().unwrap().is_empty() {
            break v;
        }
        assert!(Instant::now() < deadline, "no run from Alertmanager; its log: {}", am_log(&sb));
        std::thread::sleep(Duration::from_millis(100));
    };
    let run = runs["runs"][0]["id"].as_u64().unwrap();
    let done = srv.wait_run(run);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["trigger"], "alert", "{done}");
    assert_eq!(done["params"]["which"], "good", "{done}");

    // The bad receiver was refused: Alertmanager logs the 401 (and, a 4xx being final for
    // it, tries that notification no more), and no second run starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = |log: &str| {
        log.lines().any(|l| {
            l.contains("bad/webhook") && l.contains("status code 401") && l.contains("invalid_token")
        })
    };
    while !refused(&am_log(&sb)) {
        assert!(Instant::now() < deadline, "Alertmanager never saw a 401: {}", am_log(&sb));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    let v = srv.json("/api/v1/runs?pipeline=on-alert");
    assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{v}");
    let events = srv.json("/api/v1/events?source=alertmanager");
    assert_eq!(
        events["events"].as_array().unwrap().len(),
        1,
        "only the authenticated notification is recorded: {events}"
    );
}

fn am_log(sb: &Sandbox) -> String {
    std::fs::read_to_string(sb.path("alertmanager.log")).unwrap_or_default()
}
