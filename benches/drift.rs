//! Drift of a large table (docs/benchmarks.md): 1,000,000 reference rows against 1,000,000
//! current rows, 20 numeric columns (half of them shifted), with Kolmogorov-Smirnov and with
//! PSI, the columns in parallel as `drift:` steps and monitors compute them. Generated in
//! memory (the same generator as benches/drift_scipy.py: normal columns, a fixed seed), so
//! the figure is the statistics, not the CSV reader. `bash benches/drift_compare.sh` runs it
//! beside the SciPy loop.
//!
//! `cargo bench --bench drift` (`DRIFT_BENCH_ROWS` scales it)

use std::time::Instant;

use sluice_engine::drift::{Method, Options, Table, compare};

/// xorshift64* and Box-Muller: normal draws from a seed.
struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(f64::MIN_POSITIVE), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

fn table(rows: usize, cols: usize, shift: f64, seed: u64) -> Table {
    let mut rng = Rng(seed);
    Table::numeric(
        (0..cols)
            .map(|c| {
                let moved = if c % 2 == 0 { shift } else { 0.0 };
                (format!("f{c}"), (0..rows).map(|_| rng.normal() + moved).collect())
            })
            .collect(),
    )
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` it runs once, small, to show it still
    // works (those figures are not benchmarks).
    let full = std::env::args().any(|a| a == "--bench");
    if !full {
        println!("smoke run (use `cargo bench --bench drift` for the figures)");
    }
    let rows: usize = std::env::var("DRIFT_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 1_000_000 } else { 20_000 });
    let cols = 20;
    let reference = table(rows, cols, 0.0, 7);
    let current = table(rows, cols, 0.05, 11);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("drift of {rows} x {cols} against {rows} x {cols} ({threads} threads)");
    for method in [Method::Ks, Method::Psi] {
        let mut best = f64::INFINITY;
        let mut drifted = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let r = compare(&reference, &current, &Options { method, ..Options::default() }).unwrap();
            best = best.min(t.elapsed().as_secs_f64());
            drifted = r.drifted_columns.len();
        }
        println!("sluice {:<4} {:>8.3} s  ({drifted} of {cols} columns drifted)", method.name(), best);
    }
}
