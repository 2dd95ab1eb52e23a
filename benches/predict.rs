//! Serving latency and throughput (docs/benchmarks.md): an MLP 30-32-16-2 trained, registered
//! and promoted by a pipeline under `sluice serve` (the release binary, loopback), then
//! - one row per request at a fixed rate (default 2,000/s for 10 s) from 4 clients on
//!   keep-alive connections, each request timed from when it was due (so a slow answer
//!   delays none of the later ones' clocks): p50, p99, the rate reached;
//! - 1,000 rows per request, back to back: rows/s.
//!
//! With `MLFLOW_SCORING_URL` (benches/predict_compare.sh starts MLflow's scoring server on an
//! equivalent scikit-learn MLP), the same load runs against it in the same run. The table
//! comes from `PREDICT_BENCH_DATA` (a CSV with 30 features and `label`), else is generated.
//!
//! `cargo bench --bench predict` (`PREDICT_BENCH_RATE`: requests/s, comma-separated for
//! several; `PREDICT_BENCH_SECONDS`)

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use support::server::Conn;

mod support;

const FEATURES: usize = 30;

fn generate(path: &std::path::Path) {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut text = (0..FEATURES).map(|i| format!("f{i}")).collect::<Vec<_>>().join(",") + ",label\n";
    for _ in 0..5000 {
        let x: Vec<f64> = (0..FEATURES).map(|_| next() * 10.0).collect();
        let y = u8::from(x[0] + x[1] - x[2] > 10.0 || x[3] * x[4] > 60.0);
        text += &format!("{},{y}\n", x.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(","));
    }
    std::fs::write(path, text).unwrap();
}

fn rows(path: &std::path::Path, n: usize) -> Vec<Vec<f64>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .take(n)
        .map(|l| l.split(',').take(FEATURES).map(|v| v.parse().unwrap()).collect())
        .collect()
}

/// `rate` requests per second for `seconds`, from 4 clients; latencies (ms) from when each
/// request was due.
fn load(
    addr: &str,
    path: &str,
    token: Option<&str>,
    bodies: &[String],
    rate: f64,
    seconds: f64,
) -> (Vec<f64>, f64, usize) {
    let clients = 4;
    let total = (rate * seconds) as usize;
    let start = Instant::now() + Duration::from_millis(100);
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, path, token) = (addr.to_string(), path.to_string(), token.map(str::to_string));
            let bodies = bodies.to_vec();
            std::thread::spawn(move || {
                let mut conn = Conn::open(&addr);
                let mut lat = Vec::new();
                let mut failed = 0;
                for k in (c..total).step_by(clients) {
                    let due = start + Duration::from_secs_f64(k as f64 / rate);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let (code, _) = conn.call("POST", &path, token.as_deref(), &bodies[k % bodies.len()]);
                    if code != 200 {
                        failed += 1;
                    }
                    lat.push(due.elapsed().as_secs_f64() * 1000.0);
                }
                (lat, failed)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut failed = 0;
    for h in handles {
        let (l, f) = h.join().unwrap();
        all.extend(l);
        failed += f;
    }
    let took = start.elapsed().as_secs_f64();
    all.sort_by(f64::total_cmp);
    (all, total as f64 / took, failed)
}

fn pct(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Where the load goes: who, the address, the route, the token.
struct Target<'a>(&'a str, &'a str, &'a str, Option<&'a str>);

fn report(
    Target(who, addr, path, token): Target<'_>,
    one: &[String],
    batch: &str,
    rates: &[f64],
    seconds: f64,
) {
    // Warm up (the first request loads and verifies the model).
    let mut c = Conn::open(addr);
    for b in one.iter().take(50) {
        assert_eq!(c.call("POST", path, token, b).0, 200, "{who} does not answer");
    }
    for &rate in rates {
        let (lat, reached, failed) = load(addr, path, token, one, rate, seconds);
        println!(
            "{who:<7} 1 row/request at {rate:.0}/s: p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms, {reached:.0} requests/s reached, {failed} failed",
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat[lat.len() - 1]
        );
    }
    // A fresh connection: a server may have closed the idle one.
    let mut c = Conn::open(addr);
    let n = 30;
    let t = Instant::now();
    for _ in 0..n {
        assert_eq!(c.call("POST", path, token, batch).0, 200);
    }
    println!("{who:<7} 1,000 rows/request: {:.0} rows/s", n as f64 * 1000.0 / t.elapsed().as_secs_f64());
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` it runs once, small, to show it still
    // works (those figures are not benchmarks).
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        println!("smoke run (use `cargo bench --bench predict` for the figures)");
    }
    let rates: Vec<f64> = std::env::var("PREDICT_BENCH_RATE")
        .unwrap_or_else(|_| if full { "2000".into() } else { "100".into() })
        .split(',')
        .map(|r| r.trim().parse().expect("PREDICT_BENCH_RATE: requests per second, comma-separated"))
        .collect();
    let seconds: f64 = std::env::var("PREDICT_BENCH_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 10.0 } else { 1.0 });
    let dir = tempfile::tempdir().unwrap();
    let data = match std::env::var("PREDICT_BENCH_DATA") {
        Ok(p) => std::path::PathBuf::from(p),
        Err(_) => {
            let p = dir.path().join("table.csv");
            generate(&p);
            p
        }
    };
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::write(
        dags.join("bench.yaml"),
        format!(
            "name: bench-model\nsteps:\n  train:\n    train: {{ model: mlp, data: {}, label: label, hidden: [32, 16], epochs: 20, device: cpu }}\n  register:\n    needs: [train]\n    register: {{ model: bench }}\n  promote:\n    needs: [register]\n    promote: {{ alias: production }}\n",
            data.display()
        ),
    )
    .unwrap();
    let data_dir = dir.path().join("data");
    let (_server, addr) = support::server::start(&data_dir, &dags, &["--max-in-flight", "4096"]);
    let token = std::fs::read_to_string(data_dir.join("admin.token")).unwrap().trim().to_string();
    let mut c = Conn::open(&addr);
    let (_, body) = c.call("POST", "/api/v1/pipelines/bench-model/runs", Some(&token), "{}");
    let run = serde_json::from_str::<Value>(&body).unwrap()["run"]["id"].as_u64().expect("a run");
    loop {
        let (_, body) = c.call("GET", &format!("/api/v1/runs/{run}/wait?timeout_s=30"), Some(&token), "");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["done"] == true {
            assert_eq!(v["state"], "succeeded", "{v:#}");
            break;
        }
    }
    let table = rows(&data, 1000);
    let one: Vec<String> = table.iter().map(|r| json!({ "rows": [r] }).to_string()).collect();
    let batch = json!({ "rows": table }).to_string();
    println!(
        "MLP 30-32-16-2, loopback, {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    report(
        Target("sluice", &addr, "/api/v1/models/bench/predict", Some(&token)),
        &one,
        &batch,
        &rates,
        seconds,
    );
    if let Ok(url) = std::env::var("MLFLOW_SCORING_URL") {
        let addr = url.trim_start_matches("http://").trim_end_matches('/').to_string();
        let one: Vec<String> = table.iter().map(|r| json!({ "inputs": [r] }).to_string()).collect();
        let batch = json!({ "inputs": table }).to_string();
        report(Target("mlflow", &addr, "/invocations", None), &one, &batch, &rates, seconds);
    }
}
