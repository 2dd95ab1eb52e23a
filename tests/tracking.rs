//! Experiment tracking, first part: steps append metrics to `$SLUICE_METRICS` as JSON lines;
//! the engine reads the file as it grows (a server shows a running step's points before it
//! ends), skips bad lines saying why, and `sluice metrics` and `/api/v1/runs/{run}/metrics`
//! give the series.

mod common;

use common::*;

#[test]
fn metrics_lines_become_series_and_bad_lines_are_said() {
    let sb = Sandbox::new();
    let spec = sb.write(
        "m.yaml",
        r#"name: tracked
steps:
  train:
    process:
      shell: |
        for i in 1 2 3; do
          printf '{"key": "loss", "value": 0.%s, "step": %s}\n' "$((9 - i))" "$i" >> "$SLUICE_METRICS"
        done
        echo '{"key": "auc", "value": 0.91}' >> "$SLUICE_METRICS"
        echo 'not json' >> "$SLUICE_METRICS"
        echo '{"key": "auc", "value": "NaN"}' >> "$SLUICE_METRICS"
        printf '{"key": "acc", "value": 0.75}' >> "$SLUICE_METRICS"
  other:
    process: {shell: 'echo "{\"key\": \"rows\", \"value\": 120}" > "$SLUICE_METRICS"'}
"#,
    );
    let out = sb.sluice(&["run", "-q", spec.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = sb.sluice(&["metrics", "1"]);
    assert!(table.status.success(), "{}", text(&table.stderr));
    let shown = text(&table.stdout);
    let loss = shown.lines().find(|l| l.contains("loss")).unwrap_or_else(|| panic!("{shown}"));
    let cells: Vec<&str> = loss.split_whitespace().collect();
    assert_eq!(cells, ["train", "loss", "0.6", "3", "0.6", "0.8", "3"], "{shown}");
    assert!(shown.contains("acc") && shown.contains("rows"), "the last line without a break counts: {shown}");

    let json: serde_json::Value =
        serde_json::from_slice(&sb.sluice(&["--output", "json", "metrics", "1", "train"]).stdout).unwrap();
    let points = json["metrics"].as_array().unwrap();
    assert_eq!(points.len(), 5, "{json}");
    assert!(points.iter().all(|p| p["task"] == "train" && p["timestamp"].as_i64().unwrap() > 0));
    assert_eq!(points[0]["key"], "loss");
    assert_eq!(points[2]["step"], 3);

    let logs = text(&sb.sluice(&["logs", "1", "train"]).stdout);
    assert!(logs.contains("metrics line 5 is skipped: not JSON"), "{logs}");
    assert!(logs.contains("metrics line 6 is skipped") && logs.contains("NaN"), "{logs}");
    assert_clean_error(&sb.sluice(&["metrics", "1", "nope"]), 2, "step `nope`");
    assert_clean_error(&sb.sluice(&["metrics", "9"]), 2, "no run 9");
}

#[test]
fn a_running_steps_metrics_are_read_as_they_are_written() {
    let sb = Sandbox::new();
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let go = sb.path("go");
    std::fs::write(
        dags.join("live.yaml"),
        format!(
            r#"name: live
steps:
  train:
    process:
      shell: |
        echo '{{"key": "loss", "value": 0.5, "step": 1}}' >> "$SLUICE_METRICS"
        i=0; while [ ! -e {go} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
        echo '{{"key": "loss", "value": 0.25, "step": 2}}' >> "$SLUICE_METRICS"
"#,
            go = go.display()
        ),
    )
    .unwrap();
    let srv = Server::start(&sb, &dags, &[]);
    let (code, body) = srv.post("/api/v1/pipelines/live/runs", "{}");
    assert_eq!(code, 201, "{body}");
    let run = serde_json::from_str::<serde_json::Value>(&body).unwrap()["run"]["id"].as_u64().unwrap();
    // The first point shows while the step still waits.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let v = srv.json(&format!("/api/v1/runs/{run}/metrics"));
        let n = v["metrics"].as_array().map_or(0, Vec::len);
        assert!(n <= 1, "the step has not written its second point yet: {v}");
        if n == 1 {
            assert_eq!(v["metrics"][0]["value"], 0.5);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no metric while the step runs: {v}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let state = srv.json(&format!("/api/v1/runs/{run}"));
    assert_eq!(state["state"], "running", "{state}");
    // Tags set while the run goes survive its end (the driver rewrites its record as it moves).
    let (code, body) = srv.request(
        "POST",
        &format!("/api/v1/runs/{run}/tags"),
        br#"{"tags": {"team": "fraud"}}"#,
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 200, "{body}");
    std::fs::write(&go, "").unwrap();
    srv.wait_run(run);
    let listed = srv.json("/api/v1/runs?filter=tags.team%20%3D%20%27fraud%27");
    assert_eq!(listed["runs"][0]["id"], run, "{listed}");
    assert_eq!(listed["runs"][0]["tags"]["team"], "fraud", "{listed}");
    let v = srv.json(&format!("/api/v1/runs/{run}/metrics?step=train"));
    let values: Vec<f64> =
        v["metrics"].as_array().unwrap().iter().map(|p| p["value"].as_f64().unwrap()).collect();
    assert_eq!(values, [0.5, 0.25], "{v}");
    let (code, _) = srv.get(&format!("/api/v1/runs/{run}/metrics?step=nope"));
    assert_eq!(code, 404);
}
