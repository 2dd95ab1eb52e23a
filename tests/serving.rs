//! Serving end to end under `sluice serve`: a trained, registered model predicted through
//! its alias, another alias and a version; inputs refused by name; feedback giving online
//! accuracy; an alias move swapping the served version; a tampered version refused; and
//! Triton's own client over the Open Inference Protocol.

mod common;

use common::*;
use serde_json::{Value, json};

fn dags(sb: &Sandbox) -> std::path::PathBuf {
    let dags = sb.path("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::copy(repo().join("tests/serving/churn.yaml"), dags.join("churn.yaml")).unwrap();
    dags
}

/// Trains and registers a version, pointing `alias` at it; returns the run.
fn train(srv: &Server, params: Value) -> Value {
    let (code, body) =
        srv.post("/api/v1/pipelines/churn-model/runs", &json!({ "params": params }).to_string());
    assert_eq!(code, 201, "{body}");
    let run = serde_json::from_str::<Value>(&body).unwrap()["run"]["id"].as_u64().unwrap();
    let done = srv.wait_run(run);
    assert_eq!(done["state"], "succeeded", "{done:#}");
    done
}

fn predict(srv: &Server, path: &str, body: &str) -> (u16, Value) {
    let (code, text) = srv.post(path, body);
    (code, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}")))
}

#[test]
fn registered_models_are_served_checked_and_swapped() {
    let sb = Sandbox::new();
    let srv = Server::start(&sb, &dags(&sb), &[]);
    train(&srv, json!({}));

    // By name (the `production` alias), rows by name and in the feature order, one batch.
    let (code, p) = predict(
        &srv,
        "/api/v1/models/churn/predict",
        r#"{"rows": [{"tenure": 5, "spend": 40, "calls": 9}, [60, 140, 0], [30, 60, 1]]}"#,
    );
    assert_eq!(code, 200, "{p}");
    assert_eq!(
        (p["model"].clone(), p["version"].clone(), p["alias"].clone()),
        (json!("churn"), json!(1), json!("production"))
    );
    assert_eq!(p["classes"], json!(["0", "1"]));
    assert_eq!(p["predictions"].as_array().unwrap().len(), 3);
    // The generator's rule: short tenure with many calls churns, a middle tenure does not.
    assert_eq!(p["predictions"][0], "1", "{p}");
    assert_eq!(p["predictions"][2], "0", "{p}");
    let probs = &p["probabilities"][0];
    assert!((probs[0].as_f64().unwrap() + probs[1].as_f64().unwrap() - 1.0).abs() < 1e-5);
    let request_id = p["request_id"].as_str().unwrap().to_string();

    // The same version through an alias and by number; MLflow's scoring shape.
    let (code, by_version) = predict(
        &srv,
        "/api/v1/models/churn/versions/1/predict",
        r#"{"dataframe_split": {"columns": ["calls", "spend", "tenure"], "data": [[9, 40, 5]]}}"#,
    );
    assert_eq!(code, 200, "{by_version}");
    assert_eq!(by_version["probabilities"][0], p["probabilities"][0]);
    let (code, _) = predict(&srv, "/api/v1/models/churn@production/predict", r#"{"rows": [[5, 40, 9]]}"#);
    assert_eq!(code, 200);

    // Inputs that do not fit: 422 naming the field; NaN as Python writes it.
    for (body, field) in [
        (r#"{"rows": [{"tenure": 5, "spend": 40}]}"#, "rows[0].calls: is missing"),
        (r#"{"rows": [{"tenure": 5, "spend": 40, "calls": 1, "zip": 1}]}"#, "rows[0].zip: is not a feature"),
        (
            r#"{"rows": [{"tenure": "five", "spend": 40, "calls": 1}]}"#,
            "rows[0].tenure: is a string, not a number",
        ),
        (r#"{"rows": [[5, NaN, 1]]}"#, "rows[0].spend: is NaN"),
        (r#"{"rows": [[5, 40, Infinity]]}"#, "rows[0].calls: is infinite"),
        (r#"{"rows": [[5, 40]]}"#, "rows[0]: has 2 values"),
    ] {
        let (code, e) = predict(&srv, "/api/v1/models/churn/predict", body);
        assert_eq!(code, 422, "{body}: {e}");
        assert!(e["error"]["message"].as_str().unwrap().starts_with(field), "{body}: {e}");
    }
    let (code, e) = predict(&srv, "/api/v1/models/nope/predict", r#"{"rows": [[1, 2, 3]]}"#);
    assert_eq!(code, 404, "{e}");
    let (code, e) = predict(&srv, "/api/v1/models/churn@staging/predict", r#"{"rows": [[1, 2, 3]]}"#);
    assert!(code == 404 && e["error"]["message"].as_str().unwrap().contains("no alias `staging`"), "{e}");
    let (code, _) = srv.post("/api/v1/models/churn/predict", "{not json");
    assert_eq!(code, 400);
    let big = format!(r#"{{"rows": [{}]}}"#, vec!["[1, 2, 3]"; 200_000].join(","));
    let (code, _) = srv.post("/api/v1/models/churn/predict", &big);
    assert_eq!(code, 413, "bodies are capped");

    // Feedback: ground truth for the first request's three rows, taken once.
    let (code, e) = predict(
        &srv,
        "/api/v1/models/churn/feedback",
        &json!({"request_id": request_id, "labels": ["1", "1", "maybe"]}).to_string(),
    );
    assert!(code == 422 && e["error"]["message"].as_str().unwrap().contains("`maybe` is not a class"), "{e}");
    let (code, f) = predict(
        &srv,
        "/api/v1/models/churn/feedback",
        &json!({"request_id": request_id, "labels": ["1", "1", 0]}).to_string(),
    );
    assert_eq!(code, 200, "{f}");
    assert_eq!((f["version"].clone(), f["rows"].clone()), (json!(1), json!(3)));
    let (code, e) = predict(
        &srv,
        "/api/v1/models/churn/feedback",
        &json!({"request_id": request_id, "labels": ["1", "1", 0]}).to_string(),
    );
    assert_eq!(code, 404, "a second feedback for one prediction: {e}");
    let (code, _) = predict(
        &srv,
        "/api/v1/models/churn/feedback",
        &json!({"request_id": "nope", "label": "1"}).to_string(),
    );
    assert_eq!(code, 404);
    let record = srv.json("/api/v1/models/churn/serving");
    let v1 = &record["versions"][0];
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["feedback"], 3);
    assert_eq!(v1["accuracy"], 1.0, "{record:#}");
    assert_eq!(v1["rows"], 5, "{record:#}");
    assert!(v1["invalid"].as_u64().unwrap() >= 6, "refused inputs are counted: {record:#}");
    assert_eq!(v1["failures"], 0, "and not as the version's failures: {record:#}");
    assert!(v1["latency_ms"]["p50"].as_f64().unwrap() > 0.0);

    // A second version takes `production`: requests by name are served by it.
    train(&srv, json!({"seed": 9}));
    let (code, p2) = predict(&srv, "/api/v1/models/churn/predict", r#"{"rows": [[5, 40, 9]]}"#);
    assert_eq!((code, p2["version"].clone()), (200, json!(2)), "{p2}");

    // A version whose weights were changed on disk is refused, not served.
    train(&srv, json!({"seed": 11, "alias": "candidate"}));
    let v3 = srv.json("/api/v1/models/churn/versions/3");
    let digest = v3["version"]["artifact"].as_str().unwrap().trim_start_matches("sha256:").to_string();
    let blob = sb.data().join("artifacts/sha256").join(&digest[..2]).join(&digest[2..]);
    let mut perms = std::fs::metadata(&blob).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&blob, perms).unwrap();
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&blob, bytes).unwrap();
    let (code, e) = predict(&srv, "/api/v1/models/churn@candidate/predict", r#"{"rows": [[5, 40, 9]]}"#);
    assert_eq!(code, 409, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("does not match its digest"), "{e}");

    // Open Inference Protocol requests whose shapes lie are refused before anything is made.
    let infer = |body: &str| srv.post("/v2/models/churn/infer", body);
    let (code, e) = infer(
        r#"{"inputs": [{"name": "tenure", "shape": [1000000000000000, 0], "datatype": "FP32", "data": []}, {"name": "spend", "shape": [1], "datatype": "FP32", "data": [1]}]}"#,
    );
    assert_eq!(code, 400, "{e}");
    let (code, e) = infer(
        r#"{"inputs": [{"name": "input", "shape": [1152921504606846976, 3], "datatype": "FP32", "parameters": {"binary_data_size": 0}}]}"#,
    );
    assert_eq!(code, 400, "{e}");
    let (code, e) =
        infer(r#"{"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3]}]}"#);
    assert!(code == 400 && e.contains("values for its shape"), "{e}");
    let (code, e) =
        infer(r#"{"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, NaN, 3]}]}"#);
    assert!(code == 400 && e.contains("inputs[0].spend") && e.contains("NaN"), "{e}");

    // A viewer may predict; a token of the events role may not.
    let out = sb.sluice(&["token", "create", "feeder", "--role", "events"]);
    let events = text(&out.stdout).lines().find(|l| l.starts_with("sluice_")).unwrap().to_string();
    let (code, _, _) = srv.request_as(
        Some(&events),
        "POST",
        "/api/v1/models/churn/predict",
        br#"{"rows": [[5, 40, 9]]}"#,
        &[("Content-Type", "application/json")],
    );
    assert_eq!(code, 403);
}

#[test]
fn tritons_client_speaks_the_open_inference_protocol_to_sluice() {
    let Some(python) =
        python_with("tritonclient.http", "tritons_client_speaks_the_open_inference_protocol_to_sluice")
    else {
        return;
    };
    let sb = Sandbox::new();
    let srv = Server::start(&sb, &dags(&sb), &[]);
    train(&srv, json!({}));
    let rows = json!([[5, 40, 9], [60, 140, 0], [30, 60, 1]]);
    let (code, p) = predict(&srv, "/api/v1/models/churn/predict", &json!({ "rows": rows }).to_string());
    assert_eq!(code, 200, "{p}");
    let expected = json!({ "rows": rows, "probabilities": p["probabilities"], "labels": p["predictions"] });
    let out = std::process::Command::new(python)
        .arg(repo().join("tests/serving/oip.py"))
        .args([srv.addr.as_str(), srv.token.as_str(), "churn", &expected.to_string()])
        .output()
        .expect("run python");
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success() && said.contains("ALL OK"), "{said}");
    assert_eq!(said.matches("OK   ").count(), 13, "{said}");
}
