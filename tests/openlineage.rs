//! OpenLineage events: written as JSON lines and parsed by the real `openlineage-python`
//! client (tests/check_openlineage.py), posted to a receiver on loopback (one that fails
//! first, to see the retry), and an endpoint that does not answer never holds a run.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `prep` reads a dataset and makes a table, `fit` reads it and makes a model, `check` fails.
const PIPELINE: &str = r#"
name: lineage
steps:
  prep:
    inputs: [data.csv]
    process: {shell: 'sort data.csv > "$SLUICE_RUN_DIR/table.csv"'}
    artifacts: {table: table.csv}
  fit:
    needs: [prep]
    process: {shell: '(echo model; cat {{ steps.prep.artifacts.table.path }}) > "$SLUICE_RUN_DIR/model.bin"'}
    artifacts: {model: model.bin}
  check:
    needs: [fit]
    process: {shell: 'echo "the model is not good enough" >&2; exit 3'}
"#;

fn python_with_openlineage(test: &str) -> Option<String> {
    python_with("openlineage.client", test)
}

#[test]
fn every_event_parses_with_the_openlineage_client_and_follows_the_run_protocol() {
    let Some(python) = python_with_openlineage(
        "every_event_parses_with_the_openlineage_client_and_follows_the_run_protocol",
    ) else {
        return;
    };
    let sb = Sandbox::new();
    sb.write("data.csv", "b\na\n");
    let spec = sb.write("lineage.yaml", PIPELINE);
    let file = sb.path("events.jsonl");
    let out = sb.sluice(&[
        "run",
        "-q",
        "--openlineage-file",
        file.to_str().unwrap(),
        "--openlineage-namespace",
        "team-a",
        spec.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1), "the run fails at `check`: {}", text(&out.stderr));
    let check = std::process::Command::new(python)
        .arg(repo().join("tests/check_openlineage.py"))
        .arg(&file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));
    let summary: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert_eq!(summary["dag_runs"], 1, "{summary}");
    assert_eq!(summary["tasks"], 3, "{summary}");
    assert_eq!(summary["events"], 8, "{summary}");
    assert_eq!(summary["states"], serde_json::json!(["COMPLETE", "FAIL", "START"]));
    assert_eq!(
        summary["jobs"],
        serde_json::json!(["lineage", "lineage.check", "lineage.fit", "lineage.prep"])
    );
    // The dataset by its path; the table as prep's output and fit's input, by the same name.
    let inputs: Vec<String> =
        summary["input_names"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    let data = std::fs::canonicalize(sb.path("data.csv")).unwrap();
    assert!(inputs.iter().any(|n| std::path::Path::new(n) == data), "{inputs:?}");
    assert!(inputs.iter().any(|n| n.contains("/artifacts/sha256/")), "{inputs:?}");
    assert_eq!(summary["output_versions"].as_array().unwrap().len(), 2, "{summary}");

    let events: Vec<Value> =
        std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(events.iter().all(|e| e["job"]["namespace"] == "team-a"));
    let fail =
        events.iter().find(|e| e["eventType"] == "FAIL" && e["job"]["name"] == "lineage.check").unwrap();
    let message = fail["run"]["facets"]["errorMessage"]["message"].as_str().unwrap();
    assert!(message.contains("exit"), "{message}");
}

/// The bodies a receiver kept.
type Bodies = Arc<Mutex<Vec<Value>>>;

/// A receiver on loopback: answers the first request 503, then 200, keeping every body; gives
/// its URL, the bodies and how many it refused.
fn receiver() -> (String, Bodies, Arc<Mutex<u32>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/api/v1/lineage", listener.local_addr().unwrap());
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let failed = Arc::new(Mutex::new(0u32));
    let (b, f) = (bodies.clone(), failed.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let mut length = 0usize;
            let mut path = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if path.is_empty() {
                    path = line.split_whitespace().nth(1).unwrap_or_default().to_string();
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let first = { *f.lock().unwrap() == 0 };
            if first {
                *f.lock().unwrap() += 1;
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
                continue;
            }
            assert_eq!(path, "/api/v1/lineage");
            b.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            let _ =
                stream.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, bodies, failed)
}

#[test]
fn events_are_posted_with_retries_and_a_dead_endpoint_never_holds_a_run() {
    let sb = Sandbox::new();
    sb.write("data.csv", "b\na\n");
    let spec = sb.write("lineage.yaml", PIPELINE);
    let spec = spec.to_str().unwrap();
    let (url, bodies, failed) = receiver();
    let out = sb.sluice(&["run", "-q", "--openlineage-url", &url, spec]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(*failed.lock().unwrap(), 1, "the receiver refused one post");
    let got = bodies.lock().unwrap().clone();
    // Every event arrived, the refused one on its retry.
    assert_eq!(got.len(), 8, "{got:?}");
    assert_eq!(got[0]["eventType"], "START");
    assert_eq!(got[0]["job"]["name"], "lineage");
    assert!(got.iter().all(|e| e["schemaURL"].as_str().unwrap().contains("2-0-2")));

    // Nothing listens on this port: the run goes on as if no URL were given, and says what it
    // dropped when it ends.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let started = Instant::now();
    let out = sb.sluice(&["run", "-q", "--openlineage-url", &dead_url, spec]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    let show = sb.show("2");
    assert_eq!(step(&show, "fit")["state"], "succeeded");
    let err = text(&out.stderr);
    assert!(err.contains("could not be delivered"), "{err}");

    // A bad URL is refused before anything runs.
    assert_clean_error(&sb.sluice(&["run", "--openlineage-url", "ftp://x", spec]), 2, "only http://");
}
