//! Training throughput (docs/benchmarks.md): the model, an MLP 256-512-512-2 with
//! Adam and batch 256, on a synthetic table (standard-normal features, labels from a fixed
//! random projection), in process: no CSV, no files. Rows per second are taken from the
//! epochs after the first (the first includes warm-up: NVRTC, cuBLAS heuristics).
//!
//! `cargo bench --bench train` runs the CPU path on 16,384 rows and, where a GPU is usable,
//! the GPU path on 1,000,000 rows, and prints the ratio; `-- cpu` or `-- gpu` for one.
//! `TRAIN_BENCH_CPU_ROWS`, `TRAIN_BENCH_GPU_ROWS` and `TRAIN_BENCH_EPOCHS` (default 3) scale
//! them. benches/train_torch.py is the PyTorch baseline for the same model on the same GPU.
use sluice_worker::{Device, throughput};

const FEATURES: usize = 256;
const HIDDEN: [usize; 2] = [512, 512];
const BATCH: usize = 256;

/// Rows per second over the epochs after the first (or the only one).
fn rate(device: Device, rows: usize, epochs: usize) -> Option<f64> {
    let t = match throughput(device, rows, FEATURES, &HIDDEN, BATCH, epochs) {
        Ok(t) => t,
        Err(e) => {
            println!("{device:?}: not measured: {}", e.message);
            return None;
        }
    };
    let timed = if t.epoch_secs.len() > 1 { &t.epoch_secs[1..] } else { &t.epoch_secs[..] };
    let secs: f64 = timed.iter().sum::<f64>() / timed.len() as f64;
    let per_sec = rows as f64 / secs;
    println!(
        "{}: {rows} rows x {FEATURES}, MLP {FEATURES}-512-512-2, batch {BATCH}: setup {:.2} s, epochs {} s, losses {}; {per_sec:.0} rows/s",
        t.device,
        t.setup_secs,
        t.epoch_secs.iter().map(|s| format!("{s:.3}")).collect::<Vec<_>>().join(" / "),
        t.losses.iter().map(|l| format!("{l:.4}")).collect::<Vec<_>>().join(" / "),
    );
    Some(per_sec)
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test` a tiny CPU run shows the bench still
    // works (not a figure), and the GPU part runs only where a GPU is usable.
    let full = std::env::args().any(|a| a == "--bench");
    let size = |var: &str, bench: usize, smoke: usize| {
        std::env::var(var).ok().and_then(|v| v.parse().ok()).unwrap_or(if full { bench } else { smoke })
    };
    let which: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let on = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let epochs = size("TRAIN_BENCH_EPOCHS", 3, 1);
    if !full {
        println!("smoke run (use `cargo bench --bench train` for the figures)");
    }
    let cpu =
        if on("cpu") { rate(Device::Cpu, size("TRAIN_BENCH_CPU_ROWS", 16_384, 256), epochs) } else { None };
    let gpu = if on("gpu") {
        match sluice_worker::gpu_status() {
            Ok(_) => rate(Device::Gpu, size("TRAIN_BENCH_GPU_ROWS", 1_000_000, 4096), epochs),
            Err(why) => {
                println!("gpu: SKIPPED, no usable GPU ({why})");
                None
            }
        }
    } else {
        None
    };
    if let (Some(c), Some(g)) = (cpu, gpu) {
        println!("gpu / cpu: {:.1}x", g / c);
    }
}
