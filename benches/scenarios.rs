//! End-to-end scenarios of docs/benchmarks.md, each measured against a baseline taken in the
//! same run: `cargo bench --bench scenarios` prints a Markdown table.
//!
//! - chain of 40 `true` steps: `sluice run` wall time, process start to exit, state durable;
//!   the baseline is spawning `true` 40 times in a row.
//! - the same chain with every step cached (results in the cache): `sluice run` end to end,
//!   against the uncached chain measured just before.
//! - wide DAG of 10,000 steps: `sluice validate` (parse, check, plan) wall time, and a full
//!   `sluice run` with its peak memory.
//! - wide DAG of 10,000 steps of a trivial WASM plugin (reads its input, writes `{}`),
//!   `sluice run` end to end with durable state; the baseline is the same DAG of `true`.

mod support;
use support as dags;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn spawn_true() -> Duration {
    let t = Instant::now();
    let status = Command::new("true").status().expect("spawn true");
    assert!(status.success());
    t.elapsed()
}

fn sluice(data: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(SLUICE).arg("--data-dir").arg(data).args(args).output().expect("run sluice");
    let took = t.elapsed();
    assert!(out.status.success(), "sluice {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    took
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` the scenarios run once, small, to
    // show they still work.
    let full = std::env::args().any(|a| a == "--bench");
    let (chain_n, wide_n, reps) = if full { (40, 10_000, 15) } else { (4, 50, 1) };
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain.yaml");
    std::fs::write(&chain, dags::chain(chain_n)).unwrap();
    let wide = dir.path().join("wide.yaml");
    std::fs::write(&wide, dags::wide(wide_n)).unwrap();
    if !full {
        println!("smoke run (use `cargo bench --bench scenarios` for the figures)");
    }

    // Warm the page cache and the binary.
    sluice(&dir.path().join("warm"), &["validate", chain.to_str().unwrap()]);

    let spawn = median((0..400).map(|_| spawn_true()).collect());
    // Warm: one data folder, a new run each time (how a user runs pipelines day to day).
    let warm = dir.path().join("chain-warm");
    let chain_med =
        median((0..reps).map(|_| sluice(&warm, &["run", "-q", chain.to_str().unwrap()])).collect());
    // Fresh: a new data folder each time, so sled creates its files too.
    let fresh = median(
        (0..reps)
            .map(|i| sluice(&dir.path().join(format!("chain-{i}")), &["run", "-q", chain.to_str().unwrap()]))
            .collect(),
    );
    let chain_overhead = (ms(chain_med) - chain_n as f64 * ms(spawn)) / chain_n as f64;
    // The same chain with every step cached, in a warm folder whose cache holds every result
    // (the first run fills it): nothing is spawned, each step's result is looked up by its
    // key and restored.
    let cached = dir.path().join("chain-cached.yaml");
    std::fs::write(
        &cached,
        dags::chain(chain_n).replacen("steps:\n", "defaults: {cache: true}\nsteps:\n", 1),
    )
    .unwrap();
    let cached_dir = dir.path().join("chain-cached");
    sluice(&cached_dir, &["run", "-q", cached.to_str().unwrap()]);
    let cached_med =
        median((0..reps).map(|_| sluice(&cached_dir, &["run", "-q", cached.to_str().unwrap()])).collect());

    let validate = median(
        (0..7)
            .map(|i| sluice(&dir.path().join(format!("v-{i}")), &["validate", wide.to_str().unwrap()]))
            .collect(),
    );
    let noop = median((0..7).map(|i| sluice(&dir.path().join(format!("n-{i}")), &["--version"])).collect());

    let before = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let wide_run =
        sluice(&dir.path().join("wide-run"), &["run", "-q", "--max-parallel", "64", wide.to_str().unwrap()]);
    let after = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).unwrap();
    let peak_kb = after.max_rss().max(before.max_rss());

    println!("| scenario | figure | baseline in the same run |");
    println!("| --- | --- | --- |");
    println!("| spawn and wait `true` | {:.3} ms | - |", ms(spawn));
    println!(
        "| chain of {chain_n} `true` steps, `sluice run` end to end | {:.1} ms (median of {reps}) | {chain_n} x spawn = {:.1} ms |",
        ms(chain_med),
        chain_n as f64 * ms(spawn)
    );
    println!("| the same, each run in a fresh data folder | {:.1} ms (median of {reps}) | - |", ms(fresh));
    println!("| orchestration overhead per chain step | {chain_overhead:.3} ms | - |");
    println!(
        "| chain of {chain_n} steps, every one cached (`cache: true`, results in the cache), `sluice run` end to end | {:.1} ms (median of {reps}) | the uncached chain = {:.1} ms ({:.2}x) |",
        ms(cached_med),
        ms(chain_med),
        ms(chain_med) / ms(cached_med)
    );
    println!(
        "| wide DAG of {wide_n} steps, `sluice validate` (parse, check, plan) | {:.1} ms | `sluice --version` = {:.1} ms |",
        ms(validate),
        ms(noop)
    );
    println!(
        "| wide DAG of {wide_n} `true` steps, `sluice run` | {:.2} s, {:.3} ms per step | {wide_n} x spawn = {:.2} s |",
        wide_run.as_secs_f64(),
        ms(wide_run) / wide_n as f64,
        wide_n as f64 * spawn.as_secs_f64()
    );
    println!("| peak memory of the {wide_n}-step run | {:.1} MB | - |", peak_kb as f64 / 1024.0);
    plugins(dir.path(), wide_n, wide_run, full);
    containers(dir.path(), full);
}

/// A wide DAG of a trivial plugin, end to end, against the same DAG of `true` processes.
fn plugins(dir: &Path, n: usize, processes: Duration, full: bool) {
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/noop.wat");
    let spec = dir.join("wasm-wide.yaml");
    std::fs::write(&spec, dags::wasm_wide(n, module.to_str().unwrap())).unwrap();
    let reps = if full { 5 } else { 1 };
    // A fresh data folder each time: its module cache is empty, so each run compiles once.
    let runs = median(
        (0..reps)
            .map(|i| sluice(&dir.join(format!("wasm-{i}")), &["run", "-q", spec.to_str().unwrap()]))
            .collect(),
    );
    println!(
        "| wide DAG of {n} steps of a trivial WASM plugin, `sluice run` | {:.2} s (median of {reps}), {:.3} ms per step | the same DAG of `true` processes = {:.2} s ({:.2}x) |",
        runs.as_secs_f64(),
        ms(runs) / n as f64,
        processes.as_secs_f64(),
        processes.as_secs_f64() / runs.as_secs_f64()
    );
}

/// A chain of 20 container steps running `true`, against 20 sequential `docker run --rm` of
/// the same image in the same run. Needs a Docker engine at DOCKER_HOST with the test image
/// (`source tests/docker.sh && start_docker`).
fn containers(dir: &Path, full: bool) {
    const IMAGE: &str = "sluice-test/busybox:1";
    let n = if full { 20 } else { 2 };
    let reps = if full { 5 } else { 1 };
    let docker_ok =
        Command::new("docker").args(["image", "inspect", IMAGE]).output().is_ok_and(|o| o.status.success());
    if !docker_ok {
        println!(
            "| chain of {n} container steps | skipped: no Docker engine with {IMAGE} at DOCKER_HOST | - |"
        );
        return;
    }
    let spec = dir.join("container-chain.yaml");
    std::fs::write(&spec, dags::container_chain(n, IMAGE)).unwrap();
    let docker_runs = median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                for _ in 0..n {
                    let s = Command::new("docker")
                        .args(["run", "--rm", "--network", "none", IMAGE, "true"])
                        .status()
                        .expect("docker run");
                    assert!(s.success());
                }
                t.elapsed()
            })
            .collect(),
    );
    let data = dir.join("containers");
    let sluice_runs =
        median((0..reps).map(|_| sluice(&data, &["run", "-q", spec.to_str().unwrap()])).collect());
    println!(
        "| chain of {n} container steps running `true`, `sluice run` | {:.2} s (median of {reps}), {:.2}x the baseline | {n} x `docker run --rm` = {:.2} s |",
        sluice_runs.as_secs_f64(),
        sluice_runs.as_secs_f64() / docker_runs.as_secs_f64(),
        docker_runs.as_secs_f64()
    );
}
