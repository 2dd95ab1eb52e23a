//! The web UI's DAG view in a real headless Chromium (docs/benchmarks.md): the time from a
//! fresh page load to a 10,000-step pipeline's graph drawn (the page's own `graph-drawn`
//! mark: page, script, session, the API's layout and the canvas), cold (the server lays the
//! DAG out for the first time) and warm (its layout is kept per DAG version), beside a
//! 10-step pipeline's page in the same run.
//!
//! `cargo bench --bench ui` (`UI_BENCH_STEPS` sets the big DAG's size). Needs Debian's
//! `chromium` and `chromedriver` on PATH; without them it says so and measures nothing.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

mod support;

fn find(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join(name)).find(|f| f.is_file()))
}

/// `layers` x `width` steps, each needing two neighbours in the layer above.
fn layered(name: &str, layers: usize, width: usize) -> String {
    let mut y = format!("name: {name}\nsteps:\n");
    for l in 0..layers {
        for j in 0..width {
            y.push_str(&format!("  s{l}_{j}:\n    process: {{command: [\"true\"]}}\n"));
            if l > 0 {
                y.push_str(&format!("    needs: [s{}_{}, s{}_{}]\n", l - 1, j, l - 1, (j + 1) % width));
            }
        }
    }
    y
}

async fn until(c: &Client, expr: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while c.execute(&format!("return !!({expr});"), vec![]).await.unwrap() != Value::Bool(true) {
        assert!(Instant::now() < deadline, "`{expr}` never held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Milliseconds from a fresh load of `#/pipelines/{name}` to its graph drawn.
async fn load(c: &Client, url: &str, name: &str, steps: usize) -> f64 {
    c.goto(&format!("{url}/#/pipelines/{name}")).await.unwrap();
    c.refresh().await.unwrap();
    until(c, &format!("document.querySelector('.graph[data-drawn=\"{steps}\"]')")).await;
    c.execute("return performance.getEntriesByName('graph-drawn')[0].startTime;", vec![])
        .await
        .unwrap()
        .as_f64()
        .unwrap()
}

/// Kills Chromium by its pid if the bench ends before it closes the session.
struct KillPid(Option<i32>);

impl Drop for KillPid {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        println!("smoke run (use `cargo bench --bench ui` for the figures)");
    }
    let (Some(chromium), Some(chromedriver)) = (find("chromium"), find("chromedriver")) else {
        println!(
            "\n*** benches/ui.rs: no chromium/chromedriver on PATH (apt-get install chromium chromium-driver); nothing measured ***\n"
        );
        return;
    };
    let steps: usize = std::env::var("UI_BENCH_STEPS").ok().and_then(|v| v.parse().ok()).unwrap_or(if full {
        10_000
    } else {
        400
    });
    let width = (steps as f64).sqrt().round().max(1.0) as usize;
    let layers = steps / width;
    let steps = layers * width;
    let reps = if full { 7 } else { 2 };
    let dir = tempfile::tempdir().unwrap();
    let dags = dir.path().join("dags");
    std::fs::create_dir_all(&dags).unwrap();
    std::fs::write(dags.join("big.yaml"), layered("big", layers, width)).unwrap();
    std::fs::write(dags.join("small.yaml"), layered("small", 5, 2)).unwrap();
    let data = dir.path().join("data");
    let (_server, addr) = support::server::start(&data, &dags, &[]);
    let url = format!("http://{addr}");
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap().trim().to_string();

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let driver = Command::new(&chromedriver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let _driver = support::server::Stop::from(driver);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1000", format!("--user-data-dir={}", dir.path().join("profile").display())],
            },
        }))
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let c = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "no Chromium session: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        let mut chromium =
            KillPid(c.capabilities().and_then(|c| c.get("goog:processID")).and_then(|p| p.as_i64()).map(|p| p as i32));
        c.goto(&format!("{url}/")).await.unwrap();
        until(&c, "document.getElementById('token')").await;
        c.find(Locator::Id("token")).await.unwrap().send_keys(&token).await.unwrap();
        c.find(Locator::Css("form.login button[type=submit]")).await.unwrap().click().await.unwrap();
        until(&c, "!document.getElementById('top').hidden").await;

        let cold = load(&c, &url, "big", steps).await;
        let mut warm: Vec<f64> = Vec::new();
        let mut small: Vec<f64> = Vec::new();
        for _ in 0..reps {
            warm.push(load(&c, &url, "big", steps).await);
            small.push(load(&c, &url, "small", 10).await);
        }
        warm.sort_by(f64::total_cmp);
        small.sort_by(f64::total_cmp);
        let (w, s) = (warm[warm.len() / 2], small[small.len() / 2]);
        println!("| page (fresh load to graph drawn, headless Chromium) | ms |");
        println!("| --- | --- |");
        println!("| {steps}-step DAG, first view (the server lays it out) | {cold:.0} |");
        println!("| {steps}-step DAG, again (median of {reps}) | {w:.0} |");
        println!("| 10-step DAG (median of {reps}) | {s:.0} |");
        c.close().await.unwrap();
        chromium.0 = None;
    });
}
