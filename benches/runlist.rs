//! The run list with many runs stored, and `/metrics` with many series (docs/benchmarks.md).
//!
//! - 100,000 run records over 100 pipelines in a data folder; then the first page of the API's
//!   run list (50 runs: all, one pipeline, one pipeline's failed runs, by cursor further down)
//!   through `sluice serve` over loopback, against the scan of every record the list used to
//!   make (timed in the same run, on the same folder).
//! - The text of `/metrics` once the series of 100 pipelines and 20 served models (two
//!   versions each), with their histograms, are recorded: rendered as the endpoint does.
//!
//! `cargo bench --bench runlist` (`RUNLIST_BENCH_RUNS` sets the number of runs).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_engine::scheduler::RunState;
use sluice_engine::store::{RunRecord, Store, Trigger};

use support::server::Conn;

mod support;

/// The pipelines of the `/metrics` series (the target's 100).
const PIPELINES: u64 = 100;

/// `runs` records spread over `pipelines` pipelines; each pipeline's runs cycle through
/// succeeded (3 in 5), failed and cancelled.
fn fill(data: &Path, runs: u64, pipelines: u64) {
    let store = Store::open(data).unwrap();
    let states = [
        RunState::Succeeded,
        RunState::Succeeded,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Cancelled,
    ];
    for id in 1..=runs {
        let record = RunRecord {
            v: 1,
            id,
            pipeline: format!("pipeline-{}", id % pipelines),
            dag: "0".repeat(64),
            params: serde_json::from_str(r#"{"lr": "0.01", "epochs": 20}"#).unwrap(),
            trigger: if id % 7 == 0 { Trigger::Cron } else { Trigger::Manual },
            cause: None,
            state: states[(id / pipelines % states.len() as u64) as usize],
            steps: 12,
            created_at: 1_700_000_000_000 + id as i64 * 1000,
            started_at: Some(1_700_000_000_000 + id as i64 * 1000 + 10),
            finished_at: Some(1_700_000_000_000 + id as i64 * 1000 + 900),
            cache: Default::default(),
            actor: Some("token:bench".into()),
            tags: Default::default(),
        };
        store.put_run(&record).unwrap();
    }
    store.flush().unwrap();
}

/// The median of `n` timings of `f`.
fn median(n: usize, mut f: impl FnMut()) -> Duration {
    let mut t: Vec<Duration> = (0..n)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    t.sort();
    t[n / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        println!("smoke run (use `cargo bench --bench runlist` for the figures)");
    }
    let runs: u64 = std::env::var("RUNLIST_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 100_000 } else { 5_000 });
    // Enough runs per pipeline for full pages of one pipeline's failed runs.
    let pipelines = if full { PIPELINES } else { 10 };
    let reps = if full { 21 } else { 3 };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let t = Instant::now();
    fill(&data, runs, pipelines);
    println!("{runs} run records written in {:.1} s", t.elapsed().as_secs_f64());

    // The baseline: what the list did before the indexes (every record read and filtered).
    let scan = {
        let store = Store::open(&data).unwrap();
        median(reps.min(5), || {
            let all = store.runs().unwrap();
            let page: Vec<_> = all.into_iter().filter(|r| r.pipeline == "pipeline-7").take(50).collect();
            assert_eq!(page.len(), 50);
        })
    };

    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    let (_server, addr) = support::server::start(&data, &dags, &[]);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_string();
    let mut c = Conn::open(&addr);
    let mut page = |path: &str| {
        let (code, body) = c.call("GET", path, Some(&token), "");
        assert_eq!(code, 200, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["runs"].as_array().unwrap().len(), 50, "{path}");
        v["next"].as_str().map(str::to_string)
    };
    // A cursor far down the list (runs / 2).
    let deep = format!("/api/v1/runs?limit=50&cursor={}", runs / 2);
    println!("| request ({runs} runs stored) | median of {reps} |");
    println!("| --- | --- |");
    for path in [
        "/api/v1/runs?limit=50",
        "/api/v1/runs?limit=50&pipeline=pipeline-7",
        "/api/v1/runs?limit=50&pipeline=pipeline-7&state=failed",
        "/api/v1/runs?limit=50&state=cancelled",
        deep.as_str(),
    ] {
        assert!(page(path).is_some(), "{path} has a next page");
        let took = median(reps, || {
            page(path);
        });
        println!("| `GET {path}` | {} |", ms(took));
        if path.ends_with("pipeline=pipeline-7") {
            println!(
                "| the same page by reading every record (before) | {} ({:.0}x the indexed page) |",
                ms(scan),
                scan.as_secs_f64() / took.as_secs_f64()
            );
        }
    }

    // /metrics: the series of 100 pipelines and 20 models, rendered as the endpoint does.
    sluice_engine::metrics::install();
    for p in 0..PIPELINES {
        let name = format!("pipeline-{p}");
        for _ in 0..3 {
            sluice_engine::metrics::run_started(&name);
        }
        for state in ["succeeded", "failed", "cancelled"] {
            sluice_engine::metrics::run_finished(&name, state, Some(Duration::from_millis(900 + p)));
        }
    }
    for kind in [
        "process",
        "container",
        "wasm",
        "train",
        "register",
        "gate",
        "approval",
        "promote",
        "drift",
        "rollout",
    ] {
        for outcome in ["succeeded", "cached", "failed", "failed_retryable", "timed_out", "cancelled"] {
            sluice_engine::metrics::attempt_finished(kind, outcome, Some(Duration::from_millis(120)));
        }
    }
    for m in 0..20u64 {
        let model = format!("model-{m}");
        for v in 1..=2 {
            for _ in 0..10 {
                sluice_engine::metrics::predicted(&model, v, "ok", 4, Duration::from_micros(300 + m));
            }
            sluice_engine::metrics::predicted(&model, v, "invalid", 0, Duration::ZERO);
            sluice_engine::metrics::predicted(&model, v, "failed", 0, Duration::ZERO);
        }
        for f in 0..30 {
            sluice_engine::metrics::drift(&model, &format!("f{f}"), "ks", 0.01 * f as f64, f % 5 == 0);
        }
        sluice_engine::metrics::drift_share(&model, 0.2);
        sluice_engine::metrics::rollout_weight(&model, 10);
    }
    for route in 0..80 {
        for status in [200, 201, 400, 401, 404] {
            sluice_engine::metrics::http(
                "GET",
                &format!("/api/v1/route{route}"),
                status,
                Duration::from_micros(800),
            );
        }
    }
    for r in ["hit", "miss", "expired", "damaged", "bypassed", "unkeyed"] {
        sluice_engine::metrics::cache(r);
    }
    let text = sluice_engine::metrics::render();
    let series = text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count();
    let took = median(reps, || {
        assert!(!sluice_engine::metrics::render().is_empty());
    });
    println!(
        "| `/metrics` text: 100 pipelines, 20 models x 2 versions, 80 routes ({series} series, {} KiB) | {} |",
        text.len() / 1024,
        ms(took)
    );
}
