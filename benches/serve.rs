//! `sluice serve` scenarios (docs/benchmarks.md): webhook-to-process latency at a fixed rate,
//! a burst of Alertmanager notifications, and how close to its slot a schedule fires. Each
//! starts the release binary on a private data folder on loopback and stops it at the end.
//!
//! `cargo bench --bench serve` (all three); `-- latency`, `-- alerts` or `-- cron` for one.
//! `SERVE_BENCH_REQUESTS` (default 1000) and `SERVE_BENCH_ALERTS` (default 10000) scale them.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i128
}

/// One request with the server's admin token (every route but the health checks needs one).
fn http(addr: &str, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).ok();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    (head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0), rest.to_string())
}

struct Server {
    child: Child,
    addr: String,
    token: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(files: &[(&str, String)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let dags = dir.path().join("dags");
        std::fs::create_dir_all(&dags).unwrap();
        for (name, text) in files {
            std::fs::write(dags.join(name), text).unwrap();
        }
        let data = dir.path().join("data");
        let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
            .arg("--data-dir")
            .arg(&data)
            .args(["serve", "--listen", "127.0.0.1:0", "--dags"])
            .arg(&dags)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sluice serve");
        let info = data.join("server.json");
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Ok(t) = std::fs::read_to_string(&info)
                && let Ok(v) = serde_json::from_str::<Value>(&t)
            {
                break v["url"].as_str().unwrap().trim_start_matches("http://").to_string();
            }
            assert!(Instant::now() < deadline, "the server did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        // The first start writes the admin token beside the data (0600).
        let token =
            std::fs::read_to_string(data.join("admin.token")).expect("admin.token").trim().to_string();
        Server { child, addr, token, _dir: dir }
    }

    fn json(&self, path: &str) -> Value {
        let (code, body) = http(&self.addr, &self.token, "GET", path, "");
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    fn wait_all(&self, runs: &[u64]) {
        for r in runs {
            loop {
                if self.json(&format!("/api/v1/runs/{r}/wait?timeout_s=30"))["done"] == true {
                    break;
                }
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, mut ms: Vec<f64>) -> (f64, f64) {
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (p50, p99) = (percentile(&ms, 0.5), percentile(&ms, 0.99));
    println!("{name}: n={} p50={p50:.2} ms p99={p99:.2} ms max={:.2} ms", ms.len(), ms[ms.len() - 1]);
    (p50, p99)
}

/// Sends `total` requests at `rate` per second from `threads` senders; `send(i)` returns the
/// send time and whatever it learned.
fn paced<T: Send + 'static>(
    total: usize,
    rate: f64,
    threads: usize,
    send: impl Fn(usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let send = Arc::new(send);
    let start = Instant::now() + Duration::from_millis(50);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let send = send.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in (t..total).step_by(threads) {
                    let at = start + Duration::from_secs_f64(i as f64 / rate);
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    out.push(send(i));
                }
                out
            })
        })
        .collect();
    handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
}

/// Webhook POST to the first step's process started, at 200 requests/s; the baseline is
/// the same measurement of spawning the process directly, in the same run.
fn latency(total: usize) {
    let hook = "name: hook\non:\n  - webhook: {source: bench}\nsteps:\n  first: {process: {command: [\"date\", \"+%s%N\"]}}\n";
    let srv = Server::start(&[("hook.yaml", hook.to_string())]);
    let (addr, token) = (srv.addr.clone(), srv.token.clone());
    let sent = paced(total, 200.0, 8, move |_| {
        let t = now_ns();
        let (code, body) = http(&addr, &token, "POST", "/api/v1/events/bench", "{\"n\": 1}");
        assert_eq!(code, 202, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (t, v["runs"][0].as_u64().unwrap())
    });
    let runs: Vec<u64> = sent.iter().map(|(_, r)| *r).collect();
    srv.wait_all(&runs);
    let mut ms = Vec::new();
    for (t, run) in &sent {
        let (_, log) =
            http(&srv.addr, &srv.token, "GET", &format!("/api/v1/runs/{run}/steps/first/logs"), "");
        let started: i128 = log.trim().parse().expect("date output");
        ms.push((started - t) as f64 / 1e6);
    }
    let (p50, p99) = summary("webhook POST -> first step process started (200 req/s)", ms);
    // Baseline: the same clock reading from `date` spawned directly.
    let base: Vec<f64> = paced(total.min(500), 200.0, 2, |_| {
        let t = now_ns();
        let out = Command::new("date").arg("+%s%N").output().unwrap();
        let started: i128 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        (started - t) as f64 / 1e6
    });
    let (b50, b99) = summary("baseline: spawn `date` directly (same pacing)", base);
    println!("ratio to the baseline: p50 {:.1}x, p99 {:.1}x", p50 / b50, p99 / b99);
}

/// 10,000 Alertmanager notifications as fast as 32 senders go: 100 alerts (fingerprints),
/// each notified 100 times; expect exactly 100 runs, every notification recorded, no errors.
fn alerts(total: usize) {
    let distinct = 100.min(total);
    let p = "name: retrain\non:\n  - alert: {name: FeatureDrift, labels: {model: churn}}\nsteps:\n  t: {process: {command: [\"true\"]}}\n";
    let srv = Server::start(&[("retrain.yaml", p.to_string())]);
    let (addr, token) = (srv.addr.clone(), srv.token.clone());
    let start = Instant::now();
    let codes = paced(total, 1e9, 32, move |i| {
        let fp = format!("fp{}", i % distinct);
        let body = json!({
            "version": "4", "groupKey": "g", "status": "firing", "receiver": "sluice",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://127.0.0.1:9093",
            "alerts": [{"status": "firing", "labels": {"alertname": "FeatureDrift", "model": "churn", "n": fp},
                        "annotations": {}, "startsAt": "2026-11-22T00:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "", "fingerprint": fp}]
        });
        http(&addr, &token, "POST", "/api/v1/events/alertmanager", &body.to_string()).0
    });
    let took = start.elapsed();
    let errors = codes.iter().filter(|c| **c != 202).count();
    let recorded = srv.json("/api/v1/events?limit=1")["total"].as_u64().unwrap();
    let runs = srv.json("/api/v1/runs?limit=1000")["runs"].as_array().unwrap().len();
    println!(
        "{total} alert notifications in {:.2} s ({:.0}/s): {errors} errors, {recorded} recorded, {runs} runs (expected {distinct})",
        took.as_secs_f64(),
        total as f64 / took.as_secs_f64()
    );
    assert_eq!((errors, recorded as usize, runs), (0, total, distinct));
}

/// A schedule of one slot per second for `secs` (30 by default): how long after its slot each run is created.
fn cron(secs: u64) {
    let tick = "name: tick\nschedule: {cron: \"* * * * * *\", overlap: allow}\nsteps:\n  t: {process: {command: [\"true\"]}}\n";
    let srv = Server::start(&[("tick.yaml", tick.to_string())]);
    std::thread::sleep(Duration::from_secs(secs));
    let runs = srv.json("/api/v1/runs?pipeline=tick&limit=1000");
    let late: Vec<f64> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["created_at"].as_i64().unwrap() - r["cause"]["slot_ms"].as_i64().unwrap()) as f64)
        .collect();
    summary("schedule slot -> run created", late);
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` each scenario runs once, small, to
    // show it still works (those figures are not benchmarks).
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        println!("smoke run (use `cargo bench --bench serve` for the figures)");
    }
    let size = |var: &str, bench: u64, smoke: u64| {
        std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(if full { bench } else { smoke })
    };
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let on = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    assert!(Path::new(env!("CARGO_BIN_EXE_sluice")).exists());
    if on("latency") {
        latency(size("SERVE_BENCH_REQUESTS", 1000, 40) as usize);
    }
    if on("alerts") {
        alerts(size("SERVE_BENCH_ALERTS", 10_000, 300) as usize);
    }
    if on("cron") {
        cron(size("SERVE_BENCH_CRON_SECS", 30, 3));
    }
}
