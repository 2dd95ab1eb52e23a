//! `GET /metrics`: Prometheus' text format, checked by Debian's `promtool`, scraped by a real
//! Prometheus on loopback and queried through its HTTP API; and the Grafana dashboard in
//! docs/ charts only metrics that exist.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Child, Sandbox, Server, free_port, http, text};
use serde_json::Value;

const METERED: &str = r#"
name: metered
on:
  - webhook: {source: ci}
steps:
  prep: {process: {shell: "echo prepared"}}
  fail_once: {process: {shell: "if mkdir $SLUICE_RUN_DIR/../tried 2>/dev/null; then exit 3; fi"}, needs: [prep], retries: 1}
  report: {process: {command: ["echo", "reported"]}, needs: [fail_once], cache: true}
"#;

fn dags(sb: &Sandbox) -> PathBuf {
    let dir = sb.path("dags");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("metered.yaml"), METERED).unwrap();
    dir
}

/// Debian's `prometheus` and `promtool`, or a loud skip (a failure in CI).
fn prometheus_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    let found =
        common::tools_or_skip(test, &["prometheus", "promtool"], "SLUICE_REQUIRE_PROMETHEUS", "prometheus")?;
    Some((found[0].clone(), found[1].clone()))
}

/// The value of a PromQL instant query (0 when it has no sample yet).
fn query(prom: &str, q: &str) -> f64 {
    let path = format!(
        "/api/v1/query?query={}",
        percent_encoding::utf8_percent_encode(q, percent_encoding::NON_ALPHANUMERIC)
    );
    let (code, body) = http(prom, "GET", &path, "");
    assert_eq!(code, 200, "Prometheus query {q}: {body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "success", "{body}");
    v["data"]["result"][0]["value"][1].as_str().map_or(0.0, |s| s.parse().unwrap())
}

/// Polls a PromQL query until `ok` holds of its value (Prometheus scrapes every second).
fn until(prom: &str, q: &str, what: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let v = query(prom, q);
        if ok(v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: `{q}` is {v}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn start_prometheus(sb: &Sandbox, binary: &Path, target: &str, token: &str) -> (Child, String) {
    let token_file = sb.write("prometheus.token", token);
    std::fs::set_permissions(&token_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         scrape_configs:\n\
         \x20 - job_name: sluice\n\
         \x20   metrics_path: /metrics\n\
         \x20   authorization: {{credentials_file: {}}}\n\
         \x20   static_configs: [{{targets: ['{target}']}}]\n",
        token_file.display()
    );
    let config_file = sb.write("prometheus.yml", &config);
    let addr = format!("127.0.0.1:{}", free_port());
    let log = std::fs::File::create(sb.path("prometheus.log")).unwrap();
    let child = Child(
        Command::new(binary)
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!("--storage.tsdb.path={}", sb.path("prom-data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while http(&addr, "GET", "/-/ready", "").0 != 200 {
        let log = std::fs::read_to_string(sb.path("prometheus.log")).unwrap_or_default();
        assert!(Instant::now() < deadline, "prometheus did not come up: {log}");
        std::thread::sleep(Duration::from_millis(100));
    }
    (child, addr)
}

fn start_run(srv: &Server) -> u64 {
    let (code, body) = srv.post("/api/v1/pipelines/metered/runs", "{}");
    assert_eq!(code, 201, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["run"]["id"].as_u64().unwrap()
}

#[test]
fn a_real_prometheus_scrapes_the_runs_the_test_started() {
    let Some((prometheus, promtool)) =
        prometheus_or_skip("a_real_prometheus_scrapes_the_runs_the_test_started")
    else {
        return;
    };
    let sb = Sandbox::new();
    let srv = Server::start(&sb, &dags(&sb), &[]);
    // A token for Prometheus: a viewer may read the metrics, nobody without a token may.
    let out = sb.sluice(&["token", "create", "prometheus", "--role", "viewer"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let viewer = text(&out.stdout).trim().to_string();
    let (code, _, _) = srv.request_as(None, "GET", "/metrics", b"", &[]);
    assert_eq!(code, 401, "the metrics need a token");

    let (_prom_child, prom) = start_prometheus(&sb, &prometheus, &srv.addr, &viewer);
    until(&prom, "up{job=\"sluice\"}", "Prometheus scrapes Sluice with the viewer token", |v| v == 1.0);
    let before = query(&prom, "sum(sluice_runs_total{pipeline=\"metered\"})");

    // Three runs by hand and one by a webhook, one after the other (so that the cache's first
    // entry is there for the next); one event from a source nobody listens to.
    let mut runs = Vec::new();
    for _ in 0..3 {
        let run = start_run(&srv);
        assert_eq!(srv.wait_run(run)["state"], "succeeded");
        runs.push(run);
    }
    let (code, body) = srv.post("/api/v1/events/ci", "{\"ref\": \"main\"}");
    assert_eq!(code, 202, "{body}");
    let by_event: Vec<u64> = serde_json::from_str::<Value>(&body).unwrap()["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect();
    assert_eq!(by_event.len(), 1, "{body}");
    assert_eq!(srv.wait_run(by_event[0])["state"], "succeeded");
    runs.extend(by_event);
    let (code, body) = srv.post("/api/v1/events/somebody-else", "{}");
    assert_eq!(code, 202, "{body}");

    let after =
        until(&prom, "sum(sluice_runs_total{pipeline=\"metered\"})", "sluice_runs_total rose by 4", |v| {
            v >= before + 4.0
        });
    assert_eq!(after, before + 4.0, "exactly the runs the test started");
    until(
        &prom,
        "sum(sluice_runs_finished_total{pipeline=\"metered\",state=\"succeeded\"})",
        "4 runs ended well",
        |v| v == 4.0,
    );
    // The middle step fails once in all (the first attempt to make the shared marker, made
    // atomically by mkdir) and is retried; every other attempt succeeded or came from the cache.
    until(
        &prom,
        "sum(sluice_attempts_total{kind=\"process\",outcome=\"failed_retryable\"})",
        "one retryable failure",
        |v| v == 1.0,
    );
    let attempts =
        until(&prom, "sum(sluice_attempts_total{kind=\"process\"})", "every attempt counted", |v| v >= 13.0);
    assert_eq!(attempts, 13.0, "4 runs of 3 steps, and one retry");
    until(&prom, "sum(sluice_step_duration_seconds_count{kind=\"process\"})", "step durations", |v| {
        v == 13.0
    });
    until(&prom, "sum(sluice_cache_lookups_total{result=\"hit\"})", "the report step's cache hits", |v| {
        v == 3.0
    });
    until(&prom, "sum(sluice_cache_lookups_total{result=\"miss\"})", "its one miss", |v| v == 1.0);
    until(&prom, "sum(sluice_events_total{source=\"ci\",outcome=\"matched\"})", "the webhook", |v| v == 1.0);
    until(
        &prom,
        "sum(sluice_events_total{source=\"other\",outcome=\"accepted\"})",
        "an unknown source is `other`",
        |v| v == 1.0,
    );
    until(
        &prom,
        "sum(sluice_http_requests_total{route=\"/api/v1/pipelines/{name}/runs\",status=\"201\"})",
        "HTTP requests by route template",
        |v| v == 3.0,
    );
    until(&prom, "sum(sluice_admission_wait_seconds_count)", "admission waits", |v| v >= 13.0);
    until(&prom, "process_resident_memory_bytes{job=\"sluice\"}", "process metrics", |v| v > 1e6);
    until(&prom, "sluice_pipelines{valid=\"true\"}", "loaded pipelines", |v| v == 1.0);

    // The text itself passes promtool's checks, and no label carries a run id.
    let (code, body) = srv.get("/metrics");
    assert_eq!(code, 200);
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        text(&checked.stdout),
        text(&checked.stderr)
    );
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        assert!(!line.contains("run=\"") && !line.contains("/runs/1"), "a run id as a label: {line}");
    }

    // Every series the dashboard charts is one Sluice exports.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("docs/grafana-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    // What this server has recorded, and what it records once models are served (the
    // serving and drift series appear with the first prediction).
    let mut names: std::collections::BTreeSet<String> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    for n in sluice_engine::metrics::DEFS.iter().map(|d| d.name) {
        for suffix in ["", "_bucket", "_sum", "_count"] {
            names.insert(format!("{n}{suffix}"));
        }
    }
    let mut charted = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            let used: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("sluice_") || w.starts_with("process_"))
                .collect();
            assert!(!used.is_empty(), "panel {} charts no Sluice metric: {expr}", panel["title"]);
            for m in used {
                assert!(
                    names.contains(m),
                    "panel {} charts `{m}`, which /metrics does not have",
                    panel["title"]
                );
                charted += 1;
            }
        }
    }
    assert!(charted >= 10, "the dashboard charts {charted} series");
}
