//! End-to-end scenarios of docs/benchmarks.md, each measured against a baseline taken in the
//! same run: `cargo bench --bench scenarios` prints a Markdown table.
//!
//! - chain of 40 `true` steps: `sluice run` wall time, process start to exit, state durable;
//!   the baseline is spawning `true` 40 times in a row.
//! - wide DAG of 10,000 steps: `sluice validate` (parse, check, plan) wall time, and a full
//!   `sluice run` with its peak memory.

mod dags;

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
    // `cargo bench` passes harness flags such as `--bench`; nothing here takes options.
    let dir = tempfile::tempdir().expect("tempdir");
    let chain = dir.path().join("chain40.yaml");
    std::fs::write(&chain, dags::chain(40)).unwrap();
    let wide = dir.path().join("wide10k.yaml");
    std::fs::write(&wide, dags::wide(10_000)).unwrap();

    // Warm the page cache and the binary.
    sluice(&dir.path().join("warm"), &["validate", chain.to_str().unwrap()]);

    let reps = 15;
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
    let chain_overhead = (ms(chain_med) - 40.0 * ms(spawn)) / 40.0;

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
        "| chain of 40 `true` steps, `sluice run` end to end | {:.1} ms (median of {reps}) | 40 x spawn = {:.1} ms |",
        ms(chain_med),
        40.0 * ms(spawn)
    );
    println!("| the same, each run in a fresh data folder | {:.1} ms (median of {reps}) | - |", ms(fresh));
    println!("| orchestration overhead per chain step | {chain_overhead:.3} ms | - |");
    println!(
        "| wide DAG of 10,000 steps, `sluice validate` (parse, check, plan) | {:.1} ms | `sluice --version` = {:.1} ms |",
        ms(validate),
        ms(noop)
    );
    println!(
        "| wide DAG of 10,000 `true` steps, `sluice run` | {:.2} s, {:.3} ms per step | 10,000 x spawn = {:.2} s |",
        wide_run.as_secs_f64(),
        ms(wide_run) / 10_000.0,
        10_000.0 * spawn.as_secs_f64()
    );
    println!("| peak memory of the 10,000-step run | {:.1} MB | - |", peak_kb as f64 / 1024.0);
}
